"""The twin's admin API: fault injection and inspection, for tests and demos (served at /forkscale-sim/admin).

`disk_write` / `disk_read` {vm, path, data, disk} play the guest writing and reading a file on one
of its disks (its first, or the one whose label or key is `disk`): the write lands in the disk's
child-most file, reads look through the chain, and the data travels with the file (detach,
attach to another VM, relocate, promote, full clone).
"""

from __future__ import annotations

from typing import Any, TypeVar

from .inventory import Entity, Host
from .ops.power import power_off_now, power_on_now
from .service import Twin
from .vm import VM, Disk
from .world import World

ADMIN = "/forkscale-sim/admin"
E = TypeVar("E", bound=Entity)


def admin_action(twin: Twin, action: str, args: dict[str, Any]) -> Any:
    """Fault injection and inspection, for tests and demos (also served at /forkscale-sim/admin)."""
    faults = twin.world.faults
    if action == "stats":
        return {"requests": twin.request_count, "methods": dict(twin.method_counts),
                "sessions": len(twin.sessions), "tasks_completed": twin.world.tasks.completed,
                "faults_injected": faults.injected, **(twin.keeper.stats() if twin.keeper else {})}
    if action == "failure_rate":
        faults.set_rate(args["method"], float(args["rate"]), args.get("fault", "SystemError"))
    elif action == "fail_next":
        faults.fail_next(args["method"], args.get("fault", "SystemError"), int(args.get("count", 1)))
    elif action == "slow":
        faults.slow[args["op"]] = float(args["factor"])
    elif action == "host_down":
        _host_down(twin.world, args["host"], bool(args.get("down", True)))
    elif action == "expire_sessions":
        for s in list(twin.sessions.values()):
            twin.end_session(s)
    elif action == "lose_frozen":
        _lose_frozen(twin.world, args["vm"])
    elif action == "freeze":
        _freeze(twin.world, args["vm"])
    elif action == "power_off":
        power_off_now(_by_name(twin.world, VM, args["vm"]))
    elif action == "time_scale":
        twin.world.time_scale = float(args["value"])
    elif action == "disk_write":
        _disk(twin.world, args).top.content[str(args["path"])] = str(args["data"]).encode()
    elif action == "disk_read":
        data = _disk(twin.world, args).top.read(str(args["path"]))
        return {"data": None if data is None else data.decode(errors="replace")}
    else:
        raise ValueError(f"unknown admin action {action!r}")
    return {"ok": True}


def _host_down(world: World, name: str, down: bool) -> None:
    host = _by_name(world, Host, name)
    host.connected = not down
    world.touch(host)
    for vm in list(host.vms):
        vm.changed()


def _lose_frozen(world: World, name: str) -> None:
    """The source was power-cycled: running again, no longer frozen."""
    vm = _by_name(world, VM, name)
    vm.frozen = False
    vm.source_delta_done = False
    power_on_now(vm, boot=False)


def _freeze(world: World, name: str) -> None:
    """As if the guest had run `vmware-rpctool "instantclone.freeze"` (simulated guest agent)."""
    vm = _by_name(world, VM, name)
    if vm.power_state != "poweredOn":
        raise ValueError(f"{vm.name} is not powered on")
    vm.frozen = True
    vm.changed()


def _disk(world: World, args: dict[str, Any]) -> Disk:
    """A VM's disk by label (`Hard disk 2`), device key, or the first one, for the guest's file writes."""
    vm = _by_name(world, VM, args["vm"])
    which = args.get("disk")
    for d in vm.disks:
        if which is None or which in (d.label, d.key, str(d.key)):
            return d
    raise KeyError(f"{vm.name} has no disk {which!r}")


def _by_name(world: World, cls: type[E], name: str) -> E:
    """The entity of class `cls` with that name (or moid); KeyError if there is none."""
    for mo in world.instances(cls):
        if mo.name == name or mo.moid == name:
            return mo
    raise KeyError(f"no {cls.kind.__name__} named {name!r}")
