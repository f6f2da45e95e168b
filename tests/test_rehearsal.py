"""Issue 5 (rehearsal): `forkscale rehearse` against the twin over real SOAP, with a real OpenSSH
server (the `sshd` fixture, on loopback) standing in for the clone's guest.

What is real here: the vCenter side (InstantClone_Task of a running source, NIC edits,
layoutEx, Destroy - all through the twin's SOAP endpoint, checked afterwards with a stock
pyVmomi session) and the SSH side (commands run by OpenSSH in a login shell, timeouts killing
the remote process group). The steps leave files in a temp dir, which is how the tests see
what ran, and in which order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from pyVmomi import vim

from forkscale.commands.session import open_driver
from forkscale.core.errors import SpecError
from forkscale.spec.rehearsal import load_rehearsal, parse_rehearsal
from forkscale.workloads.rehearsal import OUTPUT_LIMIT, Rehearsal, clip
from tests.spine_helpers import REPO, cli, cli_process

pytestmark = pytest.mark.sshd

BASELINE_VMS = {"src-linux", "src-win"}


def write_rehearsal(tmp_path: Path, twin, sshd, *, steps=None, checks=None, name="rh.yaml", **top) -> Path:
    pw = tmp_path / "vc-password"
    pw.write_text(twin.password)
    os.chmod(pw, 0o600)
    spec = {
        "vcenter": {"url": twin.url, "user": twin.user, "password_file": str(pw), "ca_file": twin.ca_file},
        "source": "src-linux",
        "clone_name": "src-linux-rehearsal",
        "network": {"port_group": "isolated"},
        "ssh": {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key_file": str(sshd.client_key),
                "known_hosts": str(sshd.known_hosts)},
        "wait": {"timeout_s": 20},
        "steps": steps if steps is not None else [{"name": "noop", "run": "true", "timeout_s": 10}],
        "checks": checks if checks is not None else [],
    }
    spec.update(top)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def vms(si) -> dict[str, vim.VirtualMachine]:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        return {vm.name: vm for vm in view.view}
    finally:
        view.DestroyView()


def chain_depth(vm: vim.VirtualMachine) -> int:
    """Deepest disk chain in layoutEx, read independently of forkscale's driver."""
    return max(len(d.chain) for d in vm.layoutEx.disk)


def nic(vm: vim.VirtualMachine) -> vim.vm.device.VirtualEthernetCard:
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))


def test_passing_rehearsal_runs_steps_in_order_reports_and_destroys_the_clone(twin, si, sshd, tmp_path, capsys):
    work = tmp_path / "guest"
    work.mkdir()
    src = vms(si)["src-linux"]
    depth_before = chain_depth(src)
    spec = write_rehearsal(
        tmp_path, twin, sshd,
        steps=[{"name": "stage-one", "run": f"echo one >> {work}/log; echo staged", "timeout_s": 10},
               {"name": "stage-two", "run": f"echo two >> {work}/log; cat {work}/log; echo warn >&2"}],
        checks=[{"name": "upgraded", "run": f"grep -qx two {work}/log", "timeout_s": 10}],
        report=str(tmp_path / "out" / "report.json"))

    assert cli("rehearse", "-f", str(spec), "-o", "json") == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # the whole of stdout is one JSON document
    assert report == json.loads((tmp_path / "out" / "report.json").read_text())

    assert (work / "log").read_text() == "one\ntwo\n"  # both steps ran, in order, once
    assert report["outcome"] == "passed" and report["ok"] is True and report["exit_code"] == 0
    assert report["failures"] == []
    one, two = report["steps"]
    assert [one["name"], two["name"]] == ["stage-one", "stage-two"]
    assert one["status"] == two["status"] == "passed" and one["exit_code"] == two["exit_code"] == 0
    assert one["stdout"] == "staged\n"
    assert two["stdout"] == "one\ntwo\n" and two["stderr"] == "warn\n" and two["truncated"] is False
    assert all(s["duration_s"] > 0 for s in report["steps"] + report["checks"])
    assert two["timeout_s"] == 600  # the default for upgrade steps
    assert report["checks"][0]["status"] == "passed"
    assert {p["name"]: p["status"] for p in report["phases"]} == {"clone": "ok", "wait": "ok", "cleanup": "ok"}

    # the source: still running, one more delta in its chain (layoutEx), as the report says
    src = vms(si)["src-linux"]
    assert src.runtime.powerState == "poweredOn"
    assert chain_depth(src) == depth_before + 1
    s = report["source"]
    assert (s["chain_depth_before"], s["chain_depth_after"]) == (depth_before, depth_before + 1)
    assert s["power_before"] == s["power_after"] == "poweredOn"

    # the clone: was on the isolated port group, connected, with a fresh MAC; and is gone now
    c = report["clone"]
    assert c["name"] == "src-linux-rehearsal" and c["moref"] and c["destroyed"] is True and c["kept"] is False
    assert [(n["port_group"], n["connected"]) for n in c["nics"]] == [("isolated", True)]
    assert c["nics"][0]["mac"] != nic(src).macAddress.lower()
    assert set(vms(si)) == BASELINE_VMS


