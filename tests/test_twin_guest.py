"""Guest operations, the freeze and the `vmware-rpctool` stand-in, through stock pyVmomi and real processes.

The twin runs in-process (fixture `twin`); every vSphere call is real SOAP over verified TLS, and
the stand-in (forkscale/sim/rpctool.py) runs as a separate process speaking HTTPS to the twin.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyVim.task import WaitForTask, WaitForTasks
from pyVmomi import vim, vmodl

from tests.fixtures.twin import find_vm  # noqa: F401  (test_guest_e2e imports it from here)

REPO = Path(__file__).resolve().parents[1]
RPCTOOL = REPO / "forkscale" / "sim" / "rpctool.py"
GUEST_USER, GUEST_PASSWORD = "root", "vmfork-guest"
FREEZE = vim.vm.guest.ProcessManager.ProgramSpec(programPath="/usr/bin/vmware-rpctool",
                                                 arguments='"instantclone.freeze"')


# helpers (also used by test_guest_e2e.py; find_vm is re-exported from tests.fixtures.twin) -----------
def auth(user=GUEST_USER, password=GUEST_PASSWORD):
    return vim.vm.guest.NamePasswordAuthentication(username=user, password=password, interactiveSession=False)


def procs(si):
    return si.content.guestOperationsManager.processManager


def extra(vm) -> dict[str, str]:
    return {o.key: o.value for o in vm.config.extraConfig}


def chain_names(vm) -> list[str]:
    """Descriptor names of the first disk's delta chain, base first (layoutEx: one unit per level)."""
    layout = vm.layoutEx
    files = {f.key: f.name for f in layout.file}
    return [files[unit.fileKey[0]] for unit in layout.disk[0].chain]


def wait_until(si, vms, path, done, timeout=15.0):
    """Wait with one private property collector until `done({moid: value of path})`; returns that dict."""
    pc = si.content.propertyCollector.CreatePropertyCollector()
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm) for vm in vms],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=[path])])
        pc.CreateFilter(spec, partialUpdates=False)
        values: dict[str, object] = {}
        version = ""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting on {path}: {values}")
            update = pc.WaitForUpdatesEx(version, vmodl.query.PropertyCollector.WaitOptions(
                maxWaitSeconds=max(1, min(5, int(left)))))
            if update is not None:
                version = update.version
                for fs in update.filterSet:
                    for obj in fs.objectSet:
                        for change in obj.changeSet:
                            if change.name == path:
                                values[obj.obj._moId] = change.val
            if len(values) == len(vms) and done(values):
                return values
    finally:
        pc.DestroyPropertyCollector()


def options(val) -> dict[str, str]:
    return {o.key: o.value for o in val or []}


def wait_frozen(si, vm, frozen=True, timeout=10.0):
    wait_until(si, [vm], "runtime.instantCloneFrozen", lambda v: all(x is frozen for x in v.values()), timeout)


def instant_clone_spec(name, config=None, mac=None):
    location = vim.vm.RelocateSpec()
    if mac is not None:
        nic = vim.vm.device.VirtualVmxnet3(key=4000, addressType="manual", macAddress=mac)
        location.deviceChange = [vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)]
    cfg = [vim.option.OptionValue(key=k, value=v) for k, v in (config or {}).items()]
    return vim.vm.InstantCloneSpec(name=name, location=location, config=cfg)


def rpctool_env(handle, vm=None, token=None, **extra_env) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FORKSCALE_TWIN_URL": handle.url,
           "FORKSCALE_TWIN_CA": handle.ca_file}
    if vm is not None:
        env["FORKSCALE_TWIN_VM"] = vm
    if token is not None:
        env["FORKSCALE_TWIN_TOKEN"] = token
    else:
        env["FORKSCALE_TWIN_USER"] = handle.user
        env["FORKSCALE_TWIN_PASSWORD"] = handle.password
    env.update({k: str(v) for k, v in extra_env.items()})
    return env


def rpctool(handle, *args, vm="src-linux", token=None, timeout=20, **extra_env):
    return subprocess.run([sys.executable, str(RPCTOOL), *args], env=rpctool_env(handle, vm, token, **extra_env),
                          capture_output=True, text=True, timeout=timeout)


def set_latency(handle, op: str, simulated_s: float) -> None:
    handle.call(lambda t: t.world.latencies.__setitem__(op, simulated_s))


