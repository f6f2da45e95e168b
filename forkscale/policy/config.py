"""Policy configuration: the `policy:` block of a pool spec, parsed into frozen dataclasses.

Parsing is strict on purpose: a typo in a scaling policy does not fail loudly at run time, it
quietly scales the wrong way (a misspelt `cooldown_down_s` means the default applies and
desktops vanish under users). So unknown keys, keys that belong to another strategy, negative
numbers, `min > max`, bad windows and bad metric sources are all `SpecError`s naming the field,
e.g. `pools[0].policy.schedule[1].from`.

YAML shape::

    policy:
      strategy: headroom | fixed | target-value
      min: 0                 # hard floor (default 0); to zero only when min is 0
      max: 100               # hard ceiling; required for headroom and target-value
      count: 10              # fixed: how many (defaults to the pool's `count`)
      headroom: 5            # headroom: ready spares kept above the claimed count
      target: 10             # target-value: the metric value one clone should carry
      precision: 0.1         # target-value: |metric/target - 1| <= precision is a no-op
      max_step: 4            # any strategy: at most this many clones added/removed per decision
      cooldown_up_s: 60      # after a scale-up, no decision for this long
      cooldown_down_s: 300   # after a scale-down, no decision for this long
      evaluate_every_s: 15   # how often the controller asks the policy
      metric:                # target-value: exactly one source
        prometheus: {url: http://127.0.0.1:9090, query: 'sum(yarn_pending_containers)', timeout_s: 5}
        # or
        http: {url: http://127.0.0.1:8000/load, json_path: "stats.pending", timeout_s: 5}
      schedule:              # any strategy: windows that override min/max; the first match wins
        - {name: office-hours, days: [mon, tue, wed, thu, fri], from: "07:45", to: "18:00",
           tz: Europe/Berlin, min: 50, max: 200}

Windows: `days` defaults to every day; `from`/`to` are quoted `"HH:MM"` strings (`to` may be
`"24:00"`); a window whose `to` is earlier than its `from` runs over midnight and belongs to the
day it starts on (fri 22:00-06:00 covers Friday night into Saturday morning); `tz` is an IANA
zone name, default `UTC`; a window sets `min`, `max` or both, the other bound stays the policy's.

A pool without `policy` is a fixed policy of the pool's `count`: the spec module calls
`parse_policy(None, path, count=pool_count)`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from forkscale.core.errors import SpecError

Strategy = Literal["fixed", "headroom", "target-value"]
STRATEGIES: tuple[Strategy, ...] = ("fixed", "headroom", "target-value")

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DEFAULT_PRECISION = 0.1
DEFAULT_COOLDOWN_UP_S = 60.0
DEFAULT_COOLDOWN_DOWN_S = 300.0
DEFAULT_EVALUATE_EVERY_S = 15.0
DEFAULT_METRIC_TIMEOUT_S = 5.0

# Every number has a range; a value outside it is refused naming the range.
MAX_COUNT = 100_000  # min, max, count, headroom, max_step and window bounds
MAX_COOLDOWN_S = 7 * 86_400.0
MIN_EVALUATE_EVERY_S = 0.05  # a busy loop below this
MAX_EVALUATE_EVERY_S = 86_400.0
MAX_METRIC_TIMEOUT_S = 300.0
MAX_TARGET = 1e12

# Keys every strategy accepts, and the extra keys each strategy owns. A key of another strategy
# is an error rather than ignored: `target:` under `strategy: headroom` is a mistake somewhere.
_COMMON_KEYS = frozenset(
    {"strategy", "min", "max", "max_step", "cooldown_up_s", "cooldown_down_s", "evaluate_every_s", "schedule"}
)
_STRATEGY_KEYS: dict[str, frozenset[str]] = {
    "fixed": frozenset({"count"}),
    "headroom": frozenset({"headroom"}),
    "target-value": frozenset({"target", "precision", "metric"}),
}
_OWNER = {key: name for name, keys in _STRATEGY_KEYS.items() for key in keys}


@dataclass(frozen=True)
class PrometheusSource:
    """An instant query against a Prometheus server's `/api/v1/query`."""

    url: str
    query: str
    timeout_s: float = DEFAULT_METRIC_TIMEOUT_S


@dataclass(frozen=True)
class HttpSource:
    """A GET whose body is a plain number, or JSON holding one at `json_path` (dotted)."""

    url: str
    json_path: str | None = None
    timeout_s: float = DEFAULT_METRIC_TIMEOUT_S


