"""vCenter restarts under a running controller. The twin, with a state directory, keeps its
inventory and CA across a restart as vCenter does, and loses sessions and tasks in flight; here it
is killed during a 100-clone scale and started again. The run ends within its deadline, converged
or with exit 1 and one line saying why; a re-run leaves exactly 100 clones and no orphan. A vCenter
that does not come back (or comes back with a certificate the spec does not trust) ends the run
with exit 1 and one line once `vcenter.outage_s` has passed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from forkscale.ledger import Ledger
from forkscale.sim import start_in_thread
from tests.fixtures.twin import RestartableTwin
from tests.serve_helpers import base_pool, start_serve, write_pool_spec
from tests.spine_helpers import cli_process, write_spec

POOL = "quickstart"
COUNT = 100
RUN_DEADLINE_S = 240
LIVE = ["planned", "cloning", "customizing", "ready", "claimed", "draining"]


def clones(twin: RestartableTwin) -> dict[str, str | None]:
    """name -> forkscale.id of every clone of the pool the twin holds (its sources left out)."""
    from forkscale.sim.vm import VM

    def read(t) -> dict[str, str | None]:
        return {vm.name: vm.extra.get("forkscale.id") for vm in t.world.instances(VM)
                if vm.extra.get("forkscale.pool") == POOL and not vm.extra.get("forkscale.source")}

    return twin.handle.call(read)


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def live_rows(state: Path) -> dict[str, int]:
    with Ledger(state) as ledger:
        return {r.name: r.id for r in ledger.clones(POOL, states=LIVE)}


def restart_spec(tmp_path: Path, twin: RestartableTwin, *, http: bool = False, outage_s: float = 120) -> Path:
    spec = write_spec(tmp_path, twin, count=COUNT)
    doc = yaml.safe_load(spec.read_text())
    doc["vcenter"]["outage_s"] = outage_s
    if http:
        doc["vcenter"]["insecure"] = True
        doc["vcenter"].pop("ca_file")
    spec.write_text(yaml.safe_dump(doc))
    return spec


def run(*args: str, timeout: float = RUN_DEADLINE_S) -> tuple[int, str, str, float]:
    started = time.monotonic()
    proc = cli_process(*args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err, time.monotonic() - started


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def assert_exactly_count_and_no_orphan(twin: RestartableTwin, spec: Path, state: Path) -> None:
    """A re-run converges: exactly COUNT clones, each the one its ledger row names (no orphan)."""
    code, out, err, _ = run("scale", POOL, str(COUNT), "-f", str(spec))
    assert code == 0, err[-3000:]
    vms = clones(twin)
    rows = live_rows(state)
    assert len(vms) == COUNT, out
    assert {name: int(cid or 0) for name, cid in vms.items()} == rows


@pytest.mark.parametrize("http", [False, True], ids=["https", "http"])
def test_a_vcenter_restart_during_a_100_clone_scale(tmp_path, http):
    twin = RestartableTwin(tmp_path / "sim", http=http)
    try:
        twin.admin("freeze", vm="src-linux")
        twin.handle.wait_saved()  # the golden frozen before the run is part of the world a restart keeps
        spec = restart_spec(tmp_path, twin, http=http)
        started = time.monotonic()
        proc = cli_process("-v", "scale", POOL, str(COUNT), "-f", str(spec))
        wait_until("30 clones", lambda: len(clones(twin)) >= 30, 120)
        twin.kill()
        time.sleep(1)
        twin.start()
        out, err = proc.communicate(timeout=RUN_DEADLINE_S)
        assert time.monotonic() - started < RUN_DEADLINE_S
        assert "Traceback" not in err, err[-5000:]
        if proc.returncode == 1:  # did not converge: one line says why
            assert len(error_lines(err)) <= 1, err[-3000:]
        else:
            assert proc.returncode == 0, err[-3000:]
            assert f"{POOL}: {COUNT}/{COUNT} ready" in out
        assert "logged in to vCenter again" in err
        assert_exactly_count_and_no_orphan(twin, spec, tmp_path / "state.sqlite")
    finally:
        twin.stop()


@pytest.mark.parametrize("trouble", ["down", "untrusted certificate", "login refused"])
def test_a_vcenter_that_does_not_come_back_ends_the_run_with_one_line_after_outage_s(tmp_path, trouble):
    """Down for good, back with a certificate the spec does not trust (another vCenter at that
    address), or refusing the spec's password: exit 1 and one line once outage_s (4 s) has passed."""
    twin = RestartableTwin(tmp_path / "sim")
    password = twin.password
    try:
        twin.admin("freeze", vm="src-linux")
        twin.handle.wait_saved()  # the golden frozen before the run is part of the world a restart keeps
        spec = restart_spec(tmp_path, twin, outage_s=4)
        proc = cli_process("scale", POOL, str(COUNT), "-f", str(spec))
        wait_until("20 clones", lambda: len(clones(twin)) >= 20, 120)
        twin.kill()
        down = time.monotonic()
        impostor = None
        if trouble == "untrusted certificate":  # another vCenter answers there, with a CA of its own
            impostor = start_in_thread(time_scale=0.001, port=twin.port, state_dir=str(tmp_path / "other"))
        elif trouble == "login refused":  # back, with its password changed
            twin.options["password"] = "changed-" + password
            twin.start()
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if impostor is not None:
                impostor.stop()
        ended_after = time.monotonic() - down
        assert proc.returncode == 1, err[-3000:]
        assert "Traceback" not in err, err[-5000:]
        lines = error_lines(err)
        assert len(lines) == 1 and "unreachable for" in lines[0], err[-3000:]
        assert {"down": "cannot connect", "untrusted certificate": "TLS verification",
                "login refused": "refused the login"}[trouble] in lines[0]
        assert ended_after < 4 + 30, f"the run ended {ended_after:.0f}s after vCenter went down (outage_s 4)"
        twin.stop()
        twin.options["password"] = password
        twin.start()
        assert_exactly_count_and_no_orphan(twin, spec, tmp_path / "state.sqlite")
    finally:
        twin.stop()


