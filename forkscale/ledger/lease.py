"""Leases with fencing tokens: which controller may act, on the whole ledger or on one pool.

A lease is a row of `leases` per scope: `ledger` (a one-shot command -- scale, apply, destroy,
prepare -- acting on any pool), `pool:<name>` (the `serve` replica that owns that pool) or
`replica:<id>` (a `serve` replica saying it is alive, so pools can be spread). The row names its
holder (a random id per process run, its pid, host and command), when it was taken and renewed,
when it expires, and a **fencing token**: a counter bumped every time the scope is acquired and
never reset (the row is never deleted, a release only expires it).

Why a lease row and not a PostgreSQL session advisory lock: it works the same on SQLite, it
names its holder for the one-line refusal (pid, host, since when), it survives a dropped
connection for as long as the holder keeps renewing (a connection blip does not hand a pool to
another replica mid-clone), and its expiry is decided by one clock: the database's on PostgreSQL
(`Backend.now`), the machine's on SQLite, never a skewed replica's.

Rules (every lease change runs under `Backend.serialize(tx, "leases")`, so two acquirers never
both win):

* `ledger` conflicts with every live `ledger` and `pool:*` lease of another holder; `pool:P`
  with a live `pool:P` or `ledger` lease of another holder: a one-shot `scale` never runs while a
  `serve` owns the pool, and two `scale`s never run at once.
* A lease whose `expires_at` has passed (its holder died, or stopped renewing) is taken over, and
  the token goes up. For a one-shot command, so is a live one whose holder ran on this machine
  and whose pid is gone (`Holder.machine`): a command killed here does not block the next run for
  a whole lease. `serve` replicas take pools over by expiry only.
* **Fencing**: every write the holder makes runs `check_fence` in its own transaction: the row
  must still name this holder and this token (on PostgreSQL the row is read `FOR SHARE`, so a
  takeover waits for the write to commit and then sees it). A holder that was paused or cut off
  past its expiry and replaced finds a newer token and its write is refused (`LeaseLost`), so it
  cannot act on what it no longer owns. A holder whose lease expired but that nobody replaced
  still holds the current token and may go on (and its next renewal revives the lease).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forkscale.ledger.backend import Backend, Row, Tx
from forkscale.ledger.records import LedgerError

LEDGER_SCOPE = "ledger"
POOL_PREFIX = "pool:"
REPLICA_PREFIX = "replica:"
ACQUIRE_LOCK_WAIT_S = 1.0


def pool_scope(pool: str) -> str:
    return POOL_PREFIX + pool


@dataclass(frozen=True)
class Holder:
    """Who takes a lease: one id per process run (a restarted controller is a new holder).

    `machine` identifies the kernel and pid namespace the pid belongs to (boot id + pid
    namespace): a live lease whose holder has our `machine` and whose pid no longer exists was
    left by a process that died here (kill -9, a crash), and is taken over at once instead of
    after its expiry. A pid that exists (even reused by another program) is trusted to be alive.
    """

    id: str
    pid: int
    host: str
    command: str
    machine: str = ""

    @classmethod
    def this_process(cls, command: str) -> Holder:
        return cls(id=uuid.uuid4().hex[:16], pid=os.getpid(), host=socket.gethostname(), command=command,
                   machine=this_machine())


def this_machine() -> str:
    """`<boot id>/<pid namespace>`, or "" where /proc cannot say (then only expiry frees a lease)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{pidns}"


