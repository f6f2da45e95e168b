"""Keeping leases alive: renewal on a thread of its own, and the timings derived from `ha.failover_s`.

Renewal runs on a daemon thread, not on the event loop: a loop busy with a refill (SOAP parsing,
ledger writes) must not let its leases lapse, while a process that is stopped (SIGSTOP), frozen
or cut off from the database stops renewing as a whole -- and is then fenced off by its token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from forkscale.ledger.backend import LedgerUnavailable
from forkscale.ledger.lease import Lease, LeaseLost, Leases

log = logging.getLogger("forkscale.lease")


@dataclass(frozen=True)
class LeaseTimings:
    """How long a lease lasts, how often it is renewed and how often free pools are looked for.

    A holder that dies is replaced at most `ttl_s + poll_s` after its last renewal: 0.7 x
    failover_s, so a takeover (and the new owner's first round) fits within `failover_s`.
    """

    ttl_s: float
    renew_s: float
    poll_s: float

    @classmethod
    def for_failover(cls, failover_s: float) -> LeaseTimings:
        ttl = 0.6 * failover_s
        return cls(ttl_s=ttl, renew_s=ttl / 4, poll_s=0.1 * failover_s)


class LeaseKeeper:
    """Renews every lease it holds every `interval_s`; `on_lost(lease, why)` for one taken over."""

    def __init__(self, leases: Leases, interval_s: float,
                 on_lost: Callable[[Lease, str], None] | None = None) -> None:
        self.leases = leases
        self.interval_s = interval_s
        self.on_lost = on_lost
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forkscale-leases", daemon=True)

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.scope] = lease

    def drop(self, scope: str) -> Lease | None:
        with self._lock:
            return self._held.pop(scope, None)

    def held(self) -> dict[str, Lease]:
        with self._lock:
            return dict(self._held)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def renew_all(self) -> None:
        for scope, lease in self.held().items():
            try:
                renewed = self.leases.renew(lease)
            except LeaseLost as exc:
                with self._lock:
                    if self._held.get(scope) is lease:
                        del self._held[scope]
                log.error("%s", exc)
                if self.on_lost is not None:
                    self.on_lost(lease, str(exc))
                continue
            except LedgerUnavailable as exc:
                log.warning("cannot renew %s (it expires at %.0f): %s", scope, lease.expires_at, exc)
                continue
            except Exception as exc:  # pragma: no cover - a bug, but never kill the keeper
                log.warning("cannot renew %s: %s", scope, exc)
                continue
            with self._lock:
                if self._held.get(scope) is lease:
                    self._held[scope] = renewed

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.renew_all()
