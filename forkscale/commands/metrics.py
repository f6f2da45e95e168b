"""`forkscale metrics -f SPEC`: serve the fleet metrics of a spec's vCenter on `/metrics`.

Connects like every other command (`open_engine`), refreshes the inventory every `--interval`
seconds in the background (`forkscale.observe.exporter.Exporter`), and serves `/metrics` (from the last
refresh, so a scrape is cheap) and `/healthz` (200 while the last good refresh is fresh, else
503). Stops cleanly - session logged out, ledger closed - on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys

from aiohttp import web

from forkscale.commands.session import ConnectionFailed, open_engine
from forkscale.observe.exporter import Exporter
from forkscale.observe.telemetry import Telemetry, metrics_handler
from forkscale.spec import load_spec

DEFAULT_LISTEN = "127.0.0.1:9464"
SWITCH_INTERVAL_S = 0.0005
log = logging.getLogger("forkscale.metrics")


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[v6]:PORT`; port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def make_app(telemetry: Telemetry, exporter: Exporter) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(telemetry))

    async def healthz(request: web.Request) -> web.Response:
        ok, reason = exporter.health()
        return web.Response(status=200 if ok else 503, text=("ok: " if ok else "unhealthy: ") + reason + "\n")

    app.router.add_get("/healthz", healthz)
    return app


async def run(args: argparse.Namespace) -> int:
    from forkscale.core.errors import SpecError

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise SpecError("--listen", str(exc)) from None
    if args.interval <= 0:
        raise SpecError("--interval", "must be > 0 seconds")
    spec = load_spec(args.spec)
    telemetry = Telemetry()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # A refresh builds and formats the fleet on a worker thread; a scrape on this loop waits for the
    # GIL at each step, up to one switch interval each time (CPython's 5 ms: ~100 ms per scrape at
    # 10,000 clones, bench/scrape.py). serve does the same for its API thread.
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with open_engine(spec, state=args.state, telemetry=telemetry, fleet=True) as engine:
            exporter = Exporter(engine.driver, spec, engine.ledger, telemetry, interval_s=args.interval)
            runner = web.AppRunner(make_app(telemetry, exporter), access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, host, port, reuse_address=True)
                try:
                    await site.start()
                except OSError as exc:
                    print(f"error: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
                    return 1
                try:  # the first scrape should already find a fleet
                    await exporter.refresh()
                except Exception as exc:
                    log.warning("first inventory read failed (retrying every %gs): %s: %s", args.interval,
                                type(exc).__name__, exc)
                bound = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                print(f"forkscale metrics: serving http://{shown}:{bound[1]}/metrics (and /healthz), "
                      f"inventory every {args.interval:g}s", flush=True)
                # The model, the session and pyVmomi's type tables live as long as the process: out of
                # the cyclic collector's reach, whose full passes over them stop every thread (as serve).
                gc.freeze()
                refresher = asyncio.create_task(exporter.run(wait_first=True), name="forkscale-exporter")
                try:
                    await stop.wait()
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher
            finally:
                await runner.cleanup()
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    print("forkscale metrics: stopped", flush=True)
    return 0
