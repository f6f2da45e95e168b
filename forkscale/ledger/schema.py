"""The ledger's schema and its migrations (append only), applied in one write transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from forkscale.ledger.records import STATES, LedgerError

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


MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)


SCHEMA_VERSION = len(MIGRATIONS)


def _statements(script: str) -> Iterator[str]:
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


def schema_version(conn: sqlite3.Connection) -> int:
    """0 for a file no ledger has touched yet."""
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the file up to len(migrations), all in one write transaction; return the version.

    One transaction means a crash (or a failing migration) leaves the old version intact, and
    two processes opening the same old file migrate it once. A file newer than this code is
    refused rather than guessed at.
    """
    target = len(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        if conn.execute("SELECT version FROM schema_version").fetchone() is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = schema_version(conn)
        if version > target:
            raise LedgerError(
                f"ledger schema version {version} is newer than this forkscale understands ({target}); upgrade forkscale"
            )
        for number in range(version, target):
            for statement in _statements(migrations[number]):
                conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (number + 1,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return target
