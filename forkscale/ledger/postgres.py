"""The shared backend: a PostgreSQL database, for several controllers (`serve` replicas) on one ledger.

Why synchronous psycopg 3 behind a lock: the engine, the controller, the API thread and the
exporter call the ledger synchronously today (dozens of call sites, each a short transaction),
exactly as they call SQLite. A sync connection keeps every caller unchanged and keeps the
transactions short and strictly sequential per process; an async driver would have to turn
each of those call sites into an await (and the API thread's claims onto another loop) for no
gain at this rate: a write is a few round trips of well under a millisecond on a LAN, and the
busiest path (claims) is one transaction per user.

Concurrency across replicas is PostgreSQL's: identity allocation takes a transaction-scoped
advisory lock (`serialize`), so allocators run one at a time across every replica, as SQLite's
`BEGIN IMMEDIATE` makes them on one machine, and the same partial unique indexes over live rows
back it up; a read-modify-write of one clone locks its row (`FOR UPDATE`); a claim takes the
oldest ready clone no other transaction is claiming (`FOR UPDATE SKIP LOCKED`), so concurrent
claims from any replica never hand out one clone twice and never wait on each other.

Connections: autocommit (a read never leaves a transaction open), explicit transactions for
writes, TCP keepalives and a statement timeout so a dead server or a stuck lock ends in an
error instead of a hang; a broken connection is replaced at the next call. TLS and the password
are whatever the URL and `password` say (the spec insists on `sslmode=verify-full` by default).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from forkscale.ledger.backend import LedgerUnavailable, Params, Row, first_line
from forkscale.ledger.records import LedgerError
from forkscale.ledger.schema import MIGRATIONS, apply_migrations

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "the PostgreSQL ledger needs psycopg 3: pip install 'forkscale[postgres]'"
SCHEMES = ("postgresql://", "postgres://")
#: a transaction of ours never idles (each is a few statements in a row); one idle this long belongs
#: to a stopped or hung process, and the server ends it so its locks do not stall the other replicas
IDLE_IN_TRANSACTION_S = 5.0
# libpq settings that turn a dead peer into an error within seconds (each overridable in the URL)
CONNECT_DEFAULTS: dict[str, str | int] = {
    "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 10000, "application_name": "forkscale",
}


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(SCHEMES)


def lock_key(what: str) -> int:
    """A stable 32-bit advisory lock key for `what` (two-int form, namespaced by 'fork')."""
    return zlib.crc32(what.encode()) & 0x7FFFFFFF


_NAMESPACE = 0x666F726B & 0x7FFFFFFF  # "fork"


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """`?` placeholders (the store's) as psycopg's `%s`; a literal `%` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgRow(tuple[Any, ...]):
    """A row readable by position and by column name, like sqlite3.Row."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


class PostgresTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def _execute(self, sql: str, params: Params) -> Any:
        if params:
            return self._conn.execute(to_pyformat(sql), tuple(params))
        return self._conn.execute(sql)  # no parameters: sent as is (migrations, DDL)

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._execute(sql, params).fetchall())

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._execute(sql, params).fetchone()
        return row

    def run(self, sql: str, params: Params = ()) -> int:
        return int(self._execute(sql, params).rowcount)


class PostgresBackend:
    """One connection per process, behind a lock (thread-safe, like the SQLite backend)."""

    dialect = "postgresql"
    for_update = " FOR UPDATE"
    for_claim = " FOR UPDATE SKIP LOCKED"
    for_share = " FOR SHARE"

    def __init__(self, url: str, *, password: Callable[[], str] | None = None, display: str | None = None,
                 statement_timeout_s: float = 30.0, migrations: Sequence[str] = MIGRATIONS) -> None:
        try:
            import psycopg
        except ImportError:
            raise LedgerError(INSTALL_HINT) from None
        self._psycopg = psycopg
        self._url = url
        self._password = password
        self.location = display or _display(url)
        self._timeout_ms = int(statement_timeout_s * 1000)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        with self.write() as tx:
            self.serialize(tx, "migrate")
            apply_migrations(tx, self.dialect, migrations)

    # connection ---------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        kwargs: dict[str, Any] = {k: v for k, v in CONNECT_DEFAULTS.items() if f"{k}=" not in self._url}
        if self._password is not None:
            kwargs["password"] = self._password()
        try:
            conn = self._psycopg.connect(self._url, autocommit=True, row_factory=_row_factory, **kwargs)
            conn.execute(f"SET statement_timeout = {self._timeout_ms}")
            # A process stopped (SIGSTOP, a hung VM) in the middle of a transaction would hold its
            # row and advisory locks for ever; the server ends such a session instead.
            conn.execute(f"SET idle_in_transaction_session_timeout = {int(IDLE_IN_TRANSACTION_S * 1000)}")
        except self._psycopg.OperationalError as exc:
            raise LedgerUnavailable(f"cannot connect to the ledger database {self.location}: {first_line(exc)}") \
                from None
        self._conn = conn
        return conn

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A lost connection or a timed-out statement is one line naming the database."""
        try:
            yield
        except self._psycopg.Error as exc:
            # A session the server ended (idle-in-transaction timeout after a SIGSTOP, an admin's
            # pg_terminate_backend) is an InternalError or the like on a now broken connection.
            broken = self._conn is not None and (self._conn.closed or self._conn.broken)
            if not (isinstance(exc, self._psycopg.OperationalError) or broken):
                raise
            raise LedgerUnavailable(f"ledger database {self.location}: {first_line(exc)}") from None

    # Backend ------------------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[PostgresTx]:
        with self._lock, self._guard():
            conn = self._connect()
            with conn.transaction():
                yield PostgresTx(conn)

    def serialize(self, tx: Any, what: str) -> None:
        tx.run("SELECT pg_advisory_xact_lock(?::int4, ?::int4)", (_NAMESPACE, lock_key(what)))

    def bounded_wait(self, tx: Any, seconds: float) -> None:
        tx.run(f"SET LOCAL lock_timeout = {int(seconds * 1000)}")

    def read(self, sql: str, params: Params = ()) -> list[Row]:
        with self._lock, self._guard():
            return PostgresTx(self._connect()).rows(sql, params)

    def now(self, tx: Any) -> float:
        row = tx.one("SELECT extract(epoch FROM clock_timestamp())::float8")
        return float(row[0]) if row is not None else time.time()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _display(url: str) -> str:
    """The URL without its query (which may name files) and without any password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
