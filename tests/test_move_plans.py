"""The pure planning of day-2 moves (issue 15): shares by free space under max_used_pct, hosts by
memory, which clones move first, and how each kind moves. No vCenter: tables in, plans out."""

from __future__ import annotations

from collections import Counter

from forkscale.core.identity import NetworkAlloc
from forkscale.fleet.balance import Datastore, GiB, datastore_shares, host_shares, imbalance
from forkscale.ledger import CloneRecord
from forkscale.spec.model import Network, Placement, Pool, Rebalance
from forkscale.vsphere.model import Inventory
from forkscale.workloads.moves.plan import Hosts, Placed, plan_evacuate, plan_rebalance
from forkscale.workloads.moves.promote import due

TiB = 1024 * GiB


def test_shares_follow_free_space_without_the_pools_own_clones():
    dss = [Datastore("a", 4 * TiB, 1 * TiB, pool_bytes=3 * TiB), Datastore("b", 4 * TiB, 4 * TiB)]
    got = datastore_shares(dss, 100, clone_bytes=GiB).counts
    assert got == {"a": 50, "b": 50}, "a would be as free as b without the pool's clones"
    dss = [Datastore("a", 4 * TiB, 1 * TiB), Datastore("b", 4 * TiB, 3 * TiB)]
    assert datastore_shares(dss, 100, clone_bytes=GiB).counts == {"a": 25, "b": 75}


def test_no_datastore_is_filled_past_max_used_pct_and_a_replica_counts():
    # 100 GiB each; a is 70 % used already: under 80 % it takes at most 10 GiB more
    dss = [Datastore("a", 100 * GiB, 30 * GiB), Datastore("b", 100 * GiB, 100 * GiB)]
    got = datastore_shares(dss, 40, clone_bytes=2 * GiB, max_used_pct=80).counts
    assert got["a"] == 5 and got["b"] == 35
    with_replica = [Datastore("a", 100 * GiB, 30 * GiB, needs_replica=6 * GiB), Datastore("b", 100 * GiB, 100 * GiB)]
    assert datastore_shares(with_replica, 40, clone_bytes=2 * GiB, max_used_pct=80).counts["a"] == 2
    full = datastore_shares([Datastore("a", 10 * GiB, 1 * GiB)], 3, clone_bytes=2 * GiB)
    assert full.counts == {"a": 3} and full.overflow == 3, "nowhere to go is said, not hidden"


def test_hosts_by_memory_and_imbalance():
    assert host_shares({"h1": 256, "h2": 128, "h3": 128}, 8) == {"h1": 4, "h2": 2, "h3": 2}
    assert imbalance({"a": 10, "b": 0}, {"a": 5, "b": 5}) == 0.5
    assert imbalance({}, {}) == 0.0


def pool(**kw) -> Pool:
    alloc = NetworkAlloc.parse("10.0.0.0/22")
    return Pool(name="p", source="g", network=Network(cidr=alloc.cidr, range=alloc.range, port_group="pg"), count=0,
                **kw)


def inv(**free_tib: float) -> Inventory:
    out = Inventory()
    for i, (name, free) in enumerate(sorted(free_tib.items())):
        out.datastores[name] = (f"ds-{i}", int(free * TiB))
        out.datastore_capacity[name] = 4 * TiB
    for i, h in enumerate(("h1", "h2")):
        out.hosts[h] = f"host-{i}"
        out.host_names[f"host-{i}"] = h
        out.host_connected[f"host-{i}"] = True
        out.host_memory[f"host-{i}"] = 128 * GiB
    return out


_ids = iter(range(1, 10_000))


def clone(name: str, kind: str = "linked", state: str = "ready", ds: str = "a", host: str = "h1",
          created: float = 0.0) -> Placed:
    rec = CloneRecord(id=next(_ids), pool="p", name=name, hostname=name, ip="10.0.0.9", mac="00:50:56:00:00:01",
                      kind=kind, source="g", source_generation=1, host=host, datastore=ds, port_group="pg",
                      vm_moref=f"vm-{name}", state=state, fallback_reason=None, error=None,
                      claimed_by="ann" if state == "claimed" else None, claimed_at=None, created_at=created,
                      updated_at=0.0, ready_at=None)
    return Placed(rec, ds, host)


