"""The PerformanceManager's methods: counters by id and level, available metrics, provider
summaries and `QueryPerf`, with its clocks, sample grids and rollups.

Sample times live on the simulated clock and are reported on the server's wall clock: with time
scale `s`, realtime samples are `20·s` real seconds apart while `sampleInfo.interval` stays 20.
Each interval keeps what a default vCenter keeps (realtime one hour, 300 s one day, 1800 s one
week, 7200 s one month, 86400 s one year). A historical sample rolls up the realtime values of
its interval (ROLLUP_POINTS of them, evenly spread, the last at the sample's time): averages
average, summations add up, `latest` counters take the last. One QueryPerf answers all its
specs as of the same instant, however many entities they name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vmodl

from ..dispatch import Ctx, method
from ..mo import MO
from ..world import World
from .catalog import BY_KEY, COUNTERS, PM, REALTIME_KINDS, Counter, for_kind
from .model import REALTIME, Env, first_sample, kind_of, sampler

# (key, samplingPeriod, name, length) of vCenter's default historical intervals
HISTORICAL = [(1, 300, "Past day", 86400), (2, 1800, "Past week", 604800), (3, 7200, "Past month", 2592000),
              (4, 86400, "Past year", 31536000)]
REALTIME_SAMPLES = 180  # one hour of realtime samples, as ESXi keeps
KEEP = {REALTIME: REALTIME_SAMPLES, **{period: length // period for _, period, _, length in HISTORICAL}}
ROLLUP_POINTS = 3
DEFAULT_HISTORICAL = HISTORICAL[0][1]


# clocks ---------------------------------------------------------------------------------------
def _scale(world: World) -> float:
    return world.time_scale if world.time_scale > 0 else 1.0


def to_wall(world: World, sim_t: float) -> datetime:
    return datetime.fromtimestamp(world.started_wall + sim_t * _scale(world), tz=UTC)


def to_sim(world: World, when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    sim = (when.timestamp() - world.started_wall) / _scale(world)
    # A timestamp we sent comes back rounded to the microsecond: snap it onto its sample.
    nearest = round(sim / REALTIME) * REALTIME
    return float(nearest) if abs(sim - nearest) <= 2e-6 / _scale(world) else sim


def sample_times(now: float, interval: int, start: float | None, end: float | None,
                 max_sample: int | None, first: float) -> list[float]:
    """Sample instants (simulated seconds, oldest first) on the interval's grid, up to `now`."""
    last = math.floor(min(now, end if end is not None else now) / interval) * interval
    keep = KEEP[interval]
    lowest = max(first, 0.0, now - keep * interval)
    times: list[float] = []
    t = last
    while t >= lowest and (start is None or t > start):
        times.append(float(t))
        t -= interval
        if len(times) >= keep:
            break
    if max_sample and interval == REALTIME:
        times = times[:max_sample]
    times.reverse()
    return times


def rolled(sample_at: Callable[[float], Any], values: dict[int, Callable[[Any], float]], wanted: list[Counter],
           t: float, interval: int, first: float) -> dict[int, int]:
    """Each wanted counter's value for the sample at `t`, rolled up over its interval."""
    last = sample_at(t)
    subs: list[Any] | None = None
    out: dict[int, int] = {}
    for c in wanted:
        value = values[c.key]
        if interval == REALTIME or c.rollup == "latest":
            out[c.key] = int(value(last))
            continue
        if subs is None:
            points = [t - interval + (j + 1) * interval / ROLLUP_POINTS for j in range(ROLLUP_POINTS - 1)]
            subs = [sample_at(p) for p in points if p >= first] + [last]
        mean = sum(value(s) for s in subs) / len(subs)
        out[c.key] = round(mean * interval / REALTIME) if c.rollup == "summation" else round(mean)
    return out


# answers --------------------------------------------------------------------------------------
_DEFAULTS: dict[Any, list[tuple[str, Callable[[], Any]]]] = {}
_METRIC_IDS: dict[int, Any] = {}


def _fast(cls: Any, **fields: Any) -> Any:
    """A pyVmomi data object built without checking each field (QueryPerf makes tens of thousands:
    the fields here are of the right types by construction)."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        defaults = _DEFAULTS[cls] = [(p.name, p.type if issubclass(p.type, list) else (lambda: None))
                                     for p in cls._GetPropertyList()]
    obj = cls.__new__(cls)
    for name, default in defaults:
        object.__setattr__(obj, name, fields[name] if name in fields else default())
    return obj


def _metric_id(key: int) -> Any:
    """The (shared, never modified) MetricId of a counter's aggregate instance."""
    mid = _METRIC_IDS.get(key)
    if mid is None:
        mid = _METRIC_IDS[key] = PM.MetricId(counterId=key, instance="")
    return mid


# queries --------------------------------------------------------------------------------------
def _intervals() -> set[int]:
    return set(KEEP)


def _entity(ctx: Ctx, ref: Any) -> MO:
    if ref is None:
        raise vmodl.fault.InvalidArgument(msg="entity is required", invalidProperty="entity")
    return ctx.twin.resolve(ref, ctx.session)


