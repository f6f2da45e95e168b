"""Repair is not scaling: clones that disappear out of band come back within one round, cooldown or not."""

from __future__ import annotations

import time

from pyVim.task import WaitForTask

from tests.fixtures.twin import find_vm
from tests.serve_helpers import base_pool, start_serve, write_pool_spec
from tests.spine_helpers import cli_process, pool_vms

COOLDOWN_S = 600


def repair_pool() -> dict:
    return base_pool("rep", policy={"strategy": "fixed", "count": 4, "cooldown_up_s": COOLDOWN_S,
                                    "cooldown_down_s": COOLDOWN_S, "evaluate_every_s": 0.5})


def _ready(doc: dict) -> bool:
    """4 ready clones, the round that made them over (its cooldown running)."""
    return (doc["spares"] == 4 and doc["current"] == 4 and doc["building"] == 0 and not doc["converging"]
            and doc["policy"]["state"] == "cooldown")


def _repaired(doc: dict) -> int:
    return sum(a.get("repaired", 0) for a in doc["actions"])


def test_clones_destroyed_behind_serves_back_are_restored_within_a_round(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_pool_spec(tmp_path, twin, repair_pool())
    s = start_serve(tmp_path, spec)
    try:
        st = s.wait_status("rep", _ready, what="4 ready clones")
        assert st["policy"]["state"] == "cooldown" and st["policy"]["cooldown_left_s"] > COOLDOWN_S - 60

        # Someone removes two clones in the vSphere client: power off and delete, with stock pyVmomi.
        doomed = sorted(v["name"] for v in pool_vms(si, "rep"))[:2]
        for name in doomed:
            vm = find_vm(si, name)
            WaitForTask(vm.PowerOffVM_Task())
            WaitForTask(vm.Destroy_Task())
        started = time.monotonic()
        st = s.wait_status("rep", lambda d: _ready(d) and _repaired(d) == 2, timeout=60,
                           what="the pool repaired to 4")
        repaired_in = time.monotonic() - started

        assert repaired_in < 30, f"repair took {repaired_in:.1f}s"  # rounds every 0.5 s; the cooldown is 600 s
        assert st["policy"]["cooldown_left_s"] > COOLDOWN_S - 120  # the cooldown was neither waited for nor reset
        # one repair, or two if a round ran between the two deletions
        repairs = [a for a in st["actions"] if a.get("repaired")]
        assert all(a["target"] == 4 and a["ok"] is True and a["direction"] == "none" for a in repairs)
        vms = pool_vms(si, "rep")
        assert len(vms) == 4 and all(v["guestinfo.forkscale.status"] == "ready" for v in vms)
        assert "repairing toward desired 4" in s.log.read_text()
    finally:
        assert s.stop() == 0


def test_a_manual_forkscale_destroy_is_refused_while_serve_owns_the_pool(twin, si, tmp_path):
    """One acting controller per ledger: `forkscale destroy` by hand while `serve` owns the pool exits 1
    naming serve, and changes nothing (serve would only have repaired it back; what disappears
    behind serve's back anyway is repaired within a round: the test above)."""
    twin.admin("freeze", vm="src-linux")
    spec = write_pool_spec(tmp_path, twin, repair_pool())
    s = start_serve(tmp_path, spec)
    try:
        s.wait_status("rep", _ready, what="4 ready clones")
        before = sorted(v["name"] for v in pool_vms(si, "rep"))
        proc = cli_process("destroy", "rep", "-f", str(spec), "--yes")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert err.startswith(f"error: the ledger is held by forkscale serve (pid {s.proc.pid} on host "), err
        assert len(err.strip().splitlines()) == 1
        assert sorted(v["name"] for v in pool_vms(si, "rep")) == before
        assert _ready(s.status("rep"))
    finally:
        assert s.stop() == 0
