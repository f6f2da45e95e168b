"""The embedded backend: one SQLite file, for a controller (or several commands) on one machine.

Identity allocation reads what is taken and inserts the new row inside one `BEGIN IMMEDIATE`
transaction, which takes the database's write lock up front; that serialises allocators across
threads (one connection behind a lock) and across processes (the file lock), and partial unique
indexes over live rows make SQLite itself refuse a duplicate name, MAC, or IP-on-a-port-group even
if a future code path forgets the allocator. WAL mode lets readers (status, metrics) run while a
writer holds the lock. synchronous=NORMAL: in WAL mode a commit survives any crash of the process
(kill -9 included) without an fsync per commit; only an OS crash or power loss can drop the last
commits, and then the clones they described are still found in vCenter by their
`forkscale.pool`/`forkscale.id` tags and adopted or removed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from forkscale.ledger.backend import Params, Row
from forkscale.ledger.records import LedgerError
from forkscale.ledger.schema import MIGRATIONS, apply_migrations


class SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._conn.execute(sql, params).fetchall())

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def run(self, sql: str, params: Params = ()) -> int:
        return self._conn.execute(sql, params).rowcount


class SqliteBackend:
    """One connection to one file, behind a lock (thread-safe)."""

    dialect = "sqlite"
    for_update = ""
    for_claim = ""
    for_share = ""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.location = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"{self.path}: cannot open the ledger: {exc}") from None
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

    @contextmanager
    def write(self) -> Iterator[SqliteTx]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def serialize(self, tx: object, what: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already made this the only writer."""

    def bounded_wait(self, tx: object, seconds: float) -> None:
        """Nothing to bound: a writer holds the whole file, nobody else's row locks."""

    def read(self, sql: str, params: Params = ()) -> list[Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def now(self, tx: object) -> float:
        return self._clock()

    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version`: changes when another connection commits (not this one)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def schema_version(conn: sqlite3.Connection) -> int:
    """0 for a file no ledger has touched yet."""
    row = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the file up to len(migrations), all in one write transaction; return the version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = apply_migrations(SqliteTx(conn), "sqlite", migrations)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version