MetricSource = PrometheusSource | HttpSource


@dataclass(frozen=True)
class ScheduleWindow:
    """A recurring time window overriding min and/or max (None keeps the policy's bound)."""

    name: str
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: time
    end: time | None  # None means 24:00, the end of the day
    tz: str = "UTC"
    min: int | None = None
    max: int | None = None

    @property
    def overnight(self) -> bool:
        """True when the window runs past midnight into the next day."""
        return self.end is not None and self.end <= self.start


@dataclass(frozen=True)
class PolicyConfig:
    """A parsed policy. `max=None` means no ceiling (only allowed for `fixed`)."""

    strategy: Strategy
    min: int = 0
    max: int | None = None
    count: int | None = None
    headroom: int | None = None
    target: float | None = None
    precision: float = DEFAULT_PRECISION
    max_step: int | None = None
    cooldown_up_s: float = DEFAULT_COOLDOWN_UP_S
    cooldown_down_s: float = DEFAULT_COOLDOWN_DOWN_S
    evaluate_every_s: float = DEFAULT_EVALUATE_EVERY_S
    metric: MetricSource | None = None
    schedule: tuple[ScheduleWindow, ...] = field(default=())


def parse_policy(raw: Mapping[str, Any] | None, path: str, *, count: int | None = None) -> PolicyConfig:
    """Parse a pool's `policy:` block; `path` is where it sits in the spec (for error messages).

    `count` is the pool's own `count`: it is the policy when `raw` is None, and the default for
    `strategy: fixed` without its own `count`.
    """
    if raw is None:
        return PolicyConfig(strategy="fixed", count=0 if count is None else _int(count, f"{path}.count"))
    if not isinstance(raw, Mapping):
        raise SpecError(path, f"must be a mapping, got {_kind(raw)}")
    _no_unknown(raw, path, _COMMON_KEYS | frozenset(_OWNER))

    strategy = raw.get("strategy")
    if strategy is None:
        raise SpecError(f"{path}.strategy", f"is required (one of {', '.join(STRATEGIES)})")
    if strategy not in STRATEGIES:
        raise SpecError(f"{path}.strategy", f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    for key in raw:
        owner = _OWNER.get(key)
        if owner is not None and owner != strategy:
            raise SpecError(f"{path}.{key}", f"applies only to strategy {owner}, not {strategy}")

    lo = _int(raw.get("min", 0), f"{path}.min")
    hi = None if raw.get("max") is None else _int(raw["max"], f"{path}.max")
    if hi is None and "max" in raw:
        raise SpecError(f"{path}.max", "must be a whole number >= 0, got null")
    if hi is None and strategy != "fixed":
        raise SpecError(f"{path}.max", f"is required for strategy {strategy}: it bounds a runaway policy")
    if hi is not None and lo > hi:
        raise SpecError(f"{path}.min", f"min {lo} is greater than max {hi}")

    max_step = None
    if raw.get("max_step") is not None:
        max_step = _int(raw["max_step"], f"{path}.max_step")
        if max_step < 1:
            raise SpecError(f"{path}.max_step", f"must be at least 1, got {max_step}")

    cfg: dict[str, Any] = {
        "strategy": strategy,
        "min": lo,
        "max": hi,
        "max_step": max_step,
        "cooldown_up_s": _seconds(raw, "cooldown_up_s", DEFAULT_COOLDOWN_UP_S, path, maximum=MAX_COOLDOWN_S),
        "cooldown_down_s": _seconds(raw, "cooldown_down_s", DEFAULT_COOLDOWN_DOWN_S, path, maximum=MAX_COOLDOWN_S),
        "evaluate_every_s": _seconds(raw, "evaluate_every_s", DEFAULT_EVALUATE_EVERY_S, path, positive=True,
                                     minimum=MIN_EVALUATE_EVERY_S, maximum=MAX_EVALUATE_EVERY_S),
    }

    if strategy == "fixed":
        if "count" in raw:
            cfg["count"] = _int(raw["count"], f"{path}.count")
        elif count is not None:
            cfg["count"] = _int(count, f"{path}.count")
        else:
            raise SpecError(f"{path}.count", "is required for strategy fixed (here or as the pool's count)")
    elif strategy == "headroom":
        if "headroom" not in raw:
            raise SpecError(f"{path}.headroom", "is required for strategy headroom")
        cfg["headroom"] = _int(raw["headroom"], f"{path}.headroom")
    else:
        if "target" not in raw:
            raise SpecError(f"{path}.target", "is required for strategy target-value")
        target = _number(raw["target"], f"{path}.target")
        if target <= 0:
            raise SpecError(f"{path}.target", f"must be greater than 0, got {target:g}")
        if target > MAX_TARGET:
            raise SpecError(f"{path}.target", f"must be at most {MAX_TARGET:g}, got {target:g}")
        cfg["target"] = target
        if "precision" in raw:
            precision = _number(raw["precision"], f"{path}.precision")
            if not 0 <= precision < 1:
                raise SpecError(f"{path}.precision", f"must be in [0, 1), got {precision:g}")
            cfg["precision"] = precision
        if "metric" not in raw:
            raise SpecError(f"{path}.metric", "is required for strategy target-value")
        cfg["metric"] = parse_metric_source(raw["metric"], f"{path}.metric")

    cfg["schedule"] = _parse_schedule(raw.get("schedule"), f"{path}.schedule", lo, hi)
    return PolicyConfig(**cfg)


def parse_metric_source(raw: Any, path: str) -> MetricSource:
    """Parse `metric: {prometheus: {...}}` or `metric: {http: {...}}` (exactly one)."""
    if not isinstance(raw, Mapping):
        raise SpecError(path, f"must be a mapping with prometheus or http, got {_kind(raw)}")
    _no_unknown(raw, path, frozenset({"prometheus", "http"}))
    if len(raw) != 1:
        raise SpecError(path, "needs exactly one source: prometheus or http")
    (kind, body), = raw.items()
    sub = f"{path}.{kind}"
    if not isinstance(body, Mapping):
        raise SpecError(sub, f"must be a mapping, got {_kind(body)}")
    timeout = _seconds(body, "timeout_s", DEFAULT_METRIC_TIMEOUT_S, sub, positive=True, maximum=MAX_METRIC_TIMEOUT_S)
    if kind == "prometheus":
        _no_unknown(body, sub, frozenset({"url", "query", "timeout_s"}))
        url = _url(body.get("url"), f"{sub}.url")
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise SpecError(f"{sub}.query", "is required: a PromQL expression returning one sample")
        return PrometheusSource(url=url, query=query.strip(), timeout_s=timeout)
    _no_unknown(body, sub, frozenset({"url", "json_path", "timeout_s"}))
    url = _url(body.get("url"), f"{sub}.url")
    json_path = body.get("json_path")
    if json_path is not None:
        if not isinstance(json_path, str) or not json_path or any(not p for p in json_path.split(".")):
            raise SpecError(f"{sub}.json_path", f"must be a dotted path like 'stats.pending', got {json_path!r}")
    return HttpSource(url=url, json_path=json_path, timeout_s=timeout)


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _parse_schedule(raw: Any, path: str, lo: int, hi: int | None) -> tuple[ScheduleWindow, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list of windows, got {_kind(raw)}")
    windows: list[ScheduleWindow] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        wpath = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(wpath, f"must be a mapping, got {_kind(item)}")
        _no_unknown(item, wpath, frozenset({"name", "days", "from", "to", "tz", "min", "max"}))
        name = item.get("name", f"schedule[{i}]")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{wpath}.name", f"must be a non-empty string, got {name!r}")
        if name in seen:
            raise SpecError(f"{wpath}.name", f"duplicate window name {name!r}")
        seen.add(name)

        days = _days(item.get("days"), f"{wpath}.days")
        if "from" not in item or "to" not in item:
            missing = "from" if "from" not in item else "to"
            raise SpecError(f"{wpath}.{missing}", 'is required, as a quoted "HH:MM" string')
        start = _hhmm(item["from"], f"{wpath}.from")
        end = _hhmm(item["to"], f"{wpath}.to")
        if start is None:
            raise SpecError(f"{wpath}.from", "24:00 is only valid as the end of a window")
        if end == start:
            raise SpecError(f"{wpath}.to", f"window is empty: from and to are both {start:%H:%M}")

        tz = item.get("tz", "UTC")
        if not isinstance(tz, str) or not tz:
            raise SpecError(f"{wpath}.tz", f"must be a time zone name like Europe/Berlin, got {tz!r}")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SpecError(f"{wpath}.tz", f"unknown time zone {tz!r}") from exc

        wmin = None if item.get("min") is None else _int(item["min"], f"{wpath}.min")
        wmax = None if item.get("max") is None else _int(item["max"], f"{wpath}.max")
        if wmin is None and wmax is None:
            raise SpecError(wpath, "a window must set min, max or both")
        eff_lo = lo if wmin is None else wmin
        eff_hi = hi if wmax is None else wmax
        if eff_hi is not None and eff_lo > eff_hi:
            where = f"{wpath}.min" if wmin is not None else f"{wpath}.max"
            raise SpecError(where, f"inside this window min {eff_lo} would be greater than max {eff_hi}")
        windows.append(ScheduleWindow(name=name, days=days, start=start, end=end, tz=tz, min=wmin, max=wmax))
    return tuple(windows)


def _days(raw: Any, path: str) -> frozenset[int]:
    if raw is None:
        return frozenset(range(7))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise SpecError(path, f"must be a non-empty list of {', '.join(DAYS)}")
    out: set[int] = set()
    for j, day in enumerate(raw):
        index = _DAY_INDEX.get(day.strip().lower()) if isinstance(day, str) else None
        if index is None:
            raise SpecError(f"{path}[{j}]", f"unknown day {day!r} (use {', '.join(DAYS)})")
        out.add(index)
    return frozenset(out)


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX: dict[str, int] = {name: i for names in (DAYS, _FULL_DAYS) for i, name in enumerate(names)}


def _hhmm(raw: Any, path: str) -> time | None:
    """Parse "HH:MM"; returns None for "24:00" (end of day)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        # PyYAML (YAML 1.1) reads an unquoted 18:00 as the base-60 integer 1080 (07:45, with its
        # leading zero, stays a string), so the number is most likely minutes since midnight.
        guess = f' (YAML reads an unquoted {raw // 60}:{raw % 60:02d} as the number {raw})' if 0 <= raw <= 1440 else ""
        raise SpecError(path, f'must be a quoted "HH:MM" string{guess}')
    if not isinstance(raw, str):
        raise SpecError(path, f'must be a "HH:MM" string, got {_kind(raw)}')
    m = _HHMM.match(raw.strip())
    if not m:
        raise SpecError(path, f'must be "HH:MM" (00:00 to 24:00), got {raw!r}')
    hh, mm = int(m.group(1)), int(m.group(2))
    if hh == 24:
        if mm != 0:
            raise SpecError(path, f'must be "HH:MM" (00:00 to 24:00), got {raw!r}')
        return None
    return time(hh, mm)


def _no_unknown(raw: Mapping[str, Any], path: str, allowed: frozenset[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise SpecError(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _int(raw: Any, path: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(path, f"must be a whole number >= 0, got {_shown(raw)}")
    if raw < 0:
        raise SpecError(path, f"must not be negative, got {_shown(raw)}")
    if raw > MAX_COUNT:
        raise SpecError(path, f"must be between 0 and {MAX_COUNT}, got {_shown(raw)}")
    return raw


def _shown(raw: Any) -> str:
    """A value for a message: a 1e30 or a 10**30 is not printed digit by digit, a long string is cut."""
    if isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) >= 10**15:
        return f"{float(raw):g}"
    text = repr(raw)
    return text if len(text) <= 80 else text[:60] + "..."


def _number(raw: Any, path: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise SpecError(path, f"must be a number, got {_shown(raw)}")
    return float(raw)


def _seconds(raw: Mapping[str, Any], key: str, default: float, path: str, *, positive: bool = False,
             minimum: float = 0.0, maximum: float) -> float:
    if raw.get(key) is None:
        return default
    value = _number(raw[key], f"{path}.{key}")
    if value < 0 or (positive and value == 0):
        raise SpecError(f"{path}.{key}", f"must be {'greater than 0' if positive else '>= 0'}, got {value:g}")
    if value < minimum or value > maximum:
        raise SpecError(f"{path}.{key}", f"must be between {minimum:g} and {maximum:g} seconds, got {value:g}")
    return value


def _url(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise SpecError(path, "is required: an http:// or https:// URL")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(path, f"must be an http:// or https:// URL with a host, got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise SpecError(path, f"has a bad port: {raw!r}") from exc
    return raw


def _kind(raw: Any) -> str:
    return "null" if raw is None else type(raw).__name__
