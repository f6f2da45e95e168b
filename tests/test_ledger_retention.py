"""Bounded forever: history past the retention window moves to an archive; every hot query is indexed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from forkscale.commands.session import open_engine
from forkscale.ledger import Ledger
from forkscale.spec import load_spec
from forkscale.workloads.controller import Controller
from tests.serve_helpers import base_pool, write_pool_spec
from tests.test_ledger import plan, walk

DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(ledger_state: str):
    """On both backends (tests/fixtures/ledgers.py)."""
    clock = Clock()
    with Ledger(ledger_state, clock=clock) as led:
        yield led, clock


@pytest.fixture
def clocked_file(tmp_path: Path):
    clock = Clock()
    with Ledger(tmp_path / "state.sqlite", clock=clock) as led:
        yield led, clock


def _archive(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_prune_moves_only_history_older_than_the_window(clocked, tmp_path: Path):
    led, clock = clocked
    archive = tmp_path / "state.sqlite.archive.jsonl"
    old_gone = [walk(led, plan(led).id, "destroying", "gone") for _ in range(3)]
    long_lived = walk(led, plan(led).id, "cloning", "customizing", "ready")
    clock.now += 31 * DAY
    recent_gone = walk(led, plan(led).id, "destroying", "gone")
    fresh = walk(led, plan(led).id, "cloning", "customizing", "ready", "claimed")

    result = led.prune(30 * DAY, archive)

    assert result.clones == 3 and result.sources == 0
    lines = _archive(archive)
    moved = [line for line in lines if line["kind"] == "clone"]
    assert sorted(line["row"]["id"] for line in moved) == sorted(r.id for r in old_gone)
    assert all(line["row"]["state"] == "gone" and [e["what"] for e in line["events"]] ==
               ["planned", "destroying", "gone"] for line in moved)
    # the long-lived clone stays, its events older than the window go to the archive
    assert {line["row"]["what"] for line in lines if line["kind"] == "event"} == {"planned", "cloning",
                                                                                  "customizing", "ready"}
    assert result.events == 3 * 3 + 4
    assert led.get(long_lived.id) is not None and led.events(long_lived.id) == []
    for kept in (recent_gone, fresh):
        assert led.get(kept.id) is not None and led.events(kept.id)
    assert all(led.get(r.id) is None for r in old_gone)
    assert led.prune(30 * DAY, archive).moved == 0  # nothing twice
    assert oct(archive.stat().st_mode & 0o777) == "0o600"


def test_prune_never_lets_an_id_or_a_generation_be_handed_out_again(clocked, tmp_path: Path):
    led, clock = clocked
    rows = [walk(led, plan(led).id, "destroying", "gone") for _ in range(4)]
    for gen in (1, 2):
        src = led.add_source("web", f"web-src-g{gen}", f"vm-{gen}", "esx-01", gen, "ready")
        led.update_source(src.id, state="gone")
    clock.now += 40 * DAY
    result = led.prune(30 * DAY, tmp_path / "archive.jsonl")
    assert result.clones == 3 and result.sources == 1  # the highest id and generation stay
    assert led.get(rows[-1].id) is not None
    assert plan(led).id == rows[-1].id + 1
    assert led.next_generation("web") == 3


def test_prune_in_batches_keeps_the_ledger_bounded(clocked_file, tmp_path: Path):
    led, clock = clocked_file
    archive = tmp_path / "archive.jsonl"
    for _day in range(60):  # two months of 30 clones a day, each made and destroyed
        for _ in range(30):
            walk(led, plan(led).id, "cloning", "customizing", "ready", "destroying", "gone")
        clock.now += DAY
        led.prune(30 * DAY, archive)
    kept = len(led.clones("web"))
    assert 30 * 30 <= kept <= 31 * 30 + 1
    assert len(_archive(archive)) == 60 * 30 - kept


# -- query plans ---------------------------------------------------------------------------------

#: Partial indexes over live rows only: scanning one reads what a pool holds now, never history.
LIVE_INDEXES = ("clones_live_name", "clones_live_mac", "clones_live_ip")


def full_scans(db: Path, statements: list[str]) -> dict[str, list[str]]:
    """Statements whose plan scans `clones` or `events` beyond a live-rows index, with the plan."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    bad: dict[str, list[str]] = {}
    try:
        for sql in statements:
            plan_lines = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            for line in plan_lines:
                table_scan = line.startswith(("SCAN clones", "SCAN events"))
                if table_scan and not any(f"USING INDEX {name}" in line for name in LIVE_INDEXES):
                    bad[sql] = plan_lines
    finally:
        conn.close()
    return bad


def _queries(trace: list[str]) -> list[str]:
    return sorted({s for s in trace if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))})


