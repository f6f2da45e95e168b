"""Several `forkscale serve` replicas on one PostgreSQL ledger and one twin (issue 18).

A VDI pool and a worker pool, three replicas: each pool is owned by exactly one replica, pools are
spread, every replica answers claims; a replica killed with -9 mid scale-up loses its pool to
another within ha.failover_s and the pool converges with nothing duplicated or leaked; a replica
stopped (SIGSTOP) for longer than its lease is fenced off: once resumed it writes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkscale.ledger import Holder, Leases, Ledger
from forkscale.sim import start_in_thread
from tests.serve_helpers import Served, base_pool, start_serve, token_file, write_pool_spec
from tests.spine_helpers import pool_vms

DEFAULT_FAILOVER_S = 15.0


def vdi_pool(**policy: Any) -> dict[str, Any]:
    return base_pool("vdi", source="src-win", port_group="dvpg-vdi", cidr="10.30.0.0/23", on_release="refresh",
                     policy={"strategy": "headroom", "headroom": 10, "min": 0, "max": 300, "cooldown_up_s": 0,
                             "cooldown_down_s": 600, "evaluate_every_s": 0.5, **policy})


def worker_pool() -> dict[str, Any]:
    return base_pool("workers", source="src-linux", cidr="10.40.0.0/24", count=4,
                     policy={"strategy": "fixed", "count": 4, "evaluate_every_s": 1})


def start_replicas(tmp_path: Path, spec: Path, n: int = 3) -> list[Served]:
    path, token = token_file(tmp_path)
    replicas: list[Served] = []
    try:
        for _ in range(n):
            replicas.append(start_serve(tmp_path, spec, token_path=path, token=token))
    except BaseException:
        stop_all(replicas)
        raise
    return replicas


def stop_all(replicas: list[Served]) -> None:
    for r in replicas:
        if r.proc.poll() is None:
            os.kill(r.proc.pid, signal.SIGCONT)  # a stopped one must be able to hear SIGTERM
            r.proc.send_signal(signal.SIGTERM)
    for r in replicas:
        try:
            r.proc.wait(timeout=30)
        except Exception:
            r.proc.kill()
            r.proc.wait()


def health(r: Served) -> dict[str, Any]:
    code, doc, _ = r.call("GET", "/healthz", token=None, timeout=10)
    assert code == 200, doc
    return doc


def owners(replicas: list[Served]) -> dict[str, list[int]]:
    """pool -> indexes of the (living) replicas that say they own it."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(replicas):
        if r.proc.poll() is None:
            for pool in health(r)["owns"]:
                out.setdefault(pool, []).append(i)
    return out


