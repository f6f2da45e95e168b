"""The provisioning checker: would this clone, relocation or migration work right now? (the same checks
the task itself makes)"""

from __future__ import annotations

from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

from ..dispatch import Ctx, method
from ..inventory import Folder
from ..tasks import Task
from ..vm import VM
from .clone import clone_faults
from .common import elapse, invalid_power, submit
from .instant import instant_clone_faults
from .placement import folder_of, resolve_placement
from .relocate import move_faults, plan_move
from .validate import check_clone_spec, check_instant_spec

CHECK_RESULTS = VmomiSupport.GetVmodlType("vim.vm.check.Result[]")


def _name_taken(folder: Folder, name: str) -> list[vmodl.MethodFault]:
    dup = folder.entries.named(name)
    return [] if dup is None else [vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name,
                                                            object=dup.ref)]


@method("CheckInstantClone_Task")
def check_instant_clone(ctx: Ctx, this: Any, vm: Any, spec: Any, testType: list[str] | None = None) -> Any:  # noqa: N803
    src = ctx.twin.resolve(vm, ctx.session)
    if not isinstance(src, VM):
        raise vmodl.fault.InvalidArgument(invalidProperty="vm")
    check_instant_spec(src, spec)
    placement = resolve_placement(ctx, src, spec.location, instant=True)

    async def body(task: Task) -> Any:
        await elapse(src.world, "check")
        faults = instant_clone_faults(ctx, src, spec) + _name_taken(placement.folder, spec.name)
        return CHECK_RESULTS([vim.vm.check.Result(vm=src.ref, host=src.host.ref, error=faults, warning=[])])

    return submit(ctx, src, body, op="ProvisioningChecker.checkInstantClone")


@method("CheckClone_Task")
def check_clone(ctx: Ctx, this: Any, vm: Any, folder: Any, name: str, spec: Any,
                testType: list[str] | None = None) -> Any:  # noqa: N803
    src = ctx.twin.resolve(vm, ctx.session)
    if not isinstance(src, VM):
        raise vmodl.fault.InvalidArgument(invalidProperty="vm")
    target = folder_of(ctx, folder, src.parent)
    check_clone_spec(ctx, src, name, spec)
    _, pool, ds, host = resolve_placement(ctx, src, spec.location, instant=False)

    async def body(task: Task) -> Any:
        await elapse(src.world, "check")
        faults = clone_faults(ctx, src, spec, ds, host) + _name_taken(target, name)
        return CHECK_RESULTS([vim.vm.check.Result(vm=src.ref, host=host.ref, error=faults, warning=[])])

    return submit(ctx, src, body, op="ProvisioningChecker.checkClone")


@method("CheckRelocate_Task")
def check_relocate(ctx: Ctx, this: Any, vm: Any, spec: Any, testType: list[str] | None = None) -> Any:  # noqa: N803
    target = _vm(ctx, vm)
    move = plan_move(ctx, target, spec)

    async def body(task: Task) -> Any:
        await elapse(target.world, "check")
        return CHECK_RESULTS([vim.vm.check.Result(vm=target.ref, host=move.host.ref, error=move_faults(target, move),
                                                  warning=[])])

    return submit(ctx, target, body, op="ProvisioningChecker.checkRelocate")


@method("CheckMigrate_Task")
def check_migrate(ctx: Ctx, this: Any, vm: Any, host: Any = None, pool: Any = None, state: str | None = None,
                  testType: list[str] | None = None) -> Any:  # noqa: N803
    target = _vm(ctx, vm)
    move = plan_move(ctx, target, vim.vm.RelocateSpec(host=host, pool=pool))

    async def body(task: Task) -> Any:
        await elapse(target.world, "check")
        faults = move_faults(target, move)
        if state is not None and state != target.power_state:
            faults.append(invalid_power(target, state))
        return CHECK_RESULTS([vim.vm.check.Result(vm=target.ref, host=move.host.ref, error=faults, warning=[])])

    return submit(ctx, target, body, op="ProvisioningChecker.checkMigrate")


def _vm(ctx: Ctx, ref: Any) -> VM:
    mo = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(mo, VM):
        raise vmodl.fault.InvalidArgument(msg="vm is not a virtual machine", invalidProperty="vm")
    return mo
