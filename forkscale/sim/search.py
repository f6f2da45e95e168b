"""The SearchIndex: find an entity by inventory path, by name under a parent, by UUID, by IP
address or DNS name (a VM's as VMware Tools report them, a host's management address and name),
and a VM by the datastore path of its .vmx.

`datacenter`, where given, limits the search to that datacenter; `vmSearch` chooses between VMs
and hosts, as vCenter does (FindByUuid with vmSearch=false finds a host by its BIOS UUID).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pyVmomi import vim, vmodl

from .dispatch import Ctx, method
from .hostinfo import DOMAIN, mgmt_ip
from .inventory import Datacenter, Datastore, Entity, Host
from .mo import MO
from .vm import VM

_DS_PATH = re.compile(r"^\[([^\]]+)\]\s*(.*)$")


def _datacenter(ctx: Ctx, ref: Any) -> Datacenter | None:
    if ref is None:
        return None
    dc = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(dc, Datacenter):
        raise vmodl.fault.InvalidArgument(msg="datacenter is not a Datacenter", invalidProperty="datacenter")
    return dc


def _within(entity: Entity, dc: Datacenter | None) -> bool:
    node: Entity | None = entity
    while dc is not None and node is not None:
        if node is dc:
            return True
        node = node.parent
    return dc is None


def _candidates(ctx: Ctx, datacenter: Any, vm_search: bool) -> Iterator[VM | Host]:
    dc = _datacenter(ctx, datacenter)
    kind: type[VM] | type[Host] = VM if vm_search else Host
    for e in ctx.twin.world.instances(kind):
        if e.alive and _within(e, dc):
            yield e


def _vm_ips(vm: VM) -> set[str]:
    if vm.power_state != "poweredOn" or not vm.guest.tools_running or not vm.guest.ip:
        return set()
    return {vm.guest.ip}


def _names(e: VM | Host) -> set[str]:
    if isinstance(e, VM):
        on = e.power_state == "poweredOn" and e.guest.tools_running and e.guest.hostname
        return {e.guest.hostname.lower()} if on and e.guest.hostname else set()
    return {e.name.lower(), f"{e.name}.{DOMAIN}".lower()}


@method("FindByInventoryPath")
def find_by_inventory_path(ctx: Ctx, this: MO, inventoryPath: str) -> Any:  # noqa: N803
    node: Any = ctx.twin.root
    for part in [p for p in inventoryPath.strip("/").split("/") if p]:
        node = node.child_named(part)
        if node is None:
            return None
    return node.ref


@method("FindChild")
def find_child(ctx: Ctx, this: MO, entity: Any, name: str) -> Any:
    parent = ctx.twin.resolve(entity, ctx.session)
    if not isinstance(parent, Entity):
        raise vmodl.fault.InvalidArgument(msg="entity is not a managed entity", invalidProperty="entity")
    child = parent.child_named(name)
    return child.ref if child else None


def _by_uuid(ctx: Ctx, uuid: str, vm_search: bool, datacenter: Any, instance: bool | None) -> list[Any]:
    want = uuid.lower()
    found = []
    for e in _candidates(ctx, datacenter, vm_search):
        mine = (e.instance_uuid if instance else e.uuid) if isinstance(e, VM) else e.uuid
        if mine.lower() == want:
            found.append(e.ref)
    return found


@method("FindByUuid")
def find_by_uuid(ctx: Ctx, this: MO, uuid: str, vmSearch: bool, datacenter: Any = None,  # noqa: N803
                 instanceUuid: bool | None = None) -> Any:  # noqa: N803
    found = _by_uuid(ctx, uuid, bool(vmSearch), datacenter, instanceUuid)
    return found[0] if found else None


@method("FindAllByUuid")
def find_all_by_uuid(ctx: Ctx, this: MO, uuid: str, vmSearch: bool, datacenter: Any = None,  # noqa: N803
                     instanceUuid: bool | None = None) -> Any:  # noqa: N803
    return _by_uuid(ctx, uuid, bool(vmSearch), datacenter, instanceUuid)


def _by_ip(ctx: Ctx, ip: str, vm_search: bool, datacenter: Any) -> list[Any]:
    return [e.ref for e in _candidates(ctx, datacenter, vm_search)
            if ip in (_vm_ips(e) if isinstance(e, VM) else {mgmt_ip(e)})]


@method("FindByIp")
def find_by_ip(ctx: Ctx, this: MO, ip: str, vmSearch: bool, datacenter: Any = None) -> Any:  # noqa: N803
    found = _by_ip(ctx, ip, bool(vmSearch), datacenter)
    return found[0] if found else None


@method("FindAllByIp")
def find_all_by_ip(ctx: Ctx, this: MO, ip: str, vmSearch: bool, datacenter: Any = None) -> Any:  # noqa: N803
    return _by_ip(ctx, ip, bool(vmSearch), datacenter)


def _by_dns(ctx: Ctx, name: str, vm_search: bool, datacenter: Any) -> list[Any]:
    want = name.lower().rstrip(".")
    return [e.ref for e in _candidates(ctx, datacenter, vm_search) if want in _names(e)]


@method("FindByDnsName")
def find_by_dns_name(ctx: Ctx, this: MO, dnsName: str, vmSearch: bool, datacenter: Any = None) -> Any:  # noqa: N803
    found = _by_dns(ctx, dnsName, bool(vmSearch), datacenter)
    return found[0] if found else None


@method("FindAllByDnsName")
def find_all_by_dns_name(ctx: Ctx, this: MO, dnsName: str, vmSearch: bool,  # noqa: N803
                         datacenter: Any = None) -> Any:
    return _by_dns(ctx, dnsName, bool(vmSearch), datacenter)


@method("FindByDatastorePath")
def find_by_datastore_path(ctx: Ctx, this: MO, datacenter: Any, path: str) -> Any:
    """The VM whose .vmx is at `path` ("[ds] dir/name.vmx"); InvalidDatastorePath if the path is
    malformed or names no datastore of the datacenter."""
    dc = _datacenter(ctx, datacenter)
    m = _DS_PATH.match(path.strip())
    ds_name = m.group(1) if m else ""
    ds = next((d for d in ctx.twin.world.instances(Datastore) if d.name == ds_name and _within(d, dc)), None)
    if m is None or ds is None:
        raise vim.fault.InvalidDatastorePath(msg=f"Invalid datastore path '{path}'.", datastorePath=path,
                                             name=ds_name or None)
    want = f"[{ds.name}] {m.group(2).strip()}"
    for vm in ctx.twin.world.instances(VM):
        if vm.alive and f"{vm.dir()}/{vm.name}.vmx" == want and _within(vm, dc):
            return vm.ref
    return None