def wait_for(what: str, predicate: Any, timeout: float, replicas: list[Served]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- replica {i}:\n{r.log_tail(25)}" for i, r in enumerate(replicas))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
        time.sleep(0.1)


def spread(replicas: list[Served]) -> dict[str, int] | None:
    """{pool: owner index} once each pool has exactly one owner and no replica owns both."""
    found = owners(replicas)
    if set(found) != {"vdi", "workers"} or any(len(v) != 1 for v in found.values()):
        return None
    if found["vdi"] == found["workers"]:
        return None
    return {pool: idx[0] for pool, idx in found.items()}


def tagged(twin, pool: str) -> list[dict[str, str]]:
    return twin.call(lambda t: [{**mo.extra, "name": mo.name} for mo in list(t.world.objects.values())
                                if getattr(mo, "extra", {}).get("forkscale.pool") == pool])


def check_consistent(si, state: str, pool: str) -> int:
    """vCenter and the ledger agree, nothing duplicated, nothing leaked; the pool's size."""
    vms = pool_vms(si, pool)
    for key in ("name", "nic_mac", "guestinfo.forkscale.ip", "forkscale.id"):
        assert len({v[key] for v in vms}) == len(vms), key
    with Ledger(state) as led:
        live = {r.name: r for r in led.live(pool)}
        assert {r.state for r in live.values()} <= {"ready", "claimed"}, {r.state for r in live.values()}
        assert len(led.clones(pool, ["failed", "destroying"])) == 0
    assert set(live) == {v["name"] for v in vms}, "a clone in vCenter the ledger does not know, or the reverse"
    for v in vms:
        row = live[v["name"]]
        assert (row.ip, row.mac, str(row.id)) == (v["guestinfo.forkscale.ip"], v["nic_mac"], v["forkscale.id"])
    return len(vms)


@pytest.fixture
def twin(tmp_path: Path):
    """A twin whose hosts hold a few hundred desktops (the default world's 128 GiB hold ~80 of src-win)."""
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump({"hosts": [{"name": f"esx-0{i}", "memory_gib": 1024, "cpu_cores": 64}
                                               for i in range(1, 5)]}))
    handle = start_in_thread(world=str(world), time_scale=0.001, state_dir=str(tmp_path / "sim"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def cluster(twin, tmp_path, postgres_db):
    """Three replicas on one PostgreSQL ledger and one twin, pools spread."""
    twin.admin("freeze", vm="src-win")
    twin.admin("freeze", vm="src-linux")
    spec = write_pool_spec(tmp_path, twin, [vdi_pool(), worker_pool()], state=postgres_db.url)
    replicas = start_replicas(tmp_path, spec)
    try:
        yield replicas, postgres_db.url
    finally:
        stop_all(replicas)


def test_three_replicas_spread_the_pools_and_answer_200_concurrent_claims(cluster, twin, si):
    replicas, state = cluster
    where = wait_for("each pool owned once, by different replicas", lambda: spread(replicas), 60, replicas)
    standby = ({0, 1, 2} - set(where.values())).pop()
    assert health(replicas[standby])["owns_pools"] is False
    wait_for("every replica to see three", lambda: all(health(r)["replicas"] == 3 for r in replicas), 30, replicas)
    replicas[0].wait_status("vdi", lambda d: d["spares"] == 10 and d["building"] == 0, timeout=60,
                            what="10 spares")

    def claim(i: int) -> tuple[int, Any]:
        code, doc, _ = replicas[i % 3].call("POST", "/v1/pools/vdi/claim", {"user": f"user{i:03d}", "wait_s": 120},
                                            timeout=150)
        return code, doc

    with ThreadPoolExecutor(max_workers=200) as pool:
        answers = list(pool.map(claim, range(200)))
    assert [code for code, _ in answers] == [200] * 200, [a for a in answers if a[0] != 200][:5]
    desktops = [doc for _, doc in answers]
    assert len({d["vm"] for d in desktops}) == 200
    assert len({d["ip"] for d in desktops}) == 200
    assert {d["user"] for d in desktops} == {f"user{i:03d}" for i in range(200)}
    # every replica's status reads the same ledger; the owner's policy refills behind the users
    for r in replicas:
        st = r.wait_status("vdi", lambda d: d["claimed"] == 200 and d["spares"] == 10 and d["building"] == 0,
                           timeout=120, what="200 claimed + 10 spares")
        assert st["owner"]["replica"] == health(replicas[where["vdi"]])["replica"]
        assert st["owner"]["here"] == (r is replicas[where["vdi"]])
    assert check_consistent(si, state, "vdi") == 210
    by_name = {v["name"]: v for v in pool_vms(si, "vdi")}
    for d in desktops:
        assert by_name[d["vm"]]["guestinfo.forkscale.ip"] == d["ip"]
    replicas[standby].wait_status("workers", lambda d: d["current"] == 4 and d["ready"] == 4, timeout=60,
                                  what="4 workers")
    assert check_consistent(si, state, "workers") == 4


def test_kill_9_of_the_vdi_owner_mid_scale_up_fails_over_within_15_s(cluster, twin, si):
    replicas, state = cluster
    where = wait_for("pools spread", lambda: spread(replicas), 60, replicas)
    owner = replicas[where["vdi"]]
    other = replicas[(where["vdi"] + 1) % 3]
    other.wait_status("vdi", lambda d: d["spares"] == 10 and d["building"] == 0, timeout=60, what="10 spares")
    twin.admin("time_scale", value=0.3)  # slow clones: the kill lands mid scale-up
    code, doc, _ = other.call("PUT", "/v1/pools/vdi/count", {"count": 80})  # a floor, set on a non-owner
    assert code == 202 and doc["applied"] == "min", doc
    wait_for("the owner scaling up", lambda: len(tagged(twin, "vdi")) >= 20, 60, replicas)
    owner.proc.kill()
    killed_at = time.monotonic()
    owner.proc.wait()
    survivors = [r for r in replicas if r is not owner]
    new = wait_for("another replica owning vdi", lambda: owners(survivors).get("vdi"), 30, survivors)
    failover_s = time.monotonic() - killed_at
    print(f"failover after kill -9: {failover_s:.1f}s")
    assert failover_s < DEFAULT_FAILOVER_S, failover_s
    assert len(new) == 1
    st = other.status("vdi")
    assert st["owner"]["replica"] == health(survivors[new[0]])["replica"] and st["owner"]["live"]
    twin.admin("time_scale", value=0.001)
    other.wait_status("vdi", lambda d: d["current"] == 80 and d["building"] == 0 and d["spares"] == 80
                      and set(d["counts"]) == {"ready"}, timeout=120, what="80 ready after the failover")
    assert check_consistent(si, state, "vdi") == 80
    assert sum(health(r)["failovers"]["vdi"] for r in survivors) == 1
    new_owner = survivors[new[0]]
    code, text, _ = new_owner.call("GET", "/metrics", token=None)
    assert code == 200
    assert 'forkscale_pool_owned{pool="vdi"} 1.0' in text
    assert 'forkscale_pool_failovers_total{pool="vdi"} 1.0' in text
    wait_for("two live replicas", lambda: "forkscale_replicas 2.0" in new_owner.call("GET", "/metrics", token=None)[1],
             30, survivors)


def test_a_stopped_owner_past_its_lease_is_fenced_off_when_it_resumes(twin, si, tmp_path, postgres_db):
    twin.admin("freeze", vm="src-win")
    twin.admin("freeze", vm="src-linux")
    spec = write_pool_spec(tmp_path, twin, [vdi_pool(), worker_pool()], state=postgres_db.url,
                           ha={"failover_s": 6})  # lease 3.6 s
    replicas = start_replicas(tmp_path, spec)
    try:
        where = wait_for("pools spread", lambda: spread(replicas), 60, replicas)
        owner = replicas[where["vdi"]]
        me = health(owner)["replica"]
        twin.admin("time_scale", value=0.3)
        code, _, _ = owner.call("PUT", "/v1/pools/vdi/count", {"count": 60})
        assert code == 202
        wait_for("the owner scaling up", lambda: len(tagged(twin, "vdi")) >= 15, 60, replicas)
        with Ledger(postgres_db.url) as led:
            old = next(x for x in Leases(led.backend, Holder.this_process("t"), 1).all("pool:vdi"))
        assert old.holder == me
        owner.proc.send_signal(signal.SIGSTOP)
        with Ledger(postgres_db.url) as led:  # its last renewal: nothing renews it any more
            last = next(x for x in Leases(led.backend, Holder.this_process("t"), 1).all("pool:vdi"))
        survivors = [r for r in replicas if r is not owner]
        wait_for("another replica owning vdi", lambda: owners(survivors).get("vdi"), 30, survivors)
        with Ledger(postgres_db.url) as led:
            taken = next(x for x in Leases(led.backend, Holder.this_process("t"), 1).all("pool:vdi"))
        assert taken.holder != me and taken.token == old.token + 1
        assert taken.acquired_at >= last.expires_at  # not before the stopped owner's lease ran out
        owner.proc.send_signal(signal.SIGCONT)
        # it finds out: its lease is gone, it owns nothing, its writes were refused
        wait_for("the resumed replica to give the pool up", lambda: "vdi" not in health(owner)["owns"], 30, replicas)
        twin.admin("time_scale", value=0.001)
        survivors[0].wait_status("vdi", lambda d: d["current"] == 60 and d["building"] == 0
                                 and set(d["counts"]) == {"ready"}, timeout=120, what="60 ready")
        time.sleep(1.0)  # let anything the resumed replica still had in flight come back
        log = owner.log.read_text(errors="replace")
        assert "stale" in log or "lost the pool" in log, owner.log_tail(60)
        # the fencing: not one ledger write under the old token after the takeover
        with Ledger(postgres_db.url) as led:
            stale = [e for r in led.clones("vdi") for e in led.events(r.id)
                     if e.writer == f"{me}#{old.token}" and e.at > taken.acquired_at]
            mine_before = [e for r in led.clones("vdi") for e in led.events(r.id) if e.writer == f"{me}#{old.token}"]
        assert mine_before, "the owner's writes carry its holder and token"
        assert stale == [], stale[:5]
        assert check_consistent(si, postgres_db.url, "vdi") == 60
        doc = json.dumps(health(owner))
        assert '"owns": []' in doc or '"owns": ["workers"]' in doc
    finally:
        stop_all(replicas)
