"""`forkscale serve -f SPEC`: the controller (a policy loop per pool), the HTTP API and `/metrics`.

Startup order: the API token is loaded (and a loose token file refused) before anything connects;
then vCenter (`open_engine`), the listening socket (`listening on http://HOST:PORT` on stdout once
it is bound -- `--listen 127.0.0.1:0` picks a free port), the fleet exporter
(`forkscale.exporter.Exporter`, when it is installed) and the controller's loops.

SIGTERM / SIGINT: a graceful stop. No new rounds start, waiting claims are answered (503),
rounds in flight get `--grace` seconds to finish and are abandoned after that (the ledger keeps
what they were doing for the next start to reconcile), the API keeps answering status meanwhile,
then the session is logged out and the ledger closed. Exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from ..api import load_token, make_app
from ..controller import Controller
from ..errors import SpecError
from ..session import ConnectionFailed, open_engine
from ..spec import load_spec
from ..telemetry import Telemetry

log = logging.getLogger("forkscale.serve")
DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[v6]:PORT`; port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SpecError("--listen", f"{value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _exporter(engine: Any, spec: Any, telemetry: Telemetry, interval: float) -> Any:
    """The fleet exporter when forkscale.exporter is installed, else None (the controller then
    publishes ledger-only pool gauges itself)."""
    try:
        from ..exporter import Exporter
    except ModuleNotFoundError as exc:
        if exc.name != "forkscale.exporter":
            raise
        return None
    kwargs: dict[str, Any] = {}
    if "interval_s" in inspect.signature(Exporter).parameters:
        kwargs["interval_s"] = interval
    return Exporter(engine.driver, spec, engine.ledger, telemetry, **kwargs)


async def run(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    if args.grace < 0:
        raise SpecError("--grace", "must be >= 0 seconds")
    token = load_token(args.token_file)
    spec = load_spec(args.spec)
    telemetry = Telemetry()
    loop = asyncio.get_running_loop()
    try:
        async with open_engine(spec, state=args.state, telemetry=telemetry) as engine:
            controller = Controller(engine, telemetry=telemetry, dry_run=args.dry_run, grace_s=args.grace)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, controller.stop)
            runner = web.AppRunner(make_app(controller, token, telemetry), access_log=log,
                                   access_log_format='%a "%r" %s %b %Tfs')
            await runner.setup()
            exporter_task: asyncio.Task[None] | None = None
            try:
                site = web.TCPSite(runner, host, port, reuse_address=True)
                try:
                    await site.start()
                except OSError as exc:
                    print(f"error: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
                    return 1
                bound = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                exporter = _exporter(engine, spec, telemetry, args.metrics_interval)
                if exporter is not None:
                    controller.exporter = exporter
                    exporter_task = asyncio.create_task(exporter.run(), name="forkscale-exporter")
                else:
                    telemetry.set_up(True)
                mode = " (dry run: decisions are logged, nothing is changed)" if args.dry_run else ""
                print(f"forkscale serve: listening on http://{shown}:{bound[1]} "
                      f"(API /v1, /metrics, /healthz); pools: {', '.join(p.name for p in spec.pools)}{mode}",
                      flush=True)
                await controller.run()
            finally:
                if exporter_task is not None:
                    exporter_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await exporter_task
                await runner.cleanup()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("forkscale serve: stopped", flush=True)
    return 0
