"""What the transport retries, and for how long: every call has a deadline.

Two kinds of trouble, two budgets (`Retry`):

* **vCenter unreachable** — the connection is refused, its certificate fails verification, its
  proxy answers 503, or it refuses the login once it is back (a restart, an upgrade, a failover).
  A call that never reached vCenter is safe to send again whatever it does, so every call waits
  while vCenter has been unreachable for less than `outage_s`; past that, calls fail at once with
  `VCenterUnavailable` (each still tries once: a `serve` round after the outage works again).
* **A transient fault on a read** — a Temporary fault in `forkscale.vsphere.faults`' mapping
  (`SystemError`, `HostCommunication`, ...) or an answer lost on the way back: a read (`READS`)
  is sent again with backoff, at most `read_attempts` times within `read_s` seconds. A call that
  changes something (a task, `CreateFolder`, a guest program) is never sent twice by the
  transport: its caller finds out whether it happened (`forkscale.fleet.ladder`).

`WaitForUpdatesEx` is not in `READS`: its callers (the task watcher, the inventory informer)
loop on it with their own backoff, and a cancelled wait must reach them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from forkscale.core.errors import TemporaryError

#: Methods that change nothing vCenter keeps (or whose repetition is harmless: a second view or
#: collector dies with the session): retried on a transient fault or a lost answer.
READS = frozenset({
    "RetrieveServiceContent", "Login", "Logout", "RetrievePropertiesEx", "ContinueRetrievePropertiesEx", "RetrieveProperties",
    "CancelRetrievePropertiesEx", "CreateContainerView", "CreateListView", "DestroyView",
    "CreatePropertyCollector", "DestroyPropertyCollector", "CreateFilter", "QueryPerf", "QueryPerfCounter",
    "QueryAvailablePerfMetric", "FindChild", "FindByInventoryPath", "FindByUuid", "FindAllByUuid", "CurrentTime",
    "QueryEvents", "ListProcessesInGuest", "ListFilesInGuest", "CheckInstantClone_Task",
})


READ_ATTEMPTS = 5


class Unreachable(TemporaryError):
    """The call never reached vCenter (connection refused, TLS failed, 503): safe to send again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "ConnectionError", delay=2.0)


@dataclass(frozen=True)
class Retry:
    outage_s: float = 300.0
    """How long vCenter may stay unreachable before calls give up (VCenterUnavailable)."""
    read_attempts: int = READ_ATTEMPTS
    read_s: float = 60.0
    base_s: float = 0.25
    max_s: float = 5.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds before attempt `attempt + 1`: exponential from `base_s`, capped, with jitter."""
        return min(self.max_s, self.base_s * 2 ** (attempt - 1)) * (0.5 + rng.random())
