"""The ledger: allocation under concurrency, the state machine, claims, migrations, crashes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from forkscale.core import identity
from forkscale.core.identity import ExhaustedError, NetworkAlloc
from forkscale.ledger import (
    MIGRATIONS,
    STATES,
    CloneRecord,
    IllegalTransition,
    Ledger,
    LedgerError,
    UnknownClone,
    allowed_transition,
    migrate,
    schema_version,
)

REPO = Path(__file__).resolve().parent.parent
NET = NetworkAlloc.parse("10.20.0.0/22", gateway="10.20.0.1", dns=["10.20.0.2"])


def plan(ledger: Ledger, pool: str = "web", **overrides: object) -> CloneRecord:
    args: dict[str, object] = {
        "name_pattern": f"{pool}-{{index:03d}}",
        "hostname_pattern": None,
        "network": NET,
        "kind": "instant",
        "source": "src-linux",
        "source_generation": 1,
        "host": "esx-01",
        "datastore": "ds-ssd",
        "port_group": "VM Network",
    }
    args.update(overrides)
    return ledger.plan_clone(pool, **args)  # type: ignore[arg-type]


def walk(ledger: Ledger, clone_id: int, *states: str) -> CloneRecord:
    record = ledger.get(clone_id)
    assert record is not None
    for state in states:
        fields = {"claimed_by": "alice"} if state == "claimed" else {}
        record = ledger.transition(clone_id, state, **fields)
    return record


PATH_TO: dict[str, tuple[str, ...]] = {
    "planned": (),
    "cloning": ("cloning",),
    "customizing": ("cloning", "customizing"),
    "ready": ("cloning", "customizing", "ready"),
    "claimed": ("cloning", "customizing", "ready", "claimed"),
    "draining": ("cloning", "customizing", "ready", "draining"),
    "destroying": ("destroying",),
    "failed": ("failed",),
    "gone": ("destroying", "gone"),
}


@pytest.fixture
def ledger(ledger_state: str):
    with Ledger(ledger_state) as led:
        yield led


def raw_connect(led: Ledger):
    """A connection of the backend's own driver, bypassing the Ledger (what a careless tool would do)."""
    if led.path is not None:
        return sqlite3.connect(led.path, isolation_level=None), sqlite3.IntegrityError
    import psycopg

    return psycopg.connect(led.backend._url, autocommit=True), psycopg.errors.UniqueViolation  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- allocation


def test_plan_writes_planned_row_with_identity(ledger: Ledger, tmp_path: Path):
    if ledger.path is not None:
        assert ledger.path == tmp_path / "deep" / "dir" / "state.sqlite" and ledger.path.is_file()
    rec = plan(ledger, hostname_pattern="h{index}")
    assert (rec.id, rec.pool, rec.name, rec.hostname, rec.ip) == (1, "web", "web-001", "h1", "10.20.0.3")
    assert rec.state == "planned" and rec.kind == "instant" and rec.vm_moref is None
    assert identity.is_manual_vmware_mac(rec.mac)
    assert (rec.source, rec.source_generation, rec.host, rec.datastore, rec.port_group) == (
        "src-linux", 1, "esx-01", "ds-ssd", "VM Network"
    )
    assert ledger.get(rec.id) == rec
    [event] = ledger.events(rec.id)
    assert event.what == "planned" and event.detail["name"] == "web-001" and event.detail["ip"] == "10.20.0.3"


def test_lowest_free_name_and_ip_and_gone_frees_them(ledger: Ledger):
    a, b, c = (plan(ledger) for _ in range(3))
    assert [r.name for r in (a, b, c)] == ["web-001", "web-002", "web-003"]
    assert [r.ip for r in (a, b, c)] == ["10.20.0.3", "10.20.0.4", "10.20.0.5"]
    walk(ledger, b.id, "destroying", "gone")
    d = plan(ledger)
    assert (d.name, d.ip) == ("web-002", "10.20.0.4")
    assert d.id not in (a.id, b.id, c.id)  # a new row; b's row stays as history
    assert ledger.get(b.id).state == "gone"  # type: ignore[union-attr]
    # a failed clone still holds its identity: its VM may exist and must be removed first
    walk(ledger, c.id, "failed")
    e = plan(ledger)
    assert (e.name, e.ip) == ("web-004", "10.20.0.6")


