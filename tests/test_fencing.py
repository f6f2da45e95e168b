"""Fencing end to end, in one process so the moment of the takeover is ours to choose.

A controller converging a pool stops renewing its lease (as a paused or partitioned one would);
another takes the lease over. From then on every ledger write of the first is refused: its
converge fails with LeaseLost, nothing it does after the takeover is in the ledger, and the new
owner's converge (which reconciles what the first left half-done) ends with exactly N clones.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from forkscale.commands.session import open_driver
from forkscale.fleet.engine import Engine
from forkscale.ledger import LEDGER_SCOPE, Holder, LeaseLost, Leases, Ledger
from forkscale.spec import load_spec
from tests.spine_helpers import pool_vms, write_spec
from tests.test_spine import count_tagged


async def _fenced_off(spec_path, state: str, twin) -> dict[str, object]:
    spec = load_spec(spec_path)
    first, second = Ledger(state), Ledger(state)
    try:
        paused = Leases(first.backend, Holder("first", 1, "ctl-1", "scale"), ttl_s=1.0)
        lease = paused.acquire(LEDGER_SCOPE)
        first.fence(lease)
        first.identify("first")
        async with open_driver(spec.vcenter) as driver:
            converge = asyncio.create_task(Engine(spec, first, driver).converge("quickstart", 40))
            deadline = time.monotonic() + 60
            while count_tagged(twin) < 8:
                assert time.monotonic() < deadline and not converge.done()
                await asyncio.sleep(0.05)
            # the first controller stops renewing; once its lease has run out another takes over
            taker = Leases(second.backend, Holder("second", 2, "ctl-2", "scale"), ttl_s=60)
            while taker.now() <= lease.expires_at:
                await asyncio.sleep(0.05)
            taken = taker.acquire(LEDGER_SCOPE)
            second.fence(taken)
            with pytest.raises(LeaseLost, match=f"fencing token {lease.token} for ledger is stale"):
                await converge
            refused = first.fenced_writes
            twin.admin("time_scale", value=0.001)
            result = await Engine(spec, second, driver).converge("quickstart", 40)
        late = [e for r in second.clones("quickstart") for e in second.events(r.id)
                if e.writer == f"first#{lease.token}" and e.at > taken.acquired_at]
        early = [e for r in second.clones("quickstart") for e in second.events(r.id) if e.writer == f"first#{lease.token}"]
        return {"refused": refused, "late": late, "early": len(early), "result": result,
                "live": len(second.live("quickstart"))}
    finally:
        first.close()
        second.close()


def test_a_controller_whose_lease_was_taken_over_cannot_write(twin, si, tmp_path, ledger_state):
    twin.admin("freeze", vm="src-linux")
    twin.admin("time_scale", value=0.3)
    spec = write_spec(tmp_path, twin, state=ledger_state)
    out = asyncio.run(_fenced_off(spec, ledger_state, twin))
    assert out["refused"] >= 1  # the paused controller did try, and was refused
    assert out["early"] > 0  # its writes before the takeover carry its holder and token
    assert out["late"] == []  # and none after it
    assert out["live"] == 40
    vms = pool_vms(si)
    assert len(vms) == 40
    for key in ("name", "nic_mac", "guestinfo.forkscale.ip", "forkscale.id"):
        assert len({v[key] for v in vms}) == 40, key
