"""Identities held for a clone being replaced: its replacement gets the same name, IP and MAC.

Replacing a clone (refresh, push image, rebalance) destroys it and makes a new one with the same
identity -- as Horizon keeps a desktop's name and MAC across a refresh. Between the two the
identity belongs to nobody in the `clones` table, so it is held here: `Ledger.replace` moves the
clone to `destroying` and writes its reservation in one transaction; from then on no other clone
is given that name, IP or MAC (`plan_clone` counts reservations as taken), and the next clone
planned *for* the reservation takes it (`plan_clone(reservation=name)`).

A reservation is *open* while no clone row (other than gone ones) holds its name: the old clone
is gone or on its way, its replacement not planned yet, or planned and then rolled back. It is
settled (deleted) once its replacement is ready, or dropped when the slot is not to be refilled
(the pool shrank). `claimed_by`: the replacement is handed straight back to this user (a claimed
desktop replaced by force).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from forkscale.ledger import alloc, txn

if TYPE_CHECKING:
    from forkscale.ledger.store import Ledger

_OPEN = ("SELECT * FROM reservations r WHERE r.pool = ? AND NOT EXISTS "
         "(SELECT 1 FROM clones c WHERE c.name = r.name AND c.state <> 'gone')")


@dataclass(frozen=True)
class Reservation:
    name: str
    pool: str
    hostname: str
    ip: str
    mac: str
    port_group: str
    claimed_by: str | None
    reason: str
    created_at: float


def macs(tx: txn.Tx) -> set[str]:
    """The MACs reservations hold (a new clone gets none of them; names and addresses stay held in
    forkscale/ledger/alloc.py while reserved)."""
    return {str(row[0]).lower() for row in txn.rows(tx, "SELECT mac FROM reservations")}


def open_one(tx: txn.Tx, pool: str, name: str) -> Reservation | None:
    row = txn.one(tx, _OPEN + " AND r.name = ?", (pool, name))
    return None if row is None else _reservation(row)


def hold(tx: txn.Tx, pool: str, name: str, hostname: str, ip: str, mac: str, port_group: str, reason: str,
         claimed_by: str | None, now: float) -> None:
    txn.run(tx, """INSERT INTO reservations (name, pool, hostname, ip, mac, port_group, claimed_by, reason, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET claimed_by = excluded.claimed_by, reason = excluded.reason""",
            (name, pool, hostname, ip, mac, port_group, claimed_by, reason, now))


class Reservations:
    """The `reservations` table of one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def of(self, pool: str) -> list[Reservation]:
        return [_reservation(r) for r in self.ledger._read(
            "SELECT * FROM reservations WHERE pool = ? ORDER BY created_at, name", (pool,))]

    def get(self, name: str) -> Reservation | None:
        rows = self.ledger._read("SELECT * FROM reservations WHERE name = ?", (name,))
        return _reservation(rows[0]) if rows else None

    def open(self, pool: str) -> list[Reservation]:
        """Reservations no clone holds now: each is a clone to make again."""
        return [_reservation(r) for r in self.ledger._read(_OPEN + " ORDER BY r.created_at, r.name", (pool,))]

    def settle(self, name: str) -> bool:
        """The replacement holding `name` is ready: the reservation has done its job."""
        with self.ledger._write() as tx:
            _fence(self.ledger, tx, name)
            return txn.run(tx, "DELETE FROM reservations WHERE name = ? AND EXISTS (SELECT 1 FROM clones c WHERE "
                               "c.name = reservations.name AND c.state IN ('ready', 'claimed'))", (name,)) == 1

    def drop(self, name: str) -> bool:
        """Give the identity up (the pool shrank, or the replacement is not wanted any more)."""
        with self.ledger._write() as tx:
            _fence(self.ledger, tx, name)
            row = txn.one(tx, "SELECT pool FROM reservations WHERE name = ?", (name,))
            if row is None:
                return False
            txn.run(tx, "DELETE FROM reservations WHERE name = ?", (name,))
            alloc.release_reserved(tx, str(row[0]), name)
            return True


def _fence(ledger: Ledger, tx: txn.Tx, name: str) -> None:
    row = txn.one(tx, "SELECT pool FROM reservations WHERE name = ?", (name,))
    if row is not None:
        ledger._fenced(tx, str(row[0]))


def _reservation(row: txn.Row) -> Reservation:
    return Reservation(**txn.as_dict(row))