def test_name_unique_across_pools_ip_per_port_group_mac_global(ledger: Ledger):
    class Fixed(random.Random):
        """Always draws the lowest MAC first, so a second clone must retry."""

        def randint(self, a: int, b: int) -> int:
            self.n = getattr(self, "n", -1) + 1
            return a + self.n

    a = plan(ledger, "web", rng=Fixed())
    b = plan(ledger, "web2", name_pattern="web-{index:03d}", port_group="Other PG", rng=Fixed())
    assert (a.name, b.name) == ("web-001", "web-002")  # names are global
    assert a.ip == b.ip == "10.20.0.3"  # a different port group is a different network
    assert a.mac == "00:50:56:00:00:00" and b.mac == "00:50:56:00:00:01"  # MACs are global
    c = plan(ledger, "db", taken_macs={"00:50:56:00:00:00", "00:50:56:00:00:01", "00:50:56:00:00:02"}, rng=Fixed())
    assert c.mac == "00:50:56:00:00:03"
    assert c.ip == "10.20.0.4"


def test_exhausted_network_writes_nothing(ledger: Ledger):
    small = NetworkAlloc.parse("10.9.0.0/24", "10.9.0.10-10.9.0.12")
    for _ in range(3):
        plan(ledger, network=small)
    with pytest.raises(ExhaustedError, match="all 3 assignable addresses are in use"):
        plan(ledger, network=small)
    assert len(ledger.clones("web")) == 3


def test_database_refuses_duplicate_live_identity(ledger: Ledger):
    """Even a code path that bypasses the allocator cannot create a second live holder."""
    a = plan(ledger)
    conn, integrity_error = raw_connect(ledger)
    mark = "?" if ledger.path is not None else "%s"
    cols = "pool, name, hostname, ip, mac, kind, source, source_generation, host, datastore, port_group, state, created_at, updated_at"
    for name, ip, mac in ((a.name, "10.20.0.99", "00:50:56:00:00:09"), ("x", a.ip, "00:50:56:00:00:09"), ("x", "10.20.0.99", a.mac)):
        with pytest.raises(integrity_error):
            conn.execute(
                f"INSERT INTO clones ({cols}) VALUES ('p', {mark}, 'h', {mark}, {mark}, 'instant', 's', 1, 'h', 'd', "
                f"'VM Network', 'planned', 0, 0)",
                (name, ip, mac),
            )
    # a gone row gives its identity back: history may repeat a name, the live set may not
    conn.execute(f"INSERT INTO clones ({cols}) VALUES ('p', {mark}, 'h', {mark}, {mark}, 'instant', 's', 1, 'h', 'd', "
                 f"'VM Network', 'gone', 0, 0)", (a.name, a.ip, a.mac))
    conn.close()


def test_bad_kind_refused(ledger: Ledger):
    with pytest.raises(LedgerError, match="unknown clone kind"):
        plan(ledger, kind="instantaneous")


def _plan_many(led: Ledger, n: int, out: list[CloneRecord], errors: list[BaseException]) -> None:
    try:
        for _ in range(n):
            out.append(plan(led))
    except BaseException as exc:  # pragma: no cover - surfaced by the assertion below
        errors.append(exc)


def test_200_plans_from_8_threads_and_two_ledgers_are_distinct(ledger_state: str):
    ledgers = [Ledger(ledger_state), Ledger(ledger_state)]  # two connections, as two processes (replicas) would
    out: list[CloneRecord] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_plan_many, args=(ledgers[i % 2], 25, out, errors)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(out) == 200
    assert len({r.id for r in out}) == 200
    assert len({r.name for r in out}) == 200
    assert len({r.ip for r in out}) == 200
    assert len({r.mac for r in out}) == 200
    # lowest free: exactly the first 200 names and addresses, no gaps
    assert {r.name for r in out} == {f"web-{i:03d}" for i in range(1, 201)}
    assert {r.ip for r in out} == {str(a) for a in list(NET.addresses())[:200]}
    assert len(ledgers[0].clones()) == 200
    for led in ledgers:
        led.close()