def test_outage_s_is_a_spec_field_with_a_range(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x")
    os.chmod(pw, 0o600)
    spec = tmp_path / "pool.yaml"
    spec.write_text(yaml.safe_dump({"vcenter": {"url": "https://127.0.0.1:1/sdk", "user": "u",
                                                "password_file": str(pw), "outage_s": 0.5},
                                    "state": str(tmp_path / "s.sqlite"), "pools": []}))
    code, _, err, _ = run("status", "-f", str(spec), timeout=60)
    assert code == 2
    assert error_lines(err) == ["error: vcenter.outage_s: must be between 1 and 86400, not 0.5"]


def test_serve_rides_through_a_vcenter_restart_and_keeps_serving_claims(tmp_path):
    twin = RestartableTwin(tmp_path / "sim")
    try:
        twin.admin("freeze", vm="src-linux")
        twin.handle.wait_saved()  # the golden frozen before the run is part of the world a restart keeps
        pool = base_pool(POOL, policy={"strategy": "fixed", "count": COUNT, "evaluate_every_s": 0.5},
                         budgets={"vcenter": 32, "per_host": 16, "per_datastore": 32, "rate_per_s": 20})
        spec = write_pool_spec(tmp_path, twin, pool)
        s = start_serve(tmp_path, spec)
        try:
            s.wait_status(POOL, lambda d: d["spares"] >= 10 and d["building"] > 0, timeout=120,
                          what="10 ready spares, more being built")
            twin.handle.wait_saved()  # vCenter keeps every VM it made (the twin saves at most once a second)
            twin.kill()
            # vCenter is down: claims are served from the ledger all the same
            code, doc, _ = s.call("POST", f"/v1/pools/{POOL}/claim", {"user": "during"})
            assert code == 200, doc
            claimed = {doc["vm"]}
            time.sleep(1)
            twin.start()
            wait_until("serve to log in again", lambda: "logged in to vCenter again" in s.log.read_text(), 120)
            s.wait_status(POOL, lambda d: d["current"] == COUNT and d["building"] == 0
                          and d["spares"] == COUNT - 1 and not d["converging"], timeout=RUN_DEADLINE_S,
                          what=f"{COUNT} clones again after the restart")
            for i in range(5):
                code, doc, _ = s.call("POST", f"/v1/pools/{POOL}/claim", {"user": f"after{i}", "wait_s": 30})
                assert code == 200, doc
                claimed.add(doc["vm"])
            assert len(claimed) == 6
            s.wait_status(POOL, lambda d: d["current"] == COUNT and d["spares"] == COUNT - 6
                          and d["claimed"] == 6, timeout=60, what="claims counted")
            assert "Traceback" not in s.log.read_text(), s.log_tail(80)
        finally:
            assert s.stop() == 0
        # what serve left: exactly COUNT clones, each the one its ledger row names
        vms = clones(twin)
        assert len(vms) == COUNT
        assert {name: int(cid or 0) for name, cid in vms.items()} == live_rows(tmp_path / "state.sqlite")
    finally:
        twin.stop()
