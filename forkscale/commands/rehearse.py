"""`forkscale rehearse -f REHEARSAL.yaml [-o json] [--keep]`: a live-clone upgrade rehearsal, and
`forkscale rehearse --pool POOL --snapshot NEW -f SPEC`: a pool's new image, before a push.

Exit codes: 0 every step and check passed (and the clone was cleaned up, or kept on request);
1 a step or check failed, or the clone could not be made, reached or removed, or the report file
could not be written (the report says which); 2 a bad spec (nothing was created); 130
interrupted (Ctrl-C / SIGTERM; the clone is still destroyed before exiting, and the report
printed). The printed report's `exit_code` is always the command's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from forkscale.commands.session import ConnectionFailed, open_driver
from forkscale.core.errors import SpecError
from forkscale.spec import load_spec
from forkscale.spec.rehearsal import RehearsalSpec, load_rehearsal, rehearsal_for_pool
from forkscale.workloads.rehearsal import Rehearsal, Report


def _progress(msg: str) -> None:
    print(f"rehearse: {msg}", file=sys.stderr, flush=True)


def load(args: argparse.Namespace) -> RehearsalSpec:
    """The rehearsal file, or the rehearsal of `--pool`'s image at `--snapshot` from a pool spec."""
    if args.pool is None and args.snapshot is None:
        return load_rehearsal(args.spec)
    if args.pool is None:
        raise SpecError("--pool", "required with --snapshot: the pool whose new image to rehearse")
    if args.snapshot is None:
        raise SpecError("--snapshot", f"required with --pool: the snapshot of pool {args.pool}'s golden VM "
                                      "that holds the new image")
    return rehearsal_for_pool(load_spec(args.spec), args.pool, args.snapshot)


async def run(args: argparse.Namespace) -> int:
    spec = load(args)
    if spec.guestops is not None and spec.transport == "guestops":
        spec.guestops.password()  # unset or unreadable: exit 2 before anything is asked of vCenter
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # Ctrl-C cancels like SIGTERM (cli._run_async) does, so the clone is destroyed on the way out
    # instead of the loop being torn down under it.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    text = args.output == "text"
    report: Report | None = None
    try:
        async with open_driver(spec.vcenter) as driver:
            rehearsal = Rehearsal(spec, driver, keep=args.keep, progress=_progress if text else None)
            try:
                report = await rehearsal.run()
            except asyncio.CancelledError:
                report = rehearsal.report
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:  # interrupted while connecting: nothing was created
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    assert report is not None
    if spec.report is not None:
        try:
            report.write(spec.report)
        except OSError as exc:
            report.write_error = f"cannot write the report to {spec.report}: {exc}"
    if text:
        print(report.render_text())
        if spec.report is not None and report.write_error is None:
            print(f"  report: {spec.report}")
    else:
        print(report.to_json())
    return report.exit_code
