"""The ledger's day-2 tables on both backends (SQLite and PostgreSQL): image generations, operations
and their steps, identity reservations across a replacement, users' disks, fencing of executor writes."""

from __future__ import annotations

import pytest

from forkscale.ledger import LeaseLost, Ledger, LedgerError, OperationBusy, PlannedStep, ReservationTaken
from tests.test_ledger import plan, walk


@pytest.fixture
def ledger(ledger_state: str):
    with Ledger(ledger_state) as led:
        yield led


def test_image_generations(ledger: Ledger) -> None:
    old = plan(ledger, "vdi")
    first = ledger.images.ensure_first("vdi", "src-win", "base", "snapshot-1")
    assert (first.generation, first.state) == (1, "active")
    assert ledger.get(old.id).image_generation == 1  # rows older than the history are generation 1
    assert ledger.images.ensure_first("vdi", "other", None, None) == first  # once only
    second = ledger.images.add("vdi", "src-win", "patch", "snapshot-2", "ann")
    assert (second.generation, second.state, ledger.images.target("vdi")) == (2, "priming", second)
    with pytest.raises(LedgerError, match="already being pushed"):
        ledger.images.add("vdi", "src-win", "patch-2", "snapshot-3", "bob")
    ledger.images.activate("vdi", 2)
    history = ledger.images.history("vdi")
    assert [(i.generation, i.state) for i in history] == [(1, "retired"), (2, "active")]
    assert history[0].retired_at is not None and ledger.images.previous("vdi").generation == 1
    ledger.images.retarget("vdi", 1, "rollback")
    assert ledger.images.target("vdi").generation == 1
    ledger.images.fail("vdi", 1, "never mind")
    assert ledger.images.target("vdi") is None and ledger.images.active("vdi").generation == 2


def test_operations_and_steps(ledger: Ledger) -> None:
    steps = [PlannedStep(0, "prime", "esx-01", {"host": "esx-01"}), PlannedStep(1, "replace", "vdi-001", {"id": 7})]
    op = ledger.operations.start("vdi", "push-image", {"image_generation": 2}, steps, created_by="ann",
                                 phase="prime")
    with pytest.raises(OperationBusy):
        ledger.operations.start("vdi", "refresh", {}, [], created_by="bob")
    assert ledger.operations.claim(op.id, "a", 60) and not ledger.operations.claim(op.id, "b", 60)
    assert ledger.operations.claim(op.id, "b", 60, take_over="a")
    first, second = ledger.operations.steps(op.id)
    ledger.operations.mark(first.id, "running")
    done = ledger.operations.mark(first.id, "done", detail={"source": "src-g2"})
    assert done.detail == {"host": "esx-01", "source": "src-g2"} and done.started_at is not None
    ledger.operations.mark(second.id, "failed", error="guest reported error")
    assert ledger.operations.progress(op.id)["failed"] == 1
    ledger.operations.set_state(op.id, "paused", "health gate")
    ledger.operations.set_state(op.id, "running", "resumed")  # failed steps are retried
    assert [s.state for s in ledger.operations.steps(op.id)] == ["done", "pending"]
    added = ledger.operations.add_steps(op.id, [PlannedStep(2, "replace", "vdi-002")])
    assert [s.seq for s in added] == [2]
    ledger.operations.set_state(op.id, "done")
    assert ledger.operations.open("vdi") is None and ledger.operations.last("vdi").state == "done"


def test_a_replaced_clone_gives_its_identity_to_its_replacement_only(ledger: Ledger) -> None:
    old = walk(ledger, plan(ledger, "vdi").id, "cloning", "customizing", "ready", "claimed")
    ledger.replace(old.id, "push-image #1", claimed_by="alice")
    other = plan(ledger, "vdi")  # a scale-up meanwhile: the identity is not handed out
    assert (other.name, other.ip, other.mac) != (old.name, old.ip, old.mac)
    walk(ledger, old.id, "gone")
    assert [r.name for r in ledger.reservations.open("vdi")] == [old.name]
    third = plan(ledger, "vdi")  # the old row is gone, its identity still reserved: not handed out either
    assert old.name not in (other.name, third.name) and old.ip not in (other.ip, third.ip)
    new = plan(ledger, "vdi", reservation=old.name, image_generation=2)
    assert (new.name, new.hostname, new.ip, new.mac, new.image_generation) == (old.name, old.hostname, old.ip,
                                                                               old.mac, 2)
    with pytest.raises(ReservationTaken):
        plan(ledger, "vdi", reservation=old.name)
    walk(ledger, new.id, "cloning", "customizing")
    back = ledger.make_ready(new.id)
    assert (back.state, back.claimed_by) == ("claimed", "alice")  # handed straight back, nobody else could
    assert ledger.reservations.of("vdi") == []
    assert ledger.counts("vdi")["claimed"] == 1 and ledger.counts("vdi")["planned"] == 2
    walk(ledger, new.id, "destroying", "gone")  # scaled down for good: the identity is free again
    again = plan(ledger, "vdi")
    assert (again.name, again.ip) == (old.name, old.ip)


def test_a_reservation_given_up_frees_its_identity(ledger: Ledger) -> None:
    old = walk(ledger, plan(ledger, "vdi").id, "cloning", "customizing", "ready")
    ledger.replace(old.id, "refresh")
    walk(ledger, old.id, "gone")
    assert plan(ledger, "vdi").name != old.name
    assert ledger.reservations.drop(old.name)
    again = plan(ledger, "vdi")
    assert (again.name, again.ip) == (old.name, old.ip)
    assert ledger.counts("vdi")["gone"] == 1 and ledger.counts("vdi")["planned"] == 2


def test_user_disks(ledger: Ledger) -> None:
    disk = ledger.user_disks.record("vdi", "vdi-001", "[ds-hdd] forkscale-userdisks/vdi/vdi-001.vmdk", 10, 5)
    assert disk.state == "creating"
    ledger.user_disks.set(disk.id, "attached", 5)
    ledger.user_disks.set(disk.id, "detached", None)
    assert ledger.user_disks.of("vdi", "vdi-001").state == "detached"
    ledger.user_disks.set(disk.id, "deleted", None)
    assert ledger.user_disks.of("vdi", "vdi-001") is None
    assert ledger.user_disks.record("vdi", "vdi-001", "[ds-hdd] x.vmdk", 10, 9).state == "creating"  # a new one


def test_executor_writes_are_fenced_requests_are_not(ledger: Ledger) -> None:
    op = ledger.operations.start("vdi", "push-image", {}, [PlannedStep(1, "replace", "vdi-001")], created_by="x")
    ledger.owners_only()  # a serve replica that does not own pool vdi
    with pytest.raises(LeaseLost):
        ledger.operations.claim(op.id, "me", 60)
    with pytest.raises(LeaseLost):
        ledger.operations.mark(ledger.operations.steps(op.id)[0].id, "done")
    ledger.operations.set_state(op.id, "paused", "operator")  # a request: any replica takes it
    assert ledger.operations.open("vdi").state == "paused"
