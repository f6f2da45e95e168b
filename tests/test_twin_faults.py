"""Faults on demand, through the admin API, seen by a stock pyVmomi client — and the twin keeps
serving afterwards: failure rates, one-shot failures, slow tasks, a host going down, a source
losing its frozen state, expired sessions, and faults declared in the world file."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from base64 import b64encode
from urllib.parse import urlsplit

import pytest
import yaml
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from forkscale.sim import start_in_thread
from forkscale.sim.server import ADMIN
from tests.fixtures.twin import connect, find_vm


def spec(name):
    return vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec())


def outcome(si, task):
    """'ok' or the fault's class."""
    try:
        WaitForTask(task, si=si)
    except vmodl.MethodFault as fault:
        return type(fault)
    return "ok"


def chain_depth(vm):
    return len(vm.layoutEx.disk[0].chain)


def assert_serving(si, name):
    """The twin still answers reads and still clones."""
    src = find_vm(si, "src-linux")
    assert src.runtime.powerState == "poweredOn"
    task = src.InstantClone_Task(spec(name))
    WaitForTask(task, si=si)
    assert task.info.result.name == name


def admin_http(twin, payload=None, password=None):
    parts = urlsplit(twin.url)
    url = f"{parts.scheme}://{parts.netloc}{ADMIN}"
    auth = b64encode(f"{twin.user}:{password or twin.password}".encode()).decode()
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"Basic {auth}",
                                                          "Content-Type": "application/json"})
    import ssl

    ctx = ssl.create_default_context(cafile=twin.ca_file)
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_failure_rate_fails_tasks_with_the_chosen_fault(twin, si):
    src = find_vm(si, "src-linux")
    twin.admin("failure_rate", method="InstantClone_Task", rate=1.0, fault="TaskInProgress")
    results = [outcome(si, src.InstantClone_Task(spec(f"rate-a{i}"))) for i in range(3)]
    assert results == [vim.fault.TaskInProgress] * 3
    twin.admin("failure_rate", method="InstantClone_Task", rate=0.5)
    results = [outcome(si, src.InstantClone_Task(spec(f"rate-b{i}"))) for i in range(40)]
    failed = results.count(vmodl.fault.SystemError)
    assert results.count("ok") + failed == 40
    assert 5 <= failed <= 35  # about half, seeded
    stats = twin.admin("stats")
    assert stats["faults_injected"] == 3 + failed
    twin.admin("failure_rate", method="InstantClone_Task", rate=0.0)
    assert_serving(si, "rate-after")
    with pytest.raises(ValueError):
        twin.admin("failure_rate", method="InstantClone_Task", rate=2.0)
    with pytest.raises(ValueError):
        twin.admin("failure_rate", method="InstantClone_Task", rate=0.5, fault="NoSuchFault")


def test_fail_next_hits_exactly_the_next_calls(twin, si):
    src = find_vm(si, "src-linux")
    twin.admin("fail_next", method="PowerOffVM_Task", fault="InvalidState", count=2)
    assert outcome(si, src.PowerOffVM_Task()) is vim.fault.InvalidState
    assert outcome(si, src.PowerOffVM_Task()) is vim.fault.InvalidState
    assert outcome(si, src.PowerOffVM_Task()) == "ok"
    assert src.runtime.powerState == "poweredOff"
    # a plain (non-task) method fails in the call itself
    twin.admin("fail_next", method="CreateContainerView", fault="NotAuthenticated")
    content = si.content
    with pytest.raises(vim.fault.NotAuthenticated):
        content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    assert len(view.view) == 2


def test_slow_tasks_take_longer(twin, si):
    src = find_vm(si, "src-linux")

    def duration(task):
        WaitForTask(task, si=si)
        return (task.info.completeTime - task.info.startTime).total_seconds()

    normal = duration(src.InstantClone_Task(spec("fast-1")))
    twin.admin("slow", op="instant", factor=400)  # 1 simulated s at 1/1000 time -> 0.4 s
    slow = duration(src.InstantClone_Task(spec("slow-1")))
    assert normal < 0.1 and slow >= 0.3
    twin.admin("slow", op="instant", factor=1)
    assert duration(src.InstantClone_Task(spec("fast-2"))) < 0.1


