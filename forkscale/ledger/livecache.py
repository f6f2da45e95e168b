"""Each pool's clones that are not gone, read once and served again while the ledger is unchanged.

A converge round asks for a pool's live rows several times (reconcile, plan, the sources in use)
and a steady round changes none of them: at 10,000 clones each read is ~10,000 records built
from rows. Here they are read once per change instead: every write transaction that may touch
`clones` drops them (`Ledger._write`), and so does a new SQLite `PRAGMA data_version` (another
connection committed: another process, a CLI claim). A read that raced a drop is returned but
not kept (the drop moved the generation on), so nothing older than the last commit is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from forkscale.ledger.records import CloneRecord


class LiveRows:
    def __init__(self, read: Callable[[str], list[CloneRecord]], version: Callable[[], int]) -> None:
        self._read = read
        self._version = version
        self._lock = threading.Lock()
        self._rows: dict[str, list[CloneRecord]] = {}
        self._seen = -1
        self._generation = 0
        self.reads = 0
        """How many times a pool's rows were read from the database (the rest came from here)."""

    def drop(self) -> None:
        """Forget every pool's rows (called inside each write transaction that may change clones)."""
        with self._lock:
            self._rows.clear()
            self._generation += 1

    def rows(self, pool: str, states: Collection[str]) -> list[CloneRecord]:
        """The pool's rows in `states` (none of them `gone`), by id."""
        version = self._version()
        with self._lock:
            if version != self._seen:
                self._rows.clear()
                self._generation += 1
                self._seen = version
            rows = self._rows.get(pool)
            generation = self._generation
        if rows is None:
            rows = self._read(pool)
            self.reads += 1
            with self._lock:
                if generation == self._generation:
                    self._rows[pool] = rows
        return [r for r in rows if r.state in states]