@pytest.mark.parametrize("network,port_group,connected", [
    ({"port_group": "isolated"}, "isolated", True),
    ({"disconnect": True}, "VM Network", False),
])
def test_keep_leaves_the_clone_with_its_nic_isolated_or_disconnected(twin, si, sshd, tmp_path, capsys,
                                                                     network, port_group, connected):
    spec = write_rehearsal(tmp_path, twin, sshd, network=network)
    assert cli("rehearse", "-f", str(spec), "--keep") == 0
    text = capsys.readouterr().out
    assert "PASSED" in text and "KEPT" in text
    clone = vms(si)["src-linux-rehearsal"]
    card = nic(clone)
    assert card.backing.deviceName == port_group
    assert card.connectable.connected is connected and card.connectable.startConnected is connected
    assert card.addressType == "manual" and card.macAddress != nic(vms(si)["src-linux"]).macAddress
    assert clone.runtime.powerState == "poweredOn"
    assert {o.key: o.value for o in clone.config.extraConfig}["forkscale.rehearsal"] == "src-linux"

    async def tagged() -> dict[str, str]:  # what cleanup reads to recognise its own clone by name
        async with open_driver(load_rehearsal(spec).vcenter) as driver:
            return (await driver.vm_detail(clone._moId, tags=("forkscale.rehearsal", "no.such.key"))).extra

    assert asyncio.run(tagged()) == {"forkscale.rehearsal": "src-linux"}
    assert vms(si)["src-linux"].runtime.powerState == "poweredOn"


def test_failing_check_fails_the_rehearsal_runs_every_check_and_still_cleans_up(twin, si, sshd, tmp_path, capsys):
    work = tmp_path / "guest"
    work.mkdir()
    spec = write_rehearsal(
        tmp_path, twin, sshd,
        steps=[{"name": "upgrade", "run": f"touch {work}/upgraded"}],
        checks=[{"name": "service-up", "run": "echo checking; echo 'service is down' >&2; exit 3"},
                {"name": "disk-ok", "run": f"touch {work}/second-check; true"}])
    assert cli("rehearse", "-f", str(spec)) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text
    assert "check 'service-up': exit status 3" in text
    assert "| service is down" in text  # the failed check's output is shown
    assert (work / "upgraded").exists() and (work / "second-check").exists()  # every check ran
    assert set(vms(si)) == BASELINE_VMS  # the clone was destroyed anyway
    assert vms(si)["src-linux"].runtime.powerState == "poweredOn"


