"""Signalling a guest program's sandbox so that nothing of it outlives it.

bwrap forks its sandbox child early and only then ties it to its own life (`--die-with-parent`):
a signal that ends bwrap in between leaves the child, and the program in it, running with no
parent. So the sandbox's processes are noted (Linux `/proc/<pid>/task/*/children`, with each
one's start time, so a reused pid is never hit) before bwrap is signalled, and whatever of them
is still there once bwrap has ended is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

Noted = list[tuple[int, str]]  # (pid, start time) of a sandbox's processes


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 (starttime), counted after the command name


def descendants(pid: int) -> Noted:
    """Every process below `pid`, with its start time."""
    out: Noted = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    start = _start_time(int(child))
                    if start is not None:
                        out.append((int(child), start))
                        todo.append(int(child))
    return out


def signal_tree(pid: int, sig: int) -> Noted:
    """Note the processes below `pid`, then send `sig` to `pid`; the noted processes."""
    noted = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    return noted


def kill_left(noted: Noted) -> None:
    """SIGKILL whichever noted process is still the one noted."""
    for pid, start in noted:
        if _start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
