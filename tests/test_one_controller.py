"""One acting controller per ledger (issue 13): the `ledger` lease taken by scale/apply/destroy/prepare.

Two `forkscale scale` runs started together against one twin and one ledger: one converges, the
other exits 1 at once with one line naming the holder (pid, host, since when); a holder killed
with -9 blocks the ledger until its lease expires, then `--wait` takes over and converges.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from forkscale.ledger import Holder, Leases, Ledger
from tests.spine_helpers import cli, cli_process, pool_vms, write_spec
from tests.test_spine import count_tagged

TRIALS = 10
N = 100


def tagged(twin, pool: str = "quickstart") -> list[dict[str, str]]:
    """Every VM tagged for `pool`, read inside the twin (cheap: run once per trial)."""
    return twin.call(lambda t: [{**mo.extra, "name": mo.name} for mo in list(t.world.objects.values())
                                if getattr(mo, "extra", {}).get("forkscale.pool") == pool])


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_two_scales_started_together_end_with_exactly_n_and_the_loser_names_the_holder(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin)
    host = socket.gethostname()
    for trial in range(TRIALS):
        procs = [cli_process("scale", "quickstart", str(N), "-f", str(spec)) for _ in range(2)]
        results = [finish(p) for p in procs]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 1], (trial, [(c, err[-2000:]) for c, _, err in results])
        (winner,) = [p for p, (code, _, _) in zip(procs, results, strict=True) if code == 0]
        (loser_err,) = [err for code, _, err in results if code == 1]
        lines = loser_err.strip().splitlines()
        assert len(lines) == 1, loser_err
        assert lines[0].startswith(f"error: the ledger is held by forkscale scale (pid {winner.pid} on host {host}) "
                                   "since "), lines[0]
        assert "--wait" in lines[0] and "Traceback" not in loser_err
        vms = tagged(twin)
        assert len(vms) == N, trial
        for key in ("name", "guestinfo.forkscale.mac", "guestinfo.forkscale.ip", "forkscale.id"):
            assert len({v[key] for v in vms}) == N, (trial, key)
        assert cli("destroy", "quickstart", "-f", str(spec), "--yes") == 0
        assert tagged(twin) == []
    assert pool_vms(si) == []  # vCenter's own view agrees


def test_a_holder_killed_here_is_replaced_at_once(twin, si, tmp_path, ledger_state):
    """kill -9 leaves a live lease; its pid is gone on this machine, so the next run takes over."""
    twin.admin("freeze", vm="src-linux")
    twin.admin("time_scale", value=0.2)
    spec = write_spec(tmp_path, twin, state=ledger_state)  # the default lease: 9 s
    first = cli_process("scale", "quickstart", "60", "-f", str(spec))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and count_tagged(twin) < 10:
        time.sleep(0.05)
    first.kill()
    first.wait()
    assert 0 < len(pool_vms(si)) < 60, "the kill should land mid-way"
    with Ledger(ledger_state) as led:
        (left,) = Leases(led.backend, Holder.this_process("test"), 1).all("ledger")
        assert left.pid == first.pid and left.live(time.time())
    twin.admin("time_scale", value=0.001)
    code, _, err = finish(cli_process("scale", "quickstart", "60", "-f", str(spec)))
    assert code == 0, err
    vms = pool_vms(si)
    assert len(vms) == 60
    for key in ("name", "nic_mac", "guestinfo.forkscale.ip", "forkscale.id"):
        assert len({v[key] for v in vms}) == 60, key


def test_a_holder_elsewhere_blocks_until_its_lease_expires_then_wait_takes_over(twin, tmp_path, ledger_state):
    """A holder on another machine that stopped renewing: refused, named; --wait waits for the expiry."""
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, state=ledger_state, ha={"failover_s": 5})
    with Ledger(ledger_state) as led:
        gone = Leases(led.backend, Holder("dead", 31337, "ctl-2", "apply", machine="another"), ttl_s=8)
        lease = gone.acquire("ledger")
    code, _, err = finish(cli_process("scale", "quickstart", "5", "-f", str(spec)))
    assert code == 1
    assert err.startswith("error: the ledger is held by forkscale apply (pid 31337 on host ctl-2) since "), err
    started = time.monotonic()
    code, _, err = finish(cli_process("scale", "quickstart", "5", "-f", str(spec), "--wait"))
    waited = time.monotonic() - started
    assert code == 0, err
    assert "waiting: the ledger is held by forkscale apply (pid 31337 on host ctl-2)" in err
    assert waited < 20
    with Ledger(ledger_state) as led:
        (now,) = Leases(led.backend, Holder.this_process("test"), 1).all("ledger")
        assert now.token == lease.token + 1 and now.command == "scale" and not now.live(time.time())
    assert len(tagged(twin)) == 5


def test_status_and_dry_runs_take_no_lease(twin, tmp_path, capsys):
    spec = write_spec(tmp_path, twin)
    twin.admin("freeze", vm="src-linux")
    with Ledger(tmp_path / "state.sqlite") as led:
        held = Leases(led.backend, Holder("other", 99999, "elsewhere", "apply"), ttl_s=60).acquire("ledger")
        assert cli("status", "-f", str(spec)) == 0
        assert cli("scale", "quickstart", "3", "-f", str(spec), "--dry-run") == 0
        capsys.readouterr()
        assert cli("scale", "quickstart", "3", "-f", str(spec)) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: the ledger is held by forkscale apply (pid 99999 on host elsewhere)")
        assert cli("destroy", "quickstart", "-f", str(spec), "--yes") == 1
        Leases(led.backend, Holder("other", 99999, "elsewhere", "apply"), ttl_s=60).release(held)
    assert cli("scale", "quickstart", "3", "-f", str(spec)) == 0


@pytest.mark.parametrize("command", [("apply",), ("destroy", "quickstart", "--yes"), ("prepare",)])
def test_every_changing_command_takes_the_lease(twin, tmp_path, capsys, command):
    spec = write_spec(tmp_path, twin)
    with Ledger(tmp_path / "state.sqlite") as led:
        Leases(led.backend, Holder("x", 1234, "ctl-9", "serve"), ttl_s=60).acquire("pool:quickstart")
    assert cli(*command, "-f", str(spec)) == 1
    assert "held by forkscale serve (pid 1234 on host ctl-9)" in capsys.readouterr().err
