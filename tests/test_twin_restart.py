"""A twin with a state directory restarts as a vCenter does: the inventory, the CA and the
credentials stay; sessions and tasks in flight are gone; clients log in again with the CA file
they already trust. Driven by stock pyVmomi over TLS, in-process and as `forkscale sim` killed
with SIGKILL.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import RestartableTwin, connect, find_vm

TF = vim.TaskFilterSpec


def inventory(si) -> dict:
    """What a client sees of every VM (names, ids, state, disks, snapshots, extraConfig, MACs)."""
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    out = {}
    for vm in view.view:
        snap = vm.snapshot
        out[vm.name] = {
            "moid": vm._moId, "uuid": vm.config.instanceUuid, "power": vm.runtime.powerState,
            "host": vm.runtime.host.name, "files": sorted(f.name for f in vm.layoutEx.file),
            "snapshots": [s.name for s in snap.rootSnapshotList] if snap else [],
            "extra": {o.key: o.value for o in vm.config.extraConfig},
            "macs": sorted(d.macAddress for d in vm.config.hardware.device
                           if isinstance(d, vim.vm.device.VirtualEthernetCard)),
            "shared": vm.summary.quickStats.sharedMemory > 0,
            "custom": sorted((c.key, c.value) for c in vm.customValue),
        }
    view.DestroyView()
    return out


def _old_session_fault(si) -> str:
    """What a client still holding its old session gets (its pooled connection died with the
    twin: the first call may fail on that, as with a restarted vCenter; the next one reconnects)."""
    for _ in range(2):
        try:
            si.content.sessionManager.currentSession  # noqa: B018
        except (OSError, http.client.HTTPException):  # a reset, an EOF in TLS, a closed connection
            continue
        except vmodl.MethodFault as fault:
            return type(fault).__name__.rsplit(".", 1)[-1]
        return "no fault"
    return "no connection"


def workload(si) -> list:
    """Instant, linked and full clones, extraConfig, a snapshot and a power-off: the tasks run."""
    src = find_vm(si, "src-linux")
    tasks = []
    spec = vim.vm.InstantCloneSpec(name="kept-instant", location=vim.vm.RelocateSpec(),
                                   config=[vim.option.OptionValue(key="guestinfo.kept", value="yes")])
    tasks.append(src.InstantClone_Task(spec))
    snap = src.snapshot.rootSnapshotList[0].snapshot
    tasks.append(src.CloneVM_Task(src.parent, "kept-linked", vim.vm.CloneSpec(
        snapshot=snap, location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"), powerOn=True)))
    tasks.append(src.CloneVM_Task(src.parent, "kept-full", vim.vm.CloneSpec(location=vim.vm.RelocateSpec())))
    for t in tasks:
        WaitForTask(t, si=si)
    linked = tasks[1].info.result
    tasks.append(linked.CreateSnapshot_Task("kept-snap", "before the restart", False, False))
    WaitForTask(tasks[-1], si=si)
    tasks.append(linked.PowerOffVM_Task())
    WaitForTask(tasks[-1], si=si)
    full = tasks[2].info.result
    esx2 = next(h for h in linked.runtime.host.parent.host if h.name == "esx-02")
    tasks.append(full.RelocateVM_Task(vim.vm.RelocateSpec(host=esx2)))
    WaitForTask(tasks[-1], si=si)
    si.content.customFieldsManager.AddCustomFieldDef(name="owner", moType=vim.VirtualMachine)
    full.setCustomValue("owner", "team-a")
    return tasks


def test_a_killed_twin_restarts_with_its_world_ca_and_credentials(restartable_twin):
    twin = restartable_twin
    si = connect(twin)
    tasks = workload(si)
    before = inventory(si)
    events = len(si.content.eventManager.QueryEvents(vim.event.EventFilterSpec()))
    uptime = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0].summary.quickStats.uptime
    ca_file, ca = twin.ca_file, Path(twin.ca_file).read_bytes()
    twin.handle.wait_saved()
    twin.restart(kill=True)

    assert Path(twin.ca_file).read_bytes() == ca
    assert _old_session_fault(si) == "NotAuthenticated"  # sessions do not survive a restart
    again = connect(twin)  # a stock client, the CA file it already had, the same password
    assert twin.ca_file == ca_file
    assert inventory(again) == before
    assert before["kept-full"]["host"] == "esx-02" and before["kept-full"]["custom"]  # moved and labelled
    assert [f.name for f in again.content.customFieldsManager.field] == ["owner"]
    tm = again.content.taskManager
    assert tm.recentTask == []
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        vim.Task(tasks[0]._moId, again._stub).info  # noqa: B018
    history = tm.CreateCollectorForTasks(TF(entity=TF.ByEntity(entity=find_vm(again, "src-linux"), recursion="self")))
    assert [i.key for i in history.ReadNextTasks(10)] == [t._moId for t in tasks[:3]]  # finished tasks stay
    assert len(again.content.eventManager.QueryEvents(vim.event.EventFilterSpec())) == events
    host = again.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    assert host.summary.quickStats.uptime >= uptime  # simulated time went on
    # the restarted twin hands out new identities, never old ones
    src = find_vm(again, "src-linux")
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name="after-restart", location=vim.vm.RelocateSpec()))
    WaitForTask(task, si=again)
    assert int(task._moId.split("-")[1]) > max(int(t._moId.split("-")[1]) for t in tasks)
    new = task.info.result
    assert new._moId not in {v["moid"] for v in before.values()}
    macs = {m for v in before.values() for m in v["macs"]}
    assert not macs & {d.macAddress for d in new.config.hardware.device
                       if isinstance(d, vim.vm.device.VirtualEthernetCard)}
    Disconnect(again)


def test_a_twin_killed_the_moment_it_is_up_keeps_its_credentials_and_ca(restartable_twin):
    """A client that logged in to a new twin can log in again after a kill, however early."""
    twin = restartable_twin
    password, ca = twin.password, Path(twin.ca_file).read_bytes()
    twin.restart(kill=True)
    assert twin.password == password
    assert Path(twin.ca_file).read_bytes() == ca
    Disconnect(connect(twin))


def test_a_clean_stop_saves_what_happened_last(restartable_twin):
    twin = restartable_twin
    si = connect(twin)
    src = find_vm(si, "src-linux")
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name="last-moment", location=vim.vm.RelocateSpec()))
    WaitForTask(task, si=si)
    twin.restart(kill=False)  # no wait for the periodic save: the stop saves
    assert "last-moment" in inventory(connect(twin))


def test_a_guest_booting_at_the_restart_comes_up_after_it(tmp_path):
    slow, fast = tmp_path / "slow.yaml", tmp_path / "fast.yaml"
    slow.write_text("latency: {guest_boot: 600000}\n")  # 10 real minutes at 1/1000: booting at the kill
    fast.write_text("latency: {guest_boot: 30}\n")  # the world file's settings apply after a restart
    twin = RestartableTwin(tmp_path / "sim", world=str(slow))
    try:
        si = connect(twin)
        src = find_vm(si, "src-linux")
        snap = src.snapshot.rootSnapshotList[0].snapshot
        task = src.CloneVM_Task(src.parent, "booting", vim.vm.CloneSpec(
            snapshot=snap, location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"), powerOn=True))
        WaitForTask(task, si=si)
        assert task.info.result.guest.toolsRunningStatus == "guestToolsNotRunning"
        twin.handle.wait_saved()
        twin.kill()
        twin.options["world"] = str(fast)
        twin.start()
        vm = find_vm(connect(twin), "booting")
        deadline = time.monotonic() + 30
        while vm.guest.toolsRunningStatus != "guestToolsRunning":
            assert time.monotonic() < deadline, "the guest never came up after the restart"
            time.sleep(0.05)
    finally:
        twin.stop()


def test_one_twin_per_state_directory_and_a_fresh_start(restartable_twin, tmp_path):
    from forkscale.sim import start_in_thread

    twin = restartable_twin
    si = connect(twin)
    src = find_vm(si, "src-linux")
    WaitForTask(src.InstantClone_Task(vim.vm.InstantCloneSpec(name="gone-with-fresh",
                                                               location=vim.vm.RelocateSpec())), si=si)
    with pytest.raises(RuntimeError, match="in use by another running twin"):
        start_in_thread(state_dir=str(twin.state_dir), persist=True)
    twin.stop()
    fresh = start_in_thread(state_dir=str(twin.state_dir), persist=True, fresh=True, time_scale=0.001)
    try:
        assert sorted(inventory(connect(fresh))) == ["src-linux", "src-win"]
    finally:
        fresh.stop()


# the command, killed for real -------------------------------------------------------------------
def _sim(state_dir: Path, port: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "forkscale.cli", "sim", "--state-dir", str(state_dir), "--port", str(port),
           "--time-scale", "0.001", *extra]
    env = {**os.environ, "FORKSCALE_SIM_PASSWORD": "restart-pw"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _banner(proc: subprocess.Popen) -> dict:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"forkscale sim printed no banner: {proc.stderr.read() if proc.stderr else ''}")


class _Handle:
    def __init__(self, banner: dict) -> None:
        self.url, self.user, self.password, self.ca_file = (banner[k] for k in ("url", "user", "password", "ca_file"))

    def admin_stats(self) -> dict:
        auth = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req = urllib.request.Request(self.url.replace("/sdk", "/forkscale-sim/admin"),
                                     headers={"Authorization": f"Basic {auth}"})
        ctx = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return json.loads(resp.read())


def test_forkscale_sim_killed_with_sigkill_restarts_with_its_world(tmp_path):
    state = tmp_path / "state"
    proc = _sim(state, 0)
    try:
        handle = _Handle(_banner(proc))
        port = int(handle.url.rsplit(":", 1)[1].split("/")[0])
        si = connect(handle)
        src = find_vm(si, "src-linux")
        WaitForTask(src.InstantClone_Task(vim.vm.InstantCloneSpec(name="survivor", location=vim.vm.RelocateSpec())),
                    si=si)
        before = inventory(si)
        deadline = time.monotonic() + 30
        while (stats := handle.admin_stats())["state_saved_seq"] < stats["world_seq"]:
            assert time.monotonic() < deadline, f"never saved: {stats}"
            time.sleep(0.1)
        ca = Path(handle.ca_file).read_bytes()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "world.state").stat().st_mode & 0o777) == "0o600"
    again = _sim(state, port)
    try:
        handle2 = _Handle(_banner(again))
        assert handle2.url == handle.url and Path(handle2.ca_file).read_bytes() == ca
        assert inventory(connect(handle)) == before  # the old handle: same URL, CA file and password
    finally:
        again.terminate()
        again.wait(timeout=30)
    (state / "world.state").write_bytes(b"not a pickle")
    broken = _sim(state, port)
    out, err = broken.communicate(timeout=60)
    assert broken.returncode == 2 and err.strip().count("\n") == 0, err
    assert "world.state" in err and "--fresh" in err
    lonely = subprocess.run([sys.executable, "-m", "forkscale.cli", "sim", "--fresh"], capture_output=True, text=True,
                            timeout=60)
    assert lonely.returncode == 2 and lonely.stderr.count("\n") == 1 and "--state-dir" in lonely.stderr
