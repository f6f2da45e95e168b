"""`forkscale sim`: run the vSphere twin in the foreground until SIGTERM/SIGINT.

With `--state-dir DIR` the twin keeps its world there across restarts (forkscale.sim.keeper).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from forkscale.sim.persist import StateError
from forkscale.sim.server import SimOptions, print_banner, serve


async def _main(opts: SimOptions) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)

    def ready(url: str, user: str, password: str, ca_file: str | None, twin: object) -> None:
        print_banner(url, user, password, ca_file)

    try:
        await serve(opts, ready)
    except asyncio.CancelledError:
        print("forkscale sim: stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.fresh and args.state_dir is None:
        print("forkscale sim: --fresh needs --state-dir (only a kept world can be replaced)", file=sys.stderr)
        return 2
    opts = SimOptions(host=args.host, port=args.port, world=args.world, time_scale=args.time_scale, seed=args.seed,
                      http=args.http, password=args.password, state_dir=args.state_dir,
                      persist=args.state_dir is not None, fresh=args.fresh)
    try:
        return asyncio.run(_main(opts))
    except StateError as exc:
        print(f"forkscale sim: {exc}", file=sys.stderr)
        return 2
