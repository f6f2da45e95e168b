"""The ledger's schema and its migrations (append only), applied in one write transaction.

One set of migrations serves both backends. They are written in SQLite's dialect, restricted to
what PostgreSQL also understands once `postgres_dialect` has renamed the column types (type
names in upper case: `INTEGER PRIMARY KEY` -> an identity column, `INTEGER` -> `BIGINT`, `REAL`
-> `DOUBLE PRECISION`, `BLOB` -> `BYTEA`). Whoever appends a migration keeps to that subset:
no SQLite-only functions or pragmas, no `AUTOINCREMENT`, `ALTER TABLE ... ADD COLUMN` only. The
ledger tests run every migration on both backends.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from forkscale.ledger.records import STATES, LedgerError

if TYPE_CHECKING:
    from forkscale.ledger.backend import Tx

_V1 = f"""
CREATE TABLE clones (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    name TEXT NOT NULL,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('instant', 'linked', 'full')),
    source TEXT NOT NULL,
    source_generation INTEGER NOT NULL,
    host TEXT NOT NULL,
    datastore TEXT NOT NULL,
    port_group TEXT NOT NULL,
    vm_moref TEXT,
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{s}'" for s in STATES)})),
    fallback_reason TEXT,
    error TEXT,
    claimed_by TEXT,
    claimed_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ready_at REAL
);
CREATE UNIQUE INDEX clones_live_name ON clones (name) WHERE state <> 'gone';
CREATE UNIQUE INDEX clones_live_mac ON clones (mac) WHERE state <> 'gone';
CREATE UNIQUE INDEX clones_live_ip ON clones (port_group, ip) WHERE state <> 'gone';
CREATE INDEX clones_pool_state ON clones (pool, state);
CREATE INDEX clones_moref ON clones (vm_moref);
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    vm_moref TEXT,
    host TEXT NOT NULL,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,
    frozen INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX sources_pool ON sources (pool, generation);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    clone_id INTEGER NOT NULL REFERENCES clones (id),
    at REAL NOT NULL,
    what TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX events_clone ON events (clone_id, id);
"""


#: MIGRATIONS[i] takes a file from schema version i to i+1. Append only; never edit a shipped one.
#: v2: the count a pool was last converged to (by `scale`, `apply`, the API or a policy), so
#: `status` and the exporter report what was asked for, not just what the spec file says.
_V2 = """
CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    desired INTEGER NOT NULL CHECK (desired >= 0),
    set_by TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


#: v3: a clone's vCenter identity beyond its moref (`config.instanceUuid`, so a VM is still found
#: after its moref changed, e.g. re-registered), and the task of a clone whose identity is
#: quarantined (`pending_task`: it timed out and may still land; the row keeps its name, IP and MAC
#: until vCenter says the task ended and no VM holds them).
_V3 = """
ALTER TABLE clones ADD COLUMN instance_uuid TEXT;
ALTER TABLE clones ADD COLUMN pending_task TEXT;
"""


#: v4: indexed lookups only. `by_name` (a release, a scale-down) searched every row ever written;
#: retention (`Ledger.prune`) finds old history by time instead of scanning `clones` and `events`.
_V4 = """
CREATE INDEX clones_name ON clones (name);
CREATE INDEX clones_gone_at ON clones (updated_at) WHERE state = 'gone';
CREATE INDEX events_at ON events (at);
CREATE INDEX sources_gone_at ON sources (updated_at) WHERE state IN ('gone', 'failed');
"""


#: v5: leases with fencing tokens (forkscale/ledger/lease.py): one row per scope -- `ledger`,
#: `pool:<name>`, `replica:<id>` -- naming its holder; `token` only ever goes up.
_V5 = """
CREATE TABLE leases (
    scope TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    renewed_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    token INTEGER NOT NULL CHECK (token >= 1),
    detail TEXT NOT NULL DEFAULT '{}'
);
"""


#: v6: what several `serve` replicas share besides clones: who wrote each event (`holder#token`,
#: the audit trail of fencing), count overrides set over any replica's API, and each pool's
#: status as its owner last published it (any replica answers GET /v1/pools/{pool}).
_V6 = """
ALTER TABLE events ADD COLUMN writer TEXT;
CREATE TABLE pool_overrides (
    pool TEXT PRIMARY KEY,
    field TEXT NOT NULL CHECK (field IN ('count', 'min')),
    value INTEGER NOT NULL CHECK (value >= 0),
    spec_value INTEGER,
    set_at REAL NOT NULL
);
CREATE TABLE pool_status (
    pool TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    writer TEXT NOT NULL,
    at REAL NOT NULL
);
"""


#: v7: identity allocation and counts in O(1) per clone (forkscale/ledger/alloc.py): per scope (a
#: pool's name pattern, a port group's address range) the next value never handed out and the
#: values given back since; the values each clone holds, given back when it is gone; clones per
#: pool and state, kept by every write instead of counted over the rows.
_V7 = """
CREATE TABLE identity_next (
    scope TEXT PRIMARY KEY,
    next_value INTEGER NOT NULL
);
CREATE TABLE identity_free (
    scope TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (scope, value)
);
CREATE TABLE identity_held (
    clone_id INTEGER NOT NULL REFERENCES clones (id),
    scope TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (clone_id, scope)
);
CREATE TABLE pool_counts (
    pool TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL CHECK (n >= 0),
    PRIMARY KEY (pool, state)
);
INSERT INTO pool_counts (pool, state, n) SELECT pool, state, COUNT(*) FROM clones GROUP BY pool, state;
"""


