"""Host maintenance mode on the twin through stock pyVmomi: entered only once the host runs no VM
(the twin has no DRS), a timeout that passes first fails the task, a host in maintenance takes
no new VM, and the events vCenter posts."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from tests.fixtures.twin import find_vm
from tests.twin_helpers import events_of, fault_of, host, linked_clone, run, wait_for


def in_maintenance(h) -> tuple[bool, bool]:
    return h.runtime.inMaintenanceMode, h.summary.runtime.inMaintenanceMode


def test_an_idle_host_enters_and_exits(si):
    esx = host(si, "esx-04")
    run(si, esx.EnterMaintenanceMode_Task(timeout=0))
    assert in_maintenance(esx) == (True, True)
    assert isinstance(fault_of(si, esx.EnterMaintenanceMode_Task(timeout=0)), vim.fault.InvalidState)
    run(si, esx.ExitMaintenanceMode_Task(timeout=0))
    assert in_maintenance(esx) == (False, False)
    assert isinstance(fault_of(si, esx.ExitMaintenanceMode_Task(timeout=0)), vim.fault.InvalidState)
    assert events_of(si, esx) == ["EnteringMaintenanceModeEvent", "EnteredMaintenanceModeEvent",
                                  "ExitMaintenanceModeEvent"]


def test_a_host_in_maintenance_takes_no_new_vm(si):
    esx = host(si, "esx-04")
    off = linked_clone(si, "mm-off")
    run(si, off.MigrateVM_Task(host=esx, priority="defaultPriority"))
    run(si, esx.EnterMaintenanceMode_Task(timeout=0))  # a powered-off VM may stay
    fault = fault_of(si, off.PowerOnVM_Task())
    assert isinstance(fault, vim.fault.InvalidHostState) and fault.host == esx
    other = linked_clone(si, "mm-other")
    assert isinstance(fault_of(si, other.MigrateVM_Task(host=esx, priority="defaultPriority")),
                      vim.fault.InvalidHostState)
    src = find_vm(si, "src-linux")
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(host=esx), snapshot=src.snapshot.currentSnapshot)
    assert isinstance(fault_of(si, src.CloneVM_Task(folder=src.parent, name="mm-clone", spec=spec)),
                      vim.fault.InvalidHostState)
    run(si, off.MigrateVM_Task(host=host(si, "esx-03"), priority="defaultPriority"))  # leaving is fine
    run(si, off.PowerOnVM_Task())


def test_running_vms_keep_a_host_out_of_maintenance(si):
    esx = host(si, "esx-01")  # src-linux and src-win run there
    fault = fault_of(si, esx.EnterMaintenanceMode_Task(timeout=0))
    assert isinstance(fault, vim.fault.InvalidState) and "src-linux" in fault.msg and "src-win" in fault.msg
    assert isinstance(fault_of(si, esx.EnterMaintenanceMode_Task(timeout=5)), vim.fault.Timedout)
    assert in_maintenance(esx) == (False, False)


def test_entering_waits_until_the_host_is_evacuated(twin, si):
    esx = host(si, "esx-01")
    task = esx.EnterMaintenanceMode_Task(timeout=600_000)  # simulated seconds: 10 real minutes at most
    wait_for(lambda: task.info.state, lambda s: s == "running")
    run(si, find_vm(si, "src-win").PowerOffVM_Task())
    assert task.info.state == "running"  # src-linux still runs there
    run(si, find_vm(si, "src-linux").RelocateVM_Task(vim.vm.RelocateSpec(host=host(si, "esx-02"))))
    # polled, not WaitForTask in a thread: one session's property collector is not for two threads
    assert wait_for(lambda: task.info.state, lambda s: s != "running", timeout=30) == "success"
    assert in_maintenance(esx) == (True, True)


@pytest.mark.parametrize("evacuate", [True, False])
def test_evacuate_powered_off_vms_waits_for_them_too(si, evacuate):
    esx = host(si, "esx-04")
    vm = linked_clone(si, "mm-parked")
    run(si, vm.MigrateVM_Task(host=esx, priority="defaultPriority"))
    task = esx.EnterMaintenanceMode_Task(timeout=0, evacuatePoweredOffVms=evacuate)
    if evacuate:
        fault = fault_of(si, task)
        assert isinstance(fault, vim.fault.InvalidState) and "mm-parked" in fault.msg
    else:
        run(si, task)
