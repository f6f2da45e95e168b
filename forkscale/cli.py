"""The `forkscale` command line. Each subcommand lives in its own module; this file only parses.

Exit codes: 0 success, 2 bad input (nothing was changed), 1 runtime failure (partial result shown).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from forkscale.commands.args import COMMAND_ARGS
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
  forkscale promote quickstart --all -f examples/quickstart.yaml  # linked clones become full ones
  forkscale rebalance quickstart -f examples/quickstart.yaml      # spread over datastores and hosts
  forkscale evacuate esx-02 -f examples/quickstart.yaml --enter   # empty a host, then maintenance
  forkscale push-image vdi --snapshot patch-06 -f pool.yaml [--dry-run]  # roll a new image onto a pool
  forkscale rollout status vdi -f pool.yaml      # ... and pause | resume | cancel; rollback vdi
  forkscale refresh vdi vdi-007 -f pool.yaml     # a fresh clone, same identity and user disk

Connection and secrets come from the spec's `vcenter:` block; passwords only by reference
(password_env / password_file). See README.md for the spec reference.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkscale", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Scale fleets of vSphere instant clones (VMFork): fast, crash-safe, observable.",
        epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for add in COMMAND_ARGS:
        add(sub)
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
    "promote": "forkscale.commands.moves",
    "rebalance": "forkscale.commands.moves",
    "evacuate": "forkscale.commands.evacuate",
    "push-image": "forkscale.commands.day2",
    "rollout": "forkscale.commands.day2",
    "rollback": "forkscale.commands.day2",
    "refresh": "forkscale.commands.day2",
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
        _error(exc)
        return 2
    except ForkscaleError as exc:  # e.g. a refused SSH host key for the freeze: say why, no traceback
        _error(exc)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _error(exc: BaseException) -> None:
    """`error: <message>` on stderr: one line, secrets redacted."""
    from forkscale.core.logs import redact

    print("error: " + " ".join(redact(str(exc)).split()), file=sys.stderr)


def _run_async(coro: Coroutine[Any, Any, object]) -> object:
    """Run a command coroutine; SIGTERM cancels it like Ctrl-C so cleanup paths run."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
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