def test_a_removed_datastore_is_vacated_cheapest_first_each_kind_its_own_way():
    p = pool(placement=Placement(datastores=("b",)), rebalance=Rebalance())
    clones = [clone("c1"), clone("c2", state="claimed"), clone("c3", kind="full"), clone("c4", kind="instant"),
              clone("c5", kind="full", state="claimed"), clone("c6", state="claimed", ds="b")]
    hosts = Hosts(instant=["h1", "h2"], other=["h1", "h2"])
    steps = {s.target: s for s in plan_rebalance(p, inv(a=1, b=3), clones, hosts)}
    assert set(steps) == {"c1", "c2", "c3", "c4", "c5"}, "everything leaves a, c6 stays on b"
    assert {t: s.action for t, s in steps.items()} == {"c1": "recreate", "c2": "recreate", "c3": "relocate",
                                                       "c4": "recreate", "c5": "relocate"}
    assert steps["c2"].detail["when"] == "waits for release"
    assert all(s.detail["to_datastore"] == "b" for s in steps.values())
    forced = {s.target: s.action for s in plan_rebalance(p, inv(a=1, b=3), clones, hosts, force=True)}
    assert forced["c2"] == "consolidate", "a claimed linked clone keeps its data when forced"


def test_rebalance_moves_only_the_surplus_and_keeps_hosts_even():
    p = pool(placement=Placement(datastores=("a", "b")), rebalance=Rebalance())
    clones = [clone(f"c{i:02d}", host="h1" if i % 2 else "h2") for i in range(8)]
    steps = plan_rebalance(p, inv(a=1, b=3), clones, Hosts(["h1", "h2"], ["h1", "h2"]))
    assert Counter(s.detail["to_datastore"] for s in steps) == {"b": 6}, "b has 3/4 of the free space"
    assert all(s.detail["to_host"] == s.detail["from_host"] for s in steps), "hosts were even: nobody hops"
    # all on h1: half of them leave for h2 (linked clones by vMotion, their disks stay)
    crowded = [clone(f"d{i}", host="h1", ds="b") for i in range(4)]
    moves = plan_rebalance(pool(placement=Placement(datastores=("b",))), inv(b=3), crowded,
                           Hosts(["h1", "h2"], ["h1", "h2"]))
    assert [(s.action, s.detail["to_host"]) for s in moves] == [("migrate", "h2"), ("migrate", "h2")]


def test_evacuate_plans_every_clone_off_the_host_then_its_source():
    p = pool()
    clones = [clone("e1", kind="instant", host="h2"), clone("e2", kind="instant", state="claimed", host="h2"),
              clone("e3", kind="linked", host="h2"), clone("e4", kind="full", host="h2"), clone("e5", host="h1")]
    steps = plan_evacuate(p, clones, "h2", Hosts(["h1", "h2"], ["h1", "h2"]), source="g-p-src-h2-g1")
    assert [(s.target, s.action, s.detail.get("to_host")) for s in steps] == [
        ("e1", "recreate", "h1"), ("e3", "migrate", "h1"), ("e4", "relocate", "h1"),
        ("e2", "recreate", "h1"), ("g-p-src-h2-g1", "retire-source", None)]
    assert steps[3].detail["when"] == "waits for release" and steps[-1].batch == 2
    nowhere = plan_evacuate(p, clones[:1], "h2", Hosts(["h2"], ["h1", "h2"]))
    assert "no other host" in nowhere[0].detail["error"]


def test_kind_policy_due():
    from forkscale.spec.model import KindPolicy

    clones = [clone("old", created=0.0), clone("new", created=90.0), clone("mine", state="claimed", created=90.0),
              clone("fat", kind="full", created=0.0)]
    recs = [c.rec for c in clones]
    assert due(pool(kind_policy=KindPolicy(linked_max_age_s=60)), recs, now=100.0) == ["old"]
    assert due(pool(kind_policy=KindPolicy(promote_on_claim=True)), recs, now=100.0) == ["mine"]
    assert due(pool(), recs, now=1e9) == []
