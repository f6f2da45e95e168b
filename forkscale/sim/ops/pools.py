"""Child resource pools: `CreateResourcePool`, `UpdateConfig`, `MoveIntoResourcePool`, and
`Destroy_Task` / `DestroyChildren` on a pool.

A new pool needs every field of its CPU and memory allocation (reservation, limit,
expandableReservation, shares), each valid (reservation >= 0, limit -1 or >= 0, custom shares
>= 0, no overheadLimit): `InvalidArgument` naming `spec.cpuAllocation` / `spec.memoryAllocation`
otherwise, as vCenter answers. Names are unique among a pool's child pools (`DuplicateName`).
A pool and the VMs it takes stay in one cluster; a pool is never moved below itself. Destroying a
pool hands its VMs and child pools to its parent; the root pool is not destroyed
(`InvalidArgument`). Each change posts its `ResourcePool*Event`.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from ..dispatch import Ctx, method
from ..events import record, record_entity
from ..inventory import ResourcePool
from ..tasks import Task
from ..vm import VM
from .common import elapse, submit

MAX_NAME = 80
# (cpu, memory) shares of each level, as vCenter gives a resource pool
SHARES = {"low": (2000, 81920), "normal": (4000, 163840), "high": (8000, 327680)}


def _pool(this: Any) -> ResourcePool:
    if not isinstance(this, ResourcePool):
        raise vmodl.fault.InvalidArgument(msg="not a resource pool", invalidProperty="_this")
    return this


def _is_root(pool: ResourcePool) -> bool:
    return not isinstance(pool.parent, ResourcePool)


def _arg(pool: ResourcePool) -> Any:
    return vim.event.ResourcePoolEventArgument(name=pool.name, resourcePool=pool.ref)


def _post(ctx: Ctx, kind: type, pool: ResourcePool, message: str, task: Task | None = None, **fields: Any) -> None:
    record_entity(ctx, kind, pool, message, task=task, resourcePool=_arg(pool), **fields)


def _check_name(pool: ResourcePool, name: str, entity: Any = None) -> None:
    if not name or len(name) > MAX_NAME or "/" in name:
        raise vim.fault.InvalidName(msg=f"The name '{name}' is not valid.", name=name or "", entity=entity)
    dup = next((p for p in pool.pools if p.name == name and p.alive and p.ref != entity), None)
    if dup is not None:
        raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=dup.ref)


def _allocation(info: Any, kind: str, *, complete: bool) -> Any:
    """A validated copy of an allocation (`InvalidArgument` naming spec.<kind>Allocation)."""
    prop = f"spec.{kind}Allocation"
    fields = ("reservation", "limit", "expandableReservation", "shares")
    if info is None or (complete and any(getattr(info, f) is None for f in fields)):
        raise vmodl.fault.InvalidArgument(msg=f"{prop}: reservation, limit, expandableReservation and shares "
                                              "are all required", invalidProperty=prop)
    shares = info.shares
    if ((info.reservation is not None and info.reservation < 0) or (info.limit is not None and info.limit < -1)
            or info.overheadLimit is not None
            or (shares is not None and (shares.level not in (*SHARES, "custom")
                                        or (shares.level == "custom" and (shares.shares or 0) < 0)))):
        raise vmodl.fault.InvalidArgument(msg=f"{prop}: an invalid value", invalidProperty=prop)
    if shares is not None and shares.level != "custom":
        value = SHARES[shares.level][0 if kind == "cpu" else 1]
        shares = vim.SharesInfo(level=shares.level, shares=value)
    return vim.ResourceAllocationInfo(reservation=info.reservation, limit=info.limit,
                                      expandableReservation=info.expandableReservation, shares=shares,
                                      overheadLimit=-1)


def _merge(old: Any, new: Any) -> Any:
    for f in ("reservation", "limit", "expandableReservation", "shares"):
        if getattr(new, f) is None:
            setattr(new, f, getattr(old, f))
    return new


@method("CreateResourcePool")
def create_resource_pool(ctx: Ctx, this: Any, name: str, spec: Any) -> Any:
    parent = _pool(this)
    _check_name(parent, name)
    cpu = _allocation(spec.cpuAllocation, "cpu", complete=True)
    mem = _allocation(spec.memoryAllocation, "memory", complete=True)
    world = ctx.twin.world
    child = ResourcePool(world, world.new_id("resgroup"), name, parent, parent.owner)
    child.allocation = (cpu, mem)
    world.add(child)
    parent.pools.append(child)
    world.touch(parent, structural=True)
    _post(ctx, vim.event.ResourcePoolCreatedEvent, child, f"Created resource pool {name} in {parent.name}",
          parent=_arg(parent))
    return child.ref


@method("UpdateConfig")
def update_config(ctx: Ctx, this: Any, name: str | None = None, config: Any = None) -> None:
    pool = _pool(this)
    if _is_root(pool) and config is not None:
        raise vmodl.fault.NotSupported(msg="UpdateConfig: the root resource pool's allocation follows its cluster")
    if name and name != pool.name:
        if _is_root(pool):
            raise vmodl.fault.NotSupported(msg="UpdateConfig: the root resource pool is not renamed")
        assert isinstance(pool.parent, ResourcePool)
        _check_name(pool.parent, name, pool.ref)
    if config is not None:
        cpu = _allocation(config.cpuAllocation, "cpu", complete=False)
        mem = _allocation(config.memoryAllocation, "memory", complete=False)
        old_cpu, old_mem = pool.config_allocation()
        pool.allocation = (_merge(old_cpu, cpu), _merge(old_mem, mem))
    if name:
        pool.name = name
    ctx.twin.world.touch(pool, structural=bool(name))
    _post(ctx, vim.event.ResourcePoolReconfiguredEvent, pool, f"Updated configuration for {pool.name}")


def _check_move(target: ResourcePool, mo: Any) -> None:
    if isinstance(mo, VM):
        owner = mo.pool.owner if mo.pool is not None else None
        if owner is not target.owner:
            raise vmodl.fault.InvalidArgument(msg=f"{mo.name} is not in the cluster of {target.name}",
                                              invalidProperty="list")
        if mo.template:
            raise vmodl.fault.NotSupported(msg=f"MoveIntoResourcePool: {mo.name} is a template (it has no pool)")
        return
    if not isinstance(mo, ResourcePool) or _is_root(mo) or mo.owner is not target.owner:
        raise vmodl.fault.InvalidArgument(msg="list: only VMs and child pools of this cluster move into a pool",
                                          invalidProperty="list")
    node: Any = target
    while isinstance(node, ResourcePool):
        if node is mo:
            raise vmodl.fault.InvalidArgument(msg=f"Cannot move {mo.name} into itself or a pool below it",
                                              invalidProperty="list")
        node = node.parent
    _check_name(target, mo.name, mo.ref)


@method("MoveIntoResourcePool")
def move_into_resource_pool(ctx: Ctx, this: Any, list: Any) -> None:  # noqa: A002
    target = _pool(this)
    items = [ctx.twin.resolve(ref, ctx.session) for ref in list or []]
    for mo in items:
        _check_move(target, mo)
    for mo in items:
        if isinstance(mo, VM):
            _move_vm(ctx, mo, target)
        elif isinstance(mo, ResourcePool):
            _move_pool(ctx, mo, target)


def _move_vm(ctx: Ctx, vm: VM, target: ResourcePool) -> None:
    old = vm.pool
    if old is target:
        return
    vm.pool = target
    vm.changed()
    ctx.twin.world.moved(vm)  # views of pools list their VMs
    ctx.twin.world.touch(vm)
    record(ctx, "VmResourcePoolMovedEvent", vm, f"Moved {vm.name} from {old.name} to {target.name}",
           oldParent=_arg(old), newParent=_arg(target))


def _move_pool(ctx: Ctx, pool: ResourcePool, target: ResourcePool) -> None:
    old = pool.parent
    if old is target:
        return
    assert isinstance(old, ResourcePool)
    old.pools.remove(pool)
    target.pools.append(pool)
    pool.parent = target
    ctx.twin.world.moved(pool)
    ctx.twin.world.touch(pool)
    _post(ctx, vim.event.ResourcePoolMovedEvent, pool, f"Moved {pool.name} from {old.name} to {target.name}",
          oldParent=_arg(old), newParent=_arg(target))


def destroy_pool(ctx: Ctx, pool: ResourcePool) -> Any:
    """Destroy_Task on a pool: its VMs and child pools go to its parent."""
    async def body(task: Task) -> None:
        await elapse(pool.world, "destroy")
        if _is_root(pool):
            raise vmodl.fault.InvalidArgument(msg="The root resource pool of a cluster cannot be destroyed",
                                              invalidProperty="_this")
        remove_pool(ctx, pool, task)

    return submit(ctx, pool, body, op="ResourcePool.destroy")


def remove_pool(ctx: Ctx, pool: ResourcePool, task: Task | None = None) -> None:
    parent = pool.parent
    assert isinstance(parent, ResourcePool)
    world = pool.world
    for vm in world.instances(VM):
        if vm.pool is pool:
            vm.pool = parent
            vm.changed()
            world.moved(vm)
            world.touch(vm)
    for child in pool.pools:
        child.parent = parent
        parent.pools.append(child)
        world.moved(child)
    pool.pools = []
    parent.pools.remove(pool)
    _post(ctx, vim.event.ResourcePoolDestroyedEvent, pool, f"Removed resource pool {pool.name}", task)
    world.remove(pool)
    world.touch(parent, structural=True)


@method("DestroyChildren")
def destroy_children(ctx: Ctx, this: Any) -> None:
    """Every child pool of this pool goes (their VMs and pools come up to this one)."""
    pool = _pool(this)
    while pool.pools:
        remove_pool(ctx, pool.pools[0])
