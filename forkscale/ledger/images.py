"""A pool's image history: which golden VM and snapshot each generation is, and its state.

A pool's image is its golden VM plus one of its snapshots. Generation 1 is what the spec names
(`source:` + `snapshot:`, or the golden's current snapshot when the pool was first converged),
pinned by the snapshot's moref so a later snapshot of the golden changes nothing until it is
pushed. `forkscale push-image` adds the next generation. States:

* `priming`: being pushed (its per-host sources are made, then clones move onto it); at most one
  per pool, the pool's *target* image;
* `active`: what the pool runs; exactly one once the pool has an image history;
* `retired`: was active; its per-host sources are kept for `rollout.keep_previous_s` (a rollback
  finds them ready) and removed once no clone uses them;
* `failed`: a push that did not complete (cancelled, rolled back, or its priming failed).

Every clone row and per-host source row records the generation it was made from
(`image_generation`); rows written before image histories existed are generation 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from forkscale.ledger import txn
from forkscale.ledger.records import LedgerError

if TYPE_CHECKING:
    from forkscale.ledger.store import Ledger

IMAGE_STATES = ("priming", "active", "retired", "failed")


@dataclass(frozen=True)
class ImageRecord:
    id: int
    pool: str
    generation: int
    golden: str  # the golden VM's name
    snapshot: str | None  # the snapshot's name (None: the golden's current snapshot, unnamed here)
    snapshot_moref: str | None  # None: the golden has no snapshot (full clones only)
    state: str
    created_by: str
    created_at: float
    activated_at: float | None
    retired_at: float | None
    reason: str | None

    def label(self) -> str:
        """`g2 (src-linux @ patch-2024-06)`"""
        return f"g{self.generation} ({self.golden} @ {self.snapshot or self.snapshot_moref or 'no snapshot'})"

    def as_dict(self) -> dict[str, object]:
        return {"generation": self.generation, "golden": self.golden, "snapshot": self.snapshot,
                "snapshot_moref": self.snapshot_moref, "state": self.state, "created_by": self.created_by,
                "created_at": self.created_at, "activated_at": self.activated_at, "retired_at": self.retired_at,
                "reason": self.reason}


class Images:
    """The `images` table of one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def history(self, pool: str) -> list[ImageRecord]:
        return [_image(r) for r in self.ledger._read("SELECT * FROM images WHERE pool = ? ORDER BY generation",
                                                     (pool,))]

    def get(self, pool: str, generation: int) -> ImageRecord | None:
        rows = self.ledger._read("SELECT * FROM images WHERE pool = ? AND generation = ?", (pool, generation))
        return _image(rows[0]) if rows else None

    def active(self, pool: str) -> ImageRecord | None:
        rows = self.ledger._read("SELECT * FROM images WHERE pool = ? AND state = 'active' "
                                 "ORDER BY generation DESC LIMIT 1", (pool,))
        return _image(rows[0]) if rows else None

    def target(self, pool: str) -> ImageRecord | None:
        """The image being pushed (`priming`), if any."""
        rows = self.ledger._read("SELECT * FROM images WHERE pool = ? AND state = 'priming' "
                                 "ORDER BY generation DESC LIMIT 1", (pool,))
        return _image(rows[0]) if rows else None

    def previous(self, pool: str) -> ImageRecord | None:
        """The most recently retired image (what `rollback` goes back to once a push completed)."""
        rows = self.ledger._read("SELECT * FROM images WHERE pool = ? AND state = 'retired' "
                                 "ORDER BY retired_at DESC, generation DESC LIMIT 1", (pool,))
        return _image(rows[0]) if rows else None

    def ensure_first(self, pool: str, golden: str, snapshot: str | None, snapshot_moref: str | None,
                     created_by: str = "spec") -> ImageRecord:
        """The pool's active image; on a pool without an image history, record generation 1 (and
        mark every clone and source row that predates it as made from it), atomically."""
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            row = txn.one(tx, "SELECT * FROM images WHERE pool = ? AND state = 'active' "
                              "ORDER BY generation DESC LIMIT 1", (pool,))
            if row is not None:
                return _image(row)
            if txn.one(tx, "SELECT 1 FROM images WHERE pool = ?", (pool,)) is not None:
                raise LedgerError(f"pool {pool} has an image history but no active image")
            row = txn.one(tx, """INSERT INTO images (pool, generation, golden, snapshot, snapshot_moref, state,
                                     created_by, created_at, activated_at)
                                 VALUES (?, 1, ?, ?, ?, 'active', ?, ?, ?) RETURNING *""",
                          (pool, golden, snapshot, snapshot_moref, created_by, now, now))
            txn.run(tx, "UPDATE clones SET image_generation = 1 WHERE pool = ? AND image_generation IS NULL", (pool,))
            txn.run(tx, "UPDATE sources SET image_generation = 1 WHERE pool = ? AND image_generation IS NULL", (pool,))
            assert row is not None
            return _image(row)

    def add(self, pool: str, golden: str, snapshot: str | None, snapshot_moref: str | None,
            created_by: str) -> ImageRecord:
        """The next generation, `priming` (the push's target)."""
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            if txn.one(tx, "SELECT 1 FROM images WHERE pool = ? AND state = 'priming'", (pool,)) is not None:
                raise LedgerError(f"pool {pool} is already being pushed an image")
            top = txn.one(tx, "SELECT MAX(generation) FROM images WHERE pool = ?", (pool,))
            generation = 1 if top is None or top[0] is None else int(top[0]) + 1
            row = txn.one(tx, """INSERT INTO images (pool, generation, golden, snapshot, snapshot_moref, state,
                                     created_by, created_at) VALUES (?, ?, ?, ?, ?, 'priming', ?, ?) RETURNING *""",
                          (pool, generation, golden, snapshot, snapshot_moref, created_by, now))
            assert row is not None
            return _image(row)

    def retarget(self, pool: str, generation: int, reason: str) -> ImageRecord:
        """Make an earlier image the target again (a rollback pushes it back): `priming`."""
        return self._set(pool, generation, "priming", reason)

    def activate(self, pool: str, generation: int) -> ImageRecord:
        """The push is complete: `generation` is active, the image active before it retired (now)."""
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            self.ledger._fenced(tx, pool)
            txn.run(tx, "UPDATE images SET state = 'retired', retired_at = ? WHERE pool = ? AND state = 'active' "
                        "AND generation <> ?", (now, pool, generation))
            changed = txn.run(tx, "UPDATE images SET state = 'active', activated_at = ?, retired_at = NULL "
                                  "WHERE pool = ? AND generation = ?", (now, pool, generation))
            if not changed:
                raise LedgerError(f"pool {pool} has no image generation {generation}")
            row = txn.one(tx, "SELECT * FROM images WHERE pool = ? AND generation = ?", (pool, generation))
            assert row is not None
            return _image(row)

    def fail(self, pool: str, generation: int, reason: str) -> ImageRecord:
        return self._set(pool, generation, "failed", reason)

    def _set(self, pool: str, generation: int, state: str, reason: str | None) -> ImageRecord:
        if state not in IMAGE_STATES:
            raise LedgerError(f"unknown image state {state!r} (states: {', '.join(IMAGE_STATES)})")
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            retired = now if state in ("failed", "retired") else None
            changed = txn.run(tx, "UPDATE images SET state = ?, reason = ?, retired_at = ? WHERE pool = ? "
                                  "AND generation = ?", (state, reason, retired, pool, generation))
            if not changed:
                raise LedgerError(f"pool {pool} has no image generation {generation}")
            row = txn.one(tx, "SELECT * FROM images WHERE pool = ? AND generation = ?", (pool, generation))
            assert row is not None
            return _image(row)


def _image(row: txn.Row) -> ImageRecord:
    return ImageRecord(**txn.as_dict(row))