def kill_group(proc: subprocess.Popen) -> None:
    """End a process started with start_new_session=True and whatever of its session still runs
    (clone continuations outlive the source's call)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


# guest operations -------------------------------------------------------------------------------
def test_start_program_freezes_the_source_and_tools_stop(si):
    src = find_vm(si, "src-linux")
    assert src.runtime.instantCloneFrozen is False
    assert src.guest.toolsRunningStatus == "guestToolsRunning"
    pid = procs(si).StartProgramInGuest(src, auth(), FREEZE)
    assert isinstance(pid, int) and pid > 0
    wait_frozen(si, src)
    assert src.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert src.summary.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert src.guest.guestOperationsReady is False
    # a frozen guest runs nothing: its guest operations agent cannot be contacted
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        procs(si).ListProcessesInGuest(src, auth(), [pid])
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        procs(si).StartProgramInGuest(src, auth(), FREEZE)


def test_the_guest_script_path_also_freezes_and_reports_frozen(si):
    src = find_vm(si, "src-linux")
    spec = vim.vm.guest.ProcessManager.ProgramSpec(programPath="/usr/local/sbin/forkscale-guest", arguments="freeze")
    procs(si).StartProgramInGuest(src, auth(), spec)
    wait_frozen(si, src)
    assert extra(src)["guestinfo.forkscale.status"] == "frozen"


def test_ordinary_programs_do_not_freeze(si):
    src = find_vm(si, "src-linux")
    ok = procs(si).StartProgramInGuest(src, auth(), vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/usr/bin/vmware-rpctool", arguments='"info-get guestinfo.x"'))
    bad = procs(si).StartProgramInGuest(src, auth(), vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/false", arguments=""))
    deadline = time.monotonic() + 10
    while True:
        listed = {p.pid: p for p in procs(si).ListProcessesInGuest(src, auth(), [ok, bad])}
        if all(p.endTime is not None for p in listed.values()):
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.02)
    assert (listed[ok].exitCode, listed[bad].exitCode) == (0, 1)
    assert listed[ok].cmdLine == '"/usr/bin/vmware-rpctool" "info-get guestinfo.x"'
    assert src.runtime.instantCloneFrozen is False


def test_bad_guest_credentials_are_invalid_guest_login(si):
    src = find_vm(si, "src-linux")
    with pytest.raises(vim.fault.InvalidGuestLogin):
        procs(si).StartProgramInGuest(src, auth(password="wrong"), FREEZE)
    with pytest.raises(vim.fault.InvalidGuestLogin):
        procs(si).ListProcessesInGuest(src, auth(user="admin"), [])
    assert src.runtime.instantCloneFrozen is False


def test_powered_off_vm_has_no_guest_operations(si):
    src = find_vm(si, "src-linux")
    WaitForTask(src.PowerOffVM_Task(), si=si)
    with pytest.raises(vim.fault.InvalidPowerState) as err:
        procs(si).StartProgramInGuest(src, auth(), FREEZE)
    assert err.value.existingState == "poweredOff"
    with pytest.raises(vim.fault.InvalidPowerState):
        procs(si).ListProcessesInGuest(src, auth(), [])


def test_a_booting_guest_is_unavailable_until_tools_run(si, twin):
    src = find_vm(si, "src-linux")
    set_latency(twin, "guest_boot", 1e6)  # this boot never gets VMware Tools up
    WaitForTask(src.ResetVM_Task(), si=si)
    assert src.guest.toolsRunningStatus == "guestToolsNotRunning"
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        procs(si).StartProgramInGuest(src, auth(), FREEZE)
    set_latency(twin, "guest_boot", 30.0)
    WaitForTask(src.ResetVM_Task(), si=si)
    wait_until(si, [src], "guest.toolsRunningStatus", lambda v: set(v.values()) == {"guestToolsRunning"})
    assert procs(si).StartProgramInGuest(src, auth(), FREEZE) > 0


def test_list_processes_shows_the_freeze_running_then_returned_in_a_clone(si, twin):
    src = find_vm(si, "src-linux")
    set_latency(twin, "freeze", 1e6)  # this freeze call never completes: time to look at it
    pid = procs(si).StartProgramInGuest(src, auth(), FREEZE)
    (proc,) = procs(si).ListProcessesInGuest(src, auth(), [pid])
    assert proc.pid == pid and proc.owner == GUEST_USER and proc.name == "vmware-rpctool"
    assert "instantclone.freeze" in proc.cmdLine
    assert proc.startTime is not None and proc.endTime is None and proc.exitCode is None
    everything = {p.pid for p in procs(si).ListProcessesInGuest(src, auth(), [])}
    assert {1, pid} <= everything
    set_latency(twin, "freeze", 1.0)
    pid2 = procs(si).StartProgramInGuest(src, auth(), FREEZE)  # this one freezes the guest
    wait_frozen(si, src)
    task = src.InstantClone_Task(instant_clone_spec("resumed-1", {"guestinfo.forkscale.id": "c1"}))
    WaitForTask(task, si=si)
    clone = task.info.result
    # the twin plays the clone's guest: it resumes and its tools come up
    wait_until(si, [clone], "guest.toolsRunningStatus", lambda v: set(v.values()) == {"guestToolsRunning"})
    in_clone = procs(si).ListProcessesInGuest(clone, auth(), [pid, pid2])
    assert [p.pid for p in in_clone] == [pid, pid2]
    for p in in_clone:  # both calls were blocked at the fork: both return inside the clone
        assert p.exitCode == 0 and p.endTime is not None
    assert in_clone[0].cmdLine == proc.cmdLine
    assert extra(clone).get("guestinfo.forkscale.status") == "ready"  # simulated guest applied identity


def test_freeze_then_three_clones_grow_the_source_chain_once(si):
    src = find_vm(si, "src-linux")
    before = chain_names(src)
    procs(si).StartProgramInGuest(src, auth(), FREEZE)
    wait_frozen(si, src)
    tasks = [src.InstantClone_Task(instant_clone_spec(f"fz-{i}")) for i in range(3)]
    WaitForTasks(tasks, si=si)
    after = chain_names(src)
    assert len(after) == len(before) + 1
    assert after[:-1] == before  # the fork point is the source's top at the freeze
    for t in tasks:
        chain = chain_names(t.info.result)
        assert len(chain) == len(before) + 1
        assert chain[:-1] == before  # shared with the source up to the fork point
        assert chain[-1] not in after  # its own delta
    assert src.runtime.instantCloneFrozen is True


@pytest.mark.parametrize("cycle", ["reset", "power-off"])
def test_power_cycling_the_frozen_source_clears_the_freeze(si, cycle):
    src = find_vm(si, "src-linux")
    pid = procs(si).StartProgramInGuest(src, auth(), FREEZE)
    wait_frozen(si, src)
    if cycle == "reset":
        WaitForTask(src.ResetVM_Task(), si=si)
    else:
        WaitForTask(src.PowerOffVM_Task(), si=si)
        assert src.runtime.instantCloneFrozen is False
        WaitForTask(src.PowerOnVM_Task(), si=si)
    assert src.runtime.instantCloneFrozen is False
    wait_until(si, [src], "guest.toolsRunningStatus", lambda v: set(v.values()) == {"guestToolsRunning"})
    # a new boot: the freeze process is gone
    assert procs(si).ListProcessesInGuest(src, auth(), [pid]) == []


def test_read_environment_variable_in_guest(si):
    src = find_vm(si, "src-linux")
    got = procs(si).ReadEnvironmentVariableInGuest(src, auth(), ["HOME", "USER"])
    assert sorted(got) == ["HOME=/root", "USER=root"]


def sandbox_processes(root: str) -> list[int]:
    """The host processes running in the sandbox rooted at `root` (bwrap names it on its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and root.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_terminate_process_in_guest(si, twin):
    src = find_vm(si, "src-linux")
    pm = procs(si)
    sleep = vim.vm.guest.ProcessManager.ProgramSpec(programPath="/usr/bin/sleep", arguments="1000000000")
    root = twin.call(lambda t: str(t.world.sandboxes.root(t.world.objects[src._moId])))
    for _ in range(3):  # terminated at once: while bwrap may still be setting the sandbox up
        pid = pm.StartProgramInGuest(src, auth(), sleep)
        pm.TerminateProcessInGuest(src, auth(), pid)
        (p,) = pm.ListProcessesInGuest(src, auth(), [pid])
        assert p.endTime is not None and p.exitCode == 143
    deadline = time.monotonic() + 10
    while sandbox_processes(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(root) == [], "a terminated program's sandbox outlived it"
    with pytest.raises(vim.fault.GuestProcessNotFound):
        pm.TerminateProcessInGuest(src, auth(), 999999)


# the vmware-rpctool stand-in ----------------------------------------------------------------------
def test_info_set_is_visible_in_extra_config_and_wakes_wait_for_updates(si, twin):
    src = find_vm(si, "src-linux")
    pc = si.content.propertyCollector.CreatePropertyCollector()
    try:
        pc.CreateFilter(vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=src)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine,
                                                                pathSet=["config.extraConfig"])]), False)
        first = pc.WaitForUpdatesEx("", vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=5))
        assert "guestinfo.forkscale.status" not in options(first.filterSet[0].objectSet[0].changeSet[0].val)
        r = rpctool(twin, "info-set guestinfo.forkscale.status ready to serve")
        assert r.returncode == 0, r.stderr
        update = pc.WaitForUpdatesEx(first.version, vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=5))
        assert update is not None
        (change,) = update.filterSet[0].objectSet[0].changeSet
        assert options(change.val)["guestinfo.forkscale.status"] == "ready to serve"
    finally:
        pc.DestroyPropertyCollector()
    assert extra(src)["guestinfo.forkscale.status"] == "ready to serve"
    # split arguments work as well as one string
    r = rpctool(twin, "info-set", "guestinfo.forkscale.note", "two words")
    assert r.returncode == 0, r.stderr
    assert extra(src)["guestinfo.forkscale.note"] == "two words"