def test_failing_upgrade_step_stops_the_upgrade_and_skips_the_checks(twin, si, sshd, tmp_path, capsys):
    work = tmp_path / "guest"
    work.mkdir()
    spec = write_rehearsal(
        tmp_path, twin, sshd,
        steps=[{"name": "migrate", "run": "exit 7"}, {"name": "later", "run": f"touch {work}/later"}],
        checks=[{"name": "check", "run": f"touch {work}/checked"}])
    assert cli("rehearse", "-f", str(spec), "-o", "json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "failed"
    assert report["failures"] == [{"phase": "step", "name": "migrate", "status": "failed",
                                   "reason": "exit status 7"}]
    assert [s["status"] for s in report["steps"]] == ["failed", "skipped"]
    assert [s["status"] for s in report["checks"]] == ["skipped"]
    assert not (work / "later").exists() and not (work / "checked").exists()
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS


def test_step_timeout_is_reported_as_a_timeout_and_the_command_is_killed(twin, si, sshd, tmp_path, capsys):
    work = tmp_path / "guest"
    work.mkdir()
    spec = write_rehearsal(
        tmp_path, twin, sshd,
        steps=[{"name": "slow-upgrade", "run": f"sleep 4; touch {work}/finished", "timeout_s": 0.7}])
    started = time.monotonic()
    assert cli("rehearse", "-f", str(spec), "-o", "json") == 1
    report = json.loads(capsys.readouterr().out)
    step = report["steps"][0]
    assert step["status"] == "timeout" and step["exit_code"] is None
    assert 0.6 < step["duration_s"] < 4  # given up on at its timeout, not when the command ended
    assert report["failures"][0]["reason"].startswith("timed out after 0.7s")
    assert set(vms(si)) == BASELINE_VMS
    time.sleep(max(0.0, started + 5.0 - time.monotonic()))  # past when the command would have finished
    assert not (work / "finished").exists()  # killed on the guest, not just abandoned


@pytest.mark.parametrize("patch,field", [
    ({"stepz": []}, "stepz: unknown key (did you mean 'steps'?)"),
    ({"network": {}}, "network: a live clone"),
    ({"network": {"port_group": "isolated", "disconect": True}}, "network.disconect"),
    ({"steps": [{"name": "a", "run": "true", "timeout_s": -1}]}, "steps[0].timeout_s"),
    ({"steps": [{"name": "a", "run": "true"}, {"name": "a", "run": "true"}]}, "steps[1].name"),
    ({"checks": [{"name": "c"}]}, "checks[0].run: required"),
    ({"steps": [], "checks": []}, "steps: give at least one"),
    ({"wait": {"timeout": 5}}, "wait.timeout"),
    ({"ssh": {"port": 22}}, "ssh.host: required"),
    ({"source": "no-such-vm"}, "source: no VM named 'no-such-vm'"),
    ({"network": {"port_group": "no-such-pg"}}, "network.port_group: no port group named 'no-such-pg'"),
    ({"network": {"port_group": "VM Network"}}, "network.port_group: 'VM Network' is a network src-linux is on"),
    ({"folder": "nope"}, "folder: no VM folder named 'nope'"),
    ({"clone_name": "src-win"}, "clone_name: a VM named 'src-win' already exists"),
])
def test_bad_spec_exits_2_naming_the_field_and_creates_nothing(twin, si, sshd, tmp_path, capsys, patch, field):
    work = tmp_path / "guest"
    work.mkdir()
    spec = write_rehearsal(tmp_path, twin, sshd, steps=[{"name": "marker", "run": f"touch {work}/ran"}])
    data = yaml.safe_load(spec.read_text())
    data.update(patch)
    spec.write_text(yaml.safe_dump(data))
    before = twin.admin("stats")["methods"]
    assert cli("rehearse", "-f", str(spec), "-o", "json") == 2
    captured = capsys.readouterr()
    assert field in captured.err
    assert captured.out == ""
    assert set(vms(si)) == BASELINE_VMS and not (work / "ran").exists()
    after = twin.admin("stats")["methods"]
    assert after.get("InstantClone_Task", 0) == before.get("InstantClone_Task", 0) == 0


def test_inline_password_is_refused_before_connecting(twin, sshd, tmp_path, capsys):
    spec = write_rehearsal(tmp_path, twin, sshd)
    data = yaml.safe_load(spec.read_text())
    data["vcenter"]["password"] = "hunter2-secret"
    spec.write_text(yaml.safe_dump(data))
    before = twin.admin("stats")["requests"]
    assert cli("rehearse", "-f", str(spec)) == 2
    err = capsys.readouterr().err
    assert "vcenter.password: inline passwords are not accepted" in err and "hunter2-secret" not in err
    assert twin.admin("stats")["requests"] == before


def test_clone_failure_is_an_error_with_nothing_left_behind(twin, si, sshd, tmp_path, capsys):
    twin.admin("fail_next", method="InstantClone_Task", fault="InsufficientResourcesFault")
    spec = write_rehearsal(tmp_path, twin, sshd)
    assert cli("rehearse", "-f", str(spec), "-o", "json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "error" and "instant clone src-linux-rehearsal" in report["error"]
    assert report["failures"][0]["phase"] == "clone"
    assert [s["status"] for s in report["steps"]] == ["skipped"] and report["clone"]["moref"] is None
    assert set(vms(si)) == BASELINE_VMS


def test_unreachable_guest_is_an_error_after_the_wait_and_the_clone_is_destroyed(twin, si, sshd, tmp_path, capsys):
    spec = write_rehearsal(tmp_path, twin, sshd, wait={"timeout_s": 1.5})
    data = yaml.safe_load(spec.read_text())
    data["ssh"]["port"] = 1  # nothing listens there
    spec.write_text(yaml.safe_dump(data))
    assert cli("rehearse", "-f", str(spec), "-o", "json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "error" and "wait.timeout_s" in report["error"]
    assert {p["name"]: p["status"] for p in report["phases"]}["wait"] == "failed"
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS


def test_sigint_during_a_step_kills_it_destroys_the_clone_and_exits_130(twin, si, sshd, tmp_path):
    work = tmp_path / "guest"
    work.mkdir()
    spec = write_rehearsal(
        tmp_path, twin, sshd,
        steps=[{"name": "long", "run": f"touch {work}/started; sleep 30; touch {work}/finished"}],
        report=str(tmp_path / "report.json"))
    proc = cli_process("rehearse", "-f", str(spec), "-o", "json")
    try:
        deadline = time.monotonic() + 20
        while not (work / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        assert "src-linux-rehearsal" in vms(si)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "interrupted" and report["clone"]["destroyed"] is True
    assert report["steps"][0]["status"] == "interrupted"
    assert set(vms(si)) == BASELINE_VMS
    assert vms(si)["src-linux"].runtime.powerState == "poweredOn"
    time.sleep(0.5)
    assert not (work / "finished").exists()


def test_cancelled_mid_clone_still_destroys_the_clone_once_vcenter_has_made_it(twin, si, sshd, tmp_path):
    """The clone outlives its cancelled caller: cleanup waits for the task, then destroys the VM."""
    twin.admin("slow", op="instant", factor=1500)  # ~1.5 s at the fixture's time scale
    spec = load_rehearsal(write_rehearsal(tmp_path, twin, sshd))

    async def scenario() -> tuple[Rehearsal, float]:
        async with open_driver(spec.vcenter) as driver:
            rehearsal = Rehearsal(spec, driver)
            task = asyncio.create_task(rehearsal.run())
            while twin.admin("stats")["methods"].get("InstantClone_Task", 0) == 0:
                await asyncio.sleep(0.02)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            return rehearsal, time.monotonic() - started

    rehearsal, waited = asyncio.run(scenario())
    report = rehearsal.report
    assert waited > 0.3  # it did wait for vCenter to finish the clone
    assert report.outcome == "interrupted" and report.clone_moref and report.destroyed
    assert [s.status for s in report.steps] == ["skipped"]
    assert set(vms(si)) == BASELINE_VMS


def test_example_spec_is_valid_against_the_default_world(twin, si, tmp_path, monkeypatch):
    raw = yaml.safe_load((REPO / "examples" / "rehearsal.yaml").read_text())
    monkeypatch.setenv("FORKSCALE_PASSWORD", twin.password)
    monkeypatch.setenv("FORKSCALE_CA_FILE", twin.ca_file)
    monkeypatch.setenv("FORKSCALE_GUEST_PASSWORD", "vmfork-guest")
    raw["vcenter"]["url"] = twin.url  # the twin's port is picked per test; everything else as shipped
    spec = parse_rehearsal(raw, base_dir=REPO / "examples")
    assert spec.source == "src-linux" and spec.network.disconnect is True and spec.steps and spec.checks
    assert spec.transport == "guestops" and spec.ssh is None

    async def plan() -> None:
        async with open_driver(spec.vcenter) as driver:
            p = await Rehearsal(spec, driver).plan()
            assert p.request.network[0] == "network" and p.request.disconnect is True

    asyncio.run(plan())
    assert set(vms(si)) == BASELINE_VMS


def test_spec_rejects_a_key_file_that_does_not_exist(tmp_path, twin, sshd):
    spec = write_rehearsal(tmp_path, twin, sshd)
    data = yaml.safe_load(spec.read_text())
    data["ssh"]["key_file"] = "missing-key"
    with pytest.raises(SpecError) as exc:
        parse_rehearsal(data, base_dir=tmp_path)
    assert exc.value.path == "ssh.key_file"


def test_clip_keeps_head_and_tail_within_the_limit():
    data = b"H" * 5000 + b"M" * 10000 + b"T" * 5000
    text, cut = clip(data)
    assert cut and text.startswith("H" * (OUTPUT_LIMIT // 4)) and text.endswith("T" * 5000)
    assert "[... 11808 bytes omitted ...]" in text and len(text.encode()) < OUTPUT_LIMIT + 64
    assert clip(b"short\xff") == ("short\ufffd", False)


def test_uploads_go_over_ssh_before_their_step(twin, si, sshd, tmp_path, capsys):
    work = tmp_path / "guest"
    (tmp_path / "payload.txt").write_text("release 2.0\n")
    dest = work / "deep" / "payload.txt"
    spec = write_rehearsal(
        tmp_path, twin, sshd,
        steps=[{"name": "install", "upload": [{"src": "payload.txt", "dest": str(dest), "mode": "0640"}],
                "run": f"cat {dest}"}])
    assert cli("rehearse", "-f", str(spec), "-o", "json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["transport"] == {"kind": "ssh", "target": f"{sshd.user}@{sshd.host}:{sshd.port}"}
    assert report["steps"][0]["stdout"] == "release 2.0\n"
    assert dest.read_text() == "release 2.0\n" and (dest.stat().st_mode & 0o777) == 0o640