# ---------------------------------------------------------------------------- state machine

EXPECTED_ALLOWED = {
    ("planned", "cloning"), ("planned", "gone"),
    ("cloning", "customizing"),
    ("customizing", "ready"),
    ("ready", "claimed"), ("ready", "draining"),
    ("claimed", "ready"), ("claimed", "draining"),
    ("draining", "ready"), ("draining", "claimed"),
    ("destroying", "gone"),
    ("failed", "gone"),
} | {(s, "failed") for s in STATES if s not in ("gone", "failed")} | {
    (s, "destroying") for s in STATES if s not in ("gone", "destroying")
}


@pytest.mark.parametrize("old", STATES)
@pytest.mark.parametrize("new", STATES)
def test_every_transition_is_allowed_or_refused_as_specified(ledger: Ledger, old: str, new: str):
    led = ledger
    rec = walk(led, plan(led).id, *PATH_TO[old])
    assert rec.state == old
    assert allowed_transition(old, new) == ((old, new) in EXPECTED_ALLOWED)
    if (old, new) in EXPECTED_ALLOWED:
        fields = {"claimed_by": "bob"} if new == "claimed" else {}
        assert led.transition(rec.id, new, **fields).state == new
        assert led.events(rec.id)[-1].what == new
        assert led.events(rec.id)[-1].detail["from"] == old
    else:
        with pytest.raises(IllegalTransition) as info:
            led.transition(rec.id, new, **({"claimed_by": "bob"} if new == "claimed" else {}))
        assert (info.value.old, info.value.new) == (old, new)
        assert led.get(rec.id) == rec  # unchanged, no event written
        assert len(led.events(rec.id)) == 1 + len(PATH_TO[old])


def test_transition_fields_and_timestamps(ledger_state: str):
    now = [1000.0]
    with Ledger(ledger_state, clock=lambda: now[0]) as led:
        rec = plan(led)
        assert rec.created_at == rec.updated_at == 1000.0
        now[0] = 1001.0
        rec = led.transition(rec.id, "cloning", kind="linked", fallback_reason="InvalidState: source not frozen")
        assert (rec.kind, rec.fallback_reason, rec.updated_at) == ("linked", "InvalidState: source not frozen", 1001.0)
        rec = led.update(rec.id, vm_moref="vm-42", host="esx-02", datastore="ds-2")
        assert (rec.state, rec.vm_moref, rec.host, rec.datastore) == ("cloning", "vm-42", "esx-02", "ds-2")
        assert led.by_moref("vm-42") == rec
        now[0] = 1005.0
        rec = walk(led, rec.id, "customizing", "ready")
        assert rec.ready_at == 1005.0
        now[0] = 1010.0
        rec = led.transition(rec.id, "claimed", claimed_by="alice")
        assert (rec.claimed_by, rec.claimed_at) == ("alice", 1010.0)
        now[0] = 1020.0
        rec = led.transition(rec.id, "ready")  # release with on_release: keep
        assert (rec.state, rec.claimed_by, rec.claimed_at, rec.ready_at) == ("ready", None, None, 1020.0)
        assert [e.what for e in led.events(rec.id)] == [
            "planned", "cloning", "update", "customizing", "ready", "claimed", "ready"
        ]
        assert led.events(rec.id)[2].detail == {"vm_moref": "vm-42", "host": "esx-02", "datastore": "ds-2"}


