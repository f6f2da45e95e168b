"""The ledger at O(1) per clone: identity from counters and free lists, counts kept by writes,
and every statement a converge round sends checked with EXPLAIN QUERY PLAN (no scan of clones)."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import time
from pathlib import Path

import pytest

from forkscale.core.identity import ExhaustedError, NetworkAlloc
from forkscale.ledger import STATES, Ledger, alloc
from forkscale.ledger.schema import MIGRATIONS
from forkscale.ledger.sqlite import migrate
from tests.spine_helpers import write_spec
from tests.test_ledger import plan, walk


def test_a_gone_clones_name_and_address_are_the_next_ones_handed_out(ledger_state: str):
    with Ledger(ledger_state) as led:
        recs = [plan(led) for _ in range(5)]
        assert [r.name for r in recs] == [f"web-{i:03d}" for i in range(1, 6)]
        walk(led, recs[1].id, "cloning", "failed")  # failed still holds its identity (it may land)
        assert plan(led).name == "web-006"
        walk(led, recs[1].id, "gone")
        walk(led, recs[3].id, "cloning", "failed", "gone")
        again = [plan(led), plan(led), plan(led)]
        assert [r.name for r in again] == ["web-002", "web-004", "web-007"]
        assert [r.ip for r in again[:2]] == [recs[1].ip, recs[3].ip]
        live = led.clones(states=[s for s in STATES if s != "gone"])
        assert len({r.mac for r in live}) == len({r.ip for r in live}) == len({r.name for r in live}) == len(live)


def test_a_name_taken_by_another_pool_is_skipped(ledger_state: str):
    with Ledger(ledger_state) as led:
        plan(led, pool="other", name_pattern="web-{index:03d}")  # a foreign row holds web-001
        assert plan(led).name == "web-002"
        assert plan(led).name == "web-003"


def test_a_full_range_is_exhausted_and_rolls_back_cleanly(ledger_state: str):
    tiny = NetworkAlloc.parse("10.30.0.0/29", gateway="10.30.0.1")  # .2-.6: five addresses
    with Ledger(ledger_state) as led:
        recs = [plan(led, network=tiny) for _ in range(5)]
        with pytest.raises(ExhaustedError):
            plan(led, network=tiny)
        assert led.counts("web")["planned"] == 5
        walk(led, recs[2].id, "gone")
        assert plan(led, network=tiny).ip == recs[2].ip


def test_a_ledger_from_before_the_counters_continues_where_its_rows_are(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:6])  # as an older forkscale left it (v6: before the counters)
    now = time.time()
    for i in (1, 2, 4):
        conn.execute("""INSERT INTO clones (pool, name, hostname, ip, mac, kind, source, source_generation, host,
                        datastore, port_group, state, created_at, updated_at)
                        VALUES ('web', ?, ?, ?, ?, 'instant', 's', 1, 'h', 'd', 'VM Network', 'ready', ?, ?)""",
                     (f"web-{i:03d}", f"web-{i:03d}", f"10.20.0.{i + 2}", f"00:50:56:00:00:0{i}", now, now))
    conn.close()
    with Ledger(path) as led:
        assert led.counts("web")["ready"] == 3
        first, second = plan(led), plan(led)
        assert (first.name, second.name) == ("web-003", "web-005")
        assert (first.ip, second.ip) == ("10.20.0.5", "10.20.0.7")  # .1 gateway, .2 DNS, .3 .4 .6 held
        old = led.by_name("web-002")
        assert old is not None
        walk(led, old.id, "failed", "gone")  # a row from before the counters gives its values back too
        assert plan(led).name == "web-002"


def test_counts_follow_every_write(ledger_state: str):
    rng = random.Random(7)
    with Ledger(ledger_state) as led:
        ids = [plan(led, pool=rng.choice(["a", "b"])).id for _ in range(40)]
        paths = [("cloning", "customizing", "ready"), ("cloning", "failed", "gone"), ("gone",),
                 ("cloning", "customizing", "ready", "claimed"), ("cloning", "customizing", "ready", "draining")]
        for clone_id in ids:
            walk(led, clone_id, *rng.choice(paths))
        for _ in range(3):
            led.claim("a", "bob")
        for pool in ("a", "b"):
            truth = dict.fromkeys(STATES, 0)
            truth.update({r[0]: int(r[1]) for r in led._read(
                "SELECT state, COUNT(*) FROM clones WHERE pool = ? GROUP BY state", (pool,))})
            assert led.counts(pool) == truth


def test_planning_costs_the_same_at_one_clone_and_at_five_thousand(tmp_path: Path):
    """Statements per plan, not seconds: the same count with 5,000 live rows as with none."""
    with Ledger(tmp_path / "l.sqlite") as led:
        trace: list[str] = []
        led.backend._conn.set_trace_callback(trace.append)
        plan(led)
        first = len(trace)
        led.backend._conn.set_trace_callback(None)
        for _ in range(5000):
            plan(led, network=NetworkAlloc.parse("10.64.0.0/16"))
        trace.clear()
        led.backend._conn.set_trace_callback(trace.append)
        plan(led, network=NetworkAlloc.parse("10.64.0.0/16"))
        assert len(trace) <= first + 2  # (a new scope's first use may set up one more row)


def _scans_of_clones(conn: sqlite3.Connection, statements: list[str]) -> list[tuple[str, str]]:
    bad = []
    for sql in statements:
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
            detail = str(row[3])
            if detail.startswith("SCAN") and "clones" in detail.split()[1:2]:
                bad.append((sql, detail))
    return bad


def test_every_statement_of_converge_rounds_uses_an_index_on_clones(twin, tmp_path: Path):
    """Scale up, a steady round, scale down: each statement the ledger ran, EXPLAIN QUERY PLAN'd."""
    from forkscale.commands.session import open_engine
    from forkscale.spec import load_spec

    twin.admin("freeze", vm="src-linux")
    spec = load_spec(write_spec(tmp_path, twin, count=6))
    trace: list[str] = []

    async def rounds() -> None:
        async with open_engine(spec, informer=True) as engine:
            engine.ledger.backend._conn.set_trace_callback(trace.append)
            for want in (6, 6, 3):
                assert (await engine.converge("quickstart", want)).ready == want

    asyncio.run(rounds())
    statements = sorted({s for s in trace if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))})
    assert any("identity_free" in s for s in statements) and any("pool_counts" in s for s in statements)
    # a scope's setup reads the live rows once in its life (the first clone of a pool), never again
    setup = [s for s in statements if _is(s, alloc.SETUP_NAMES) or _is(s, alloc.SETUP_IPS)]
    assert len(setup) <= 2 and sum(1 for s in trace if any(_is(s, q) for q in setup)) == len(setup)
    statements = [s for s in statements if s not in setup]
    with sqlite3.connect(spec.state) as conn:
        bad = _scans_of_clones(conn, statements)
    assert bad == [], "\n".join(f"{detail}: {sql}" for sql, detail in bad)


