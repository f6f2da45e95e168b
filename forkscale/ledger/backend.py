"""What the ledger needs from a database: short transactions, reads, a clock, and two dialect hints.

Two backends implement it: `sqlite.SqliteBackend` (one file, the embedded default) and
`postgres.PostgresBackend` (psycopg 3, for several controllers on one ledger). The store
(`store.Ledger`) writes its SQL once, with `?` placeholders, in the subset both understand;
each backend adapts the placeholders and adds what only it has (row locks on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from forkscale.ledger.records import LedgerError

Params = Sequence[object]


class Row(Protocol):
    """A result row, by position or by column name (sqlite3.Row, and `postgres.PgRow`)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Tx(Protocol):
    """The statements of one open transaction."""

    def rows(self, sql: str, params: Params = ()) -> list[Row]: ...

    def one(self, sql: str, params: Params = ()) -> Row | None: ...

    def run(self, sql: str, params: Params = ()) -> int:
        """Execute; the number of rows changed."""
        ...


class Backend(Protocol):
    #: "sqlite" or "postgresql"
    dialect: str
    #: where the ledger lives, for messages (never holds a secret)
    location: str
    #: appended to a SELECT inside a write transaction to lock the rows it returns ("" on SQLite,
    #: where the transaction already holds the database's write lock)
    for_update: str
    #: the same for a claim, which must skip rows another transaction is claiming
    for_claim: str
    #: a shared row lock: the row cannot change until this transaction ends (fencing checks)
    for_share: str

    def write(self) -> AbstractContextManager[Tx]:
        """One short write transaction, committed on exit, rolled back on an exception.

        SQLite: `BEGIN IMMEDIATE` (the file's write lock from the first statement, so every writer
        is serialised). PostgreSQL: READ COMMITTED with row locks where the store asks for them.
        """
        ...

    def serialize(self, tx: Tx, what: str) -> None:
        """Make transactions that call this with the same `what` run one at a time (identity
        allocation, lease changes). A no-op on SQLite, whose writers are serialised anyway."""
        ...

    def bounded_wait(self, tx: Tx, seconds: float) -> None:
        """Statements of `tx` give up (an error) after waiting `seconds` for another's row lock."""
        ...

    def read(self, sql: str, params: Params = ()) -> list[Row]: ...

    def now(self, tx: Tx) -> float:
        """Seconds since the epoch on the database's clock: every replica's leases expire by
        one clock (PostgreSQL's), never by a skewed local one."""
        ...

    def close(self) -> None: ...


class LedgerUnavailable(LedgerError):
    """The ledger's database cannot be reached (or broke off); the message says where and why."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