def _interval(value: int | None, kind: str | None, prop: str) -> int:
    interval = value or (REALTIME if kind in REALTIME_KINDS else DEFAULT_HISTORICAL)
    if interval not in _intervals():
        raise vmodl.fault.InvalidArgument(msg=f"intervalId {interval} is not a sampling period of this server",
                                          invalidProperty=prop)
    return interval


def _wanted(metric_ids: list[Any] | None, counters: list[Counter]) -> list[Counter]:
    """The counters asked for (all of the entity's when none or only instances are named), each once."""
    named = [mid for mid in metric_ids or [] if mid.counterId]
    if not named:
        return counters
    wanted: list[Counter] = []
    for mid in named:
        c = BY_KEY.get(mid.counterId)
        if c is not None and c in counters and (mid.instance or "") in ("", "*") and c not in wanted:
            wanted.append(c)
    return wanted


def query_one(ctx: Ctx, spec: Any, now: float, envs: dict[int, Env]) -> Any:
    """The samples one QuerySpec asks for, as of `now` (simulated seconds)."""
    world = ctx.twin.world
    mo = _entity(ctx, spec.entity)
    kind = kind_of(mo)
    counters = for_kind(kind)
    interval = _interval(spec.intervalId, kind, "querySpec.intervalId")
    fmt = spec.format or "normal"
    if fmt not in PM.Format.values:  # type: ignore[attr-defined]  # pyVmomi's stubs omit an enum's `values`
        raise vmodl.fault.InvalidArgument(msg=f"unknown format {fmt!r}", invalidProperty="querySpec.format")
    if interval == REALTIME and kind not in REALTIME_KINDS:
        return None  # clusters, pools, datastores and datacenters have historical statistics only
    wanted = _wanted(spec.metricId, counters)
    if not wanted:
        return None
    start = to_sim(world, spec.startTime) if spec.startTime else None
    end = to_sim(world, spec.endTime) if spec.endTime else None
    first = first_sample(mo)
    times = sample_times(now, interval, start, end, spec.maxSample, first)
    if not times:
        return None
    env = envs.setdefault(interval, Env(world, ctx.twin.events, interval))
    sample_at, values = sampler(mo, env)
    rows = [rolled(sample_at, values, wanted, t, interval, first) for t in times]
    stamps = [to_wall(world, t) for t in times]
    if fmt == "csv":
        info = ",".join(f"{interval},{s.isoformat().replace('+00:00', 'Z')}" for s in stamps)
        return PM.EntityMetricCSV(entity=mo.ref, sampleInfoCSV=info, value=[
            _fast(PM.MetricSeriesCSV, id=_metric_id(c.key), value=",".join(str(r[c.key]) for r in rows))
            for c in wanted])
    return _fast(PM.EntityMetric, entity=mo.ref,
                 sampleInfo=[_fast(PM.SampleInfo, timestamp=s, interval=interval) for s in stamps],
                 value=[_fast(PM.IntSeries, id=_metric_id(c.key), value=[r[c.key] for r in rows]) for c in wanted])


@method("QueryPerf")
def query_perf(ctx: Ctx, this: MO, querySpec: list[Any]) -> list[Any]:  # noqa: N803
    now = ctx.twin.world.sim_seconds()  # every spec is answered as of the same instant
    envs: dict[int, Env] = {}  # what specs of one interval share (per-host contention, pool members...)
    out = []
    for spec in querySpec or []:
        metric = query_one(ctx, spec, now, envs)
        if metric is not None:
            out.append(metric)
    return out


@method("QueryAvailablePerfMetric")
def query_available(ctx: Ctx, this: MO, entity: Any, beginTime: Any = None, endTime: Any = None,  # noqa: N803
                    intervalId: int | None = None) -> list[Any]:  # noqa: N803
    mo = _entity(ctx, entity)
    kind = kind_of(mo)
    if intervalId is not None:
        _interval(intervalId, kind, "intervalId")
        if intervalId == REALTIME and kind not in REALTIME_KINDS:
            return []
    return [PM.MetricId(counterId=c.key, instance="") for c in for_kind(kind)]


@method("QueryPerfCounter")
def query_counter(ctx: Ctx, this: MO, counterId: list[int]) -> list[Any]:  # noqa: N803
    return [BY_KEY[k].info() for k in counterId or [] if k in BY_KEY]


@method("QueryPerfCounterByLevel")
def query_counter_by_level(ctx: Ctx, this: MO, level: int) -> list[Any]:
    if not 1 <= level <= 4:
        raise vmodl.fault.InvalidArgument(msg="level must be within 1..4", invalidProperty="level")
    return [c.info() for c in COUNTERS if c.level <= level]


@method("QueryPerfProviderSummary")
def query_provider_summary(ctx: Ctx, this: MO, entity: Any) -> Any:
    mo = _entity(ctx, entity)
    current = kind_of(mo) in REALTIME_KINDS
    return PM.ProviderSummary(entity=mo.ref, currentSupported=current, summarySupported=True,
                              refreshRate=REALTIME if current else -1)