def pid_gone(pid: int) -> bool:
    """The process no longer exists (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


@dataclass(frozen=True)
class Lease:
    scope: str
    holder: str
    pid: int
    host: str
    command: str
    acquired_at: float
    renewed_at: float
    expires_at: float
    token: int
    detail: dict[str, Any] = field(default_factory=dict)

    def live(self, now: float) -> bool:
        return self.expires_at > now

    def died_here(self, machine: str) -> bool:
        """Its holder ran on this machine (same kernel boot, same pid namespace) and is gone."""
        return bool(machine) and self.detail.get("machine") == machine and pid_gone(self.pid)

    def describe(self, now: float) -> str:
        """`forkscale scale (pid 4242 on host ctl-1) since 2025-01-01T10:00:00Z, expires in 8s`"""
        since = datetime.fromtimestamp(self.acquired_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        left = self.expires_at - now
        when = f"expires in {left:.0f}s" if left > 0 else f"expired {-left:.0f}s ago"
        return f"forkscale {self.command} (pid {self.pid} on host {self.host}) since {since}, {when}"


class LeaseHeld(LedgerError):
    """Another live holder has the scope (or a conflicting one)."""

    def __init__(self, scope: str, lease: Lease, now: float) -> None:
        what = "the ledger" if scope == LEDGER_SCOPE else f"pool {scope.removeprefix(POOL_PREFIX)!r}"
        held = "the ledger" if lease.scope == LEDGER_SCOPE else f"pool {lease.scope.removeprefix(POOL_PREFIX)!r}"
        via = "" if lease.scope == scope else f" ({held})"
        super().__init__(f"{what} is held by {lease.describe(now)}{via}")
        self.scope = scope
        self.lease = lease


class LeaseLost(LedgerError):
    """A write (or a renewal) by a holder whose lease was taken over: refused."""


def _conflicts(scope: str) -> tuple[str, tuple[object, ...]]:
    if scope == LEDGER_SCOPE:
        return "scope = ? OR scope LIKE ?", (LEDGER_SCOPE, POOL_PREFIX + "%")
    if scope.startswith(POOL_PREFIX):
        return "scope IN (?, ?)", (scope, LEDGER_SCOPE)
    return "scope = ?", (scope,)


def _lease(row: Row) -> Lease:
    values = {key: row[key] for key in row.keys()}
    values["detail"] = json.loads(values["detail"] or "{}")
    return Lease(**values)


class Leases:
    """Take, renew and release leases for one holder, `ttl_s` at a time."""

    def __init__(self, backend: Backend, holder: Holder, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise LedgerError("a lease needs a positive ttl")
        self.backend = backend
        self.holder = holder
        self.ttl_s = ttl_s

    def acquire(self, scope: str, detail: dict[str, Any] | None = None, *, reclaim_local: bool = True) -> Lease:
        """Take `scope` (or take it over once expired); LeaseHeld names the live holder otherwise.

        `reclaim_local`: also take over a live lease whose holder died on this machine (one-shot
        commands). `serve` replicas pass False: a pool changes hands by expiry only, the same way
        whether its owner ran here or elsewhere (and the failover time is the one measured)."""
        with self.backend.write() as tx:
            # a takeover waits at most this long for a stalled ex-holder's write (its row lock on
            # the lease); meanwhile every lease change waits on us, renewals included
            self.backend.bounded_wait(tx, ACQUIRE_LOCK_WAIT_S)
            self.backend.serialize(tx, "leases")
            now = self.backend.now(tx)
            where, params = _conflicts(scope)
            current = None
            for row in tx.rows(f"SELECT * FROM leases WHERE {where} ORDER BY scope", params):
                lease = _lease(row)
                if lease.scope == scope:
                    current = lease
                if lease.holder != self.holder.id and lease.live(now) and \
                        not (reclaim_local and lease.died_here(self.holder.machine)):
                    raise LeaseHeld(scope, lease, now)
            h = self.holder
            values = (h.id, h.pid, h.host, h.command, now, now, now + self.ttl_s, self._detail(detail))
            inserted: Row | None
            if current is None:
                inserted = tx.one("INSERT INTO leases (holder, pid, host, command, acquired_at, renewed_at, expires_at, "
                             "detail, scope, token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING *",
                             (*values, scope))
            else:
                inserted = tx.one("UPDATE leases SET holder = ?, pid = ?, host = ?, command = ?, acquired_at = ?, "
                             "renewed_at = ?, expires_at = ?, detail = ?, token = token + 1 WHERE scope = ? "
                                  "RETURNING *", (*values, scope))
            assert inserted is not None
            return _lease(inserted)

    def renew(self, lease: Lease, detail: dict[str, Any] | None = None) -> Lease:
        """Push the expiry out; LeaseLost when someone else took the scope over meanwhile."""
        with self.backend.write() as tx:
            self.backend.serialize(tx, "leases")
            now = self.backend.now(tx)
            text = self._detail(detail) if detail is not None else json.dumps(lease.detail)
            row = tx.one("UPDATE leases SET renewed_at = ?, expires_at = ?, detail = ? "
                         "WHERE scope = ? AND holder = ? AND token = ? RETURNING *",
                         (now, now + self.ttl_s, text, lease.scope, lease.holder, lease.token))
            if row is None:
                raise LeaseLost(f"{lease.scope}: lease lost: {self._taken_by(tx, lease.scope, now)}")
            return _lease(row)

    def _detail(self, detail: dict[str, Any] | None) -> str:
        return json.dumps({**(detail or {}), "machine": self.holder.machine})

    def release(self, lease: Lease) -> bool:
        """Expire our lease now (the token stays, so the next holder's is higher); False if it was lost."""
        with self.backend.write() as tx:
            self.backend.serialize(tx, "leases")
            now = self.backend.now(tx)
            return tx.run("UPDATE leases SET expires_at = ? WHERE scope = ? AND holder = ? AND token = ?",
                          (min(now, lease.expires_at), lease.scope, lease.holder, lease.token)) > 0

    def all(self, prefix: str = "") -> list[Lease]:
        rows = self.backend.read("SELECT * FROM leases WHERE scope LIKE ? ORDER BY scope", (prefix + "%",))
        return [_lease(r) for r in rows]

    def now(self) -> float:
        with self.backend.write() as tx:
            return self.backend.now(tx)

    def forget_expired(self, prefix: str, older_than_s: float) -> int:
        """Delete `prefix` rows expired for longer than `older_than_s` (replica rows; never pools')."""
        if not prefix.startswith(REPLICA_PREFIX):
            raise LedgerError("only replica leases are ever deleted (a pool's token must only go up)")
        with self.backend.write() as tx:
            self.backend.serialize(tx, "leases")
            now = self.backend.now(tx)
            return tx.run("DELETE FROM leases WHERE scope LIKE ? AND expires_at < ?", (prefix + "%", now - older_than_s))

    @staticmethod
    def _taken_by(tx: Tx, scope: str, now: float) -> str:
        row = tx.one("SELECT * FROM leases WHERE scope = ?", (scope,))
        if row is None:
            return "it no longer exists"
        lease = _lease(row)
        return f"now held by {lease.describe(now)} with token {lease.token}"


def check_fence(backend: Backend, tx: Tx, lease: Lease) -> None:
    """Inside a write transaction: refuse to go on unless `lease` is still the scope's current one."""
    row = tx.one("SELECT holder, token FROM leases WHERE scope = ?" + backend.for_share, (lease.scope,))
    if row is not None and row[0] == lease.holder and int(row[1]) == lease.token:
        return
    now = backend.now(tx)
    raise LeaseLost(f"write refused: fencing token {lease.token} for {lease.scope} is stale; "
                    f"{Leases._taken_by(tx, lease.scope, now)}")
