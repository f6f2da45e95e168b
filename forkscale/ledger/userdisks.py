"""Users' persistent disks, recorded against the identity (the clone name) they belong to.

A pool with `user_disk:` gives each clone an independent-persistent disk. The disk belongs to
the identity, not to one VM: it is detached before the clone is destroyed for a replacement and
attached to the replacement, and deleted only when the identity leaves the pool for good (unless
`user_disk.keep`). States: `creating` (written before the ReconfigVM_Task that makes it),
`attached` (to `clone_id`), `detached` (between a clone and its replacement), `kept` (its
identity left the pool; the file stays for an administrator), `deleted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from forkscale.ledger import txn
from forkscale.ledger.records import LedgerError

if TYPE_CHECKING:
    from forkscale.ledger.store import Ledger

DISK_STATES = ("creating", "attached", "detached", "kept", "deleted")


@dataclass(frozen=True)
class UserDisk:
    id: int
    pool: str
    identity: str
    clone_id: int | None
    path: str  # `[datastore] folder/file.vmdk`
    size_gb: int
    state: str
    created_at: float
    updated_at: float


class UserDisks:
    """The `user_disks` table of one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def of(self, pool: str, identity: str) -> UserDisk | None:
        """The identity's disk, unless deleted."""
        rows = self.ledger._read("SELECT * FROM user_disks WHERE pool = ? AND identity = ? AND state <> 'deleted'",
                                 (pool, identity))
        return _disk(rows[0]) if rows else None

    def all(self, pool: str, states: tuple[str, ...] = DISK_STATES) -> list[UserDisk]:
        rows = self.ledger._read(f"SELECT * FROM user_disks WHERE pool = ? AND state IN ({', '.join('?' * len(states))})"
                                 " ORDER BY identity", (pool, *states))
        return [_disk(r) for r in rows]

    def record(self, pool: str, identity: str, path: str, size_gb: int, clone_id: int) -> UserDisk:
        """A disk about to be created for `identity` (before the task is sent)."""
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            self.ledger._fenced(tx, pool)
            row = txn.one(tx, """INSERT INTO user_disks (pool, identity, clone_id, path, size_gb, state, created_at,
                                     updated_at) VALUES (?, ?, ?, ?, ?, 'creating', ?, ?) RETURNING *""",
                          (pool, identity, clone_id, path, size_gb, now, now))
            assert row is not None
            return _disk(row)

    def set(self, disk_id: int, state: str, clone_id: int | None) -> UserDisk:
        if state not in DISK_STATES:
            raise LedgerError(f"unknown user disk state {state!r} (states: {', '.join(DISK_STATES)})")
        now = self.ledger._clock()
        with self.ledger._write() as tx:
            found = txn.one(tx, "SELECT pool FROM user_disks WHERE id = ?", (disk_id,))
            if found is not None:
                self.ledger._fenced(tx, str(found[0]))
            if not txn.run(tx, "UPDATE user_disks SET state = ?, clone_id = ?, updated_at = ? WHERE id = ?",
                           (state, clone_id, now, disk_id)):
                raise LedgerError(f"no user disk with id {disk_id}")
            row = txn.one(tx, "SELECT * FROM user_disks WHERE id = ?", (disk_id,))
            assert row is not None
            return _disk(row)


def _disk(row: txn.Row) -> UserDisk:
    return UserDisk(**txn.as_dict(row))
