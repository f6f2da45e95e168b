"""The ledger: what a restarted controller trusts about every clone it made (SQLite or PostgreSQL).

Why write-ahead of vCenter: a clone's row (name, IP, MAC, kind, placement) is committed in state
`planned` before its clone task is submitted, so a crash between the two leaves a row the next
controller can reconcile against vCenter (by name or by the clone's `forkscale.id` extraConfig)
instead of an anonymous VM.

Where it lives: a SQLite file (`sqlite.SqliteBackend`, the embedded default) or a PostgreSQL
database (`postgres.PostgresBackend`, for several controllers); the SQL below is written once for
both (`?` placeholders, the common dialect), and each backend says how it serialises identity
allocation and locks rows (`backend.Backend`).

Every method is synchronous and short; the asyncio engine may call them directly.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from dataclasses import replace as _replace
from pathlib import Path

from forkscale.core import identity
from forkscale.core.identity import NetworkAlloc
from forkscale.ledger import alloc, reservations
from forkscale.ledger.backend import Backend, Row, Tx
from forkscale.ledger.images import Images
from forkscale.ledger.lease import Lease, LeaseLost, check_fence
from forkscale.ledger.livecache import LiveRows
from forkscale.ledger.operations import Operations
from forkscale.ledger.postgres import PostgresBackend, is_postgres_url
from forkscale.ledger.records import (
    KINDS,
    LIVE_STATES,
    MUTABLE_FIELDS,
    NOT_NULL_FIELDS,
    REPLICA_STATES,
    SOURCE_FIELDS,
    STATES,
    USABLE_REPLICA_STATES,
    CloneRecord,
    Event,
    IllegalTransition,
    LedgerError,
    ReplicaRecord,
    SourceRecord,
    UnknownClone,
    allowed_transition,
)
from forkscale.ledger.reservations import Reservations
from forkscale.ledger.retention import PruneResult, prune_batch
from forkscale.ledger.sqlite import SqliteBackend
from forkscale.ledger.userdisks import UserDisks


class ReservationTaken(LedgerError):
    """The reserved identity asked for is held by a clone already (another caller planned it)."""


def open_backend(location: str | Path, *, password: Callable[[], str] | None = None,
                 clock: Callable[[], float] = time.time, busy_timeout_s: float = 30.0) -> Backend:
    """`postgresql://...` (or `postgres://`) opens a PostgreSQL ledger; anything else is a SQLite file."""
    if is_postgres_url(location):
        return PostgresBackend(str(location), password=password, statement_timeout_s=busy_timeout_s)
    return SqliteBackend(Path(location).expanduser(), busy_timeout_s=busy_timeout_s, clock=clock)


ANY_POOL = "*"


class Ledger:
    """Thread-safe access to one ledger (one connection behind a lock)."""

    def __init__(
        self,
        location: str | Path | Backend,
        *,
        password: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        if isinstance(location, str | Path):
            self.backend = open_backend(location, password=password, clock=clock, busy_timeout_s=busy_timeout_s)
        else:
            self.backend = location
        self._db = self.backend
        #: the SQLite file (None on PostgreSQL)
        self.path: Path | None = self.backend.path if isinstance(self.backend, SqliteBackend) else None
        self.location = self.backend.location
        self._clock = clock
        self._fences: dict[str, Lease] = {}
        self._fences_lock = threading.Lock()
        self._owners_only = False
        #: writes refused because this controller's lease was taken over (or never held)
        self.fenced_writes = 0
        self.writer: str | None = None
        #: write transactions this process began that may change clone rows (a reader that awaits
        #: between its read and its use of rows compares it to know whether to read them again)
        self.clone_writes = 0
        version = getattr(self.backend, "data_version", None)
        #: a pool's live rows, kept between changes (SQLite: `PRAGMA data_version` tells when another
        #: connection wrote; on PostgreSQL every call reads, since other replicas write too)
        self._live: LiveRows | None = LiveRows(self._read_live, version) if version is not None else None

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self, *, clones: bool = True) -> Iterator[Tx]:
        """One short write transaction (see the backends for how writers are serialised).

        `clones`: it may change clone rows, so the kept live rows are dropped (inside the
        transaction, so no reader keeps them past the commit).
        """
        with self._db.write() as tx:
            if clones:
                self.clone_writes += 1
                if self._live is not None:
                    self._live.drop()
            yield tx

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._db.read(sql, params)

    def _read_live(self, pool: str) -> list[CloneRecord]:
        rows = self._read(f"SELECT {_CLONE_COLUMNS} FROM clones WHERE pool = ? AND state <> 'gone' ORDER BY id",
                          (pool,))
        return [_clone_row(r) for r in rows]

    # -- fencing (forkscale/ledger/lease.py) ------------------------------------------------

    def fence(self, lease: Lease, pool: str | None = None) -> None:
        """From now on every write for `pool` (for every pool when None: the `ledger` scope)
        checks, inside its own transaction, that `lease` is still current; else LeaseLost."""
        with self._fences_lock:
            self._fences[pool if pool is not None else ANY_POOL] = lease

    def unfence(self, pool: str | None = None) -> None:
        with self._fences_lock:
            self._fences.pop(pool if pool is not None else ANY_POOL, None)

    def owners_only(self, on: bool = True) -> None:
        """Refuse every write for a pool this process holds no lease for (a `serve` replica)."""
        self._owners_only = on

    def identify(self, writer: str | None) -> None:
        """Who writes through this ledger (a lease holder's id): recorded with every event, with
        the fencing token the write was made under (`writer#token`)."""
        self.writer = writer

    def _fenced(self, tx: Tx, pool: str) -> str | None:
        """Check this writer's lease for `pool` in `tx`; return what the events record as writer."""
        with self._fences_lock:
            lease = self._fences.get(pool) or self._fences.get(ANY_POOL)
        if lease is None:
            if self._owners_only:
                self.fenced_writes += 1
                raise LeaseLost(f"write refused: this controller does not own pool {pool!r}")
            return self.writer
        try:
            check_fence(self._db, tx, lease)
        except LeaseLost:
            self.fenced_writes += 1
            raise
        return f"{lease.holder}#{lease.token}"

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
        image_generation: int | None = None,
        reservation: str | None = None,
        sending: bool = False,
    ) -> CloneRecord:
        """Allocate a clone's identity and record it as `planned`, atomically; with `sending`, on to
        `cloning` in the same transaction (its task is sent next: nothing reaches vCenter between the
        two, and a crash leaves the row `cloning`, which reconcile judges as it judges `planned`).

        Name: lowest free index of `name_pattern` among live names of every pool. IP: lowest free
        address of `network` among live clones on `port_group`. MAC: random in VMware's manual
        range, unique among live clones of every pool and `taken_macs` (e.g. from the inventory).
        Identities held by a reservation (forkscale/ledger/reservations.py) are taken too; with
        `reservation`, the clone gets that open reservation's identity instead (ReservationTaken
        when a clone holds it already). Raises identity.ExhaustedError when the network is full.
        """
        _check_kind(kind)
        now = self._clock()
        with self._write() as tx:
            writer = self._fenced(tx, pool)
            self._db.serialize(tx, "identity")  # allocators one at a time, across every replica
            if reservation is not None:
                held = reservations.open_one(tx, pool, reservation)
                if held is None:
                    raise ReservationTaken(f"{reservation}: no open reservation in pool {pool}")
                name, hostname, ip, mac = held.name, held.hostname, held.ip, held.mac
            else:
                # O(1) per clone: counters, free lists and index lookups (forkscale/ledger/alloc.py); a
                # reserved name or address is still held there, a reserved MAC is skipped here
                index, name, name_scope = alloc.allocate_name(tx, pool, name_pattern)
                hostname = name if hostname_pattern is None else identity.render_name(hostname_pattern, index,
                                                                                      pool=pool)
                ip, ip_value, ip_scope = alloc.allocate_ip(tx, network, port_group)
                mac = alloc.random_mac(tx, alloc.Either(taken_macs, reservations.macs(tx)), rng)
            inserted = tx.one(
                """INSERT INTO clones (pool, name, hostname, ip, mac, kind, source, source_generation, host,
                       datastore, port_group, state, created_at, updated_at, image_generation)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?, ?) RETURNING id""",
                (pool, name, hostname, ip, mac, kind, source, source_generation, host, datastore, port_group, now, now,
                 image_generation),
            )
            assert inserted is not None
            clone_id = int(inserted[0])
            if reservation is not None:
                alloc.take_over(tx, pool, name, clone_id)
            else:
                alloc.hold(tx, clone_id, [(name_scope, index), (ip_scope, ip_value)])
            _count(tx, pool, None, "planned")
            _event(tx, clone_id, now, "planned", {"name": name, "ip": ip, "mac": mac, "kind": kind, "host": host,
                                                  "image": image_generation, "reserved": reservation is not None},
                   writer)
            rec = _get(tx, clone_id)
            return self._transition(tx, rec, "cloning", {}, writer) if sending else rec

    def replace(self, clone_id: int, reason: str, *, keep_identity: bool = True,
                claimed_by: str | None = None) -> CloneRecord:
        """Send a clone to `destroying` to be replaced; with `keep_identity`, hold its name, IP and MAC
        for the replacement (handed straight to `claimed_by` when set), in the same transaction."""
        now = self._clock()
        with self._write() as tx:
            rec = _get(tx, clone_id, self._db.for_update)
            writer = self._fenced(tx, rec.pool)
            if not allowed_transition(rec.state, "destroying"):
                raise IllegalTransition(clone_id, rec.state, "destroying")
            if keep_identity:
                reservations.hold(tx, rec.pool, rec.name, rec.hostname, rec.ip, rec.mac, rec.port_group, reason,
                                  claimed_by, now)
            _set(tx, clone_id, {"state": "destroying", "updated_at": now})
            _count(tx, rec.pool, rec.state, "destroying")
            _event(tx, clone_id, now, "destroying", {"from": rec.state, "replace": reason,
                                                     "identity": "kept" if keep_identity else "new"}, writer)
            return _get(tx, clone_id)

    def make_ready(self, clone_id: int) -> CloneRecord:
        """`ready`, and the reservation it was made for settled; a replacement reserved for a user
        goes straight to `claimed` by them (in the same transaction: no one else can claim it)."""
        now = self._clock()
        with self._write() as tx:
            rec = _get(tx, clone_id, self._db.for_update)
            writer = self._fenced(tx, rec.pool)
            if not allowed_transition(rec.state, "ready"):
                raise IllegalTransition(clone_id, rec.state, "ready")
            row = tx.one("SELECT claimed_by FROM reservations WHERE name = ? AND pool = ?", (rec.name, rec.pool))
            ready: dict[str, object] = {"state": "ready", "updated_at": now, "ready_at": now, "claimed_by": None,
                                        "claimed_at": None}
            _set(tx, clone_id, ready)
            _count(tx, rec.pool, rec.state, "ready")
            _event(tx, clone_id, now, "ready", {"from": rec.state}, writer)
            after = _after(rec, ready)
            if row is not None and row[0]:
                claimed: dict[str, object] = {"state": "claimed", "claimed_by": row[0], "claimed_at": now}
                _set(tx, clone_id, claimed)
                _count(tx, rec.pool, "ready", "claimed")
                _event(tx, clone_id, now, "claimed", {"from": "ready", "claimed_by": row[0], "handed_back": True},
                       writer)
                after = _after(after, claimed)
            tx.run("DELETE FROM reservations WHERE name = ?", (rec.name,))
            return after

    def transition(self, clone_id: int, new_state: str, **fields: str | None) -> CloneRecord:
        """Move a clone to `new_state` (raising IllegalTransition if not allowed), with an event.

        Entering `ready` stamps ready_at and clears the claim; entering `claimed` needs claimed_by.
        """
        if new_state not in STATES:
            raise LedgerError(f"unknown state {new_state!r} (states: {', '.join(STATES)})")
        _check_fields(fields)
        with self._write() as tx:
            rec = _get(tx, clone_id, self._db.for_update)
            return self._transition(tx, rec, new_state, fields, self._fenced(tx, rec.pool))

    def release(self, clone_id: int, new_state: str) -> CloneRecord:
        """A user gives a claimed clone back: `ready` (keep) or `draining` (refresh).

        Like `claim`, not fenced: any `serve` replica answers claims and releases for any pool
        (the row lock keeps it atomic against the owner's writes); the owner acts on it later.
        """
        if new_state not in ("ready", "draining"):
            raise LedgerError(f"a release goes to ready or draining, not {new_state!r}")
        with self._write() as tx:
            rec = _get(tx, clone_id, self._db.for_update)
            if rec.state != "claimed":
                raise IllegalTransition(clone_id, rec.state, new_state)
            return self._transition(tx, rec, new_state, {}, self.writer)

    def _transition(self, tx: Tx, rec: CloneRecord, new_state: str, fields: Mapping[str, str | None],
                    writer: str | None) -> CloneRecord:
        old, clone_id, now = rec.state, rec.id, self._clock()
        if not allowed_transition(old, new_state):
            raise IllegalTransition(clone_id, old, new_state)
        _count(tx, rec.pool, old, new_state)
        if new_state == "gone" and not alloc.keep_for_replacement(tx, rec.pool, rec.name):
            alloc.release(tx, clone_id)  # (a reserved identity's values pass to its replacement instead)
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
        _set(tx, clone_id, values)
        _event(tx, clone_id, now, new_state, {"from": old, **fields}, writer)
        return _after(rec, values)

    def update(self, clone_id: int, **fields: str | None) -> CloneRecord:
        """Change fields without a state change (e.g. vm_moref once the task returns)."""
        _check_fields(fields)
        if not fields:
            raise LedgerError("update needs at least one field")
        now = self._clock()
        with self._write() as tx:
            current = _get(tx, clone_id, self._db.for_update)
            writer = self._fenced(tx, current.pool)
            if current.state == "gone":
                raise LedgerError(f"clone {clone_id} is gone; its row is history")
            _set(tx, clone_id, {**fields, "updated_at": now})
            _event(tx, clone_id, now, "update", dict(fields), writer)
            return _get(tx, clone_id)

    def note(self, clone_id: int, what: str, detail: Mapping[str, object] | None = None) -> None:
        """Add a history event without changing the clone (e.g. a rung that was tried and failed)."""
        now = self._clock()
        with self._write() as tx:
            writer = self._fenced(tx, _get(tx, clone_id).pool)
            _event(tx, clone_id, now, what, dict(detail or {}), writer)

    def claim(self, pool: str, user: str) -> CloneRecord | None:
        """Atomically hand the longest-ready clone of `pool` to `user`; None when none is ready.

        Not fenced: any `serve` replica answers claims for any pool; the owner refills behind.
        """
        if not user:
            raise LedgerError("claim needs a user")
        now = self._clock()
        with self._write() as tx:
            # PostgreSQL: the oldest ready clone no concurrent claim holds (FOR UPDATE SKIP LOCKED)
            row = tx.one("SELECT id FROM clones WHERE pool = ? AND state = 'ready' ORDER BY ready_at, id LIMIT 1"
                         + self._db.for_claim, (pool,))
            if row is None:
                return None
            clone_id = int(row[0])
            _set(tx, clone_id, {"state": "claimed", "claimed_by": user, "claimed_at": now, "updated_at": now})
            _count(tx, pool, "ready", "claimed")
            _event(tx, clone_id, now, "claimed", {"from": "ready", "claimed_by": user}, self.writer)
            return _get(tx, clone_id)

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
        """Clones (of `pool`, in `states`) by id. On SQLite a pool's rows that are not gone are read
        once and kept until something changes them (forkscale.ledger.livecache)."""
        if pool is not None and states is not None and self._live is not None:
            wanted = _check_states(states)
            if "gone" not in wanted:
                return self._live.rows(pool, frozenset(wanted))
        sql, params = f"SELECT {_CLONE_COLUMNS} FROM clones WHERE 1 = 1", []
        if pool is not None:
            sql += " AND pool = ?"
            params.append(pool)
        if states is not None:
            wanted = _check_states(states)
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        return [_clone_row(r) for r in self._read(sql + " ORDER BY id", params)]

    def live(self, pool: str) -> list[CloneRecord]:
        """Clones that count toward the pool's size (neither gone nor failed)."""
        return self.clones(pool, LIVE_STATES)

    def counts(self, pool: str) -> dict[str, int]:
        """Clones per state (every state present, zero included): kept by every write, not counted."""
        out = dict.fromkeys(STATES, 0)
        for row in self._read("SELECT state, n FROM pool_counts WHERE pool = ?", (pool,)):
            out[row[0]] = int(row[1])
        return out

    def set_desired(self, pool: str, desired: int, set_by: str) -> None:
        """Remember the count a pool is being converged to, and who asked for it."""
        with self._write(clones=False) as tx:
            self._fenced(tx, pool)
            tx.run("INSERT INTO pools (name, desired, set_by, updated_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET desired = excluded.desired, set_by = excluded.set_by, "
                         "updated_at = excluded.updated_at", (pool, int(desired), set_by, self._clock()))

    def desired(self, pool: str) -> tuple[int, str] | None:
        """(count, set_by) of the pool's last converge target, or None if never converged."""
        rows = self._read("SELECT desired, set_by FROM pools WHERE name = ?", (pool,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def events(self, clone_id: int) -> list[Event]:
        rows = self._read("SELECT * FROM events WHERE clone_id = ? ORDER BY id", (clone_id,))
        return [Event(r["id"], r["clone_id"], r["at"], r["what"], json.loads(r["detail"]), r["writer"]) for r in rows]

    # -- what several controllers share: count overrides, published status ----------------------

    def set_override(self, pool: str, field: str, value: int, spec_value: int | None) -> None:
        """A count set over the API (`count` of a fixed pool, `min` of a policy pool), for whichever
        replica owns the pool now or later. `spec_value`: what the spec said then (a spec edited
        since wins over the override). Not fenced: any replica takes the request."""
        if field not in ("count", "min"):
            raise LedgerError(f"an override sets count or min, not {field!r}")
        with self._write(clones=False) as tx:
            tx.run("INSERT INTO pool_overrides (pool, field, value, spec_value, set_at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(pool) DO UPDATE SET field = excluded.field, value = excluded.value, "
                   "spec_value = excluded.spec_value, set_at = excluded.set_at",
                   (pool, field, int(value), spec_value, self._clock()))

    def override(self, pool: str) -> tuple[str, int, int | None] | None:
        """(field, value, spec value then) of the pool's override, or None."""
        rows = self._read("SELECT field, value, spec_value FROM pool_overrides WHERE pool = ?", (pool,))
        if not rows:
            return None
        spec_value = rows[0][2]
        return str(rows[0][0]), int(rows[0][1]), None if spec_value is None else int(spec_value)

    def publish_status(self, pool: str, doc: Mapping[str, object]) -> None:
        """The owner's view of a pool (decision, policy, errors) for every replica's status. Fenced."""
        with self._write(clones=False) as tx:
            writer = self._fenced(tx, pool)
            tx.run("INSERT INTO pool_status (pool, doc, writer, at) VALUES (?, ?, ?, ?) ON CONFLICT(pool) DO UPDATE "
                   "SET doc = excluded.doc, writer = excluded.writer, at = excluded.at",
                   (pool, json.dumps(doc, sort_keys=True, default=str), writer or "", self._clock()))

    def published_status(self, pool: str) -> tuple[dict[str, object], str, float] | None:
        """(doc, writer, at) last published for the pool, or None."""
        rows = self._read("SELECT doc, writer, at FROM pool_status WHERE pool = ?", (pool,))
        if not rows:
            return None
        return json.loads(rows[0][0]), str(rows[0][1]), float(rows[0][2])

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
            with self._write() as tx:
                more = prune_batch(tx, result.cutoff, Path(archive), result)
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
        image_generation: int | None = None,
    ) -> SourceRecord:
        now = self._clock()
        with self._write(clones=False) as tx:
            self._fenced(tx, pool)
            row = tx.one(
                """INSERT INTO sources (pool, vm_name, vm_moref, host, generation, state, frozen, created_at, updated_at,
                       image_generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                (pool, vm_name, vm_moref, host, generation, state, int(frozen), now, now, image_generation),
            )
            assert row is not None
            return _source(row)

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
        with self._write(clones=False) as tx:
            found = tx.one("SELECT pool FROM sources WHERE id = ?" + self._db.for_update, (source_id,))
            if found is None:
                raise LedgerError(f"no source with id {source_id}")
            self._fenced(tx, str(found[0]))
            row = tx.one(f"UPDATE sources SET {columns} WHERE id = ? RETURNING *", (*values.values(), source_id))
            assert row is not None
            return _source(row)

    def next_generation(self, pool: str) -> int:
        """1 for a pool's first source, then one more than the highest generation recorded."""
        rows = self._read("SELECT MAX(generation) FROM sources WHERE pool = ?", (pool,))
        top = rows[0][0]
        return 1 if top is None else int(top) + 1

    # -- replicas (forkscale/fleet/replicas.py) ---------------------------------------------

    def add_replica(self, pool: str, image: str, datastore: str, vm_name: Callable[[int], str]) -> ReplicaRecord:
        """Record a replica about to be made (`preparing`), named `vm_name(its id)`; LedgerError if the
        pool has a usable replica of `image` on `datastore` already."""
        now = self._clock()
        with self._write(clones=False) as tx:
            self._fenced(tx, pool)
            self._db.serialize(tx, f"replicas:{pool}")  # (the unique index replicas_usable is the backstop)
            usable = tx.one("SELECT id FROM replicas WHERE pool = ? AND image = ? AND datastore = ? AND state IN "
                            f"({', '.join('?' * len(USABLE_REPLICA_STATES))})",
                            (pool, image, datastore, *USABLE_REPLICA_STATES))
            if usable is not None:
                raise LedgerError(f"pool {pool} already has a replica of {image} on {datastore}")
            row = tx.one("""INSERT INTO replicas (pool, image, datastore, vm_name, state, created_at, updated_at)
                            VALUES (?, ?, ?, '', 'preparing', ?, ?) RETURNING id""", (pool, image, datastore, now, now))
            assert row is not None
            replica_id = int(row[0])
            tx.run("UPDATE replicas SET vm_name = ? WHERE id = ?", (vm_name(replica_id), replica_id))
            return _replica_of(tx, replica_id)

    def replicas(self, pool: str | None = None, states: Iterable[str] | None = None) -> list[ReplicaRecord]:
        """Replicas (with their reference counts), oldest first."""
        sql, params = f"SELECT {_REPLICA_COLUMNS} FROM replicas r WHERE 1 = 1", []
        if pool is not None:
            sql += " AND r.pool = ?"
            params.append(pool)
        if states is not None:
            wanted = list(states)
            for state in wanted:
                if state not in REPLICA_STATES:
                    raise LedgerError(f"unknown replica state {state!r} (states: {', '.join(REPLICA_STATES)})")
            sql += f" AND r.state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        return [_replica(r) for r in self._read(sql + " ORDER BY r.id", params)]

    def replica(self, replica_id: int) -> ReplicaRecord | None:
        rows = self._read(f"SELECT {_REPLICA_COLUMNS} FROM replicas r WHERE r.id = ?", (replica_id,))
        return _replica(rows[0]) if rows else None

    def update_replica(self, replica_id: int, *, vm_moref: str | None = None, state: str | None = None) -> ReplicaRecord:
        """Record a replica's VM once its task returned, or its new state."""
        values: dict[str, object] = {}
        if vm_moref is not None:
            values["vm_moref"] = vm_moref
        if state is not None:
            if state not in REPLICA_STATES:
                raise LedgerError(f"unknown replica state {state!r} (states: {', '.join(REPLICA_STATES)})")
            values["state"] = state
        if not values:
            raise LedgerError("update_replica needs vm_moref or state")
        values["updated_at"] = self._clock()
        columns = ", ".join(f"{key} = ?" for key in values)
        with self._write(clones=False) as tx:
            row = tx.one("SELECT pool FROM replicas WHERE id = ?" + self._db.for_update, (replica_id,))
            if row is None:
                raise LedgerError(f"no replica with id {replica_id}")
            self._fenced(tx, str(row[0]))
            tx.run(f"UPDATE replicas SET {columns} WHERE id = ?", (*values.values(), replica_id))
            return _replica_of(tx, replica_id)

    def bind_replica(self, clone_id: int, replica_id: int | None) -> CloneRecord:
        """Make `replica_id` one of the clone's dependencies (None: the clone no longer depends on one).

        Written before the linked clone's task is sent, so a crash leaves the reference that keeps
        the replica alive while the clone may still land. Binding to a replica that is no longer
        usable (being removed) is refused.
        """
        now = self._clock()
        with self._write() as tx:
            rec = _get(tx, clone_id, self._db.for_update)
            writer = self._fenced(tx, rec.pool)
            if replica_id is not None:
                row = tx.one("SELECT state FROM replicas WHERE id = ?" + self._db.for_share, (replica_id,))
                if row is None or row[0] not in USABLE_REPLICA_STATES:
                    raise LedgerError(f"replica {replica_id} is {row[0] if row else 'unknown'}; "
                                      f"clone {rec.name} cannot depend on it")
            if rec.replica_id != replica_id:
                _set(tx, clone_id, {"replica_id": replica_id, "updated_at": now})
                _event(tx, clone_id, now, "replica", {"replica_id": replica_id, "was": rec.replica_id}, writer)
            return _get(tx, clone_id)

    def change_kind(self, clone_id: int, kind: str, why: str, **detail: object) -> CloneRecord:
        """A clone became another kind in place (a linked clone promoted or consolidated: `full`),
        which ends its dependency on a replica."""
        _check_kind(kind)
        now = self._clock()
        with self._write() as tx:
            rec = _get(tx, clone_id, self._db.for_update)
            writer = self._fenced(tx, rec.pool)
            if rec.state == "gone":
                raise LedgerError(f"clone {clone_id} is gone; its row is history")
            replica = None if kind != "linked" else rec.replica_id
            _set(tx, clone_id, {"kind": kind, "replica_id": replica, "updated_at": now})
            _event(tx, clone_id, now, why, {"from": rec.kind, "to": kind, "replica_id": rec.replica_id, **detail},
                   writer)
            return _get(tx, clone_id)

    def retire_replica(self, replica_id: int) -> bool:
        """Mark a replica `removing` when no clone depends on it (checked in the same transaction, so a
        clone cannot be bound to it meanwhile); True when it now is `removing`."""
        now = self._clock()
        with self._write(clones=False) as tx:
            locked = tx.one("SELECT pool FROM replicas WHERE id = ?" + self._db.for_update, (replica_id,))
            if locked is None:
                raise LedgerError(f"no replica with id {replica_id}")
            self._fenced(tx, str(locked[0]))
            rec = _replica_of(tx, replica_id)
            if rec.state == "removing":
                return True
            if rec.refs or rec.state == "gone":
                return False
            tx.run("UPDATE replicas SET state = 'removing', updated_at = ? WHERE id = ?", (now, replica_id))
            return True

    # -- day-2 tables (forkscale/ledger/images.py, operations.py, reservations.py, userdisks.py) --

    @property
    def images(self) -> Images:
        return Images(self)

    @property
    def operations(self) -> Operations:
        return Operations(self)

    @property
    def reservations(self) -> Reservations:
        return Reservations(self)

    @property
    def user_disks(self) -> UserDisks:
        return UserDisks(self)


def _get(tx: Tx, clone_id: int, lock: str = "") -> CloneRecord:
    """The clone's row; `lock` (the backend's FOR UPDATE) holds it until the transaction ends."""
    row = tx.one("SELECT * FROM clones WHERE id = ?" + lock, (clone_id,))
    if row is None:
        raise UnknownClone(f"no clone with id {clone_id}")
    return _clone(row)


_TIMES = frozenset({"claimed_at", "created_at", "updated_at", "ready_at"})


def _after(rec: CloneRecord, values: Mapping[str, object]) -> CloneRecord:
    """The row `rec` (read in this transaction) once `_set(values)` wrote it, as reading it back
    would give it (timestamps are REAL / DOUBLE PRECISION columns): one SELECT fewer per change."""
    return _replace(rec, **{k: float(v) if k in _TIMES and v is not None else v  # type: ignore[arg-type]
                           for k, v in values.items()})


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


def _set(tx: Tx, clone_id: int, values: Mapping[str, object]) -> None:
    # Column names come from MUTABLE_FIELDS or this module, never from callers' strings.
    columns = ", ".join(f"{key} = ?" for key in values)
    tx.run(f"UPDATE clones SET {columns} WHERE id = ?", (*values.values(), clone_id))


def _event(tx: Tx, clone_id: int, at: float, what: str, detail: Mapping[str, object], writer: str | None) -> None:
    tx.run(
        "INSERT INTO events (clone_id, at, what, detail, writer) VALUES (?, ?, ?, ?, ?)",
        (clone_id, at, what, json.dumps(detail, sort_keys=True, default=str), writer),
    )


_REPLICA_COLUMNS = ("r.*, (SELECT COUNT(*) FROM clones c WHERE c.replica_id = r.id AND c.state <> 'gone') "
                    "AS refs")


def _replica(row: Row) -> ReplicaRecord:
    values = {key: row[key] for key in row.keys()}
    values["refs"] = int(values["refs"])
    return ReplicaRecord(**values)


def _replica_of(tx: Tx, replica_id: int) -> ReplicaRecord:
    row = tx.one(f"SELECT {_REPLICA_COLUMNS} FROM replicas r WHERE r.id = ?", (replica_id,))
    if row is None:
        raise LedgerError(f"no replica with id {replica_id}")
    return _replica(row)


_CLONE_COLUMNS = ", ".join(f.name for f in fields(CloneRecord))


def _clone(row: Row) -> CloneRecord:
    return CloneRecord(**{key: row[key] for key in row.keys()})


def _clone_row(row: Row) -> CloneRecord:
    """A row of `SELECT {_CLONE_COLUMNS}`: by position, several times faster than by name."""
    return CloneRecord(*(row[i] for i in range(len(_CLONE_FIELDS))))


_CLONE_FIELDS = [f.name for f in fields(CloneRecord)]


def _count(tx: Tx, pool: str, old: str | None, new: str) -> None:
    """One clone of `pool` left state `old` (None: a new row) for `new`, in `pool_counts`."""
    if old == new:
        return
    if old is not None:
        tx.run("UPDATE pool_counts SET n = n - 1 WHERE pool = ? AND state = ?", (pool, old))
    tx.run("INSERT INTO pool_counts (pool, state, n) VALUES (?, ?, 1) "
           "ON CONFLICT (pool, state) DO UPDATE SET n = pool_counts.n + 1", (pool, new))


def _source(row: Row) -> SourceRecord:
    values = {key: row[key] for key in row.keys()}
    values["frozen"] = bool(values["frozen"])
    return SourceRecord(**values)
