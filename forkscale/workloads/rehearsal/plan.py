"""A rehearsal's plan: the spec checked against the inventory (SpecError naming the field), no changes.

Two kinds of clone:

* a *live* clone (a rehearsal file): an instant clone of the running `source`, every NIC moved to
  the isolated port group and/or disconnected, so its copy of the source's IP never meets the
  source's network;
* an *image* clone (`rehearse --pool POOL --snapshot NEW`): a linked clone of the golden VM's
  snapshot NEW, every NIC on the pool's port group but disconnected (the clone boots the new
  image with the golden's network identity, which no pool member may see).

Both carry `forkscale.rehearsal=<source>` in extraConfig, so a leftover (kill -9) can be
recognised, and a fresh manual MAC per NIC.
"""

from __future__ import annotations

from dataclasses import dataclass

from forkscale.core.errors import SpecError
from forkscale.core.identity import random_mac
from forkscale.spec.rehearsal import RehearsalSpec
from forkscale.vsphere.model import CloneRequest, Inventory, NetworkRef, VmDetail, VmInfo
from forkscale.vsphere.ports import InventoryReader
from forkscale.workloads.rehearsal.report import CHAIN_ALARM, Report

TAG_REHEARSAL = "forkscale.rehearsal"


@dataclass
class Plan:
    source: str  # moref of the VM cloned (the running source, or the golden VM)
    request: CloneRequest
    net_names: dict[str, str]  # network moref -> name
    snapshot: str | None = None  # moref of the snapshot an image clone is made from


def _source(spec: RehearsalSpec, inv: Inventory) -> VmInfo:
    src = inv.vm_by_name(spec.source)
    what = f"pool {spec.pool}'s golden VM" if spec.pool else "source"
    if src is None:
        names = sorted(v.name for v in inv.vms.values() if not v.pool)[:10]
        raise SpecError("source", f"no VM named {spec.source!r} in vCenter ({what}; some VMs: {', '.join(names)})")
    if not src.datastores:
        raise SpecError("source", f"{spec.source} has no datastore")
    if spec.snapshot is not None:
        return src
    if src.template:
        raise SpecError("source", f"{spec.source} is a template; a rehearsal clones a running VM")
    if src.power != "poweredOn":
        raise SpecError("source", f"{spec.source} is {src.power}; a rehearsal instant-clones a running VM, "
                                  "so it must be powered on")
    if src.frozen:
        raise SpecError("source", f"{spec.source} is frozen (runtime.instantCloneFrozen); a rehearsal clones a "
                                  "running VM - its clone would resume the freeze script instead")
    return src


def _port_group(spec: RehearsalSpec, inv: Inventory, detail: VmDetail) -> NetworkRef | None:
    pg = spec.network.port_group
    if pg is None:
        return None
    if pg not in inv.networks:
        raise SpecError("network.port_group", f"no port group named {pg!r} (port groups: "
                                              f"{', '.join(sorted(inv.networks))})")
    if spec.snapshot is None and any(n.network[1] == inv.networks[pg][1] for n in detail.nics):
        raise SpecError("network.port_group", f"{pg!r} is a network {spec.source} is on; its clone keeps the "
                                              "source's IP, so use a port group isolated from it")
    return inv.networks[pg]


async def _snapshot(spec: RehearsalSpec, driver: InventoryReader, src: VmInfo) -> str | None:
    if spec.snapshot is None:
        return None
    found = await driver.snapshots_named(src.moref, spec.snapshot)
    if not found:
        raise SpecError("--snapshot", f"{spec.source} has no snapshot named {spec.snapshot!r}")
    if len(found) > 1:
        raise SpecError("--snapshot", f"{spec.source} has {len(found)} snapshots named {spec.snapshot!r}; "
                                      "rename them so the new image is unambiguous")
    return found[0]


async def make_plan(spec: RehearsalSpec, driver: InventoryReader, clone_name: str, report: Report) -> Plan:
    """Check the spec against the inventory (SpecError naming the field) and plan the clone."""
    inv = await driver.inventory()
    src = _source(spec, inv)
    if inv.vm_by_name(clone_name) is not None:
        raise SpecError("clone_name", f"a VM named {clone_name!r} already exists")
    detail = await driver.vm_detail(src.moref)
    if not detail.nics:
        raise SpecError("source", f"{spec.source} has no network adapter; there is no way to reach its clone")
    network = _port_group(spec, inv, detail)
    snapshot = await _snapshot(spec, driver, src)
    folder = src.folder
    if spec.folder is not None:
        folder = inv.folders.get(spec.folder)
        if folder is None:
            raise SpecError("folder", f"no VM folder named {spec.folder!r}")
    if folder is None:
        raise SpecError("folder", f"cannot tell the folder of {spec.source}; name one")
    if src.host is None:
        raise SpecError("source", f"{spec.source} is on no host")
    report.source_moref, report.source_host = src.moref, inv.host_names.get(src.host, src.host)
    report.power_before, report.chains_before = detail.power, detail.chains
    depth = Report.depth(detail.chains) or 0
    if depth + 1 > CHAIN_ALARM:
        report.warnings.append(f"{spec.source}'s delta chain will be {depth + 1} levels deep (alarm above "
                               f"{CHAIN_ALARM}, limit 255; KB 67186): consolidate it")
    taken = set(inv.macs) | {n.mac for n in detail.nics}
    nics = []
    for n in detail.nics:
        mac = random_mac(taken)
        taken.add(mac)
        nics.append((n.key, mac, network or n.network))
    (key, mac, net), *more = nics
    req = CloneRequest(name=clone_name, folder=folder, datastore=src.datastores[0], host=src.host,
                       resource_pool=None, network=net, mac=mac, nic_key=key, extra={TAG_REHEARSAL: spec.source},
                       disconnect=spec.network.disconnect, more_nics=tuple(more))
    net_names = {moref: name for name, (_, moref, _) in inv.networks.items()}
    return Plan(source=src.moref, request=req, net_names=net_names, snapshot=snapshot)