def test_transition_and_update_refuse_bad_input(ledger: Ledger):
    rec = plan(ledger)
    with pytest.raises(LedgerError, match="cannot set 'name'"):
        ledger.transition(rec.id, "cloning", name="evil")
    with pytest.raises(LedgerError, match="cannot set 'state'"):
        ledger.update(rec.id, state="ready")
    with pytest.raises(LedgerError, match="unknown state"):
        ledger.transition(rec.id, "running")
    with pytest.raises(LedgerError, match="unknown clone kind"):
        ledger.update(rec.id, kind="snapshot")
    with pytest.raises(LedgerError, match="host cannot be empty"):
        ledger.update(rec.id, host="")
    with pytest.raises(UnknownClone):
        ledger.transition(999, "cloning")
    walk(ledger, rec.id, "cloning", "customizing", "ready")
    with pytest.raises(LedgerError, match="needs claimed_by"):
        ledger.transition(rec.id, "claimed")
    walk(ledger, rec.id, "destroying", "gone")
    with pytest.raises(LedgerError, match="gone"):
        ledger.update(rec.id, error="late")
    assert ledger.get(rec.id).state == "gone"  # type: ignore[union-attr]


def test_queries(ledger: Ledger):
    a, b, c, d = (plan(ledger) for _ in range(4))
    e = plan(ledger, "db")
    walk(ledger, a.id, "cloning", "customizing", "ready")
    walk(ledger, b.id, "failed")
    walk(ledger, c.id, "destroying", "gone")
    counts = ledger.counts("web")
    assert counts == {**dict.fromkeys(STATES, 0), "ready": 1, "failed": 1, "gone": 1, "planned": 1}
    assert [r.id for r in ledger.live("web")] == [a.id, d.id]
    assert [r.id for r in ledger.clones("web", ["failed", "gone"])] == [b.id, c.id]
    assert [r.id for r in ledger.clones()] == [a.id, b.id, c.id, d.id, e.id]
    assert [r.id for r in ledger.clones(states=["planned"])] == [d.id, e.id]
    with pytest.raises(LedgerError, match="unknown state"):
        ledger.clones(states=["up"])
    assert ledger.by_name("web-001") == ledger.get(a.id)
    assert ledger.by_name("nope") is None
    assert ledger.get(12345) is None
    # a reused name: by_name prefers the live holder over history
    f = plan(ledger)
    assert f.name == c.name
    assert ledger.by_name(c.name) == f
    walk(ledger, f.id, "destroying", "gone")
    assert ledger.by_name(c.name).id == f.id  # type: ignore[union-attr]


def test_note_adds_history(ledger: Ledger):
    rec = plan(ledger)
    ledger.note(rec.id, "rung-failed", {"kind": "instant", "fault": "InvalidState"})
    assert ledger.events(rec.id)[-1].detail == {"kind": "instant", "fault": "InvalidState"}
    assert ledger.get(rec.id) == rec


# ---------------------------------------------------------------------------- claims


def _make_ready(led: Ledger, n: int, pool: str = "vdi") -> list[CloneRecord]:
    return [walk(led, plan(led, pool).id, "cloning", "customizing", "ready") for _ in range(n)]


def test_claim_oldest_ready_first(ledger_state: str):
    now = [0.0]
    with Ledger(ledger_state, clock=lambda: now[0]) as led:
        recs = []
        for i in range(3):
            now[0] = 100.0 - i * 10  # later ids become ready earlier
            recs.append(_make_ready(led, 1)[0])
        assert led.claim("other", "alice") is None
        first = led.claim("vdi", "alice")
        assert first is not None and first.id == recs[2].id
        assert (first.state, first.claimed_by) == ("claimed", "alice")
        assert [led.claim("vdi", "bob").id, led.claim("vdi", "carol").id] == [recs[1].id, recs[0].id]  # type: ignore[union-attr]
        assert led.claim("vdi", "dave") is None
        with pytest.raises(LedgerError):
            led.claim("vdi", "")


def _claim_until_empty(path: str, user: str, queue: multiprocessing.Queue) -> None:
    got: list[int] = []
    with Ledger(path) as led:
        while (rec := led.claim("vdi", user)) is not None:
            got.append(rec.id)
    queue.put((user, got))


