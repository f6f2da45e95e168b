"""`forkscale promote` (issue 15): linked clones become full clones in place (PromoteDisks_Task), the
ledger records the kind change, the replica goes with its last dependant, and the twin's datastore
space accounts for the copies. Through the CLI against the twin, checked with stock pyVmomi."""

from __future__ import annotations

import json

from tests.fixtures.twin import find_vm
from tests.spine_helpers import cli, pool_vms, write_spec
from tests.test_linked_replicas import disks_of, status
from tests.test_rebalance import datastores


def linked(tmp_path, twin, count):
    return write_spec(tmp_path, twin, count=count, fallback=("linked",))


def test_promote_all_makes_every_linked_clone_full_and_frees_the_replica(twin, si, tmp_path, capsys):
    spec = linked(tmp_path, twin, 20)
    assert cli("apply", "-f", str(spec)) == 0
    before = disks_of(si)
    replica = next(n for n, v in before.items() if "forkscale.replica" in v["extra"])
    size = find_vm(si, replica).summary.storage.committed  # the image, whole (what each promotion copies)
    identities = {(v["name"], v["nic_mac"], v["forkscale.id"]) for v in pool_vms(si)}
    free_before = datastores(si)["ds-ssd"]["free"]
    capsys.readouterr()
    assert cli("promote", "quickstart", "--all", "-f", str(spec), "--dry-run", "-o", "json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert [s["target"] for s in dry["plan"]] == sorted(v["name"] for v in pool_vms(si))
    assert {s["action"] for s in dry["plan"]} == {"promote"}
    assert cli("promote", "quickstart", "--all", "-f", str(spec), "-o", "json") == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["summary"]["promoted"]) == 20 and out["summary"]["replicas_removed"]
    doc = status(spec, capsys)
    assert {c["kind"] for c in doc["clones"]} == {"full"} and len(doc["clones"]) == 20
    assert doc["replicas"] == []
    after = disks_of(si)
    clones = {n: v for n, v in after.items() if v["extra"].get("forkscale.pool") == "quickstart"}
    assert all(len(v["chain"]) == 1 for v in clones.values()), "each disk is one flat file now"
    assert not [n for n, v in after.items() if "forkscale.replica" in v["extra"]]
    assert {(v["name"], v["nic_mac"], v["forkscale.id"]) for v in pool_vms(si)} == identities, "same VMs"
    # space: 20 full copies of the image were written, one replica freed
    used = free_before - datastores(si)["ds-ssd"]["free"]
    assert 18 * size <= used <= 20 * size, (used, size)
    assert cli("promote", "quickstart", "--all", "-f", str(spec)) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_promoting_some_clones_keeps_the_replica_for_the_others_and_destroy_removes_their_files(
        twin, si, tmp_path, capsys):
    spec = linked(tmp_path, twin, 3)
    assert cli("apply", "-f", str(spec)) == 0
    names = sorted(v["name"] for v in pool_vms(si))
    assert cli("promote", "quickstart", names[0], "-f", str(spec)) == 0
    doc = status(spec, capsys)
    kinds = {c["name"]: c["kind"] for c in doc["clones"]}
    assert kinds == {names[0]: "full", names[1]: "linked", names[2]: "linked"}
    assert [r["clones"] for r in doc["replicas"]] == [2]
    assert cli("promote", "quickstart", "nope-001", "-f", str(spec)) == 2
    assert "no clone named 'nope-001'" in capsys.readouterr().err
    # deleting: the promoted clone's flat disk and the linked clones' deltas go; the replica last
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes") == 0
    left = twin.call(lambda t: sorted(f.name for f in t.world.disks.files.values()))
    assert not [f for f in left if "quickstart" in f], left
