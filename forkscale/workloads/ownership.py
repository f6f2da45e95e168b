"""Which pools this `serve` replica owns: a lease per pool, spread over the live replicas, taken over
from a dead one within `ha.failover_s`.

Every `poll_s` (0.1 x failover_s) the replica:

1. keeps its presence lease `replica:<id>` (its detail holds the API URL and the pools it owns);
2. counts the live replicas and its fair share, ceil(pools / replicas);
3. below its share, takes free pools -- never held, released, or expired because their owner died
   or stopped renewing -- in an order of its own (a hash of its id and the pool's name), so
   replicas starting together reach for different pools; above its share (a replica joined), it
   hands back a pool that is between rounds.

A pool it takes is fenced into the ledger (every write for that pool checks the lease's token)
and its loop is woken for a first round that reconciles whatever the previous owner left
half-done. Renewal runs on the `LeaseKeeper` thread; a lease it finds taken over is dropped at
once (`on_lost`: the pool's round in flight is cancelled; its writes were refused anyway).

`poll_s` + the lease (0.6 x failover_s) keep a takeover within 0.7 x failover_s of the last
renewal of a dead owner, leaving the rest of `failover_s` for the new owner's first round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Callable
from typing import Any

from forkscale.ledger import Holder, Lease, LeaseHeld, Leases, Ledger, LedgerError, pool_scope
from forkscale.ledger.keeper import LeaseKeeper, LeaseTimings
from forkscale.ledger.lease import POOL_PREFIX, REPLICA_PREFIX

log = logging.getLogger("forkscale.ownership")
FORGET_REPLICAS_AFTER_S = 3600.0


class Ownership:
    def __init__(self, ledger: Ledger, pools: list[str], *, failover_s: float, telemetry: Any = None,
                 holder: Holder | None = None) -> None:
        self.ledger = ledger
        self.pools = list(pools)
        self.holder = holder or Holder.this_process("serve")
        self.timings = LeaseTimings.for_failover(failover_s)
        self.leases = Leases(ledger.backend, self.holder, self.timings.ttl_s)
        self.keeper = LeaseKeeper(self.leases, self.timings.renew_s, on_lost=self._lost_threadsafe)
        self.telemetry = telemetry
        self.url: str | None = None
        self.replicas = 0
        self.failovers: dict[str, int] = dict.fromkeys(self.pools, 0)
        self.on_gained: Callable[[str], None] = lambda pool: None
        self.on_lost: Callable[[str, str], None] = lambda pool, why: None
        self.busy: Callable[[str], bool] = lambda pool: False  # a round is running: not handed back now
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owned: dict[str, Lease] = {}
        self._ticks = 0
        ledger.owners_only()

    # what the controller asks --------------------------------------------------------------------
    def owns(self, pool: str) -> bool:
        return pool in self._owned

    def owned(self) -> list[str]:
        return [p for p in self.pools if p in self._owned]

    def owner(self, pool: str) -> Lease | None:
        """The pool's current lease (ours or another replica's), from the ledger; None if never held."""
        found = self.leases.all(pool_scope(pool))
        lease = next((x for x in found if x.scope == pool_scope(pool)), None)
        return lease

    # lifecycle -----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.keeper.start()
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except LedgerError as exc:
                    log.warning("ownership: %s", exc)
                except Exception:  # a bug must not stop takeovers (the keeper would renew on regardless)
                    log.exception("ownership: tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.timings.poll_s)
        finally:
            self.release_all()

    def release_all(self) -> None:
        """Hand every pool back at once (a graceful stop): the others need not wait for expiry."""
        self.keeper.stop()
        for pool in list(self._owned):
            self._give_back(pool)
        presence = self.keeper.drop(REPLICA_PREFIX + self.holder.id)
        if presence is not None:
            with contextlib.suppress(LedgerError):
                self.leases.release(presence)

    # one tick ------------------------------------------------------------------------------------
    def tick(self) -> None:
        self._ticks += 1
        self._presence()
        if self._ticks == 1:
            return  # let replicas started together all say they are here before sharing pools out
        now = self.leases.now()
        self.replicas = max(1, sum(1 for x in self.leases.all(REPLICA_PREFIX) if x.live(now)))
        share = math.ceil(len(self.pools) / self.replicas)
        if len(self._owned) > share:
            for pool in reversed(self._order()):
                if len(self._owned) <= share:
                    break
                if pool in self._owned and not self.busy(pool):
                    log.info("pool %s: handing it back (%d replicas, %d pools each)", pool, self.replicas, share)
                    self._give_back(pool)
        for pool in self._order():
            if len(self._owned) >= share:
                break
            if pool not in self._owned:
                self._try_take(pool)
        if self._ticks % 100 == 0:
            self.leases.forget_expired(REPLICA_PREFIX, FORGET_REPLICAS_AFTER_S)
        self._publish()

    def _presence(self) -> None:
        scope = REPLICA_PREFIX + self.holder.id
        detail = {"url": self.url, "pools": self.owned()}
        held = self.keeper.held().get(scope)
        if held is None:
            self.keeper.hold(self.leases.acquire(scope, detail, reclaim_local=False))
        elif held.detail.get("pools") != detail["pools"] or held.detail.get("url") != detail["url"]:
            self.keeper.hold(self.leases.renew(held, detail))

    def _order(self) -> list[str]:
        return sorted(self.pools, key=lambda p: zlib.crc32(f"{self.holder.id}:{p}".encode()))

    def _try_take(self, pool: str) -> None:
        before = self.owner(pool)
        try:
            lease = self.leases.acquire(pool_scope(pool), reclaim_local=False)
        except LeaseHeld:
            return
        took_over = before is not None and before.holder != self.holder.id and before.expires_at >= before.renewed_at \
            + 0.5 * self.timings.ttl_s  # it expired (or died here), it was not handed back
        self._owned[pool] = lease
        self.ledger.fence(lease, pool)
        self.keeper.hold(lease)
        if took_over:
            assert before is not None
            self.failovers[pool] += 1
            if self.telemetry is not None:
                self.telemetry.record_failover(pool)
            log.warning("pool %s: taken over from %s (token %d)", pool, before.describe(lease.acquired_at),
                        lease.token)
        else:
            log.info("pool %s: owned by this replica (token %d)", pool, lease.token)
        self.on_gained(pool)

    def _give_back(self, pool: str) -> None:
        lease = self._owned.pop(pool, None)
        self.ledger.unfence(pool)
        self.keeper.drop(pool_scope(pool))
        if lease is not None:
            with contextlib.suppress(LedgerError):
                self.leases.release(lease)
        self._publish()

    def _lost_threadsafe(self, lease: Lease, why: str) -> None:
        if not lease.scope.startswith(POOL_PREFIX):
            return  # our presence row: the next tick takes a new one
        pool = lease.scope.removeprefix(POOL_PREFIX)
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._lost, pool, lease, why)

    def _lost(self, pool: str, lease: Lease, why: str) -> None:
        current = self._owned.get(pool)
        if current is None or current.token != lease.token:
            return
        self._owned.pop(pool, None)
        self.ledger.unfence(pool)
        self._publish()
        self.on_lost(pool, why)

    def _publish(self) -> None:
        if self.telemetry is None:
            return
        for pool in self.pools:
            self.telemetry.set_pool_owned(pool, pool in self._owned)
        self.telemetry.set_replicas(self.replicas)
        self.telemetry.set_fenced_writes(self.ledger.fenced_writes)

    def status(self) -> dict[str, Any]:
        """For /healthz: who this replica is and what it owns."""
        return {"replica": self.holder.id, "pid": self.holder.pid, "host": self.holder.host,
                "owns": self.owned(), "replicas": self.replicas, "failovers": dict(self.failovers),
                "fenced_writes": self.ledger.fenced_writes, "failover_s": round(self.timings.ttl_s / 0.6, 3),
                "at": time.time()}
