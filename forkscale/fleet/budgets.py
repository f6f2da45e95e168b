"""Concurrency budgets (vCenter-wide, per host, per datastore) and a rate limit, each measured.

One semaphore per scope, like jupiter-brain's per-operation semaphores: the in-flight count and
the time spent waiting are exported, so a slow fleet shows *which* budget it is waiting on.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any


class Budget:
    def __init__(self, scope: str, limit: int, *, telemetry: Any = None) -> None:
        self.scope = scope
        self.limit = max(1, limit)
        self._sem = asyncio.Semaphore(self.limit)
        self.in_flight = 0
        self.peak = 0
        self.waited_s = 0.0
        self.telemetry = telemetry

    async def __aenter__(self) -> Budget:
        started = time.monotonic()
        await self._sem.acquire()
        waited = time.monotonic() - started
        self.waited_s += waited
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.telemetry is not None:
            self.telemetry.observe_budget_wait(self.scope, waited)
            self.telemetry.budget_in_flight.labels(self.scope).set(self.in_flight)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.in_flight -= 1
        self._sem.release()
        if self.telemetry is not None:
            self.telemetry.budget_in_flight.labels(self.scope).set(self.in_flight)


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
