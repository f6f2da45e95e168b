"""Open the pieces a command needs from a spec: driver (connected), ledger, engine.

The order is the promise "bad input: exit 2, nothing created": every path was checked when the
spec was read (and `--state` is checked here, before the login); then each vCenter needed is
logged in to, the pools are checked against its inventory (`check_pools`: source VM, port group,
datastores, hosts), and only then is the ledger opened -- a file created when it is new -- and,
for a command that changes things, the ledger's lease taken (one acting controller per ledger):
before the first change, and before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkscale.core.errors import ForkscaleError, PermanentError, SpecError, TemporaryError
from forkscale.core.logs import register_secret
from forkscale.fleet.engine import Engine, Progress
from forkscale.ledger import LEDGER_SCOPE, Holder, Lease, LeaseHeld, Leases, Ledger, LedgerError
from forkscale.ledger.keeper import LeaseKeeper, LeaseTimings
from forkscale.spec import PostgresState, Spec, VCenter
from forkscale.spec.paths import check_state_path
from forkscale.spec.state import parse_state
from forkscale.vsphere.driver import Driver
from forkscale.vsphere.faults import LoginRefused
from forkscale.vsphere.informer import Informer
from forkscale.vsphere.retry import Retry
from forkscale.vsphere.transport import Soap

log = logging.getLogger("forkscale")


@contextlib.asynccontextmanager
async def open_driver(vc: VCenter, *, informer: bool = False, fleet: bool = False) -> AsyncIterator[Driver]:
    """A logged-in driver for `vc`; connection problems become ConnectionFailed, a refused login a SpecError.

    `informer`: inventory reads come from a model kept current by the property collector
    (`forkscale.vsphere.informer`), for commands that run more than one round; `fleet` too: the
    exporter's reads as well. One-shot commands read the inventory directly, once.
    """
    password = vc.password()
    register_secret(password)
    if vc.url.startswith("http://"):
        log.warning("vCenter URL %s is plain HTTP (insecure: true): the password and the session cross the network "
                    "in clear", vc.url)
    soap = Soap(vc.url, user=vc.user, password=vc.password, ca_file=str(vc.ca_file) if vc.ca_file else None,
                insecure=vc.insecure, retry=Retry(outage_s=vc.outage_s))
    driver = Driver(soap, informer=Informer(soap, fleet=fleet) if informer or fleet else None)
    try:
        await driver.open()
    except LoginRefused:
        await soap.close()
        raise SpecError(f"{vc.secret.path or 'vcenter'}.password", f"vCenter refused the login for {vc.user!r}") \
            from None
    except (PermanentError, TemporaryError) as exc:
        await soap.close()
        raise ConnectionFailed(f"cannot connect to {vc.url}: {exc}") from exc
    except BaseException:
        await soap.close()
        raise
    try:
        yield driver
    finally:
        await driver.close()


def state_target(spec: Spec, state: str | None) -> Path | PostgresState:
    """The ledger: `--state` (a path or a postgresql:// URL, checked now like the spec's `state:`
    was, before any login) or the spec's."""
    if not state:
        return spec.state
    target = parse_state(state, "--state", Path.cwd())
    return check_state_path(target, "--state") if isinstance(target, Path) else target


def state_path(spec: Spec, state: str | None) -> Path | PostgresState:
    """Kept for callers of the single-file days: the same as `state_target`."""
    return state_target(spec, state)


def open_ledger(target: Path | PostgresState) -> Ledger:
    if isinstance(target, PostgresState):
        password = None
        if target.secret is not None:
            register_secret(target.password())
            password = target.password
        return Ledger(target.url, password=password)
    return Ledger(target)


@dataclass
class Engines:
    """The ledger, an engine per vCenter (None for one that did not answer, with `tolerate_down`),
    and `connect(name)` to open one later (closed with the others)."""

    ledger: Ledger
    engines: dict[str, Engine | None]
    connect: Callable[[str], Awaitable[Engine]]

    def of(self, spec: Spec, pool: str) -> Engine:
        engine = self.engines.get(spec.vcenter_name(spec.pool(pool)))
        if engine is None:
            raise ConnectionFailed(f"vCenter {spec.vcenter_name(spec.pool(pool))!r} is not connected")
        return engine