def test_host_down_fails_its_operations_until_it_returns(twin, si):
    src = find_vm(si, "src-linux")
    host = src.runtime.host
    twin.admin("host_down", host="esx-01")
    assert host.runtime.connectionState == "notResponding"
    assert src.runtime.connectionState == "disconnected"
    assert outcome(si, src.InstantClone_Task(spec("down-1"))) is vmodl.fault.HostNotConnected
    check = si.content.vmProvisioningChecker.CheckInstantClone_Task(vm=src, spec=spec("down-probe"))
    WaitForTask(check, si=si)
    assert any(isinstance(e, vmodl.fault.HostNotConnected) for e in check.info.result[0].error)
    # other hosts keep working, and so does the API
    other = [h for h in si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.HostSystem],
                                                                    True).view if h != host]
    assert all(h.runtime.connectionState == "connected" for h in other)
    twin.admin("host_down", host="esx-01", down=False)
    assert host.runtime.connectionState == "connected"
    assert_serving(si, "down-after")


def test_lose_frozen_turns_a_frozen_source_back_into_a_running_one(twin, si):
    def freeze(tw, name):
        vm = next(v for v in tw.world.objects.values() if getattr(v, "name", None) == name)
        vm.frozen = True
        vm.changed()

    twin.call(freeze, "src-linux")
    src = find_vm(si, "src-linux")
    assert src.runtime.instantCloneFrozen is True
    base = chain_depth(src)
    for i in range(3):
        WaitForTask(src.InstantClone_Task(spec(f"frozen-{i}")), si=si)
    assert chain_depth(src) == base + 1  # a frozen source gets one delta, however many clones
    twin.admin("lose_frozen", vm="src-linux")
    assert src.runtime.instantCloneFrozen is False
    assert src.runtime.powerState == "poweredOn"
    WaitForTask(src.InstantClone_Task(spec("thawed-1")), si=si)
    assert chain_depth(src) == base + 2  # running again: a delta per clone
    with pytest.raises(KeyError):
        twin.admin("lose_frozen", vm="no-such-vm")


def test_expired_sessions_then_a_fresh_login_keeps_going(twin, si):
    twin.admin("expire_sessions")
    with pytest.raises(vim.fault.NotAuthenticated):
        find_vm(si, "src-linux")
    fresh = connect(twin)
    try:
        assert_serving(fresh, "after-expiry")
        assert twin.admin("stats")["sessions"] == 1
    finally:
        Disconnect(fresh)


def test_admin_over_http_needs_the_password(twin, si):
    status, stats = admin_http(twin)
    assert status == 200 and stats["sessions"] >= 1 and stats["requests"] > 0
    status, body = admin_http(twin, {"action": "fail_next", "method": "PowerOnVM_Task", "fault": "InvalidState"})
    assert (status, body) == (200, {"ok": True})
    src = find_vm(si, "src-linux")
    WaitForTask(src.PowerOffVM_Task(), si=si)
    assert outcome(si, src.PowerOnVM_Task()) is vim.fault.InvalidState
    assert outcome(si, src.PowerOnVM_Task()) == "ok"
    with pytest.raises(urllib.error.HTTPError) as info:
        admin_http(twin, password="wrong")
    assert info.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as info:
        admin_http(twin, {"action": "no-such-action"})
    assert info.value.code == 400
    assert_serving(si, "admin-after")


def test_failure_rates_declared_in_the_world_file(tmp_path):
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump({"faults": {"failure_rate": {
        "PowerOffVM_Task": 1.0, "InstantClone_Task": {"rate": 1.0, "fault": "InsufficientResourcesFault"}}}}))
    handle = start_in_thread(world=str(world), time_scale=0.001, state_dir=str(tmp_path / "sim"))
    si = connect(handle)
    try:
        src = find_vm(si, "src-linux")
        assert outcome(si, src.PowerOffVM_Task()) is vmodl.fault.SystemError
        assert outcome(si, src.InstantClone_Task(spec("w-1"))) is vim.fault.InsufficientResourcesFault
        handle.admin("failure_rate", method="InstantClone_Task", rate=0.0)
        assert_serving(si, "w-2")
    finally:
        Disconnect(si)
        handle.stop()