def test_claim_atomic_across_processes(ledger_state: str):
    path = ledger_state
    with Ledger(path) as led:
        ready = {r.id for r in _make_ready(led, 80)}
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_until_empty, args=(str(path), f"user{i}", queue)) for i in range(4)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    claimed = [cid for ids in results.values() for cid in ids]
    assert sorted(claimed) == sorted(ready)  # every clone once, none twice
    with Ledger(path) as led:
        for user, ids in results.items():
            for cid in ids:
                assert led.get(cid).claimed_by == user  # type: ignore[union-attr]


def test_claim_atomic_across_threads(ledger: Ledger):
    ready = {r.id for r in _make_ready(ledger, 60)}
    got: list[int] = []
    lock = threading.Lock()

    def worker(user: str) -> None:
        while (rec := ledger.claim("vdi", user)) is not None:
            with lock:
                got.append(rec.id)

    threads = [threading.Thread(target=worker, args=(f"u{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ready)


# ---------------------------------------------------------------------------- sources


def test_sources(ledger: Ledger):
    assert ledger.next_generation("web") == 1
    s1 = ledger.add_source("web", "src-linux", "vm-10", "esx-01", 1, "frozen", frozen=True)
    s2 = ledger.add_source("web", "src-linux-esx-02", None, "esx-02", 1, "preparing")
    ledger.add_source("db", "src-db", "vm-30", "esx-01", 4, "frozen", frozen=True)
    assert ledger.next_generation("web") == 2 and ledger.next_generation("db") == 5
    assert [s.id for s in ledger.sources("web")] == [s1.id, s2.id]
    assert len(ledger.sources()) == 3
    assert s1.frozen is True and s2.frozen is False
    s2 = ledger.update_source(s2.id, vm_moref="vm-11", state="frozen", frozen=True)
    assert (s2.vm_moref, s2.state, s2.frozen) == ("vm-11", "frozen", True)
    with pytest.raises(LedgerError):
        ledger.update_source(s2.id, pool="db")
    with pytest.raises(LedgerError, match="no source"):
        ledger.update_source(999, state="gone")


# ---------------------------------------------------------------------------- files, migrations, crashes


def test_reopen_keeps_everything(ledger_state: str):
    with Ledger(ledger_state) as led:
        rec = walk(led, plan(led).id, "cloning")
    with Ledger(ledger_state) as led:
        assert led.get(rec.id) == rec
        assert plan(led).name == "web-002"
        assert led.events(rec.id)[-1].what == "cloning"


def test_a_sqlite_ledger_uses_wal(tmp_path: Path):
    path = tmp_path / "s.sqlite"
    with Ledger(path) as led:
        walk(led, plan(led).id, "cloning")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema_version(conn) == len(MIGRATIONS)
    conn.close()


def test_opening_a_v0_file_migrates_it(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")  # something that was there before the ledger
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    assert schema_version(conn) == 0
    conn.close()
    with Ledger(path) as led:
        assert plan(led).name == "web-001"
    conn = sqlite3.connect(path)
    assert schema_version(conn) == len(MIGRATIONS)
    assert conn.execute("SELECT text FROM notes").fetchall() == [("keep me",)]
    conn.close()


V2_FOR_TEST = "ALTER TABLE clones ADD COLUMN tag TEXT; UPDATE clones SET tag = 'migrated';"


def test_migrations_apply_in_order_and_keep_data(tmp_path: Path):
    path = tmp_path / "s.sqlite"
    with Ledger(path) as led:
        rec = plan(led)
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, (*MIGRATIONS, V2_FOR_TEST)) == len(MIGRATIONS) + 1
    assert schema_version(conn) == len(MIGRATIONS) + 1
    assert conn.execute("SELECT name, tag FROM clones").fetchall() == [(rec.name, "migrated")]
    # running it again is a no-op
    assert migrate(conn, (*MIGRATIONS, V2_FOR_TEST)) == len(MIGRATIONS) + 1
    conn.close()
    # this code only knows version len(MIGRATIONS): a newer file is refused, not guessed at
    with pytest.raises(LedgerError, match="newer than this forkscale understands"):
        Ledger(path)


def test_failing_migration_rolls_back_completely(tmp_path: Path):
    path = tmp_path / "s.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    broken = "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);"
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, (*MIGRATIONS, broken))
    assert schema_version(conn) == 0  # not even v1 was kept: one transaction
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "clones" not in tables and "half" not in tables
    assert migrate(conn) == len(MIGRATIONS)
    conn.close()


def test_garbage_file_is_refused(tmp_path: Path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="not a usable ledger"):
        Ledger(path)


CRASH_CHILD = textwrap.dedent(
    """
    import sys
    from forkscale.core.identity import NetworkAlloc
    from forkscale.ledger import Ledger
    net = NetworkAlloc.parse("10.64.0.0/16", gateway="10.64.0.1")
    led = Ledger(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        rec = led.plan_clone("crash", name_pattern="crash-{index:05d}", hostname_pattern=None, network=net,
                             kind="instant", source="src", source_generation=1, host="esx-01",
                             datastore="ds", port_group="pg")
        led.transition(rec.id, "cloning")
        led.update(rec.id, vm_moref=f"vm-{rec.id}")
        i += 1
    """
)


def test_sigkill_mid_loop_leaves_a_consistent_ledger(ledger_state: str):
    path = ledger_state
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(path)], env=env, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        with Ledger(path) as watcher:
            deadline = time.monotonic() + 60
            while len(watcher.clones("crash")) < 150:
                assert time.monotonic() < deadline, "child made no progress"
                assert child.poll() is None, "child died on its own"
                time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    if not path.startswith("postgresql://"):
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    with Ledger(path) as led:
        rows = led.clones("crash")
        assert len(rows) >= 150
        assert len({r.name for r in rows}) == len({r.ip for r in rows}) == len({r.mac for r in rows}) == len(rows)
        # names are dense: lowest free index every time, nothing lost half-way
        assert {r.name for r in rows} == {f"crash-{i:05d}" for i in range(1, len(rows) + 1)}
        for r in rows:
            whats = [e.what for e in led.events(r.id)]
            assert whats[0] == "planned"
            # every committed step has its event, and no event exists without its step
            assert (r.state == "cloning") == ("cloning" in whats)
            assert (r.vm_moref is not None) == ("update" in whats)
        # at most the last clone was interrupted between its steps
        assert sum(1 for r in rows if r.vm_moref is None) <= 1
        nxt = led.plan_clone("crash", name_pattern="crash-{index:05d}", hostname_pattern=None,
                             network=NetworkAlloc.parse("10.64.0.0/16", gateway="10.64.0.1"), kind="instant",
                             source="src", source_generation=1, host="esx-01", datastore="ds", port_group="pg")
        assert nxt.name == f"crash-{len(rows) + 1:05d}"