@contextlib.asynccontextmanager
async def open_engines(spec: Spec, vcenters: Iterable[str], *, state: str | None = None,
                       progress: Progress | None = None, telemetry: Any = None, lease: str | None = None,
                       wait: bool = False, tolerate_down: bool = False, check_pools: bool = False,
                       informer: bool = False, fleet: bool = False) -> AsyncIterator[Engines]:
    """Each of `vcenters` (names in `spec.vcenters`: its own session and engine, budgets,
    informer), its pools checked (`check_pools`), then the ledger, then (for a command that changes
    things: `lease` names it) the ledger's lease, released on the way out."""
    target = state_target(spec, state)
    async with contextlib.AsyncExitStack() as stack:

        async def login(name: str) -> Any:
            # one vCenter: `spec.vcenter` (a caller may have replaced it, e.g. to point at a twin)
            vc = spec.vcenter if len(spec.vcenters) == 1 else spec.vcenters[name]
            return await stack.enter_async_context(open_driver(vc, informer=informer, fleet=fleet))

        drivers: dict[str, Any] = {}
        for name in dict.fromkeys(vcenters):
            try:
                drivers[name] = await login(name)
            except ConnectionFailed as exc:
                if not tolerate_down:
                    raise
                log.warning("vCenter %s: %s; its pools wait until it answers", name, exc)
                drivers[name] = None
            if check_pools and drivers[name] is not None:
                inv = await drivers[name].inventory()
                for index, pool in enumerate(spec.pools):
                    if spec.vcenter_name(pool) == name:
                        Engine.check_pool(pool, inv, index)
        ledger = stack.enter_context(contextlib.closing(open_ledger(target)))
        if lease is not None:
            await stack.enter_async_context(hold_ledger(ledger, spec, lease, wait=wait))

        def engine(name: str, driver: Any) -> Engine:
            return Engine(spec, ledger, driver, progress=progress, telemetry=telemetry, vcenter=name)

        async def connect(name: str) -> Engine:
            return engine(name, await login(name))

        yield Engines(ledger, {name: engine(name, d) if d is not None else None for name, d in drivers.items()},
                      connect)


@contextlib.asynccontextmanager
async def open_engine(spec: Spec, *, state: str | None = None, progress: Progress | None = None,
                      telemetry: Any = None, lease: str | None = None, wait: bool = False,
                      check_pools: bool = False, informer: bool = False, fleet: bool = False) -> AsyncIterator[Engine]:
    """One engine, on the spec's default vCenter (it refuses pools on another one)."""
    name = next((n for n, vc in spec.vcenters.items() if vc is spec.vcenter), next(iter(spec.vcenters)))
    async with open_engines(spec, [name], state=state, progress=progress, telemetry=telemetry, lease=lease,
                            wait=wait, check_pools=check_pools, informer=informer, fleet=fleet) as opened:
        engine = opened.engines[name]
        assert engine is not None
        yield engine


@contextlib.asynccontextmanager
async def hold_ledger(ledger: Ledger, spec: Spec, command: str, *, wait: bool) -> AsyncIterator[Lease]:
    """The `ledger` lease for a one-shot command: one acting controller per ledger.

    Taken (or waited for, with --wait) before anything changes, renewed on a thread while the
    command runs, fenced into every ledger write, released at the end. A holder that died blocks
    the ledger until its lease expires (0.6 x ha.failover_s).
    """
    timings = LeaseTimings.for_failover(spec.ha.failover_s)
    leases = Leases(ledger.backend, Holder.this_process(command), timings.ttl_s)
    lease = await acquire(leases, LEDGER_SCOPE, wait=wait, poll_s=min(1.0, timings.renew_s))
    ledger.fence(lease)
    keeper = LeaseKeeper(leases, timings.renew_s)
    keeper.hold(lease)
    keeper.start()
    try:
        yield lease
    finally:
        keeper.stop()
        ledger.unfence()
        with contextlib.suppress(LedgerError):
            leases.release(keeper.held().get(LEDGER_SCOPE, lease))


async def acquire(leases: Leases, scope: str, *, wait: bool, poll_s: float) -> Lease:
    """Take `scope`; without `wait`, LedgerBusy names the holder at once; with it, poll until free."""
    said = ""
    while True:
        try:
            return leases.acquire(scope)
        except LeaseHeld as exc:
            if not wait:
                raise LedgerBusy(f"{exc}; try again later, or pass --wait to wait for it") from None
            if str(exc.lease.holder) != said:
                said = str(exc.lease.holder)
                print(f"waiting: {exc}", file=sys.stderr, flush=True)
        await asyncio.sleep(poll_s)


class LedgerBusy(ForkscaleError):
    """Another controller holds the ledger (exit 1, naming it)."""


class ConnectionFailed(Exception):
    """vCenter could not be reached or verified (exit 1, with the reason)."""
