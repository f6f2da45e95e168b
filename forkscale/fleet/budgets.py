"""Concurrency budgets (vCenter-wide, per pool, per host, per datastore) and a rate limit, each measured.

One semaphore per scope, like jupiter-brain's per-operation semaphores: the in-flight count and
the time spent waiting are exported, so a slow fleet shows *which* budget it is waiting on.

The model (README "Budgets"): the vCenter-wide budget is one number for the whole controller —
every pool's operations share it; it is the largest `budgets.vcenter` among the spec's pools.
Every other limit belongs to one pool and is held for that pool alone: its own `budgets.vcenter`
(how much of vCenter this pool may use at once), `per_host`, `per_datastore` and `rate_per_s`.
Two pools with different budgets are each held to their own, whichever converges first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from forkscale.spec import Pool


class Budget:
    """One semaphore. `gauge`: report `forkscale_budget_in_flight{scope}` (summed over pools sharing the label)."""

    def __init__(self, scope: str, limit: int, *, telemetry: Any = None, gauge: bool = True) -> None:
        self.scope = scope
        self.limit = max(1, limit)
        self._sem = asyncio.Semaphore(self.limit)
        self.in_flight = 0
        self.peak = 0
        self.waited_s = 0.0
        self.telemetry = telemetry
        self.gauge = gauge

    async def __aenter__(self) -> Budget:
        started = time.monotonic()
        await self._sem.acquire()
        waited = time.monotonic() - started
        self.waited_s += waited
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.telemetry is not None:
            self.telemetry.observe_budget_wait(self.scope, waited)
            if self.gauge:
                self.telemetry.budget_in_flight.labels(self.scope).inc()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.in_flight -= 1
        self._sem.release()
        if self.telemetry is not None and self.gauge:
            self.telemetry.budget_in_flight.labels(self.scope).dec()


class Rate:
    """At most `per_s` starts per second, spaced evenly (a leaky bucket without bursts)."""

    def __init__(self, per_s: float) -> None:
        self.interval = 1.0 / per_s if per_s > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.interval <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class Budgets:
    """The controller's budgets: one vCenter-wide semaphore, and each pool's own limits and rate."""

    def __init__(self, vcenter_limit: int, *, telemetry: Any = None) -> None:
        self.telemetry = telemetry
        self.vcenter = Budget("vcenter", vcenter_limit, telemetry=telemetry)
        self.pools: dict[tuple[str, str], Budget] = {}
        self.rates: dict[str, Rate] = {}

    def of(self, pool: Pool, scope: str) -> Budget:
        """`pool`'s own budget for `scope` (`vcenter`, `host:NAME` or `datastore:NAME`)."""
        b = self.pools.get((pool.name, scope))
        if b is None:
            kind = scope.split(":", 1)[0]
            limit = {"vcenter": pool.budgets.vcenter, "host": pool.budgets.per_host,
                     "datastore": pool.budgets.per_datastore}[kind]
            # the pool's own vCenter cap is not a second `vcenter` gauge (the shared one counts it)
            b = self.pools[(pool.name, scope)] = Budget(scope, limit, telemetry=self.telemetry, gauge=kind != "vcenter")
        return b

    def rate(self, pool: Pool) -> Rate:
        return self.rates.setdefault(pool.name, Rate(pool.budgets.rate_per_s))

    @contextlib.asynccontextmanager
    async def task(self, pool: Pool, *scopes: str) -> AsyncIterator[None]:
        """Hold a slot of the vCenter-wide budget and of `pool`'s own vCenter budget and `scopes`."""
        async with contextlib.AsyncExitStack() as stack:
            for b in (self.of(pool, "vcenter"), *(self.of(pool, s) for s in scopes), self.vcenter):
                await stack.enter_async_context(b)
            yield