def test_rounds_claims_releases_and_prune_use_indexed_lookups_only(twin, tmp_path):
    """Every statement a converge round, a claim, a release (refresh), a scale-down and a prune sends,
    recorded from the ledger's own connection against the twin, is checked with EXPLAIN QUERY PLAN."""
    twin.admin("freeze", vm="src-linux")
    pool = base_pool("desk", on_release="refresh",
                     policy={"strategy": "headroom", "headroom": 2, "min": 0, "max": 10, "cooldown_up_s": 0,
                             "cooldown_down_s": 0, "evaluate_every_s": 0.05})
    spec = load_spec(write_pool_spec(tmp_path, twin, pool))
    trace: list[str] = []

    async def scenario() -> None:
        async with open_engine(spec) as engine:
            engine.ledger.backend._conn.set_trace_callback(trace.append)  # type: ignore[attr-defined]
            controller = Controller(engine)
            run = asyncio.create_task(controller.run())
            try:
                await _until(lambda: controller.status("desk")["spares"] == 2)
                claimed = [await controller.claim("desk", f"user{i}", wait_s=30) for i in range(3)]
                assert all(c is not None for c in claimed)
                await _until(lambda: controller.status("desk")["spares"] == 2)
                for rec in claimed[:2]:
                    assert rec is not None
                    controller.release("desk", rec.name)  # refreshed, then the pool shrinks to 1 + 2
                await _until(lambda: controller.status("desk")["current"] == 3
                             and controller.status("desk")["draining"] == 0)
                engine.ledger.prune(0.0, tmp_path / "archive.jsonl")
            finally:
                controller.stop()
                await run

    asyncio.run(scenario())
    statements = _queries(trace)
    assert any("WHERE name =" in s for s in statements), "no by_name lookup was exercised"
    assert any("state = 'ready' ORDER BY ready_at" in s for s in statements), "no claim was exercised"
    assert any("FROM events WHERE at <" in s for s in statements), "no prune was exercised"
    assert full_scans(Path(spec.state), statements) == {}


async def _until(predicate, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def test_the_query_plan_check_catches_a_full_scan(tmp_path: Path):
    with Ledger(tmp_path / "state.sqlite"):
        pass
    bad = full_scans(tmp_path / "state.sqlite", ["SELECT * FROM clones WHERE hostname = 'x'",
                                                 "SELECT * FROM clones WHERE name = 'x'"])
    assert list(bad) == ["SELECT * FROM clones WHERE hostname = 'x'"]


# -- wiring: `apply` and `serve` prune with the spec's window ------------------------------------

def _old_history(state: Path, days_ago: float, n: int = 5) -> list[int]:
    """`n` clones made and destroyed `days_ago` days ago (the ledger's clock set back)."""
    with Ledger(state, clock=lambda: time.time() - days_ago * DAY) as led:
        return [walk(led, plan(led, pool="old", name_pattern="old-{index:03d}").id, "destroying", "gone").id
                for _ in range(n)]


def test_apply_moves_history_past_the_window_to_the_archive(twin, tmp_path, monkeypatch):
    from tests.spine_helpers import cli, write_spec

    twin.admin("freeze", vm="src-linux")
    monkeypatch.chdir(tmp_path)
    old = _old_history(tmp_path / "state.sqlite", days_ago=10)
    spec = write_spec(tmp_path, twin, count=2, ledger={"retention_days": 7})
    assert cli("apply", "-f", str(spec)) == 0
    archived = [line["row"]["id"] for line in _archive(tmp_path / "state.sqlite.archive.jsonl")
                if line["kind"] == "clone"]
    assert sorted(archived) == old  # the apply's clones have higher ids: the last old one may go too
    with Ledger(tmp_path / "state.sqlite") as led:
        assert led.clones("old") == [] and len(led.live("quickstart")) == 2


def test_serve_prunes_at_start_into_the_configured_archive(twin, tmp_path):
    from tests.serve_helpers import start_serve

    twin.admin("freeze", vm="src-linux")
    old = _old_history(tmp_path / "state.sqlite", days_ago=40)
    recent = _old_history(tmp_path / "state.sqlite", days_ago=20, n=2)
    spec = write_pool_spec(tmp_path, twin, base_pool("desk", count=1))
    doc = yaml.safe_load(spec.read_text())
    doc["ledger"] = {"archive": str(tmp_path / "history" / "ledger-archive.jsonl")}  # default: 30 days
    spec.write_text(yaml.safe_dump(doc))
    s = start_serve(tmp_path, spec)
    try:
        s.wait_status("desk", lambda d: d["spares"] == 1, what="1 ready")
        archive = tmp_path / "history" / "ledger-archive.jsonl"
        deadline = time.monotonic() + 30
        while not archive.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        archived = sorted(line["row"]["id"] for line in _archive(archive) if line["kind"] == "clone")
        assert archived == old, s.log_tail()
        assert not set(recent) & set(archived)
    finally:
        assert s.stop() == 0