def test_info_get_returns_per_clone_values(si, twin):
    src = find_vm(si, "src-linux")
    tasks = [src.InstantClone_Task(instant_clone_spec(f"gi-{i}", {"guestinfo.forkscale.ip": f"10.1.0.{10 + i}"}))
             for i in range(2)]
    WaitForTasks(tasks, si=si)
    for i in range(2):
        one = rpctool(twin, "info-get guestinfo.forkscale.ip", vm=f"gi-{i}")
        split = rpctool(twin, "info-get", "guestinfo.forkscale.ip", vm=tasks[i].info.result._moId)
        assert (one.returncode, one.stdout) == (0, f"10.1.0.{10 + i}\n"), one.stderr
        assert split.stdout == one.stdout
    as_module = subprocess.run([sys.executable, "-m", "forkscale.sim.rpctool", "info-get guestinfo.forkscale.ip"],
                               env=rpctool_env(twin, "gi-1"), cwd=REPO, capture_output=True, text=True, timeout=30)
    assert (as_module.returncode, as_module.stdout) == (0, "10.1.0.11\n"), as_module.stderr
    unset = rpctool(twin, "info-get guestinfo.forkscale.ip", vm="src-linux")
    assert unset.returncode == 1 and unset.stdout == "" and "No value found" in unset.stderr


