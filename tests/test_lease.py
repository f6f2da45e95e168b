"""Leases with fencing tokens (forkscale/ledger/lease.py), on both backends: who may act, and when not."""

from __future__ import annotations

import threading
import time

import pytest

from forkscale.ledger import LEDGER_SCOPE, Holder, LeaseHeld, LeaseLost, Leases, Ledger, pool_scope
from tests.test_ledger import plan, walk


def holder(name: str, pid: int = 4242) -> Holder:
    return Holder(id=f"id-{name}", pid=pid, host=f"host-{name}", command="scale")


def wait_until_expired(leases: Leases, lease) -> None:
    deadline = time.monotonic() + 10
    while leases.now() <= lease.expires_at:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def two(ledger_state: str):
    """Two controllers' connections to one ledger, as two processes (or replicas) have."""
    a, b = Ledger(ledger_state), Ledger(ledger_state)
    yield a, b
    a.close()
    b.close()


def test_the_second_taker_is_refused_with_the_holder_named(two):
    a, b = two
    la = Leases(a.backend, holder("a", pid=1111), ttl_s=30).acquire(LEDGER_SCOPE)
    assert (la.scope, la.holder, la.pid, la.host, la.token) == ("ledger", "id-a", 1111, "host-a", 1)
    with pytest.raises(LeaseHeld) as info:
        Leases(b.backend, holder("b"), ttl_s=30).acquire(LEDGER_SCOPE)
    message = str(info.value)
    assert message.startswith("the ledger is held by forkscale scale (pid 1111 on host host-a) since ")
    assert "expires in" in message and "\n" not in message
    # the holder itself may take it again (a new token), and a release frees it at once
    mine = Leases(a.backend, holder("a", pid=1111), ttl_s=30)
    again = mine.acquire(LEDGER_SCOPE)
    assert again.token == 2
    assert mine.release(again)
    taken = Leases(b.backend, holder("b"), ttl_s=30).acquire(LEDGER_SCOPE)
    assert (taken.holder, taken.token) == ("id-b", 3)


def test_a_dead_holder_is_replaced_once_its_lease_expires_and_then_fenced_off(two):
    a, b = two
    leases_a = Leases(a.backend, holder("a"), ttl_s=0.3)
    la = leases_a.acquire(LEDGER_SCOPE)
    a.fence(la)
    plan(a)  # the holder writes
    with pytest.raises(LeaseHeld):
        Leases(b.backend, holder("b"), ttl_s=5).acquire(LEDGER_SCOPE)
    wait_until_expired(leases_a, la)
    lb = Leases(b.backend, holder("b"), ttl_s=5).acquire(LEDGER_SCOPE)
    assert lb.token == la.token + 1
    b.fence(lb)
    # the paused ex-holder wakes up: every write is refused, nothing is written
    before = len(b.clones())
    with pytest.raises(LeaseLost, match=f"fencing token {la.token} for ledger is stale; now held by .*id-b|"
                                        f"fencing token {la.token} for ledger is stale; now held by forkscale scale"):
        plan(a)
    rec = b.clones()[0]
    with pytest.raises(LeaseLost):
        a.transition(rec.id, "cloning")
    with pytest.raises(LeaseLost):
        a.set_desired("web", 3, "scale")
    with pytest.raises(LeaseLost):
        a.add_source("web", "src", None, "esx-01", 1, "preparing")
    assert a.fenced_writes == 4
    assert len(b.clones()) == before and b.get(rec.id).state == "planned"  # type: ignore[union-attr]
    assert b.desired("web") is None and b.sources() == []
    with pytest.raises(LeaseLost, match="lease lost: now held by forkscale scale"):
        leases_a.renew(la)
    # the new holder writes as usual
    walk(b, rec.id, "cloning")


def test_an_expired_lease_nobody_took_still_fences_correctly_and_renews(two):
    a, _ = two
    leases = Leases(a.backend, holder("a"), ttl_s=0.2)
    lease = leases.acquire(LEDGER_SCOPE)
    a.fence(lease)
    wait_until_expired(leases, lease)
    plan(a)  # still the current token: nobody acted in between
    renewed = leases.renew(lease)
    assert renewed.token == lease.token and renewed.expires_at > lease.expires_at