def test_a_pools_desired_count_is_remembered_and_overwritten(ledger_state: str):
    with Ledger(ledger_state) as led:
        assert led.desired("p") is None
        led.set_desired("p", 50, "scale")
        led.set_desired("p", 7, "policy")
    with Ledger(ledger_state) as led:
        assert led.desired("p") == (7, "policy")


def test_a_row_returned_by_a_change_is_the_row_read_back(ledger: Ledger):
    """plan (and on to cloning), every transition and make_ready hand back the row as the ledger
    now holds it (timestamps included), without reading it again."""
    led = ledger
    rec = plan(led, sending=True)
    assert rec.state == "cloning" and rec == led.get(rec.id)
    assert [(e.what, e.detail.get("from")) for e in led.events(rec.id)] == [("planned", None), ("cloning", "planned")]
    rec = led.transition(rec.id, "customizing", vm_moref="vm-7", kind="linked")
    assert rec == led.get(rec.id) and rec.vm_moref == "vm-7" and rec.kind == "linked"
    rec = led.make_ready(rec.id)
    assert rec == led.get(rec.id) and rec.state == "ready" and isinstance(rec.ready_at, float)
    rec = led.transition(rec.id, "claimed", claimed_by="alice")
    assert rec == led.get(rec.id) and isinstance(rec.claimed_at, float)
    assert led.transition(rec.id, "ready") == led.get(rec.id)
    assert plan(led).state == "planned"
