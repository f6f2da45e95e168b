"""What the twin's method tests share: clones made as a client makes them, waits with deadlines,
and events read back the way govc and PowerCLI print them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find, find_vm

EV = vim.event.EventFilterSpec
GiB = 1024**3


def run(si: Any, task: Any) -> Any:
    WaitForTask(task, si=si)
    return task.info.result


def fault_of(si: Any, task: Any) -> vmodl.MethodFault:
    with pytest.raises(vmodl.MethodFault) as info:
        WaitForTask(task, si=si)
    return info.value


def linked_clone(si: Any, name: str, *, source: str = "src-linux", power_on: bool = False,
                 datastore: Any = None) -> Any:
    src = find_vm(si, source)
    snap = src.snapshot.rootSnapshotList[0].snapshot
    loc = vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking", datastore=datastore)
    return run(si, src.CloneVM_Task(folder=src.parent, name=name,
                                    spec=vim.vm.CloneSpec(location=loc, snapshot=snap, powerOn=power_on)))


def full_clone(si: Any, name: str, *, source: str = "src-linux", datastore: Any = None,
               power_on: bool = False) -> Any:
    src = find_vm(si, source)
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(datastore=datastore), powerOn=power_on)
    return run(si, src.CloneVM_Task(folder=src.parent, name=name, spec=spec))


def instant_clone(si: Any, name: str, *, source: str = "src-linux") -> Any:
    src = find_vm(si, source)
    return run(si, src.InstantClone_Task(vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec())))


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    """Poll `read()` until `done(value)`; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(0.02)
        value = read()
    return value


def kind(event: Any) -> str:
    """An event's class name, or an extended event's id."""
    if isinstance(event, vim.event.EventEx):
        return str(event.eventTypeId)
    return type(event).__name__.rsplit(".", 1)[-1]


def events_of(si: Any, entity: Any, *, tasks: bool = False) -> list[str]:
    """The kinds of the events about one entity, oldest first (TaskEvents left out unless asked)."""
    evs = si.content.eventManager.QueryEvents(EV(entity=EV.ByEntity(entity=entity, recursion="self")))
    return [kind(e) for e in reversed(evs) if tasks or not isinstance(e, vim.event.TaskEvent)]


def ds(si: Any, name: str) -> Any:
    return find(si, vim.Datastore, name)


def host(si: Any, name: str) -> Any:
    return find(si, vim.HostSystem, name)


def disk_of(vm: Any, label: str | None = None) -> Any:
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    return disks[0] if label is None else next(d for d in disks if d.deviceInfo.label == label)


def chain(vm: Any, label: str | None = None) -> list[str]:
    """A disk's files from the child-most up to the base, following backing.parent."""
    names, b = [], disk_of(vm, label).backing
    while b is not None:
        names.append(b.fileName)
        b = b.parent
    return names


def free(si: Any, name: str) -> int:
    return int(ds(si, name).summary.freeSpace)


def quiet_sources(si: Any) -> None:
    """Stop the default world's sources so their running deltas stop growing and space holds still."""
    for name in ("src-linux", "src-win"):
        run(si, find_vm(si, name).PowerOffVM_Task())