#: v8: day-2 operations (forkscale/ledger/images.py, operations.py, reservations.py, userdisks.py):
#: a pool's image history (golden VM + snapshot per generation) and the generation every clone and
#: per-host source was made from; long operations as persisted plans (one row per operation, one
#: per step, executed idempotently); identities held for a clone being replaced (its name, IP and
#: MAC are given back to its replacement, never to another clone); users' persistent disks.
_V8 = """
ALTER TABLE clones ADD COLUMN image_generation INTEGER;
ALTER TABLE sources ADD COLUMN image_generation INTEGER;
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    generation INTEGER NOT NULL CHECK (generation >= 1),
    golden TEXT NOT NULL,
    snapshot TEXT,
    snapshot_moref TEXT,
    state TEXT NOT NULL CHECK (state IN ('priming', 'active', 'retired', 'failed')),
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    activated_at REAL,
    retired_at REAL,
    reason TEXT,
    UNIQUE (pool, generation)
);
CREATE TABLE operations (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'cancelled', 'done', 'failed')),
    phase TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    reason TEXT,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    not_before REAL,
    finished_at REAL,
    executor TEXT,
    heartbeat REAL
);
CREATE UNIQUE INDEX operations_one_open ON operations (pool) WHERE state IN ('running', 'paused');
CREATE TABLE operation_steps (
    id INTEGER PRIMARY KEY,
    operation_id INTEGER NOT NULL REFERENCES operations (id),
    seq INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'waiting', 'done', 'failed', 'skipped')),
    detail TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    started_at REAL,
    updated_at REAL NOT NULL,
    UNIQUE (operation_id, seq)
);
CREATE TABLE reservations (
    name TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    port_group TEXT NOT NULL,
    claimed_by TEXT,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX reservations_pool ON reservations (pool, created_at);
CREATE TABLE user_disks (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    identity TEXT NOT NULL,
    clone_id INTEGER,
    path TEXT NOT NULL,
    size_gb INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('creating', 'attached', 'detached', 'kept', 'deleted')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX user_disks_identity ON user_disks (pool, identity) WHERE state <> 'deleted';
"""


#: v9: replicas for linked clones (one full clone of a pool's image per datastore, which that
#: datastore's linked clones fork from), and each clone's replica (`replica_id`: what keeps a
#: replica alive; a replica's reference count is the number of clones not `gone` that name it).
#: A replica's row is written `preparing` before its clone task is sent, `removing` before its
#: destroy task; at most one replica per pool, image and datastore is usable at a time.
_V9 = """
CREATE TABLE replicas (
    id INTEGER PRIMARY KEY,
    pool TEXT NOT NULL,
    image TEXT NOT NULL,
    datastore TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    vm_moref TEXT,
    state TEXT NOT NULL CHECK (state IN ('preparing', 'ready', 'removing', 'gone', 'failed')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX replicas_usable ON replicas (pool, image, datastore) WHERE state IN ('preparing', 'ready');
ALTER TABLE clones ADD COLUMN replica_id INTEGER;
CREATE INDEX clones_replica ON clones (replica_id);
"""


MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9)


SCHEMA_VERSION = len(MIGRATIONS)


_POSTGRES_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)


def postgres_dialect(statement: str) -> str:
    """A migration statement as PostgreSQL needs it: SQLite's column types renamed (see above).

    REAL must become DOUBLE PRECISION: PostgreSQL's REAL is 4 bytes, which would round every
    timestamp to about two minutes.
    """
    for pattern, replacement in _POSTGRES_TYPES:
        statement = pattern.sub(replacement, statement)
    return statement


def statements(script: str) -> Iterator[str]:
    """Split a SQL script into statements (sqlite3.executescript would COMMIT our transaction)."""
    buffer = ""
    for part in script.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise LedgerError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")


def apply_migrations(tx: Tx, dialect: str, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the database up to len(migrations) inside the caller's (write) transaction.

    One transaction means a crash (or a failing migration) leaves the old version intact, and
    two processes opening the same old database migrate it once. A database newer than this
    code is refused rather than guessed at.
    """
    target = len(migrations)
    translate = postgres_dialect if dialect == "postgresql" else (lambda sql: sql)
    tx.run(translate("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
    row = tx.one("SELECT version FROM schema_version")
    if row is None:
        tx.run("INSERT INTO schema_version (version) VALUES (0)")
    version = 0 if row is None else int(row[0])
    if version > target:
        raise LedgerError(
            f"ledger schema version {version} is newer than this forkscale understands ({target}); upgrade forkscale"
        )
    for number in range(version, target):
        for statement in statements(migrations[number]):
            tx.run(translate(statement))
        tx.run("UPDATE schema_version SET version = ?", (number + 1,))
    return target
