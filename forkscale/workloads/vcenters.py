"""The vCenters one controller serves pools on: an engine each (its own session, informer, budgets)
and whether it answers. A vCenter that is down degrades only its own pools.

Reachability is learned from what the controller does anyway -- a round that reached vCenter, a
connection error -- and from a probe every `probe_s` (one small read: the datacenter's VM
folder), so a pool whose rounds have nothing to do still finds out. A vCenter that could not be
reached when `serve` started has no engine yet: the probe keeps connecting (`connect`) and the
pools on it start their rounds once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from forkscale.core.errors import ForkscaleError, PermanentError, TemporaryError
from forkscale.fleet.engine import Engine
from forkscale.workloads.runtime import iso

log = logging.getLogger("forkscale.vcenters")
DEFAULT_PROBE_S = 5.0

Connect = Callable[[str], Awaitable[Engine]]


def unreachable(exc: BaseException) -> bool:
    """A failure that says vCenter did not answer (not that it refused something)."""
    return isinstance(exc, TemporaryError) and exc.fault in ("ConnectionError", "Timeout", "TimeoutError")


@dataclass
class VCenterLink:
    name: str
    url: str
    engine: Engine | None = None
    reachable: bool = False
    error: str | None = None
    since: float = field(default_factory=time.time)

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "reachable": self.reachable, "error": self.error,
                "since": iso(self.since)}


class VCenters:
    def __init__(self, links: dict[str, VCenterLink], *, telemetry: Any = None, connect: Connect | None = None,
                 probe_s: float = DEFAULT_PROBE_S) -> None:
        self.links = links
        self.telemetry = telemetry
        self.connect = connect
        self.probe_s = probe_s
        #: called with (name, engine) when a vCenter that was down at the start answers at last
        self.on_attached: list[Callable[[str, Engine], None]] = []
        for link in links.values():
            self._show(link)

    @classmethod
    def single(cls, engine: Engine, name: str = "default", url: str = "") -> VCenters:
        return cls({name: VCenterLink(name, url, engine, reachable=True)})

    def engine(self, name: str) -> Engine | None:
        link = self.links.get(name)
        return None if link is None else link.engine

    def doc(self, name: str) -> dict[str, Any] | None:
        link = self.links.get(name)
        return None if link is None else link.doc()

    def mark(self, name: str, reachable: bool, error: str | None = None) -> None:
        link = self.links.get(name)
        if link is None:
            return
        if link.reachable != reachable:
            link.since = time.time()
            if reachable:
                log.info("vCenter %s (%s) answers again", name, link.url)
            else:
                log.warning("vCenter %s (%s) is unreachable: %s; its pools wait, the others go on",
                            name, link.url, error)
        link.reachable, link.error = reachable, (None if reachable else error)
        self._show(link)

    def observe(self, name: str, exc: BaseException | None) -> None:
        """What a round learned: it reached vCenter (None), or could not (a connection error)."""
        if exc is None:
            self.mark(name, True)
        elif unreachable(exc):
            self.mark(name, False, str(exc))

    async def probe_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.gather(*(self.probe(link) for link in self.links.values()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.probe_s)

    async def probe(self, link: VCenterLink) -> None:
        if link.engine is None:
            if self.connect is None:
                return
            try:
                link.engine = await self.connect(link.name)
            except (ForkscaleError, OSError) as exc:
                self.mark(link.name, False, str(exc))
                return
            for callback in self.on_attached:
                callback(link.name, link.engine)
            self.mark(link.name, True)
            return
        try:
            await asyncio.wait_for(link.engine.driver.vm_folder(), timeout=max(2.0, self.probe_s))
        except TimeoutError:
            self.mark(link.name, False, f"no answer within {max(2.0, self.probe_s):g}s")
        except (TemporaryError, PermanentError) as exc:
            if unreachable(exc) or isinstance(exc, TemporaryError):
                self.mark(link.name, False, str(exc))
        else:
            self.mark(link.name, True)

    def _show(self, link: VCenterLink) -> None:
        if self.telemetry is not None:
            self.telemetry.set_vcenter_up(link.name, link.reachable)
