"""The twin's VirtualApp: a resource pool that holds its VMs as a folder holds its entries.

As on vCenter, a vApp's `parent` is its parent pool; a root vApp also sits in a VM folder
(`parentFolder`, listed in the folder's `childEntity`), a child vApp names its vApp in
`parentVApp` instead. A VM in a vApp has no folder: its `parent` is unset and `parentVApp`
names the vApp (internally its parent is the vApp, so names are unique within it). The vApp's
state (`summary.vAppState`) follows its VMs: started while any runs.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

from .inventory import Children, Entity, Folder, ResourcePool

if TYPE_CHECKING:
    from .vm import VM
    from .world import World


class VirtualApp(ResourcePool):
    kind = vim.VirtualApp

    def __init__(self, world: World, moid: str, name: str, parent: ResourcePool, owner: Entity,
                 folder: Folder | None) -> None:
        super().__init__(world, moid, name, parent, owner)
        self.parent_folder = folder  # a root vApp's folder (None for a child vApp)
        self.entries = Children()  # its VMs
        self.annotation = ""
        self.products: list[Any] = []  # vim.vApp.ProductInfo
        self.entity_config: dict[str, Any] = {}  # VM or vApp moid -> vim.vApp.EntityConfigInfo
        self.instance_uuid = str(uuidlib.UUID(int=world.rng.getrandbits(128)))

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        old, self._name = self._name, value
        if self.parent_folder is not None:
            self.parent_folder.entries.renamed(self, old)

    # what holds it, what it holds ------------------------------------------------------------
    def parent_vapp(self) -> VirtualApp | None:
        return self.parent if isinstance(self.parent, VirtualApp) else None

    def vms(self) -> list[VM]:
        return [e for e in self.entries if e.alive]  # type: ignore[misc]

    def attach(self, vm: Entity) -> None:
        vm.parent = self
        self.entries.append(vm)
        self.world.moved(vm)
        self.world.touch(self, structural=True)

    def detach(self, vm: Entity) -> None:
        if vm in self.entries:
            self.entries.remove(vm)
            self.world.touch(self, structural=True)

    def child_named(self, name: str) -> Entity | None:
        """FindChild on a vApp: its child pools and vApps, then its VMs."""
        return next((p for p in self.pools if p.name == name and p.alive), None) or self.entries.named(name)

    def children(self) -> list[Entity]:
        return [*self.pools, *self.entries]

    def state(self) -> str:
        return "started" if any(v.power_state == "poweredOn" for v in self.vms()) else "stopped"

    # properties -------------------------------------------------------------------------------
    def p_parentFolder(self) -> Any:  # noqa: N802 - vSphere property name
        return self.parent_folder.ref if self.parent_folder is not None else None

    def p_parentVApp(self) -> Any:  # noqa: N802
        up = self.parent_vapp()
        return up.ref if up is not None else None

    def p_vm(self) -> list[Any]:
        return [v.ref for v in self.vms()]

    def p_datastore(self) -> list[Any]:
        seen: dict[str, Any] = {}
        for vm in self.vms():
            for d in vm.datastores():
                seen[d.moid] = d.ref
        return list(seen.values())

    def p_network(self) -> list[Any]:
        seen: dict[str, Any] = {}
        for vm in self.vms():
            for n in vm.networks():
                seen[n.moid] = n.ref
        return list(seen.values())

    def p_childLink(self) -> list[Any]:  # noqa: N802
        return []

    def p_vAppConfig(self) -> Any:  # noqa: N802
        return vim.vApp.VAppConfigInfo(
            annotation=self.annotation, instanceUuid=self.instance_uuid, product=list(self.products),
            entityConfig=[self.entity_config.get(e.moid) or _entity_config(e) for e in [*self.vms(), *self.pools]],
            property=[], eula=[], ovfSection=[], ovfEnvironmentTransport=[], installBootRequired=False,
            installBootStopDelay=0,
            ipAssignment=vim.vApp.IPAssignmentInfo(ipAllocationPolicy="fixedPolicy", supportedAllocationScheme=[],
                                                   supportedIpProtocol=["IPv4"], ipProtocol="IPv4"))

    def p_summary(self) -> Any:
        base = super().p_summary()
        product = self.products[0] if self.products else None
        return vim.VirtualApp.Summary(
            name=base.name, config=base.config, runtime=base.runtime, quickStats=base.quickStats,
            configuredMemoryMB=base.configuredMemoryMB, product=product, vAppState=self.state(), suspended=False,
            installBootRequired=False, instanceUuid=self.instance_uuid)


def _entity_config(entity: Entity) -> Any:
    """A member's start/stop settings as vCenter fills them by default (power on, guest shutdown)."""
    return vim.vApp.EntityConfigInfo(key=entity.ref, tag=entity.name, startOrder=1, startDelay=120,
                                     waitingForGuest=False, startAction="powerOn", stopDelay=120,
                                     stopAction="powerOff", destroyWithParent=True)


def vapp_of(vm: VM) -> VirtualApp | None:
    """The vApp a VM belongs to, if any."""
    return vm.parent if isinstance(vm.parent, VirtualApp) else None


def root_folder(vapp: VirtualApp) -> Folder:
    """The VM folder a vApp sits in, through its parent vApps (a VM leaving it goes there)."""
    node: Any = vapp
    while isinstance(node, VirtualApp) and node.parent_folder is None:
        node = node.parent
    assert isinstance(node, VirtualApp) and node.parent_folder is not None
    return node.parent_folder


def holder_for(pool: ResourcePool, folder: Folder | VirtualApp) -> Folder | VirtualApp:
    """Where a VM placed in `pool` lives: in the vApp if `pool` is one, else in `folder` (or, when
    `folder` is a vApp the VM leaves, that vApp's folder)."""
    if isinstance(pool, VirtualApp):
        return pool
    return root_folder(folder) if isinstance(folder, VirtualApp) else folder
