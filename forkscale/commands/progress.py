"""Live progress: a redrawn status line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

ORDER = ("planned", "cloning", "customizing", "ready", "claimed", "destroying", "failed")


class ProgressLine:
    def __init__(self, target: int, *, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.target = target
        self.started = time.monotonic()
        self.last = 0.0
        self.interval = interval if self.tty else 2.0
        self.first_ready: int | None = None

    def __call__(self, pool: str, counts: dict[str, int]) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        ready = counts.get("ready", 0) + counts.get("claimed", 0)
        if self.first_ready is None:
            self.first_ready = ready
        elapsed = now - self.started
        made = ready - self.first_ready
        rate = made / elapsed if elapsed > 0 else 0.0
        left = max(0, self.target - ready)
        eta = f"{left / rate:.0f}s" if rate > 0 and left else "-"
        parts = " ".join(f"{k}={counts[k]}" for k in ORDER if counts.get(k))
        line = f"{pool}: {ready}/{self.target} ready  {parts}  {rate:.1f}/s  eta {eta}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
