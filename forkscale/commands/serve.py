"""`forkscale serve -f SPEC`: the controller (a policy loop per pool), the HTTP API and `/metrics`.

Startup order: the API token is loaded (and a loose token file refused) before anything connects;
then vCenter (`open_engine`), the listening socket (`listening on http://HOST:PORT` on stdout once
it is bound -- `--listen 127.0.0.1:0` picks a free port), the fleet exporter
(`forkscale.observe.exporter.Exporter`, when it is installed) and the controller's loops.

SIGTERM / SIGINT: a graceful stop. No new rounds start, waiting claims are answered (503),
rounds in flight get `--grace` seconds to finish and are abandoned after that (the ledger keeps
what they were doing for the next start to reconcile), the API keeps answering status meanwhile,
then the session is logged out and the ledger closed. Exit 0.

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

from forkscale.commands.session import ConnectionFailed, open_engine
from forkscale.core.errors import SpecError
from forkscale.observe.exporter import Exporter
from forkscale.observe.telemetry import Telemetry
from forkscale.spec import load_spec
from forkscale.workloads.api import load_token, make_app
from forkscale.workloads.controller import Controller

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
    loop = asyncio.get_running_loop()
    try:
        async with open_engine(spec, state=args.state, telemetry=telemetry, check_pools=True) as engine:
            controller = Controller(engine, telemetry=telemetry, dry_run=args.dry_run, grace_s=args.grace)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, controller.stop)
            api = ApiThread(lambda: make_app(controller, token, telemetry, controller_loop=loop), host, port)
            exporter_task: asyncio.Task[None] | None = None
            try:
                try:
                    bound = await api.start()
                except OSError as exc:
                    print(f"error: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
                    return 1
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                exporter = Exporter(engine.driver, spec, engine.ledger, telemetry, interval_s=args.metrics_interval)
                controller.exporter = exporter
                exporter_task = asyncio.create_task(exporter.run(), name="forkscale-exporter")
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
                if exporter_task is not None:
                    exporter_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await exporter_task
                await api.stop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("forkscale serve: stopped", flush=True)
    return 0
