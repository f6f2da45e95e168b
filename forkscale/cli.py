"""The `forkscale` command line. Each subcommand lives in its own module; this file only parses.

Exit codes: 0 success, 2 bad input (nothing was changed), 1 runtime failure (partial result shown).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from collections.abc import Sequence

from forkscale.core.errors import ForkscaleError, SpecError

EPILOG = """\
examples:
  forkscale demo                              # embedded vSphere twin, scale a pool to 20, summary
  forkscale sim                               # run the vSphere twin alone (prints URL, user, password, CA)
  forkscale apply -f examples/quickstart.yaml # converge every pool in the spec, then exit
  forkscale scale quickstart 50 -f examples/quickstart.yaml
  forkscale status -f examples/quickstart.yaml -o json
  forkscale destroy quickstart -f examples/quickstart.yaml --yes [--sources]
  forkscale prepare -f examples/quickstart.yaml  # one frozen source per host
  forkscale rehearse -f examples/rehearsal.yaml  # upgrade rehearsal in a live clone

Connection and secrets come from the spec's `vcenter:` block; passwords only by reference
(password_env / password_file). See README.md for the spec reference.
"""


def _add_spec(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("-f", "--file", dest="spec", required=required, metavar="SPEC",
                   help="pool spec (YAML), e.g. examples/quickstart.yaml")
    p.add_argument("--state", metavar="PATH", help="ledger file (default: the spec's `state:`, "
                   "else .forkscale/state.sqlite next to the spec)")


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="text (default; live progress on a terminal) or one JSON document")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkscale", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Scale fleets of vSphere instant clones (VMFork): fast, crash-safe, observable.",
        epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sim", help="run the vSphere twin (a vCenter stand-in) in the foreground",
                       description="Run the vSphere twin: a SOAP endpoint that stock vSphere clients talk to "
                                   "as if it were vCenter 8.0, with instant/linked/full clone physics.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8989, help="listen port (default 8989; 0 picks a free one)")
    p.add_argument("--world", metavar="WORLD.yaml", help="world description overriding the default world")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="multiply every task latency by F (0 = instant, 0.01 = 100x faster; default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed for latencies, MACs and UUIDs")
    p.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    p.add_argument("--password", help="login password (default: $FORKSCALE_SIM_PASSWORD or a random one)")
    p.add_argument("--state-dir", help="where the CA and certificate are written (default ~/.forkscale/sim)")

    p = sub.add_parser("demo", help="embedded twin + quickstart pool, end to end, with a summary")
    p.add_argument("--clones", type=int, default=20, help="how many instant clones to make (default 20)")
    p.add_argument("--time-scale", type=float, default=0.2,
                   help="twin task latency multiplier (default 0.2: instant clone ~0.2 s)")
    p.add_argument("--keep", action="store_true", help="leave the clones and the twin running until Ctrl-C")
    _add_output(p)

    p = sub.add_parser("apply", help="converge every pool in SPEC, then exit")
    _add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan (clones, rung, host) and change nothing")
    _add_output(p)

    p = sub.add_parser("scale", help="set a pool's count and converge")
    p.add_argument("pool")
    p.add_argument("count", type=int)
    _add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    _add_output(p)

    p = sub.add_parser("status", help="pools, their per-host sources and clones, from the ledger and vCenter")
    p.add_argument("pool", nargs="?")
    _add_spec(p)
    _add_output(p)

    p = sub.add_parser("destroy", help="remove every clone of a pool (and, with --sources, its per-host sources)",
                       description="Remove every clone of a pool. Its per-host sources (`forkscale prepare`) are "
                                   "kept, and counted, unless --sources: then they are removed after the clones "
                                   "and marked gone in the ledger. The golden VM (`source:`) is never touched.")
    p.add_argument("pool")
    _add_spec(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--sources", action="store_true",
                   help="also remove the pool's per-host sources (after its clones; never the golden VM)")
    _add_output(p)

    p = sub.add_parser("prepare", help="make a frozen source of a pool on every host (for instant clones there)",
                       description="Clone the pool's golden VM (`source:`) onto every host of its placement "
                                   "(default: every host of the golden VM's cluster), freeze each replica with "
                                   "the pool's freeze method and record it in the ledger. Idempotent: healthy "
                                   "frozen sources are kept, thawed ones frozen again, missing ones replaced, "
                                   "and ones with a delta chain at sources.rotate_depth rotated.")
    p.add_argument("pool", nargs="?", help="only this pool (default: every pool in SPEC)")
    _add_spec(p)
    _add_output(p)

    p = sub.add_parser("metrics", help="serve fleet metrics (P-Share, delta chains, pools) on /metrics",
                       description="Read vCenter in one batched pass every --interval seconds and serve the "
                                   "fleet metrics for Prometheus on /metrics (health on /healthz).")
    _add_spec(p)
    p.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                   help="where to serve /metrics (default 127.0.0.1:9464; port 0 picks a free one)")
    p.add_argument("--interval", type=float, default=20.0, metavar="SECONDS",
                   help="inventory refresh interval (default 20, vSphere's realtime sample period)")

    p = sub.add_parser("rehearse", help="live-clone a running VM, rehearse an upgrade in the clone, report",
                       description="Instant-clone a running VM onto an isolated port group (or with its NICs "
                                   "disconnected), run upgrade steps and checks in it over SSH, report, and "
                                   "destroy the clone. Exit 0: every check passed; 1: a step or check failed; "
                                   "2: bad spec.")
    p.add_argument("-f", "--file", dest="spec", required=True, metavar="REHEARSAL",
                   help="rehearsal spec (YAML), e.g. examples/rehearsal.yaml")
    p.add_argument("--keep", action="store_true", help="leave the clone running afterwards (to look around)")
    _add_output(p)

    p = sub.add_parser("serve", help="run the controller: policy loops, HTTP API (claims, status), /metrics",
                       description="Reconcile every pool of SPEC continuously (each pool's policy every "
                                   "evaluate_every_s), serve the HTTP API (claim, release, status, count) and "
                                   "/metrics. The API needs a bearer token: --token-file (mode 0600) or "
                                   "$FORKSCALE_API_TOKEN. SIGTERM stops gracefully.")
    _add_spec(p)
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="API address (default 127.0.0.1:8080; port 0 picks a free one, printed on start)")
    p.add_argument("--token-file", metavar="FILE", help="API bearer token (mode 0600; default $FORKSCALE_API_TOKEN)")
    p.add_argument("--dry-run", action="store_true", help="log every decision and plan, change nothing")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long rounds in flight may finish before they are abandoned (default 30)")
    p.add_argument("--metrics-interval", type=float, default=20.0, metavar="SECONDS",
                   help="fleet metrics inventory refresh interval (default 20)")

    for name, text in (("claim", "claim a ready clone of a pool from a running `forkscale serve`"),
                       ("release", "release a claimed clone (on_release: refresh replaces it, keep returns it)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("pool")
        if name == "claim":
            p.add_argument("--user", help="who claims it (default: the login name)")
            p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                           help="wait this long for a clone when no spare is ready (default 30, max 300)")
        else:
            p.add_argument("vm", help="the claimed clone's name")
        p.add_argument("--url", help="controller URL (default $FORKSCALE_URL or http://127.0.0.1:8080)")
        p.add_argument("--token-file", metavar="FILE", help="API bearer token (mode 0600; default "
                       "$FORKSCALE_API_TOKEN)")
        _add_output(p)
    return parser


COMMANDS = {
    "sim": "forkscale.commands.sim",
    "demo": "forkscale.commands.demo",
    "apply": "forkscale.commands.pools",
    "scale": "forkscale.commands.pools",
    "status": "forkscale.commands.pools",
    "destroy": "forkscale.commands.pools",
    "prepare": "forkscale.commands.prepare",
    "rehearse": "forkscale.commands.rehearse",
    "metrics": "forkscale.commands.metrics",
    "serve": "forkscale.commands.serve",
    "claim": "forkscale.commands.claims",
    "release": "forkscale.commands.claims",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from forkscale.core.logs import setup_logging

    setup_logging(args.verbose)
    module = importlib.import_module(COMMANDS[args.command])
    try:
        result = module.run(args)
        if asyncio.iscoroutine(result):
            result = _run_async(result)
        return int(result or 0)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ForkscaleError as exc:  # e.g. a refused SSH host key for the freeze: say why, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run_async(coro: object) -> object:
    """Run a command coroutine; SIGTERM cancels it like Ctrl-C so cleanup paths run."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)  # type: ignore[arg-type]
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 1
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
