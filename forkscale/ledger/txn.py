"""Statements of one open ledger transaction, for the modules that keep the day-2 tables.

`Ledger._write()` hands out the transaction (`backend.Tx`, SQLite or PostgreSQL); these are all the
SQL calls the images, operations, reservations and user-disk modules make inside it, written once
in the dialect every backend understands (`?` placeholders, `INSERT ... RETURNING`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forkscale.ledger.backend import Row, Tx

__all__ = ["Row", "Tx", "as_dict", "one", "rows", "run"]


def rows(tx: Tx, sql: str, params: Sequence[object] = ()) -> list[Row]:
    return tx.rows(sql, params)


def one(tx: Tx, sql: str, params: Sequence[object] = ()) -> Row | None:
    return tx.one(sql, params)


def run(tx: Tx, sql: str, params: Sequence[object] = ()) -> int:
    """Execute; the number of rows changed."""
    return tx.run(sql, params)


def as_dict(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}