def test_stand_in_refuses_what_a_guest_cannot_do(si, twin, tmp_path):
    src = find_vm(si, "src-linux")
    assert rpctool(twin, "info-get guestinfo.x", token="vm-1.0000").returncode == 1
    bad = rpctool(twin, "info-get guestinfo.x", FORKSCALE_TWIN_PASSWORD="wrong")
    assert bad.returncode == 1 and "unauthorized" in bad.stderr
    vmx = rpctool(twin, "info-get", "vmx.key")
    assert vmx.returncode == 1 and "only guestinfo" in vmx.stderr
    nothing = rpctool(twin, "bogus-command")
    assert nothing.returncode == 1 and "Unknown command" in nothing.stderr
    no_ca = rpctool(twin, "info-get guestinfo.x", FORKSCALE_TWIN_CA=str(tmp_path / "missing.pem"))
    assert no_ca.returncode == 1
    untrusted = subprocess.run([sys.executable, str(RPCTOOL), "info-get guestinfo.x"], capture_output=True, text=True,
                               env={k: v for k, v in rpctool_env(twin, "src-linux").items() if k != "FORKSCALE_TWIN_CA"})
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    # a frozen guest does not execute, so it cannot run the tool
    procs(si).StartProgramInGuest(src, auth(), FREEZE)
    wait_frozen(si, src)
    frozen = rpctool(twin, "info-set guestinfo.x 1")
    assert frozen.returncode == 1 and "frozen" in frozen.stderr


