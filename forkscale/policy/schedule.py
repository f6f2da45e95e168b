"""Schedule windows: which min/max are in force at a given instant.

Kept separate from the strategies because a window is about *when*, not *how many*: any
strategy (fixed, headroom, target-value) is clamped by the bounds this module returns, so
"pre-warm 50 desktops from 07:45 on weekdays" works without a strategy of its own.

Windows are matched on the wall clock of their own time zone, so a Berlin office window opens
at 07:45 Berlin time in summer and in winter; the caller passes an aware `datetime` in any zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from forkscale.policy.config import PolicyConfig, ScheduleWindow


class Bounds(NamedTuple):
    """The min/max in force, and the name of the window that set them (None: the policy's own)."""

    min: int
    max: int | None
    window: str | None


def window_active(window: ScheduleWindow, now: datetime) -> bool:
    """Whether `window` covers the instant `now` (which must be timezone-aware).

    An overnight window (to <= from) belongs to the day it starts on: a Friday 22:00-06:00
    window covers Friday 22:00 up to Saturday 06:00, not Friday 00:00-06:00.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware: a naive time has no single meaning for a window")
    local = now.astimezone(ZoneInfo(window.tz))
    t = local.time().replace(tzinfo=None)
    day = local.weekday()
    if not window.overnight:
        return day in window.days and window.start <= t and (window.end is None or t < window.end)
    assert window.end is not None  # overnight implies an end
    if day in window.days and t >= window.start:
        return True
    yesterday = (local - timedelta(days=1)).weekday()
    return yesterday in window.days and t < window.end


def active_window(windows: Iterable[ScheduleWindow], now: datetime) -> ScheduleWindow | None:
    """The first window covering `now`, in spec order (so specific windows go first)."""
    for window in windows:
        if window_active(window, now):
            return window
    return None


def effective_bounds(config: PolicyConfig, now: datetime) -> Bounds:
    """The (min, max) in force at `now`: the active window's bounds over the policy's own."""
    window = active_window(config.schedule, now)
    if window is None:
        return Bounds(config.min, config.max, None)
    lo = config.min if window.min is None else window.min
    hi = config.max if window.max is None else window.max
    return Bounds(lo, hi, window.name)
