"""What the informer asks vCenter for, and how an update set becomes plain `Change`s.

One `ContainerView` over the root folder with every kind the controller plans with (VMs, hosts,
datastores, networks and distributed switches, folders, resource pools) and one filter over it,
with the property paths of `reads.read_inventory` (the engine) and, for `forkscale serve` and
`forkscale metrics`, those of `fleetread.read_fleet` (the exporter: quick stats and layoutEx).
"""

from __future__ import annotations

from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

from forkscale.vsphere.faults import fault_name
from forkscale.vsphere.fleetread import _chains
from forkscale.vsphere.invmodel import (
    DATASTORE,
    FOLDER,
    HOST,
    LAYOUT_PATH,
    NETWORK,
    POOL,
    PORTGROUP,
    PRIVATE_PATH,
    SHARED_PATH,
    SWITCH,
    VM,
    Change,
)
from forkscale.vsphere.keyed import EXTRA, key_of, option_values
from forkscale.vsphere.reads import HOST_PATHS, VM_PATHS

PC = vmodl.query.PropertyCollector
FLEET_VM_PATHS = (SHARED_PATH, PRIVATE_PATH, LAYOUT_PATH)
#: (type, what the model calls it, paths); a distributed port group is a Network too, so it gets both specs.
KINDS: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (vim.VirtualMachine, VM, tuple(VM_PATHS)),
    (vim.HostSystem, HOST, tuple(HOST_PATHS)),
    (vim.Datastore, DATASTORE, ("name", "summary.freeSpace", "summary.capacity")),
    (vim.dvs.DistributedVirtualPortgroup, PORTGROUP, ("name", "config.distributedVirtualSwitch")),
    (vim.Network, NETWORK, ("name",)),
    (vim.DistributedVirtualSwitch, SWITCH, ("uuid",)),
    (vim.Folder, FOLDER, ("name",)),
    (vim.ResourcePool, POOL, ("name",)),
)
VIEW_TYPES = [vim.VirtualMachine, vim.HostSystem, vim.Datastore, vim.Network, vim.DistributedVirtualSwitch,
              vim.Folder, vim.ResourcePool]


class KeyedRefused(ValueError):
    """The server refused a keyed extraConfig path (forkscale.vsphere.keyed): ask for it whole."""


def filter_spec(view: Any, *, fleet: bool, whole_extra: bool = False) -> Any:
    """One filter over `view` (a ContainerView of VIEW_TYPES) for every kind's paths; with
    `whole_extra`, a VM's `config.extraConfig` whole instead of its keyed paths."""
    props = []
    for kind, _what, paths in KINDS:
        if kind is vim.VirtualMachine:
            paths = (*paths, *FLEET_VM_PATHS) if fleet else paths
            if whole_extra:
                paths = (*(p for p in paths if not key_of(p)), EXTRA)
        props.append(PC.PropertySpec(type=kind, pathSet=list(paths)))
    return PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
        PC.TraversalSpec(name="informer-view", type=vim.view.ContainerView, path="view", skip=False)])],
        propSet=props)


_WHAT: dict[type, str | None] = {}


def what_of(obj: Any) -> str | None:
    """The model's kind of a managed object (None for a kind the informer does not follow)."""
    kind = type(obj)
    if kind not in _WHAT:
        _WHAT[kind] = next((what for k, what, _ in KINDS if isinstance(obj, k)), None)
    return _WHAT[kind]


def plain(val: Any) -> Any:
    """A property value as the model keeps it: morefs as their id, an extraConfig entry as its
    value, layoutEx as (disk key -> chain length, delta bytes), lists as tuples."""
    if val is None:
        return None
    if isinstance(val, VmomiSupport.ManagedObject):
        return str(val._moId)
    if isinstance(val, bool):
        return val
    if isinstance(val, int):
        return int(val)
    if isinstance(val, vim.option.OptionValue):
        return None if val.value is None else str(val.value)
    if isinstance(val, vim.vm.FileLayoutEx):
        return _chains(val)
    if isinstance(val, list):
        return tuple(plain(v) for v in val)
    return str(val)


def changes(update: Any) -> list[Change]:
    """The plain changes of one UpdateSet, in the order vCenter sent them."""
    out: list[Change] = []
    for fs in update.filterSet or []:
        for ou in fs.objectSet or []:
            what = what_of(ou.obj)
            if what is None:
                continue
            if any(key_of(m.path) and fault_name(m.fault) == "InvalidProperty" for m in ou.missingSet or []):
                raise KeyedRefused(f"{ou.obj._moId}: keyed extraConfig paths refused")
            values = {c.name: None if c.op in ("remove", "indirectRemove") else
                      option_values(c.val) if c.name == EXTRA else plain(c.val) for c in ou.changeSet or []}
            out.append(Change(str(ou.kind), what, str(ou.obj._moId), values))
    return out