def test_freeze_blocks_and_each_clone_continues_as_itself(si, twin, tmp_path):
    src = find_vm(si, "src-linux")
    # in each clone: read its own guestinfo and report it, as the clone
    tool = shlex.join([sys.executable, str(RPCTOOL)])
    cont = f'v=$({tool} "info-get guestinfo.forkscale.id") && {tool} "info-set guestinfo.continued $FORKSCALE_TWIN_VM_NAME:$v"'
    log = open(tmp_path / "freeze.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, str(RPCTOOL), "instantclone.freeze"], stdout=log, stderr=log,
                            env=rpctool_env(twin, "src-linux", FORKSCALE_TWIN_CONTINUE=cont), start_new_session=True)
    try:
        wait_frozen(si, src)
        config = {"guestinfo.forkscale.id": "ident-{}", "guestinfo.forkscale.hostname": "host-{}"}
        tasks = [src.InstantClone_Task(instant_clone_spec(f"cont-{i}", {k: v.format(i) for k, v in config.items()}))
                 for i in range(3)]
        WaitForTasks(tasks, si=si)
        clones = [t.info.result for t in tasks]
        values = wait_until(si, clones, "config.extraConfig",
                            lambda v: all("guestinfo.continued" in options(x) for x in v.values()))
        for i, clone in enumerate(clones):
            got = options(values[clone._moId])
            assert got["guestinfo.continued"] == f"cont-{i}:ident-{i}"
            # an external guest agent: the twin did not play the guest (no simulated identity)
            assert "guestinfo.forkscale.status" not in got
            assert clone.guest.toolsRunningStatus == "guestToolsRunning"  # the continuation reported in
        assert "guestinfo.continued" not in extra(src)
        assert proc.poll() is None  # the source's call is still blocked
        WaitForTask(src.ResetVM_Task(), si=si)
        assert proc.wait(timeout=15) == 1
    finally:
        kill_group(proc)
        log.close()
    assert "powered off or reset" in (tmp_path / "freeze.log").read_text()


REPLAYED = """#!/bin/sh
echo "start $FORKSCALE_TWIN_VM" >>"$LOG"
$RPCTOOL instantclone.freeze || exit 7
id=$($RPCTOOL "info-get guestinfo.forkscale.id") || exit 8
$RPCTOOL "info-set guestinfo.after $id:$(cat "$FORKSCALE_ROOT/etc/marker")" || exit 9
echo "done $id" >>"$LOG"
"""


def test_freeze_replays_the_calling_script_in_each_clone_with_its_own_root(si, twin, tmp_path):
    src = find_vm(si, "src-linux")
    script = tmp_path / "guest.sh"
    script.write_text(REPLAYED)
    wrapper = tmp_path / "bin" / "vmware-rpctool"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(RPCTOOL))} "$@"\n')
    wrapper.chmod(0o755)
    root = tmp_path / "source-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "marker").write_text("from-the-source\n")
    log = tmp_path / "guest.log"
    env = rpctool_env(twin, "src-linux", RPCTOOL=wrapper, LOG=log, FORKSCALE_ROOT=root,
                      FORKSCALE_ROOT_PER_CLONE=tmp_path / "clones")
    out = open(tmp_path / "guest.out", "w")  # noqa: SIM115
    proc = subprocess.Popen(["sh", str(script)], env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_frozen(si, src)
        tasks = [src.InstantClone_Task(instant_clone_spec(f"rp-{i}", {"guestinfo.forkscale.id": f"id{i}"}))
                 for i in range(2)]
        WaitForTasks(tasks, si=si)
        clones = [t.info.result for t in tasks]
        values = wait_until(si, clones, "config.extraConfig",
                            lambda v: all("guestinfo.after" in options(x) for x in v.values()))
        assert sorted(options(v)["guestinfo.after"] for v in values.values()) == [
            "id0:from-the-source", "id1:from-the-source"]
        for i in range(2):  # each clone's disk started as a copy of the source's
            assert (tmp_path / "clones" / f"rp-{i}" / "etc" / "marker").read_text() == "from-the-source\n"
        deadline = time.monotonic() + 10
        while log.read_text().count("done") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        lines = log.read_text().splitlines()
        assert lines.count("start src-linux") == 1  # the source ran up to the freeze once ...
        assert sorted(line.split()[1] for line in lines if line.startswith("start ") and "src-linux" not in line) == \
            sorted(c._moId for c in clones)  # ... and each clone replayed it as itself
        assert proc.poll() is None
        WaitForTask(src.PowerOffVM_Task(), si=si)
        assert proc.wait(timeout=15) == 7  # the source's freeze call failed: power cycle
    finally:
        kill_group(proc)
        out.close()


def test_freeze_timeout_ends_the_blocked_call(si, twin):
    start = time.monotonic()
    r = rpctool(twin, "instantclone.freeze", FORKSCALE_TWIN_FREEZE_TIMEOUT="0.5", FORKSCALE_TWIN_CONTINUE="none")
    assert r.returncode == 1 and "FORKSCALE_TWIN_FREEZE_TIMEOUT" in r.stderr
    assert time.monotonic() - start < 10
    assert find_vm(si, "src-linux").runtime.instantCloneFrozen is True
