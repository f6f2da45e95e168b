"""`forkscale rebalance` (issue 15): a pool's clones spread over its datastores in proportion to free
space, none past max_used_pct, replicas where linked clones land; a datastore taken out of the spec
is vacated, clones and replica. Through the CLI against the twin, checked with stock pyVmomi."""

from __future__ import annotations

import json
from collections import Counter

from pyVmomi import vim

from tests.spine_helpers import cli, pool_vms, write_spec
from tests.test_linked_replicas import disks_of, status


def datastores(si) -> dict[str, dict[str, int]]:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.Datastore], True)
    try:
        return {d.name: {"capacity": d.summary.capacity, "free": d.summary.freeSpace} for d in view.view}
    finally:
        view.DestroyView()


def spec_on(tmp_path, twin, dss, count=60, **pool):
    extra = {"placement": {"datastores": list(dss), "folder": "forkscale"},
             "rebalance": {"max_concurrent": 8}}
    extra.update(pool)
    return write_spec(tmp_path, twin, count=count, fallback=("linked",), extra_pool=extra)


def test_rebalance_spreads_linked_clones_by_free_space_with_a_replica_on_each(twin, si, tmp_path, capsys):
    spec = spec_on(tmp_path, twin, ["ds-ssd"])
    assert cli("apply", "-f", str(spec)) == 0
    assert Counter(v["datastore"] for v in disks_of(si).values()
                   if v["extra"].get("forkscale.pool") == "quickstart") == {"ds-ssd": 60}
    identities = {(v["name"], v["nic_mac"], v["guestinfo.forkscale.ip"]) for v in pool_vms(si)}
    spec = spec_on(tmp_path, twin, ["ds-ssd", "ds-hdd"])
    capsys.readouterr()
    assert cli("rebalance", "quickstart", "-f", str(spec), "--dry-run", "-o", "json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["plan"] and {s["action"] for s in dry["plan"]} == {"recreate"}
    assert cli("rebalance", "quickstart", "-f", str(spec), "-o", "json") == 0
    out = json.loads(capsys.readouterr().out)
    ran = [{"batch": s["batch"], "action": s["action"], "target": s["target"]} for s in out["operation"]["steps"]]
    assert ran == [{"batch": s["batch"], "action": s["action"], "target": s["target"]} for s in dry["plan"]], \
        "the dry run printed the plan that ran"
    assert out["operation"]["state"] == "done" and not out["summary"]["failed"]
    # vCenter: the split follows free space within 10 %, neither datastore past 80 %
    vms = disks_of(si)
    clones = {n: v for n, v in vms.items() if v["extra"].get("forkscale.pool") == "quickstart"}
    on = Counter(v["datastore"] for v in clones.values())
    assert sum(on.values()) == 60
    stores = datastores(si)
    free = {d: stores[d]["free"] for d in ("ds-ssd", "ds-hdd")}
    for d in free:
        assert abs(on[d] / 60 - free[d] / sum(free.values())) <= 0.10, (on, free)
        assert 1 - stores[d]["free"] / stores[d]["capacity"] <= 0.80
    # the same clones (names, MACs, IPs), each a delta of the replica on its own datastore
    assert {(v["name"], v["nic_mac"], v["guestinfo.forkscale.ip"]) for v in pool_vms(si)} == identities
    replicas = {v["datastore"]: v for v in vms.values() if "forkscale.replica" in v["extra"]}
    assert sorted(replicas) == ["ds-hdd", "ds-ssd"]
    for v in clones.values():
        assert v["chain"][:1] == replicas[v["datastore"]]["chain"][:1]
    doc = status(spec, capsys)
    assert {r["datastore"]: r["clones"] for r in doc["replicas"]} == dict(on), "refcounts match the clones"
    assert all(c["datastore"] == c["vcenter_datastore"] for c in doc["clones"])
    assert cli("rebalance", "quickstart", "-f", str(spec)) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_a_datastore_left_out_of_the_spec_is_vacated_clones_and_replica(twin, si, tmp_path, capsys):
    spec = spec_on(tmp_path, twin, ["ds-ssd", "ds-hdd"], count=12)
    assert cli("apply", "-f", str(spec)) == 0
    assert "ds-ssd" in {c["vcenter_datastore"] for c in status(spec, capsys)["clones"]}
    spec = spec_on(tmp_path, twin, ["ds-hdd"], count=12)
    assert cli("rebalance", "quickstart", "-f", str(spec)) == 0
    vms = disks_of(si)
    left = [n for n, v in vms.items() if v["datastore"] == "ds-ssd" and n not in ("src-linux", "src-win")]
    assert left == [], "no clone or replica stays on the removed datastore"
    assert len([v for v in vms.values() if v["extra"].get("forkscale.pool") == "quickstart"]) == 12
    assert [r["datastore"] for r in status(spec, capsys)["replicas"]] == ["ds-hdd"]


def check_pool_consistent(si, state, *, count: int, pool: str = "quickstart") -> dict[str, str]:
    """vCenter and the ledger agree: `count` clones with distinct identities, each VM known to the ledger;
    replica VMs exactly the ledger's usable replicas, one per datastore holding linked clones, refcounts
    right; no identity left reserved. Returns clone name -> datastore."""
    from forkscale.ledger import Ledger

    vms = disks_of(si)
    clones = {n: v for n, v in vms.items() if v["extra"].get("forkscale.pool") == pool and "forkscale.id" in v["extra"]}
    tagged = [v for v in pool_vms(si, pool) if "forkscale.id" in v]
    assert len(clones) == count
    for key in ("name", "nic_mac", "guestinfo.forkscale.ip", "forkscale.id"):
        assert len({v[key] for v in tagged}) == count, key
    replica_vms = {v["extra"]["forkscale.replica"]: v["datastore"] for v in vms.values() if "forkscale.replica" in v["extra"]}
    with Ledger(state) as ledger:
        live = {r.name: r for r in ledger.live(pool)}
        assert set(live) == set(clones) and {r.state for r in live.values()} <= {"ready", "claimed"}
        assert {str(r.id) for r in live.values()} == {v["forkscale.id"] for v in tagged}
        usable = ledger.replicas(pool, ["preparing", "ready", "removing"])
        assert {f"{pool}:{r.id}": r.datastore for r in usable} == replica_vms, "no replica leaked or lost"
        linked_on = Counter(clones[r.name]["datastore"] for r in live.values() if r.kind == "linked")
        assert {r.datastore: r.refs for r in usable} == dict(linked_on)
        assert ledger.reservations.of(pool) == []
        for name in clones:  # a clone was re-created at most once: its original VM and one replacement
            assert len([r for r in ledger.clones(pool) if r.name == name and r.vm_moref]) <= 2, name
    return {n: v["datastore"] for n, v in clones.items()}


def test_kill_9_at_ten_moments_of_a_rebalance_then_rerun_loses_and_duplicates_nothing(twin, si, tmp_path, capsys):
    count = 30
    spec = spec_on(tmp_path, twin, ["ds-ssd"], count=count, rebalance={"max_concurrent": 6})
    assert cli("apply", "-f", str(spec)) == 0
    spec = spec_on(tmp_path, twin, ["ds-hdd"], count=count, rebalance={"max_concurrent": 6})  # vacate ds-ssd
    twin.admin("time_scale", value=0.03)
    kill_at_random_moments(["rebalance", "quickstart", "-f", str(spec)], tmp_path / "state.sqlite")
    twin.admin("time_scale", value=0.001)
    assert cli("rebalance", "quickstart", "-f", str(spec)) == 0
    where = check_pool_consistent(si, tmp_path / "state.sqlite", count=count)
    assert set(where.values()) == {"ds-hdd"}


def kill_at_random_moments(argv: list[str], state, *, kills: int = 10, seed: int = 15, pool: str = "quickstart") -> None:
    """Run the command `kills` times, each killed with SIGKILL at a random moment: every other kill
    after a random delay, the others a random moment after the operation moved on by one step (so
    kills land mid-operation however slow the machine is)."""
    import random
    import time

    from tests.spine_helpers import cli_process

    rng = random.Random(seed)
    landed = []
    for i in range(kills):
        before = _progress(state, pool)[0]
        proc = cli_process(*argv)
        if i % 2:
            deadline = time.monotonic() + 60
            while _progress(state, pool)[0] == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            time.sleep(rng.uniform(0.3, 3.0))
        proc.kill()
        proc.communicate()
        landed.append(_progress(state, pool))
    assert any(0 < done < total for done, total in landed), f"no kill landed mid-operation: {landed}"


def _progress(state, pool: str = "quickstart") -> tuple[int, int]:
    """(steps done, steps) of the pool's last operation."""
    from forkscale.ledger import Ledger

    if not state.exists():
        return (0, 0)
    with Ledger(state) as ledger:
        op = ledger.operations.last(pool)
        if op is None:
            return (0, 0)
        steps = ledger.operations.steps(op.id)
        return (len([s for s in steps if s.state == "done"]), len(steps))


def test_each_kind_moves_its_own_way_claimed_ones_wait_for_release_or_are_forced(twin, si, tmp_path, capsys):
    import time

    from forkscale.ledger import Ledger
    from tests.spine_helpers import cli_process

    state = tmp_path / "state.sqlite"
    spec = write_spec(tmp_path, twin, count=3, fallback=("full",))
    assert cli("apply", "-f", str(spec)) == 0
    spec = spec_on(tmp_path, twin, ["ds-ssd"], count=6)
    assert cli("apply", "-f", str(spec)) == 0  # 3 full + 3 linked clones, all on ds-ssd
    with Ledger(state) as ledger:
        live = {r.name: r for r in ledger.live("quickstart")}
        full = sorted(n for n, r in live.items() if r.kind == "full")
        linked = sorted(n for n, r in live.items() if r.kind == "linked")
        for name in (full[0], linked[0], linked[1]):
            ledger.transition(live[name].id, "claimed", claimed_by="ann")
    morefs = {n: r.vm_moref for n, r in live.items()}
    spec = spec_on(tmp_path, twin, ["ds-hdd"], count=6)
    capsys.readouterr()
    assert cli("rebalance", "quickstart", "-f", str(spec), "--dry-run", "-o", "json") == 0
    actions = {s["target"]: (s["action"], s["detail"].get("when")) for s in json.loads(capsys.readouterr().out)["plan"]}
    assert actions == {full[0]: ("relocate", None), full[1]: ("relocate", None), full[2]: ("relocate", None),
                       linked[0]: ("recreate", "waits for release"), linked[1]: ("recreate", "waits for release"),
                       linked[2]: ("recreate", None)}
    proc = cli_process("rebalance", "quickstart", "-f", str(spec), "-o", "json")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _progress(state) != (4, 6):
            time.sleep(0.05)
        assert _progress(state) == (4, 6), "everything but the two claimed linked clones moved"
        with Ledger(state) as ledger:  # ann gives one back (on_release: keep)
            ledger.transition(ledger.by_name(linked[0]).id, "ready")
        while time.monotonic() < deadline and _progress(state) != (5, 6):
            time.sleep(0.05)
        assert _progress(state) == (5, 6)
    finally:
        proc.kill()
        proc.communicate()
    # --force: the claimed linked clone is relocated with its data (consolidated) and stays ann's
    capsys.readouterr()
    assert cli("rebalance", "quickstart", "-f", str(spec), "--force", "-o", "json") == 0
    doc = status(spec, capsys)
    clones = {c["name"]: c for c in doc["clones"]}
    assert {c["vcenter_datastore"] for c in clones.values()} == {"ds-hdd"}
    for name in full:  # relocated: the same VMs, their data moved whole
        assert clones[name]["vm"] == morefs[name] and clones[name]["kind"] == "full"
    assert clones[full[0]]["state"] == "claimed"
    assert clones[linked[1]]["vm"] == morefs[linked[1]], "consolidated in place, not re-created"
    assert (clones[linked[1]]["kind"], clones[linked[1]]["state"]) == ("full", "claimed")
    assert clones[linked[0]]["vm"] != morefs[linked[0]] and clones[linked[0]]["kind"] == "linked"
    vms = disks_of(si)
    assert len(vms[linked[1]]["chain"]) == 1 and vms[linked[1]]["chain"][0].startswith("[ds-hdd] ")
    assert [r["datastore"] for r in doc["replicas"]] == ["ds-hdd"]
