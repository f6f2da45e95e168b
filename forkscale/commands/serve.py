"""`forkscale serve -f SPEC`: the controller (a policy loop per pool), the HTTP API and `/metrics`.

Startup order: the API token is loaded (and a loose token file refused) before anything connects;
then vCenter (`open_engine`), the listening socket (`listening on http://HOST:PORT` on stdout once
it is bound -- `--listen 127.0.0.1:0` picks a free port), the fleet exporter
(`forkscale.observe.exporter.Exporter`, when it is installed) and the controller's loops.

Replicas: `serve` takes a lease per pool (forkscale/workloads/ownership.py) and acts only on the
pools it owns; several `serve`s on one ledger (PostgreSQL, or one SQLite file on one machine)
spread the pools between them, take over a dead one's within `ha.failover_s`, and all answer
the API (claims and releases go through the ledger; status reads what each pool's owner published).

SIGTERM / SIGINT: a graceful stop. No new rounds start, waiting claims are answered (503),
rounds in flight get `--grace` seconds to finish and are abandoned after that (the ledger keeps
what they were doing for the next start to reconcile), the API keeps answering status meanwhile,
then the pools' leases are handed back (another replica takes them at once), the session is
logged out and the ledger closed. Exit 0.

The HTTP API runs on its own thread with its own event loop (`ApiThread`): the controller's loop
is busy with CPU-bound work while it refills (SOAP serialization and parsing, ledger writes), and
a claim served on that loop waited behind it (bench/claim.py). The API thread takes warm spares
straight from the thread-safe ledger and hands everything else to the controller's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable

from aiohttp import web

from forkscale.commands.session import ConnectionFailed, Engines, open_engines
from forkscale.core.errors import SpecError
from forkscale.fleet.engine import Engine
from forkscale.observe.exporter import Exporter
from forkscale.observe.merge import Exporters, FleetMerger
from forkscale.observe.telemetry import Telemetry
from forkscale.spec import Spec, load_spec
from forkscale.workloads.api import load_token, make_app
from forkscale.workloads.controller import Controller
from forkscale.workloads.ownership import Ownership
from forkscale.workloads.vcenters import VCenterLink, VCenters

log = logging.getLogger("forkscale.serve")
DEFAULT_LISTEN = "127.0.0.1:8080"
# While the API thread runs, the GIL switch interval is lowered from CPython's 5 ms: a claim
# needs the GIL several times (socket, SQLite, response) and each time waits up to one interval
# for the controller's thread to drop it while that thread is busy refilling. bench/claim.py on
# 2 cores (before gc.freeze below): p99 ~140-220 ms at 5 ms, ~60-80 ms at 1 ms, ~20-50 ms at
# 0.5 ms; refill throughput and the serve process's CPU time did not measurably change.
API_SWITCH_INTERVAL_S = 0.0005


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[v6]:PORT`; port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SpecError("--listen", f"{value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]") or "0.0.0.0", int(port)


class ApiThread:
    """An aiohttp app served from a thread of its own, on an event loop of its own."""

    def __init__(self, make: Callable[[], web.Application], host: str, port: int) -> None:
        self._make, self._host, self._port = make, host, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._bound: concurrent.futures.Future[tuple[str, int]] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="forkscale-api", daemon=True)
        self._switch = sys.getswitchinterval()

    async def start(self) -> tuple[str, int]:
        """Start the thread; the bound (host, port) once it listens (OSError when it cannot)."""
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, API_SWITCH_INTERVAL_S))
        self._thread.start()
        return await asyncio.wrap_future(self._bound)

    async def stop(self) -> None:
        """Stop listening, finish the requests in flight (they may still be waiting on the
        controller's loop, so this one keeps running), then end the thread and close its loop."""
        try:
            if not self._thread.is_alive():
                return
            if self._runner is not None:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop))
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
        finally:
            sys.setswitchinterval(self._switch)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            try:
                self._loop.run_until_complete(self._setup())
            except BaseException as exc:
                self._bound.set_exception(exc)
                if self._runner is not None:
                    self._loop.run_until_complete(self._runner.cleanup())
                return
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _setup(self) -> None:
        self._runner = web.AppRunner(self._make(), access_log=log, access_log_format='%a "%r" %s %b %Tfs')
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._bound.set_result(site._server.sockets[0].getsockname()[:2])  # type: ignore[union-attr]


