"""Ledger retention: history older than the window moves to an archive file (JSON lines).

What is history: `gone` clones (and every event of theirs), events older than the window of
clones still alive, and `gone` sources (and `failed` ones that left no VM). Nothing a running
controller reads is moved: live rows stay, and so do the clone with the highest id and each
pool's source with the highest generation, so ids and generations never go back and are never
handed out twice.

Each batch is appended to the archive and flushed to disk (fsync) inside the write transaction
that deletes it: a crash between the two leaves the rows in the ledger and, at worst, a copy in
the archive that the next prune writes again (at-least-once; every line carries the row's id).
Every query here is an indexed search (migration v3), never a scan of `clones` or `events`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkscale.ledger.backend import Row, Tx

BATCH = 500


@dataclass
class PruneResult:
    """What one prune moved to the archive."""

    clones: int = 0
    events: int = 0
    sources: int = 0
    archive: Path | None = None
    cutoff: float = 0.0
    batches: int = field(default=0, repr=False)

    @property
    def moved(self) -> int:
        return self.clones + self.events + self.sources


def _rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [{key: row[key] for key in row.keys()} for row in rows]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def prune_batch(tx: Tx, cutoff: float, archive: Path, result: PruneResult, batch: int = BATCH) -> bool:
    """Move one batch older than `cutoff` to `archive`, inside the caller's write transaction.

    True when a full batch was moved (call again for more)."""
    clones = _rows(tx.rows(
        "SELECT * FROM clones WHERE state = 'gone' AND updated_at < ? "
        "AND id < (SELECT MAX(id) FROM clones) ORDER BY updated_at LIMIT ?", (cutoff, batch)))
    ids = [c["id"] for c in clones]
    events_of: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for ev in _rows(tx.rows(f"SELECT * FROM events WHERE clone_id IN ({_marks(len(chunk))}) ORDER BY id",
                                chunk)):
            events_of[ev["clone_id"]].append(ev)
    aged = _rows(tx.rows("SELECT * FROM events WHERE at < ? ORDER BY at LIMIT ?", (cutoff, batch)))
    old_events = [ev for ev in aged if ev["clone_id"] not in events_of]  # the others leave with their clone
    sources = _rows(tx.rows(
        "SELECT * FROM sources WHERE state IN ('gone', 'failed') AND (state = 'gone' OR vm_moref IS NULL) "
        "AND updated_at < ? AND generation < (SELECT MAX(s.generation) FROM sources s WHERE s.pool = sources.pool) "
        "ORDER BY updated_at LIMIT ?", (cutoff, batch)))
    if not (clones or aged or sources):
        return False
    lines = [{"kind": "clone", "row": c, "events": events_of[c["id"]]} for c in clones]
    lines += [{"kind": "event", "row": ev} for ev in old_events]
    lines += [{"kind": "source", "row": s} for s in sources]
    _append(archive, lines)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        tx.run(f"DELETE FROM events WHERE clone_id IN ({_marks(len(chunk))})", chunk)
        tx.run(f"DELETE FROM identity_held WHERE clone_id IN ({_marks(len(chunk))})", chunk)
        tx.run(f"DELETE FROM clones WHERE id IN ({_marks(len(chunk))})", chunk)
    for pool in {c["pool"] for c in clones}:  # pool_counts keeps `gone` too (forkscale/ledger/store.py)
        tx.run("UPDATE pool_counts SET n = n - ? WHERE pool = ? AND state = 'gone'",
               (sum(1 for c in clones if c["pool"] == pool), pool))
    if old_events:
        tx.run(f"DELETE FROM events WHERE id IN ({_marks(len(old_events))})", [e["id"] for e in old_events])
    if sources:
        tx.run(f"DELETE FROM sources WHERE id IN ({_marks(len(sources))})", [s["id"] for s in sources])
    result.clones += len(clones)
    result.events += len(old_events) + sum(len(v) for v in events_of.values())
    result.sources += len(sources)
    result.batches += 1
    return max(len(clones), len(aged), len(sources)) >= batch


def _append(archive: Path, lines: list[dict[str, Any]]) -> None:
    """Append JSON lines and make them durable before the rows they copy are deleted."""
    text = "".join(json.dumps(line, sort_keys=True, default=str) + "\n" for line in lines)
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(archive, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        data = text.encode()
        while data:
            written = os.write(fd, data)
            data = data[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
