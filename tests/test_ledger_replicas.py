"""The ledger's replicas, on both backends: one usable per pool, image and datastore; reference counts that are the
clones naming them; never removed while a clone depends on one; kind changes drop the dependency."""

from __future__ import annotations

import pytest

from forkscale.ledger import Ledger, LedgerError
from tests.test_ledger import plan, walk


@pytest.fixture
def ledger(ledger_state: str):  # on SQLite and on PostgreSQL
    with Ledger(ledger_state) as led:
        yield led


def name(replica_id: int) -> str:
    return f"src-linux-web-replica-ds-ssd-r{replica_id}"


def test_one_usable_replica_per_pool_image_and_datastore(ledger: Ledger):
    first = ledger.add_replica("web", "vm-1@snapshot-1", "ds-ssd", name)
    assert (first.state, first.vm_name, first.refs) == ("preparing", name(first.id), 0)
    with pytest.raises(LedgerError, match="already has a replica"):
        ledger.add_replica("web", "vm-1@snapshot-1", "ds-ssd", name)
    ledger.add_replica("web", "vm-1@snapshot-1", "ds-hdd", name)  # another datastore
    ledger.add_replica("web", "vm-1@snapshot-2", "ds-ssd", name)  # another image
    ledger.add_replica("db", "vm-1@snapshot-1", "ds-ssd", name)  # another pool
    ledger.update_replica(first.id, state="gone")
    again = ledger.add_replica("web", "vm-1@snapshot-1", "ds-ssd", name)  # the old one is history
    assert again.id != first.id


def test_refs_are_the_clones_not_gone_that_name_the_replica(ledger: Ledger):
    rep = ledger.add_replica("web", "vm-1@snapshot-1", "ds-ssd", name)
    clones = [plan(ledger, kind="linked") for _ in range(3)]
    for c in clones:
        ledger.bind_replica(c.id, rep.id)
    assert ledger.replica(rep.id).refs == 3
    walk(ledger, clones[0].id, "destroying", "gone")
    ledger.transition(clones[1].id, "failed", error="its VM may still be there")
    assert ledger.replica(rep.id).refs == 2, "a failed clone may still hold its delta: it keeps its reference"
    ledger.change_kind(clones[2].id, "full", "promoted")
    assert ledger.get(clones[2].id).replica_id is None and ledger.get(clones[2].id).kind == "full"
    assert ledger.replica(rep.id).refs == 1
    assert [e.what for e in ledger.events(clones[2].id)][-2:] == ["replica", "promoted"]


def test_a_replica_is_removed_only_with_no_dependant_and_then_takes_none(ledger: Ledger):
    rep = ledger.add_replica("web", "vm-1@snapshot-1", "ds-ssd", name)
    ledger.update_replica(rep.id, vm_moref="vm-9", state="ready")
    clone = plan(ledger, kind="linked")
    ledger.bind_replica(clone.id, rep.id)
    assert ledger.retire_replica(rep.id) is False
    assert ledger.replica(rep.id).state == "ready"
    ledger.bind_replica(clone.id, None)
    assert ledger.retire_replica(rep.id) is True
    assert ledger.replica(rep.id).state == "removing"
    with pytest.raises(LedgerError, match="cannot depend on it"):
        ledger.bind_replica(clone.id, rep.id)
    assert ledger.replicas("web", ["preparing", "ready"]) == []
