"""Inventory edits: `Rename_Task` on an entity, `MoveIntoFolder_Task` on a folder.

A renamed VM keeps its directory and file names (vCenter renames only the inventory name), and
a name must be unique among a folder's children (`DuplicateName`). A folder takes only the
kinds of entity its `childType` lists (`NotSupported` otherwise), never itself or an ancestor
(`InvalidFolder`). Datastores and hosts are not renamed by the twin (`NotSupported`).
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record
from ..inventory import Datastore, Entity, Folder, Host
from ..mo import wsdl_name
from ..tasks import Task
from ..vapp import VirtualApp
from ..vm import VM
from .common import elapse, submit

MAX_NAME = 80


def _siblings(entity: Entity) -> list[Entity]:
    """What shares a name space with `entity`: its parent's children (and a vApp's folder's)."""
    parent = entity.parent
    folder = entity.parent_folder if isinstance(entity, VirtualApp) else None
    return [*(parent.children() if parent is not None else []), *(folder.children() if folder else [])]


@method("Rename_Task")
def rename(ctx: Ctx, this: Any, newName: str) -> Any:  # noqa: N803
    if not isinstance(this, Entity):
        raise vmodl.fault.InvalidArgument(msg="not a managed entity", invalidProperty="_this")
    if isinstance(this, (Datastore, Host)):
        raise vmodl.fault.NotSupported(msg=f"Rename_Task: the twin does not rename a {wsdl_name(this.ref)}")
    if not newName or len(newName) > MAX_NAME or "/" in newName:
        raise vim.fault.InvalidName(msg=f"The name '{newName}' is not valid.", name=newName or "", entity=this.ref)

    async def body(task: Task) -> None:
        await elapse(this.world, "reconfigure")
        dup = next((e for e in _siblings(this) if e.name == newName and e is not this and e.alive), None)
        if dup is not None:
            raise vim.fault.DuplicateName(msg=f"The name '{newName}' already exists.", name=newName, object=dup.ref)
        old = this.name
        this.name = newName
        this.world.touch(this, structural=True)
        if isinstance(this, VM):
            this.changed()
            record(ctx, "VmRenamedEvent", this, f"Renamed {old} to {newName}", task=task, oldName=old,
                   newName=newName)

    return submit(ctx, this, body, op=f"{wsdl_name(this.ref)}.rename")


def _check_move(folder: Folder, entity: Entity) -> None:
    kind = wsdl_name(entity.ref)
    if isinstance(entity.parent, VirtualApp) and not (isinstance(entity, VirtualApp) and entity.parent_folder):
        raise vmodl.fault.NotSupported(msg=f"MoveIntoFolder_Task: {entity.name} belongs to vApp "
                                           f"{entity.parent.name} (MoveIntoResourcePool takes it out)")
    allowed = {"VirtualMachine": "VirtualMachine", "VirtualApp": "VirtualApp", "Folder": "Folder",
               "Datacenter": "Datacenter",
               "Datastore": "Datastore", "Network": "Network", "DistributedVirtualPortgroup": "Network",
               "VmwareDistributedVirtualSwitch": "DistributedVirtualSwitch",
               "ClusterComputeResource": "ComputeResource", "ComputeResource": "ComputeResource"}
    if allowed.get(kind) not in folder.child_type:
        raise vmodl.fault.NotSupported(msg=f"MoveIntoFolder_Task: folder {folder.name} does not hold a {kind}")
    node: Entity | None = folder
    while node is not None:
        if node is entity:
            raise vim.fault.InvalidFolder(msg=f"Cannot move {entity.name} into itself or a folder below it",
                                          target=folder.ref)
        node = node.parent
    dup = next((e for e in folder.entries if e.name == entity.name and e is not entity and e.alive), None)
    if dup is not None:
        raise vim.fault.DuplicateName(msg=f"The name '{entity.name}' already exists.", name=entity.name,
                                      object=dup.ref)


@method("MoveIntoFolder_Task")
def move_into_folder(ctx: Ctx, this: Any, **args: Any) -> Any:
    if not isinstance(this, Folder):
        raise vmodl.fault.InvalidArgument(msg="not a folder", invalidProperty="_this")
    entities: list[Entity] = []
    for ref in args.get("list") or []:
        mo = ctx.twin.resolve(ref, ctx.session)
        if not isinstance(mo, Entity):
            raise vmodl.fault.InvalidArgument(msg=f"{ref} is not a managed entity", invalidProperty="list")
        entities.append(mo)

    async def body(task: Task) -> None:
        await elapse(this.world, "reconfigure")
        for entity in entities:
            _check_move(this, entity)
        for entity in entities:
            if isinstance(entity, VirtualApp):  # a root vApp changes folders; its parent stays its pool
                _move_vapp(this, entity)
                continue
            old = entity.parent
            if old is this:
                continue
            if isinstance(old, Folder):
                old.detach(entity)
            this.attach(entity)
            if isinstance(entity, VM):
                entity.changed()

    return submit(ctx, this, body, op="Folder.moveInto")


def _move_vapp(folder: Folder, vapp: VirtualApp) -> None:
    old = vapp.parent_folder
    if old is None or old is folder:
        return
    old.detach(vapp)
    vapp.parent_folder = folder
    folder.entries.append(vapp)
    folder.world.moved(vapp)
    folder.world.touch(folder, structural=True)