async def run(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    if args.grace < 0:
        raise SpecError("--grace", "must be >= 0 seconds")
    token = load_token(args.token_file)
    spec = load_spec(args.spec)
    telemetry = Telemetry()
    try:
        async with open_engines(spec, spec.vcenters, state=args.state, telemetry=telemetry,
                                tolerate_down=len(spec.vcenters) > 1, check_pools=True, fleet=True) as opened:
            fleet = ServeFleet(spec, opened, telemetry, args.metrics_interval)
            if fleet.default is None:
                raise ConnectionFailed("no vCenter of the spec answers: " + ", ".join(spec.vcenters))
            # Every replica (one, or several on one ledger) owns pools through leases; a dry run
            # changes nothing, so it takes none and shadows every pool.
            ownership = None if args.dry_run else Ownership(
                opened.ledger, [p.name for p in spec.pools], failover_s=spec.ha.failover_s, telemetry=telemetry)
            controller = Controller(fleet.default, telemetry=telemetry, dry_run=args.dry_run, grace_s=args.grace,
                                    ownership=ownership, vcenters=fleet.vcenters)
            return await _serve(args, spec, controller, ownership, fleet, token, telemetry, host, port)
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


class ServeFleet:
    """serve's vCenters: an engine each (`VCenters`), and an exporter each once it answers."""

    def __init__(self, spec: Spec, opened: Engines, telemetry: Telemetry, interval_s: float) -> None:
        self.spec, self.ledger, self.telemetry, self.interval_s = spec, opened.ledger, telemetry, interval_s
        several = len(spec.vcenters) > 1
        self.merger = FleetMerger(telemetry, list(spec.vcenters)) if several else None
        self.exporters = Exporters({}, {p.name: spec.vcenter_name(p) for p in spec.pools})
        links = {name: VCenterLink(name, spec.vcenters[name].url if several else spec.vcenter.url, engine,
                                   reachable=engine is not None, error=None if engine else "not connected yet")
                 for name, engine in opened.engines.items()}
        self.vcenters = VCenters(links, telemetry=telemetry, connect=opened.connect)
        self.vcenters.on_attached.append(self.export)
        self.default = next((e for e in opened.engines.values() if e is not None), None)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for name, link in self.vcenters.links.items():
            if link.engine is not None:
                self.export(name, link.engine)

    def export(self, name: str, engine: Engine) -> None:
        several = self.merger is not None
        exporter = Exporter(engine.driver, self.spec, self.ledger, self.telemetry, interval_s=self.interval_s,
                            vcenter=name if several else None, merger=self.merger)
        self.exporters.exporters[name] = exporter
        self.tasks.append(asyncio.create_task(exporter.run(), name=f"forkscale-exporter:{name}"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _serve(args: argparse.Namespace, spec: Spec, controller: Controller, ownership: Ownership | None,
                 fleet: ServeFleet, token: str, telemetry: Telemetry, host: str, port: int) -> int:
    loop = asyncio.get_running_loop()

    def stop() -> None:  # rounds in flight get the grace period; none of it goes to waiting for a vCenter that is down
        controller.stop()
        for link in fleet.vcenters.links.values():
            if link.engine is not None:
                link.engine.driver.stop_waiting()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    api = ApiThread(lambda: make_app(controller, token, telemetry, controller_loop=loop), host, port)
    try:
        try:
            bound = await api.start()
        except OSError as exc:
            print(f"error: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        if ownership is not None:
            ownership.url = f"http://{shown}:{bound[1]}"
        controller.exporter = fleet.exporters
        fleet.start()
        mode = " (dry run: decisions are logged, nothing is changed)" if args.dry_run else ""
        print(f"forkscale serve: listening on http://{shown}:{bound[1]} "
              f"(API /v1, /metrics, /healthz); pools: {', '.join(p.name for p in spec.pools)}{mode}",
              flush=True)
        # Everything made so far (imported modules -- pyVmomi's type tables above all --, the
        # session, the spec) lives as long as the process: move it out of the collector's
        # reach. A full (generation 2) collection stops every thread; scanning all that took
        # 50-70 ms a time during the claim bench, which was most of the claims' p99.
        gc.freeze()
        await controller.run()
    finally:
        await fleet.stop()
        await api.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    print("forkscale serve: stopped", flush=True)
    return 0
