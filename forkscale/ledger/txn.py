"""Statements of one open ledger transaction, for the modules that keep the day-2 tables.

`Ledger._write()` hands out the transaction; these three calls are all the SQL the images,
operations, reservations and user-disk modules run inside it, written once in the dialect
every ledger backend understands (`?` placeholders, `INSERT ... RETURNING id`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

Tx = sqlite3.Connection
Row = Any  # sqlite3.Row: by position or by column name


def rows(tx: Tx, sql: str, params: Sequence[object] = ()) -> list[Row]:
    return tx.execute(sql, params).fetchall()


def one(tx: Tx, sql: str, params: Sequence[object] = ()) -> Row | None:
    found: Row | None = tx.execute(sql, params).fetchone()
    return found


def run(tx: Tx, sql: str, params: Sequence[object] = ()) -> int:
    """Execute; the number of rows changed."""
    return tx.execute(sql, params).rowcount


def as_dict(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}