def _is(statement: str, query: str) -> bool:
    """`statement` (as traced: parameters filled in) is `query`."""
    pattern = r"(?:'(?:[^']|'')*'|-?[0-9.]+|NULL)".join(re.escape(part) for part in query.split("?"))
    return re.fullmatch(pattern, statement.strip()) is not None


def test_the_plan_check_sees_a_full_scan(tmp_path: Path):
    with Ledger(tmp_path / "l.sqlite") as led:
        plan(led)
    with sqlite3.connect(tmp_path / "l.sqlite") as conn:
        assert _scans_of_clones(conn, ["SELECT * FROM clones WHERE hostname = 'x'"])


def test_live_rows_are_read_once_until_a_write_or_another_process_changes_them(tmp_path: Path):
    path = tmp_path / "l.sqlite"
    with Ledger(path) as led, Ledger(path) as other:  # `other`: as another process would
        ids = [plan(led).id for _ in range(3)]
        live = ["planned", "cloning", "ready"]
        reads = led._live.reads
        assert [r.id for r in led.clones("web", live)] == ids
        led.set_desired("web", 3, "spec")  # not a clone write: the rows stay
        assert len(led.clones("web", ["planned"])) == 3 and led._live.reads == reads + 1
        walk(led, ids[0], "cloning")  # our own write
        assert [r.state for r in led.clones("web", live)] == ["cloning", "planned", "planned"]
        walk(other, ids[1], "gone")  # someone else's
        assert [r.id for r in led.clones("web", live)] == [ids[0], ids[2]]
        assert led._live.reads == reads + 3


def test_a_steady_round_reads_the_same_statements_at_two_clones_and_at_six(twin, tmp_path: Path):
    """A converge with nothing to do costs the ledger the same whatever the pool's size (the
    reconcile does not read each row back when nothing was written since it read them)."""
    from forkscale.commands.session import open_engine
    from forkscale.spec import load_spec

    twin.admin("freeze", vm="src-linux")
    spec = load_spec(write_spec(tmp_path, twin, count=6))
    per_round: dict[int, list[str]] = {}

    async def rounds() -> None:
        async with open_engine(spec, informer=True) as engine:
            for want in (2, 6):
                for _ in range(2):  # the second records what the first clones' VMs tell (instance UUIDs)
                    assert (await engine.converge("quickstart", want)).ready == want
                trace: list[str] = []
                engine.ledger.backend._conn.set_trace_callback(trace.append)
                assert (await engine.converge("quickstart", want)).ready == want
                engine.ledger.backend._conn.set_trace_callback(None)
                per_round[want] = trace

    asyncio.run(rounds())
    assert len(per_round[6]) == len(per_round[2]), "\n".join(per_round[6])
