"""The text of the files a VM keeps in its directory: `.vmx`, `.vmsd`, `vmware.log`, disk descriptors.

What `GET /folder/...` serves and what the datastore browser sizes: rendered from the VM's state
on each read (a `.vmx` always says what `config` says), so the file and the API never disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .disks import DiskFile
    from .vm import VM

NVRAM_SIZE = 8684
SECTOR = 512


def _q(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '|22') + '"'


def guest_os(guest_id: str) -> str:
    """`ubuntu64Guest` -> `ubuntu-64`, as the .vmx spells a guest OS."""
    name = guest_id[:-5] if guest_id.endswith("Guest") else guest_id
    name = name.replace("_", "-")
    if name.endswith("64") and not name.endswith("-64"):
        name = name[:-2] + "-64"
    return name


def disk_file_ref(vm: VM, f: DiskFile) -> str:
    """A disk as the .vmx names it: relative in the VM's directory, else a /vmfs/volumes path."""
    prefix = vm.dir() + "/"
    if f.name.startswith(prefix):
        return f.name[len(prefix):]
    ds_name, _, rel = f.name[1:].partition("] ")
    return f"/vmfs/volumes/{ds_name}/{rel}"


def vmx_text(vm: VM) -> str:
    lines = [
        (".encoding", "UTF-8"), ("config.version", "8"), ("virtualHW.version", "21"),
        ("displayName", vm.name), ("guestOS", guest_os(vm.guest_id)), ("memSize", vm.memory_mb),
        ("numvcpus", vm.num_cpu), ("uuid.bios", vm.uuid), ("vc.uuid", vm.instance_uuid),
        ("nvram", f"{vm.stem}.nvram"), ("scsi0.present", "TRUE"), ("scsi0.virtualDev", "pvscsi"),
    ]
    for d in vm.disks:
        slot = f"scsi0:{d.unit}"
        lines += [(f"{slot}.present", "TRUE"), (f"{slot}.fileName", disk_file_ref(vm, d.top))]
        if d.mode != "persistent":
            lines.append((f"{slot}.mode", d.mode.replace("_", "-")))
    for i, n in enumerate(vm.nics):
        eth = f"ethernet{i}"
        lines += [(f"{eth}.present", "TRUE"), (f"{eth}.virtualDev", "vmxnet3"),
                  (f"{eth}.networkName", n.network.name),
                  (f"{eth}.addressType", "static" if n.address_type == "manual" else "vpx"),
                  (f"{eth}.{'address' if n.address_type == 'manual' else 'generatedAddress'}", n.mac)]
    if vm.annotation:
        lines.append(("annotation", vm.annotation))
    if vm.template:
        lines.append(("templateVM", "TRUE"))
    lines += sorted(vm.extra.items())
    return "".join(f"{k} = {_q(v)}\n" for k, v in lines)


def vmsd_text(vm: VM) -> str:
    from .ops.snapshots import walk

    nodes = walk(vm.snapshots)
    out = [".encoding = \"UTF-8\"\n"]
    if vm.current_snapshot is not None:
        out.append(f"snapshot.current = {_q(vm.current_snapshot.sid)}\n")
    out.append(f"snapshot.numSnapshots = {_q(len(nodes))}\n")
    for i, n in enumerate(nodes):
        out.append(f"snapshot{i}.uid = {_q(n.sid)}\nsnapshot{i}.displayName = {_q(n.name)}\n")
    return "".join(out) if nodes else ""


def log_text(vm: VM) -> str:
    created = datetime.fromtimestamp(vm.created, tz=UTC).isoformat(timespec="milliseconds")
    return (f"{created} In(05) vmx - Log for VMware ESX pid=1000 version=8.0.3 build=build-24022510\n"
            f"{created} In(05) vmx - DICT displayName = {_q(vm.name)}\n"
            f"{created} In(05) vmx - DICT memSize = {_q(vm.memory_mb)}\n"
            f"{created} In(05) vmx - Powering {'on' if vm.power_state == 'poweredOn' else 'off'}\n")


def cid(f: DiskFile) -> str:
    return f"{(f.uid * 2654435761) & 0xFFFFFFFF:08x}"


def descriptor_text(f: DiskFile) -> str:
    """A VMFS disk descriptor: its extent, and for a delta its parent's CID and file name."""
    sectors = f.capacity // SECTOR
    extent = f.extent_name().rpartition("/")[2]
    if f.parent is not None:
        parent_cid, create, kind = cid(f.parent), "vmfsSparse", "VMFSSPARSE"
        hint = f"parentFileNameHint={_q(_relative(f, f.parent))}\n"
    else:
        parent_cid, create, kind, hint = "ffffffff", "vmfs", "VMFS", ""
    uuid = " ".join(f"{b:02x}" for b in f.uid.to_bytes(16, "big"))
    return ("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n"
            f"CID={cid(f)}\nparentCID={parent_cid}\ncreateType={_q(create)}\n{hint}"
            f"\n# Extent description\nRW {sectors} {kind} {_q(extent)}\n"
            "\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
            f"ddb.thinProvisioned = \"1\"\nddb.uuid = {_q(uuid)}\nddb.virtualHWVersion = \"21\"\n")


def _relative(child: DiskFile, parent: DiskFile) -> str:
    c_dir = child.name.rpartition("/")[0]
    p_dir, _, p_base = parent.name.rpartition("/")
    if c_dir == p_dir:
        return p_base
    ds_name, _, rel = parent.name[1:].partition("] ")
    return f"/vmfs/volumes/{ds_name}/{rel}"