def test_the_whole_ledger_and_a_pool_exclude_each_other(two):
    a, b = two
    serve = Leases(a.backend, Holder("serve-1", 10, "ctl-1", "serve"), ttl_s=30)
    scale = Leases(b.backend, Holder("scale-1", 20, "ops", "scale"), ttl_s=30)
    vdi = serve.acquire(pool_scope("vdi"))
    with pytest.raises(LeaseHeld, match=r"^the ledger is held by forkscale serve \(pid 10 on host ctl-1\).*\(pool 'vdi'\)$"):
        scale.acquire(LEDGER_SCOPE)
    other = Leases(b.backend, Holder("serve-2", 30, "ctl-2", "serve"), ttl_s=30)
    assert other.acquire(pool_scope("workers")).token == 1  # pools are independent
    with pytest.raises(LeaseHeld, match=r"^pool 'vdi' is held by forkscale serve \(pid 10 on host ctl-1\)"):
        other.acquire(pool_scope("vdi"))
    serve.release(vdi)
    other_release = other.all(pool_scope("workers"))[0]
    other.release(other_release)
    whole = scale.acquire(LEDGER_SCOPE)
    with pytest.raises(LeaseHeld, match=r"^pool 'vdi' is held by forkscale scale \(pid 20 on host ops\).*\(the ledger\)$"):
        serve.acquire(pool_scope("vdi"))
    assert whole.token == 1


def test_a_replica_writes_only_for_pools_it_owns_but_claims_and_releases_any(two):
    owner, replica = two
    lease = Leases(owner.backend, holder("owner"), ttl_s=30).acquire(pool_scope("vdi"))
    owner.owners_only()
    owner.fence(lease, "vdi")
    ready = [walk(owner, plan(owner, "vdi").id, "cloning", "customizing", "ready") for _ in range(2)]
    with pytest.raises(LeaseLost, match="does not own pool 'db'"):
        plan(owner, "db")
    replica.owners_only()  # owns nothing
    with pytest.raises(LeaseLost, match="does not own pool 'vdi'"):
        replica.transition(ready[0].id, "draining")
    got = replica.claim("vdi", "alice")
    assert got is not None and got.id == ready[0].id
    back = replica.release(got.id, "draining")
    assert (back.state, back.claimed_by) == ("draining", "alice")
    assert [e.what for e in replica.events(got.id)][-2:] == ["claimed", "draining"]
    with pytest.raises(LeaseLost):
        replica.transition(got.id, "destroying")
    owner.transition(got.id, "destroying")


def _take(i: int, led: Ledger, scope: str, barrier: threading.Barrier, winners: list[str]) -> None:
    barrier.wait()
    try:
        Leases(led.backend, holder(str(i)), ttl_s=30).acquire(scope)
        winners.append(str(i))
    except LeaseHeld:
        pass


def test_racing_takers_never_both_win(ledger_state: str):
    ledgers = [Ledger(ledger_state) for _ in range(4)]
    try:
        for trial in range(10):
            scope = f"pool:race-{trial}"
            winners: list[str] = []
            barrier = threading.Barrier(len(ledgers))

            threads = [threading.Thread(target=_take, args=(i, led, scope, barrier, winners))
                       for i, led in enumerate(ledgers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(winners) == 1, (trial, winners)
    finally:
        for led in ledgers:
            led.close()


def test_a_live_lease_whose_holder_died_on_this_machine_is_taken_at_once(two):
    import subprocess
    import sys

    a, b = two
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = Holder.this_process("scale")
    Leases(a.backend, Holder("dead", dead.pid, here.host, "scale", machine=here.machine), ttl_s=60).acquire("ledger")
    mine = Leases(b.backend, Holder.this_process("scale"), ttl_s=60)
    taken = mine.acquire("ledger")
    assert taken.token == 2
    mine.release(taken)
    # the same pid on another machine says nothing about that holder: wait for its expiry
    Leases(a.backend, Holder("far", dead.pid, "far", "scale", machine="other"), ttl_s=60).acquire("pool:x")
    with pytest.raises(LeaseHeld, match="pid"):
        Leases(b.backend, Holder.this_process("scale"), ttl_s=60).acquire("pool:x")
