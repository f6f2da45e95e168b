"""Schedule windows: day boundaries, overnight windows, time zones (incl. DST), first match wins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from forkscale.policy import Bounds, effective_bounds, parse_policy

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

OFFICE = {"name": "office-hours", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:45", "to": "18:00",
          "tz": "Europe/Berlin", "min": 50, "max": 200}
NIGHT = {"name": "night-batch", "days": ["fri"], "from": "22:00", "to": "06:00", "tz": "UTC", "max": 5}
SAT_EARLY = {"name": "sat-early", "days": ["sat"], "from": "00:00", "to": "02:00", "tz": "Europe/Berlin", "min": 7}
LATE = {"name": "late", "days": ["sat"], "from": "20:00", "to": "24:00", "tz": "UTC", "min": 3}


def policy(*windows: dict[str, Any]) -> Any:
    return parse_policy({"strategy": "fixed", "count": 1, "min": 0, "max": 100, "schedule": list(windows)}, "p")


# 2024-06-03 is a Monday; Berlin is UTC+2 in June, UTC+1 in January.
CASES = [
    ("office-opens-at-0745-berlin", OFFICE, datetime(2024, 6, 3, 7, 45, tzinfo=BERLIN), Bounds(50, 200, "office-hours")),
    ("office-closed-at-0744", OFFICE, datetime(2024, 6, 3, 7, 44, 59, tzinfo=BERLIN), Bounds(0, 100, None)),
    ("office-end-is-exclusive", OFFICE, datetime(2024, 6, 3, 18, 0, tzinfo=BERLIN), Bounds(0, 100, None)),
    ("office-1759-open", OFFICE, datetime(2024, 6, 3, 17, 59, tzinfo=BERLIN), Bounds(50, 200, "office-hours")),
    ("office-saturday-closed", OFFICE, datetime(2024, 6, 8, 10, 0, tzinfo=BERLIN), Bounds(0, 100, None)),
    ("office-friday-open", OFFICE, datetime(2024, 6, 7, 10, 0, tzinfo=BERLIN), Bounds(50, 200, "office-hours")),
    # The same instant seen from UTC: 05:45Z is 07:45 in Berlin in summer...
    ("office-utc-summer-0545z", OFFICE, datetime(2024, 6, 3, 5, 45, tzinfo=UTC), Bounds(50, 200, "office-hours")),
    ("office-utc-summer-0544z", OFFICE, datetime(2024, 6, 3, 5, 44, tzinfo=UTC), Bounds(0, 100, None)),
    # ...and 06:45Z in winter (CET, UTC+1): the window follows the wall clock across DST.
    ("office-utc-winter-0545z-closed", OFFICE, datetime(2024, 1, 8, 5, 45, tzinfo=UTC), Bounds(0, 100, None)),
    ("office-utc-winter-0645z-open", OFFICE, datetime(2024, 1, 8, 6, 45, tzinfo=UTC), Bounds(50, 200, "office-hours")),
    # Sunday 23:00 in New York is Monday 05:00 in Berlin: closed; Monday 02:00 NY = 08:00 Berlin: open.
    ("office-seen-from-new-york-sun", OFFICE, datetime(2024, 6, 2, 23, 0, tzinfo=NEW_YORK), Bounds(0, 100, None)),
    ("office-seen-from-new-york-mon", OFFICE, datetime(2024, 6, 3, 2, 0, tzinfo=NEW_YORK), Bounds(50, 200, "office-hours")),
    # Day boundary in the window's zone, not the caller's: Friday 23:30Z is Saturday 01:30 Berlin.
    ("day-taken-in-window-tz", SAT_EARLY, datetime(2024, 6, 7, 23, 30, tzinfo=UTC), Bounds(7, 100, "sat-early")),
    ("day-taken-in-window-tz-0230-berlin-over", SAT_EARLY, datetime(2024, 6, 8, 0, 30, tzinfo=UTC), Bounds(0, 100, None)),
    # Overnight windows belong to the day they start on.
    ("night-friday-2200", NIGHT, datetime(2024, 6, 7, 22, 0, tzinfo=UTC), Bounds(0, 5, "night-batch")),
    ("night-friday-2359", NIGHT, datetime(2024, 6, 7, 23, 59, tzinfo=UTC), Bounds(0, 5, "night-batch")),
    ("night-saturday-0000", NIGHT, datetime(2024, 6, 8, 0, 0, tzinfo=UTC), Bounds(0, 5, "night-batch")),
    ("night-saturday-0559", NIGHT, datetime(2024, 6, 8, 5, 59, tzinfo=UTC), Bounds(0, 5, "night-batch")),
    ("night-saturday-0600-over", NIGHT, datetime(2024, 6, 8, 6, 0, tzinfo=UTC), Bounds(0, 100, None)),
    ("night-friday-0300-not-thursdays", NIGHT, datetime(2024, 6, 7, 3, 0, tzinfo=UTC), Bounds(0, 100, None)),
    ("night-saturday-2300-not-fri", NIGHT, datetime(2024, 6, 8, 23, 0, tzinfo=UTC), Bounds(0, 100, None)),
    # Sunday-night window wrapping into Monday (week boundary).
    ("sunday-night-wraps-to-monday", dict(NIGHT, days=["sun"]), datetime(2024, 6, 3, 1, 0, tzinfo=UTC),
     Bounds(0, 5, "night-batch")),
    # 24:00 ends at midnight and does not spill into the next day.
    ("late-until-midnight-2359", LATE, datetime(2024, 6, 8, 23, 59, 59, tzinfo=UTC), Bounds(3, 100, "late")),
    ("late-not-sunday-0000", LATE, datetime(2024, 6, 9, 0, 0, tzinfo=UTC), Bounds(0, 100, None)),
]


@pytest.mark.parametrize("window, now, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_window_table(window, now, expected):
    assert effective_bounds(policy(window), now) == expected


def test_first_matching_window_wins():
    wide = {"name": "all-day", "from": "00:00", "to": "24:00", "min": 1}
    narrow = {"name": "lunch", "from": "12:00", "to": "13:00", "min": 20}
    noon = datetime(2024, 6, 3, 12, 30, tzinfo=UTC)
    assert effective_bounds(policy(narrow, wide), noon) == Bounds(20, 100, "lunch")
    assert effective_bounds(policy(wide, narrow), noon) == Bounds(1, 100, "all-day")
    assert effective_bounds(policy(narrow, wide), noon.replace(hour=14)) == Bounds(1, 100, "all-day")


def test_no_schedule_uses_policy_bounds():
    cfg = parse_policy({"strategy": "headroom", "headroom": 2, "min": 4, "max": 9}, "p")
    assert effective_bounds(cfg, datetime(2024, 6, 3, tzinfo=UTC)) == Bounds(4, 9, None)
