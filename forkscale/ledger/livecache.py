"""Each pool's clones that are not gone, read once and served again while the ledger is unchanged.

A converge round asks for a pool's live rows several times (reconcile, plan, the sources in use)
and a steady round changes none of them: at 10,000 clones each read is ~10,000 records built
from rows. Here they are read once per change instead: the cache is dropped inside every write
transaction that touches `clones` on this connection (so a reader on another thread, waiting for
the ledger's lock, never sees the old rows after the commit), and whenever SQLite's
`PRAGMA data_version` says another connection committed (another process, a CLI claim).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from forkscale.ledger.records import CloneRecord


class LiveRows:
    def __init__(self, read: Callable[[str], list[CloneRecord]], version: Callable[[], int],
                 lock: threading.RLock) -> None:
        self._read = read
        self._version = version
        self._lock = lock
        self._rows: dict[str, list[CloneRecord]] = {}
        self._seen = -1
        self.reads = 0
        """How many times a pool's rows were read from the database (the rest came from here)."""

    def drop(self) -> None:
        """Forget every pool's rows (call inside a write transaction that changes clones)."""
        self._rows.clear()

    def rows(self, pool: str, states: Collection[str]) -> list[CloneRecord]:
        """The pool's rows in `states` (none of them `gone`), by id."""
        with self._lock:
            version = self._version()
            if version != self._seen:
                self._rows.clear()
                self._seen = version
            rows = self._rows.get(pool)
            if rows is None:
                rows = self._rows[pool] = self._read(pool)
                self.reads += 1
        return [r for r in rows if r.state in states]
