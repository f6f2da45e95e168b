"""The ledger: one SQLite file that a restarted controller trusts about every clone it made.

Why write-ahead of vCenter: a clone's row (name, IP, MAC, kind, placement) is committed in state
`planned` before its clone task is submitted, so a crash between the two leaves a row the next
controller can reconcile against vCenter (by name or by the clone's `forkscale.id` extraConfig)
instead of an anonymous VM.

Why SQLite this way: identity allocation reads what is taken and inserts the new row inside one
`BEGIN IMMEDIATE` transaction, which takes the database's write lock up front; that serialises
allocators across threads (one connection behind a lock) and across processes (the file lock),
and partial unique indexes over live rows make SQLite itself refuse a duplicate name, MAC, or
IP-on-a-port-group even if a future code path forgets the allocator. WAL mode lets readers
(status, metrics) run while a writer holds the lock. synchronous=NORMAL: in WAL mode a commit
survives any crash of the process (kill -9 included) without an fsync per commit; only an OS
crash or power loss can drop the last commits, and then the clones they described are still
found in vCenter by their `forkscale.pool`/`forkscale.id` tags and adopted or removed.

Every method is synchronous and short; the asyncio engine may call them directly.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from forkscale.core import identity
from forkscale.core.identity import NetworkAlloc
from forkscale.ledger.records import (
    KINDS,
    LIVE_STATES,
    MUTABLE_FIELDS,
    NOT_NULL_FIELDS,
    SOURCE_FIELDS,
    STATES,
    CloneRecord,
    Event,
    IllegalTransition,
    LedgerError,
    SourceRecord,
    UnknownClone,
    allowed_transition,
)
from forkscale.ledger.retention import PruneResult, prune_batch
from forkscale.ledger.schema import migrate


class Ledger:
    """Thread-safe access to one ledger file (one connection behind a lock)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.row_factory = sqlite3.Row
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LedgerError(f"{self.path}: not a usable ledger: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction holding the file's write lock from its first statement."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- clones -----------------------------------------------------------------------------

    def plan_clone(
        self,
        pool: str,
        *,
        name_pattern: str,
        hostname_pattern: str | None,
        network: NetworkAlloc,
        kind: str,
        source: str,
        source_generation: int,
        host: str,
        datastore: str,
        port_group: str,
        taken_macs: Collection[str] = frozenset(),
        rng: random.Random | None = None,
    ) -> CloneRecord:
        """Allocate a clone's identity and record it as `planned`, atomically.

        Name: lowest free index of `name_pattern` among live names of every pool. IP: lowest free
        address of `network` among live clones on `port_group`. MAC: random in VMware's manual
        range, unique among live clones of every pool and `taken_macs` (e.g. from the inventory).
        Raises identity.ExhaustedError when the network is full.
        """
        _check_kind(kind)
        now = self._clock()
        with self._write() as conn:
            # one pass over the live rows (this runs once per clone, so it is the planning cost)
            rows = conn.execute("SELECT name, mac, ip, port_group = ? FROM clones WHERE state <> 'gone'",
                                (port_group,)).fetchall()
            names = {r[0] for r in rows}
            index, name = identity.next_name(name_pattern, names, pool=pool)
            hostname = name if hostname_pattern is None else identity.render_name(hostname_pattern, index, pool=pool)
            ip = str(identity.next_ip(network, [r[2] for r in rows if r[3]]))
            macs = {r[1] for r in rows}
            mac = identity.random_mac(identity.TakenMacs(macs, taken_macs), rng)
            cursor = conn.execute(
                """INSERT INTO clones (pool, name, hostname, ip, mac, kind, source, source_generation, host,
                       datastore, port_group, state, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?)""",
                (pool, name, hostname, ip, mac, kind, source, source_generation, host, datastore, port_group, now, now),
            )
            clone_id = int(cursor.lastrowid or 0)
            _event(conn, clone_id, now, "planned", {"name": name, "ip": ip, "mac": mac, "kind": kind, "host": host})
            return self._get(conn, clone_id)

    def transition(self, clone_id: int, new_state: str, **fields: str | None) -> CloneRecord:
        """Move a clone to `new_state` (raising IllegalTransition if not allowed), with an event.

        Entering `ready` stamps ready_at and clears the claim; entering `claimed` needs claimed_by.
        """
        if new_state not in STATES:
            raise LedgerError(f"unknown state {new_state!r} (states: {', '.join(STATES)})")
        _check_fields(fields)
        now = self._clock()
        with self._write() as conn:
            old = self._get(conn, clone_id).state
            if not allowed_transition(old, new_state):
                raise IllegalTransition(clone_id, old, new_state)
            values: dict[str, object] = dict(fields)
            values.update(state=new_state, updated_at=now)
            if new_state == "ready":
                if fields.get("claimed_by") is not None:
                    raise LedgerError("claimed_by cannot be set when entering ready")
                values.update(ready_at=now, claimed_by=None, claimed_at=None)
            elif new_state == "claimed":
                if not fields.get("claimed_by"):
                    raise LedgerError("entering claimed needs claimed_by")
                values["claimed_at"] = now
            _set(conn, clone_id, values)
            _event(conn, clone_id, now, new_state, {"from": old, **fields})
            return self._get(conn, clone_id)

    def update(self, clone_id: int, **fields: str | None) -> CloneRecord:
        """Change fields without a state change (e.g. vm_moref once the task returns)."""
        _check_fields(fields)
        if not fields:
            raise LedgerError("update needs at least one field")
        now = self._clock()
        with self._write() as conn:
            current = self._get(conn, clone_id)
            if current.state == "gone":
                raise LedgerError(f"clone {clone_id} is gone; its row is history")
            _set(conn, clone_id, {**fields, "updated_at": now})
            _event(conn, clone_id, now, "update", dict(fields))
            return self._get(conn, clone_id)

    def note(self, clone_id: int, what: str, detail: Mapping[str, object] | None = None) -> None:
        """Add a history event without changing the clone (e.g. a rung that was tried and failed)."""
        now = self._clock()
        with self._write() as conn:
            self._get(conn, clone_id)
            _event(conn, clone_id, now, what, dict(detail or {}))

    def claim(self, pool: str, user: str) -> CloneRecord | None:
        """Atomically hand the longest-ready clone of `pool` to `user`; None when none is ready."""
        if not user:
            raise LedgerError("claim needs a user")
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(
                "SELECT id FROM clones WHERE pool = ? AND state = 'ready' ORDER BY ready_at, id LIMIT 1", (pool,)
            ).fetchone()
            if row is None:
                return None
            clone_id = int(row[0])
            _set(conn, clone_id, {"state": "claimed", "claimed_by": user, "claimed_at": now, "updated_at": now})
            _event(conn, clone_id, now, "claimed", {"from": "ready", "claimed_by": user})
            return self._get(conn, clone_id)

    def get(self, clone_id: int) -> CloneRecord | None:
        rows = self._read("SELECT * FROM clones WHERE id = ?", (clone_id,))
        return _clone(rows[0]) if rows else None

    def by_name(self, name: str) -> CloneRecord | None:
        """The clone holding `name` now; if none does, the most recent one that held it."""
        rows = self._read(
            "SELECT * FROM clones WHERE name = ? ORDER BY (state = 'gone'), id DESC LIMIT 1", (name,)
        )
        return _clone(rows[0]) if rows else None

    def by_moref(self, moref: str) -> CloneRecord | None:
        rows = self._read(
            "SELECT * FROM clones WHERE vm_moref = ? ORDER BY (state = 'gone'), id DESC LIMIT 1", (moref,)
        )
        return _clone(rows[0]) if rows else None

    def clones(self, pool: str | None = None, states: Iterable[str] | None = None) -> list[CloneRecord]:
        sql, params = "SELECT * FROM clones WHERE 1", []
        if pool is not None:
            sql += " AND pool = ?"
            params.append(pool)
        if states is not None:
            wanted = _check_states(states)
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        return [_clone(r) for r in self._read(sql + " ORDER BY id", params)]

    def live(self, pool: str) -> list[CloneRecord]:
        """Clones that count toward the pool's size (neither gone nor failed)."""
        return self.clones(pool, LIVE_STATES)

    def counts(self, pool: str) -> dict[str, int]:
        """Clones per state (every state present, zero included)."""
        out = dict.fromkeys(STATES, 0)
        for row in self._read("SELECT state, COUNT(*) FROM clones WHERE pool = ? GROUP BY state", (pool,)):
            out[row[0]] = int(row[1])
        return out

    def set_desired(self, pool: str, desired: int, set_by: str) -> None:
        """Remember the count a pool is being converged to, and who asked for it."""
        with self._write() as conn:
            conn.execute("INSERT INTO pools (name, desired, set_by, updated_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET desired = excluded.desired, set_by = excluded.set_by, "
                         "updated_at = excluded.updated_at", (pool, int(desired), set_by, self._clock()))

    def desired(self, pool: str) -> tuple[int, str] | None:
        """(count, set_by) of the pool's last converge target, or None if never converged."""
        rows = self._read("SELECT desired, set_by FROM pools WHERE name = ?", (pool,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def events(self, clone_id: int) -> list[Event]:
        rows = self._read("SELECT * FROM events WHERE clone_id = ? ORDER BY id", (clone_id,))
        return [Event(r["id"], r["clone_id"], r["at"], r["what"], json.loads(r["detail"])) for r in rows]

    # -- history ----------------------------------------------------------------------------

    def now(self) -> float:
        """The ledger's clock (what every row's timestamps are taken from)."""
        return self._clock()

    def prune(self, older_than_s: float, archive: str | Path) -> PruneResult:
        """Move history older than `older_than_s` (by the ledger's clock) to `archive`, a JSON-lines
        file: gone clones with their events, old events of live clones, gone sources
        (forkscale.ledger.retention). One short write transaction per batch of 500."""
        result = PruneResult(archive=Path(archive), cutoff=self._clock() - older_than_s)
        more = True
        while more:
            with self._write() as conn:
                more = prune_batch(conn, result.cutoff, Path(archive), result)
        return result

    # -- sources ----------------------------------------------------------------------------

    def add_source(
        self,
        pool: str,
        vm_name: str,
        vm_moref: str | None,
        host: str,
        generation: int,
        state: str,
        *,
        frozen: bool = False,
    ) -> SourceRecord:
        now = self._clock()
        with self._write() as conn:
            cursor = conn.execute(
                """INSERT INTO sources (pool, vm_name, vm_moref, host, generation, state, frozen, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (pool, vm_name, vm_moref, host, generation, state, int(frozen), now, now),
            )
            return _source(conn.execute("SELECT * FROM sources WHERE id = ?", (cursor.lastrowid,)).fetchone())

    def sources(self, pool: str | None = None) -> list[SourceRecord]:
        if pool is None:
            return [_source(r) for r in self._read("SELECT * FROM sources ORDER BY id")]
        return [_source(r) for r in self._read("SELECT * FROM sources WHERE pool = ? ORDER BY id", (pool,))]

    def update_source(self, source_id: int, **fields: str | bool | None) -> SourceRecord:
        """Change vm_name, vm_moref, host, state or frozen of a source row."""
        unknown = set(fields) - SOURCE_FIELDS
        if unknown or not fields:
            raise LedgerError(f"update_source fields must be among {sorted(SOURCE_FIELDS)}, got {sorted(fields)}")
        values: dict[str, object] = dict(fields)
        if "frozen" in values:
            values["frozen"] = int(bool(values["frozen"]))
        values["updated_at"] = self._clock()
        columns = ", ".join(f"{key} = ?" for key in values)
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE sources SET {columns} WHERE id = ?", (*values.values(), source_id))
            if cursor.rowcount == 0:
                raise LedgerError(f"no source with id {source_id}")
            return _source(conn.execute("SELECT * FROM sources WHERE id = ?", (source_id,)).fetchone())

    def next_generation(self, pool: str) -> int:
        """1 for a pool's first source, then one more than the highest generation recorded."""
        rows = self._read("SELECT MAX(generation) FROM sources WHERE pool = ?", (pool,))
        top = rows[0][0]
        return 1 if top is None else int(top) + 1

    # -- helpers ----------------------------------------------------------------------------

    def _get(self, conn: sqlite3.Connection, clone_id: int) -> CloneRecord:
        row = conn.execute("SELECT * FROM clones WHERE id = ?", (clone_id,)).fetchone()
        if row is None:
            raise UnknownClone(f"no clone with id {clone_id}")
        return _clone(row)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise LedgerError(f"unknown clone kind {kind!r} (kinds: {', '.join(KINDS)})")


def _check_fields(fields: Mapping[str, object]) -> None:
    unknown = sorted(set(fields) - MUTABLE_FIELDS)
    if unknown:
        raise LedgerError(f"cannot set {unknown[0]!r}; settable fields: {', '.join(sorted(MUTABLE_FIELDS))}")
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise LedgerError(f"{key} must be a string or None, not {type(value).__name__}")
        if key in NOT_NULL_FIELDS and not value:
            raise LedgerError(f"{key} cannot be empty")
    if "kind" in fields:
        _check_kind(str(fields["kind"]))


def _check_states(states: Iterable[str]) -> list[str]:
    wanted = list(states)
    for state in wanted:
        if state not in STATES:
            raise LedgerError(f"unknown state {state!r} (states: {', '.join(STATES)})")
    return wanted


def _set(conn: sqlite3.Connection, clone_id: int, values: Mapping[str, object]) -> None:
    # Column names come from MUTABLE_FIELDS or this module, never from callers' strings.
    columns = ", ".join(f"{key} = ?" for key in values)
    conn.execute(f"UPDATE clones SET {columns} WHERE id = ?", (*values.values(), clone_id))


def _event(conn: sqlite3.Connection, clone_id: int, at: float, what: str, detail: Mapping[str, object]) -> None:
    conn.execute(
        "INSERT INTO events (clone_id, at, what, detail) VALUES (?, ?, ?, ?)",
        (clone_id, at, what, json.dumps(detail, sort_keys=True, default=str)),
    )


def _clone(row: sqlite3.Row) -> CloneRecord:
    return CloneRecord(**{key: row[key] for key in row.keys()})


def _source(row: sqlite3.Row) -> SourceRecord:
    values = {key: row[key] for key in row.keys()}
    values["frozen"] = bool(values["frozen"])
    return SourceRecord(**values)
