"""Issue 16: rehearsals that reach their clone through VMware guest operations, against the twin.

What is real here: the twin over SOAP and HTTPS (instant and linked clones, NICs disconnected,
StartProgramInGuest / ListProcessesInGuest / TerminateProcessInGuest, the guest file manager and
its /guestFile URLs), and the programs themselves: the twin runs each step for real in the
clone's sandbox (bubblewrap, no network), so what a step does is read back from the guest over
guest operations with a stock pyVmomi session, not taken from forkscale's word.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pyVmomi import vim

from forkscale.core.errors import SpecError
from forkscale.spec.rehearsal import parse_rehearsal
from tests.spine_helpers import REPO, cli, cli_process, write_spec
from tests.test_rehearsal import BASELINE_VMS, nic, vms

CLONE = "src-linux-rehearsal"

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (scripts/setup-test-deps.sh installs it)")


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value)
    os.chmod(path, 0o600)
    return path


def write_rehearsal(tmp_path: Path, twin, *, steps=None, checks=None, guest_password: str = "vmfork-guest",
                    **top) -> Path:
    spec = {
        "vcenter": {"url": twin.url, "user": twin.user, "password_file": str(secret_file(tmp_path, "vc", twin.password)),
                    "ca_file": twin.ca_file},
        "source": "src-linux",
        "clone_name": CLONE,
        "network": {"disconnect": True},
        "guestops": {"user": "root", "password_file": str(secret_file(tmp_path, "guest", guest_password))},
        "wait": {"timeout_s": 30},
        "steps": steps if steps is not None else [{"name": "noop", "run": "true", "timeout_s": 10}],
        "checks": checks if checks is not None else [],
    }
    spec.update(top)
    path = tmp_path / "rh.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_json(*args: str, capsys) -> tuple[int, dict]:
    code = cli("rehearse", *args, "-o", "json")
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == code  # the printed report and the command agree
    return code, report


def guest_auth():
    return vim.vm.guest.NamePasswordAuthentication(username="root", password="vmfork-guest")


def guest_files(si, vm, directory: str, pattern: str) -> list[str]:
    fm = si.content.guestOperationsManager.fileManager
    return [f.path for f in fm.ListFilesInGuest(vm, guest_auth(), directory, None, None, pattern).files]


# the example, untouched ------------------------------------------------------------------------
SCENARIO = r"""
import json, os, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
cli = [sys.executable, "-m", "forkscale.cli"]
sim = subprocess.Popen(cli + ["sim"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    banner = None
    for line in sim.stdout:
        if line.startswith("{"):
            banner = json.loads(line)
            break
    env = dict(os.environ, FORKSCALE_PASSWORD=banner["password"], FORKSCALE_GUEST_PASSWORD="vmfork-guest")
    runs = {}
    for name, args in (("rehearsal", ["-f", "examples/rehearsal.yaml"]),
                       ("image", ["--pool", "quickstart", "--snapshot", "base", "-f", "examples/quickstart.yaml"])):
        r = subprocess.run(cli + ["rehearse", *args, "-o", "json"], env=env, capture_output=True, text=True,
                           timeout=300)
        runs[name] = {"code": r.returncode, "out": r.stdout, "err": r.stderr}
    print(json.dumps({"banner": banner, "runs": runs}))
finally:
    sim.terminate()
    sim.wait(30)
"""


def _private_network() -> list[str] | None:
    """A command prefix that runs in a new network namespace (its own free 127.0.0.1:8989), or None."""
    for prefix in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        if shutil.which(prefix[0]) and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


def test_the_examples_rehearse_untouched_against_forkscale_sim_started_with_no_flags(tmp_path):
    """README's story: `forkscale sim` (no flags) prints its password and writes its CA to
    ~/.forkscale/sim/ca.pem; the example reads FORKSCALE_PASSWORD and FORKSCALE_GUEST_PASSWORD."""
    prefix = _private_network()
    if prefix is None:
        pytest.skip("needs a private network namespace (unshare) so the example's 127.0.0.1:8989 is free")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORKSCALE_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    done = subprocess.run([*prefix, sys.executable, "-c", SCENARIO], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["banner"]["url"] == "https://127.0.0.1:8989/sdk"
    assert result["banner"]["ca_file"] == str(home / ".forkscale" / "sim" / "ca.pem")
    run, image = result["runs"]["rehearsal"], result["runs"]["image"]
    assert run["code"] == 0, run["err"][-3000:]
    report = json.loads(run["out"])
    assert report["outcome"] == "passed" and report["exit_code"] == 0 and report["failures"] == []
    assert report["transport"]["kind"] == "guestops"
    assert [n["connected"] for n in report["clone"]["nics"]] == [False]  # the clone had no network
    assert report["clone"]["destroyed"] is True
    (install,) = report["steps"]
    assert install["stdout"] == "installed: hello 2.0\n"  # ran in the clone's guest, uploads included
    assert [c["status"] for c in report["checks"]] == ["passed"] * 3
    assert report["checks"][1]["stdout"] == "hello 2.0: selftest passed\n"
    # and the pool example's checks, on a clone of the golden VM's snapshot
    assert image["code"] == 0, image["err"][-3000:]
    image_report = json.loads(image["out"])
    assert image_report["image"] == {"pool": "quickstart", "snapshot": "base", "push_safe": True}
    assert [c["status"] for c in image_report["checks"]] == ["passed", "passed"]


# guest operations end to end -------------------------------------------------------------------
def test_steps_run_in_the_clones_guest_with_their_uploads_and_outputs(twin, si, tmp_path, capsys):
    payload = os.urandom(50_000)
    (tmp_path / "data.bin").write_bytes(payload)
    spec = write_rehearsal(
        tmp_path, twin,
        steps=[{"name": "stage", "upload": [{"src": "data.bin", "dest": "/root/in/data.bin", "mode": "0640"}],
                "run": "sha256sum /root/in/data.bin; stat -c %a /root/in/data.bin; hostname; echo warn >&2; "
                       "echo staged > /opt/marker"},
               {"name": "loud", "run": "head -c 100000 /dev/zero | tr '\\0' x; echo; echo END"}],
        checks=[{"name": "marker", "run": "grep -qx staged /opt/marker"}])
    code, report = run_json("-f", str(spec), capsys=capsys)
    assert code == 0, report
    stage, loud = report["steps"]
    digest = hashlib.sha256(payload).hexdigest()
    assert stage["stdout"] == f"{digest}  /root/in/data.bin\n640\n{CLONE}\n" and stage["stderr"] == "warn\n"
    assert stage["exit_code"] == 0 and 0 < stage["duration_s"] < 10
    assert loud["stdout_bytes"] == 100_005 and loud["truncated"] is True  # clipped: head and tail kept
    assert loud["stdout"].startswith("x" * 100) and loud["stdout"].endswith("x\nEND\n")
    assert report["checks"][0]["status"] == "passed"
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS


def test_a_failing_check_fails_with_its_output_and_the_clone_is_destroyed(twin, si, tmp_path, capsys):
    spec = write_rehearsal(
        tmp_path, twin,
        steps=[{"name": "upgrade", "run": "echo 2.0 > /opt/version"}],
        checks=[{"name": "service-up", "run": "echo checking; echo 'service is down' >&2; exit 3"},
                {"name": "version", "run": "cat /opt/version"}])
    assert cli("rehearse", "-f", str(spec)) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text and "check 'service-up': exit status 3" in text
    assert "| checking" in text and "| service is down" in text
    code, report = run_json("-f", str(spec), capsys=capsys)
    assert code == 1 and report["outcome"] == "failed"
    failing, version = report["checks"]
    assert (failing["status"], failing["exit_code"]) == ("failed", 3)
    assert (failing["stdout"], failing["stderr"]) == ("checking\n", "service is down\n")
    assert version["status"] == "passed" and version["stdout"] == "2.0\n"  # every check ran
    assert report["failures"] == [{"phase": "check", "name": "service-up", "status": "failed",
                                   "reason": "exit status 3"}]
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS


def test_a_step_outliving_its_timeout_is_terminated_in_the_guest(twin, si, tmp_path, capsys):
    spec = write_rehearsal(
        tmp_path, twin,
        steps=[{"name": "slow", "run": "echo started; sleep 3; touch /tmp/finished", "timeout_s": 0.8},
               {"name": "never", "run": "touch /tmp/never"}],
        checks=[{"name": "check", "run": "true"}])
    started = time.monotonic()
    code = cli("rehearse", "-f", str(spec), "-o", "json", "--keep")
    report = json.loads(capsys.readouterr().out)
    assert code == 1 == report["exit_code"] and time.monotonic() - started < 20
    slow = report["steps"][0]
    assert slow["status"] == "timeout" and slow["exit_code"] is None and 0.7 < slow["duration_s"] < 5
    assert slow["stdout"] == "started\n"  # the output up to the kill
    assert report["failures"][0]["reason"] == ("timed out after 0.8s; the process was terminated in the guest "
                                               "(TerminateProcessInGuest)")
    assert [s["status"] for s in report["steps"]] == ["timeout", "skipped"]

    clone = vms(si)[CLONE]  # kept: look into its guest
    procs = si.content.guestOperationsManager.processManager.ListProcessesInGuest(clone, guest_auth(), None)
    shells = [p for p in procs if p.cmdLine.startswith('"/bin/sh"')]
    assert len(shells) == 1 and shells[0].endTime is not None and shells[0].exitCode == 143  # SIGTERM
    time.sleep(3.5)  # past the step's own end: it was killed, not left running
    assert guest_files(si, clone, "/tmp", "finished|never") == []


def test_wrong_guest_password_is_refused_at_once_and_never_shown(twin, si, tmp_path, capsys):
    spec = write_rehearsal(tmp_path, twin, guest_password="hunter2-wrong")
    started = time.monotonic()
    code, report = run_json("-f", str(spec), capsys=capsys)
    assert code == 1 and time.monotonic() - started < 15
    assert report["outcome"] == "error"
    assert "refused the guest-operations login as 'root' (InvalidGuestLogin)" in report["error"]
    assert {p["name"]: p["status"] for p in report["phases"]}["wait"] == "failed"
    assert "hunter2-wrong" not in json.dumps(report)
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS


def test_waiting_for_the_guest_says_what_it_waited_for_and_gives_up_after_the_timeout(twin, si, tmp_path,
                                                                                     capsys):
    twin.admin("fail_next", method="CreateTemporaryDirectoryInGuest", fault="GuestOperationsUnavailable",
               count=100_000)  # VMware Tools never answer
    spec = write_rehearsal(tmp_path, twin, wait={"timeout_s": 1.5})
    code, report = run_json("-f", str(spec), capsys=capsys)
    assert code == 1 and report["outcome"] == "error"
    wait = {p["name"]: p for p in report["phases"]}["wait"]
    assert wait["status"] == "failed" and 1.4 < wait["duration_s"] < 6
    assert report["error"].startswith("gave up after ") and "(wait.timeout_s: 1.5) waiting for VMware Tools in " \
        f"{CLONE} to run and to log in as 'root'" in report["error"]
    assert "GuestOperationsUnavailable" in report["error"]
    assert report["duration_s"] >= wait["duration_s"]
    assert [s["status"] for s in report["steps"]] == ["skipped"]
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS


def test_an_interrupted_wait_reports_its_real_duration_and_what_it_waited_for(twin, si, tmp_path):
    twin.admin("fail_next", method="CreateTemporaryDirectoryInGuest", fault="GuestOperationsUnavailable",
               count=100_000)  # VMware Tools never answer
    spec = write_rehearsal(tmp_path, twin, wait={"timeout_s": 120})
    proc = cli_process("rehearse", "-f", str(spec), "-o", "json")
    try:
        deadline = time.monotonic() + 30
        while CLONE not in vms(si):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert report["exit_code"] == 130 and report["outcome"] == "interrupted"
    wait = {p["name"]: p for p in report["phases"]}["wait"]
    assert wait["status"] == "interrupted" and wait["duration_s"] >= 1.4
    assert wait["error"].startswith("interrupted after ") and "waiting for VMware Tools in" in wait["error"]
    assert "while waiting for VMware Tools" in report["error"] and "CancelledError" not in out
    assert report["duration_s"] >= 1.4 and report["finished_at"] is not None
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS


def test_isolated_port_group_with_guestops_needs_no_ssh(twin, si, tmp_path, capsys):
    spec = write_rehearsal(tmp_path, twin, network={"port_group": "isolated"},
                           steps=[{"name": "where", "run": "cat /etc/hostname"}])
    code, report = run_json("-f", str(spec), "--keep", capsys=capsys)
    assert code == 0 and report["steps"][0]["stdout"] == f"{CLONE}\n"
    card = nic(vms(si)[CLONE])
    assert card.backing.deviceName == "isolated" and card.connectable.connected is True


# a pool's new image ------------------------------------------------------------------------------
def write_pool(tmp_path: Path, twin, checks: list[dict]) -> Path:
    guest = secret_file(tmp_path, "guest-pw", "vmfork-guest")
    return write_spec(tmp_path, twin, freeze="guestops",
                      extra_pool={"guestops": {"user": "root", "password_file": str(guest)}, "checks": checks})


def test_rehearse_a_pools_new_image_says_whether_a_push_is_safe(twin, si, tmp_path, capsys):
    pool = write_pool(tmp_path, twin, [{"name": "os", "run": "test -x /bin/sh && echo ok"},
                                       {"name": "hostname", "run": "cat /etc/hostname"}])
    code, report = run_json("--pool", "quickstart", "--snapshot", "base", "-f", str(pool), capsys=capsys)
    assert code == 0, report
    assert report["image"] == {"pool": "quickstart", "snapshot": "base", "push_safe": True}
    assert [c["stdout"] for c in report["checks"]] == ["ok\n", report["clone"]["name"] + "\n"]
    assert report["clone"]["name"].startswith("quickstart-rehearsal-")
    assert [(n["port_group"], n["connected"]) for n in report["clone"]["nics"]] == [("VM Network", False)]
    assert report["clone"]["destroyed"] is True and set(vms(si)) == BASELINE_VMS
    assert twin.admin("stats")["methods"].get("CloneVM_Task") == 1  # a linked clone of the snapshot
    assert cli("rehearse", "--pool", "quickstart", "--snapshot", "base", "-f", str(pool)) == 0
    assert "push of snapshot 'base' to pool quickstart: SAFE" in capsys.readouterr().out


def test_a_failing_pool_check_makes_the_push_unsafe(twin, si, tmp_path, capsys):
    pool = write_pool(tmp_path, twin, [{"name": "agent", "run": "echo 'agent missing' >&2; exit 1"}])
    code, report = run_json("--pool", "quickstart", "--snapshot", "base", "-f", str(pool), capsys=capsys)
    assert code == 1 and report["image"]["push_safe"] is False
    assert report["checks"][0]["stderr"] == "agent missing\n"
    assert set(vms(si)) == BASELINE_VMS


@pytest.mark.parametrize("args,message", [
    (["--pool", "quickstart", "--snapshot", "v9"], "--snapshot: src-linux has no snapshot named 'v9'"),
    (["--pool", "nope", "--snapshot", "base"], "pools: no pool named 'nope'"),
    (["--pool", "quickstart"], "--snapshot: required with --pool"),
])
def test_bad_pool_rehearsal_input_exits_2_and_creates_nothing(twin, si, tmp_path, capsys, args, message):
    pool = write_pool(tmp_path, twin, [{"name": "c", "run": "true"}])
    assert cli("rehearse", *args, "-f", str(pool)) == 2
    assert message in capsys.readouterr().err
    assert twin.admin("stats")["methods"].get("CloneVM_Task", 0) == 0 and set(vms(si)) == BASELINE_VMS


def test_a_pool_without_checks_cannot_be_rehearsed(twin, tmp_path, capsys):
    pool = write_spec(tmp_path, twin)
    assert cli("rehearse", "--pool", "quickstart", "--snapshot", "base", "-f", str(pool)) == 2
    assert "pools[0].checks: required to rehearse a new image of pool 'quickstart'" in capsys.readouterr().err


# the spec --------------------------------------------------------------------------------------
def _spec(tmp_path: Path, **top) -> dict:
    data = {"vcenter": {"url": "https://vc.example/sdk", "user": "u", "password_env": "VC_PW"},
            "source": "src", "network": {"disconnect": True}, "steps": [{"name": "s", "run": "true"}]}
    data.update(top)
    return data


GUESTOPS = {"user": "root", "password_env": "GUEST_PW"}
SSH = {"host": "10.0.0.5", "user": "root"}


@pytest.mark.parametrize("top,transport", [
    ({"guestops": GUESTOPS}, "guestops"),
    ({"ssh": SSH}, "ssh"),
    ({"guestops": GUESTOPS, "ssh": SSH}, "guestops"),  # isolated or disconnected NICs: guest operations
    ({"guestops": GUESTOPS, "ssh": SSH, "transport": "ssh"}, "ssh"),
])
def test_transport_defaults(tmp_path, top, transport):
    assert parse_rehearsal(_spec(tmp_path, **top), base_dir=tmp_path).transport == transport


@pytest.mark.parametrize("top,field", [
    ({}, "guestops: required: the guest account"),
    ({"transport": "ssh", "guestops": GUESTOPS}, "ssh: required with transport: ssh"),
    ({"transport": "winrm", "guestops": GUESTOPS}, "transport: 'winrm' is not one of: guestops, ssh"),
    ({"guestops": {"user": "root", "password": "x"}}, "guestops.password: inline passwords are not accepted"),
    ({"guestops": GUESTOPS, "steps": [{"name": "s", "run": "true", "upload": [{"src": "nope", "dest": "/x"}]}]},
     "steps[0].upload[0].src"),
    ({"guestops": GUESTOPS, "steps": [{"name": "s", "run": "true", "upload": [{"src": "rh", "dest": "rel"}]}]},
     "steps[0].upload[0].dest: 'rel' must be a normalized absolute file path"),
    ({"guestops": GUESTOPS, "steps": [{"name": "s", "run": "true",
                                       "upload": [{"src": "rh", "dest": "/x", "mode": "rwx"}]}]},
     "steps[0].upload[0].mode"),
])
def test_bad_transport_and_upload_keys_name_their_field(tmp_path, top, field):
    (tmp_path / "rh").write_text("x")
    with pytest.raises(SpecError) as exc:
        parse_rehearsal(_spec(tmp_path, **top), base_dir=tmp_path)
    assert str(exc.value).startswith(field)


def test_an_unset_guest_password_stops_before_vcenter_is_asked_anything(twin, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FORKSCALE_TEST_NO_SUCH_PW", raising=False)
    spec = write_rehearsal(tmp_path, twin, guestops={"user": "root", "password_env": "FORKSCALE_TEST_NO_SUCH_PW"})
    before = twin.admin("stats")["requests"]
    assert cli("rehearse", "-f", str(spec)) == 2
    assert "guestops.password_env: environment variable FORKSCALE_TEST_NO_SUCH_PW is not set" in capsys.readouterr().err
    assert twin.admin("stats")["requests"] == before
