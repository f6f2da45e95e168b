"""Every metric forkscale exports, on a registry of its own.

One `Telemetry` per controller (tests make their own). Two kinds of metrics live here:

* **Event metrics** - counters, histograms and a few gauges the engine updates as things happen
  (a clone became ready, a vSphere task finished, a rung of the fallback ladder was skipped, a
  budget slot was taken). They are plain prometheus-client objects, exposed as typed attributes,
  with small helpers that keep label values inside their fixed vocabularies.
* **Fleet metrics** - gauges derived from a periodic inventory read (memory sharing, delta chains,
  frozen sources, clone and pool counts). The exporter fills a `FleetSample` and calls
  `Telemetry.set_fleet`, which builds the complete new set of series and swaps it in with one
  reference assignment: a scrape sees either the whole previous sample or the whole new one,
  and a VM missing from the new sample is gone from `/metrics` at once.

Names, types and labels are a contract with `metrics/` (rules, alerts, dashboard); the tests in
`tests/test_metrics_assets.py` check every name used there against `METRICS` below.
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest

from forkscale.policy.reasons import ReasonCode

__all__ = [
    "BUDGET_SCOPE_CLASSES",
    "CLONE_KINDS",
    "CHAIN_ROLES",
    "CLONE_LATENCY_BUCKETS",
    "DELTA_CHAIN_LIMIT",
    "METRICS",
    "ChainDepth",
    "CloneCount",
    "DeltaDisk",
    "FleetSample",
    "HostMemory",
    "MetricSpec",
    "PoolCounts",
    "SourceState",
    "Telemetry",
    "VmMemory",
    "count_clones",
    "metrics_app",
    "metrics_handler",
    "scope_class",
]

MetricType = Literal["gauge", "counter", "histogram"]

CLONE_KINDS: Final[tuple[str, ...]] = ("instant", "linked", "full")
CHAIN_ROLES: Final[tuple[str, ...]] = ("source", "clone")
BUDGET_SCOPE_CLASSES: Final[tuple[str, ...]] = ("vcenter", "host", "datastore")
DELTA_CHAIN_LIMIT: Final[int] = 255
"""vSphere refuses to add a delta disk beyond this chain length."""

CLONE_LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
    60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0,
)  # fmt: skip
"""From a sub-second instant clone on an idle host up to a 10-minute full copy."""

BUDGET_WAIT_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
"""Most waits for a budget slot are immediate; a saturated host makes them as long as a clone."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: the contract the dashboards and alerts are written against."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    fleet: bool = False
    """True when the value comes from `set_fleet` (replaced as a whole each refresh)."""

    def series_names(self) -> tuple[str, ...]:
        """Names of the sample series Prometheus stores for this family."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _spec(
    name: str, mtype: MetricType, labels: Sequence[str], help_text: str, *, fleet: bool = False
) -> MetricSpec:
    return MetricSpec(name, mtype, tuple(labels), help_text, fleet)


METRICS: Final[tuple[MetricSpec, ...]] = (
    # --- fleet (replaced as a whole by set_fleet) ---------------------------------------------
    _spec("forkscale_clones", "gauge", ("pool", "kind", "state"),
          "Clones known to the controller, by pool, clone kind and ledger state.", fleet=True),
    _spec("forkscale_pool_desired", "gauge", ("pool",),
          "Clones the pool's policy wants (ready and claimed together).", fleet=True),
    _spec("forkscale_pool_ready", "gauge", ("pool",),
          "Clones of the pool that reached guest-ready (ready or claimed).", fleet=True),
    _spec("forkscale_pool_spares", "gauge", ("pool",),
          "Ready clones of the pool that nobody has claimed yet.", fleet=True),
    _spec("forkscale_vm_memory_shared_bytes", "gauge", ("pool", "vm"),
          "Guest memory of the VM shared with other VMs (quickStats.sharedMemory).", fleet=True),
    _spec("forkscale_vm_memory_private_bytes", "gauge", ("pool", "vm"),
          "Guest memory backed only by this VM (quickStats.privateMemory).", fleet=True),
    _spec("forkscale_host_memory_shared_bytes", "gauge", ("host",),
          "Guest-physical memory shared on the host (mem.shared.average).", fleet=True),
    _spec("forkscale_host_memory_sharedcommon_bytes", "gauge", ("host",),
          "Machine memory backing the shared pages (mem.sharedcommon.average).", fleet=True),
    _spec("forkscale_host_pshare_saved_bytes", "gauge", ("host",),
          "Memory saved by page sharing on the host (shared - sharedcommon).", fleet=True),
    _spec("forkscale_pool_pshare_saved_bytes", "gauge", ("pool",),
          "Memory the pool's clones save by sharing pages with their source.", fleet=True),
    _spec("forkscale_delta_chain_depth", "gauge", ("vm", "disk", "role"),
          f"Delta disks in the disk's backing chain (vSphere limit {DELTA_CHAIN_LIMIT}).", fleet=True),
    _spec("forkscale_delta_disk_bytes", "gauge", ("vm", "role"),
          "Bytes in the VM's own delta disks (layoutEx uniqueSize, summed over disks).", fleet=True),
    _spec("forkscale_source_frozen", "gauge", ("pool", "source", "host"),
          "1 when the pool's source VM on that host is frozen (runtime.instantCloneFrozen).",
          fleet=True),
    _spec("forkscale_inventory_age_seconds", "gauge", (),
          "Seconds since the inventory sample behind the fleet metrics was taken.", fleet=True),
    # --- events ----------------------------------------------------------------------------------
    _spec("forkscale_clone_ready_seconds", "histogram", ("pool", "kind"),
          "From clone request to the guest reporting ready with its identity."),
    _spec("forkscale_clone_faults_total", "counter", ("pool", "kind", "fault"),
          "Clone attempts that failed, by the fault that ended the attempt."),
    _spec("forkscale_fallbacks_total", "counter", ("pool", "from_kind", "to_kind", "reason"),
          "Steps down the fallback ladder (instant -> linked -> full), with the reason."),
    _spec("forkscale_vsphere_task_seconds", "histogram", ("method",),
          "Duration of vSphere tasks, from submission to a terminal state."),
    _spec("forkscale_vsphere_task_faults_total", "counter", ("method", "fault"),
          "vSphere tasks that ended in a fault, by method and fault type."),
    _spec("forkscale_budget_in_flight", "gauge", ("scope",),
          "Operations holding a budget slot (scope: vcenter, host:NAME, datastore:NAME)."),
    _spec("forkscale_budget_wait_seconds", "histogram", ("scope",),
          "Time spent waiting for a budget slot, by scope class (vcenter, host, datastore)."),
    _spec("forkscale_policy_decisions_total", "counter", ("pool", "direction", "reason"),
          "Scaling decisions by pool, direction (up, down, none) and the policy's reason."),
    _spec("forkscale_up", "gauge", (),
          "1 while the controller has a working vCenter session, 0 otherwise."),
)  # fmt: skip

_SPECS: Final[dict[str, MetricSpec]] = {m.name: m for m in METRICS}


def scope_class(scope: str) -> str:
    """`host:esx-01` -> `host`; `vcenter` -> `vcenter`. Raises ValueError for anything else."""
    cls = scope.split(":", 1)[0]
    if cls not in BUDGET_SCOPE_CLASSES:
        raise ValueError(f"budget scope {scope!r}: class must be one of {BUDGET_SCOPE_CLASSES}")
    if cls != "vcenter" and (":" not in scope or not scope.split(":", 1)[1]):
        raise ValueError(f"budget scope {scope!r}: expected {cls}:NAME")
    return cls


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} {value!r}: must be one of {allowed}")
    return value


# ------------------------------------------------------------------------------------------------
# The fleet sample: plain data, easy to fill from one inventory read.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VmMemory:
    """From `summary.quickStats.sharedMemory` / `privateMemory` (MB there; bytes here)."""

    pool: str
    vm: str
    shared_bytes: float
    private_bytes: float


@dataclass(frozen=True, slots=True)
class HostMemory:
    """From host performance counters `mem.shared.average` / `mem.sharedcommon.average` (KB there)."""

    host: str
    shared_bytes: float
    sharedcommon_bytes: float

    @property
    def saved_bytes(self) -> float:
        """What page sharing saves on this host: shared - sharedcommon, never negative."""
        return max(0.0, float(self.shared_bytes) - float(self.sharedcommon_bytes))


@dataclass(frozen=True, slots=True)
class ChainDepth:
    """Delta disks in one virtual disk's backing chain (walk `backing.parent`, or layoutEx chain)."""

    vm: str
    disk: str
    """Device label or bus position, e.g. `scsi0:0`."""
    role: str
    """`source` or `clone`."""
    depth: int


@dataclass(frozen=True, slots=True)
class DeltaDisk:
    """The VM's own delta files: `layoutEx.file[].uniqueSize` summed over its disks' child-most links."""

    vm: str
    role: str
    """`source` or `clone`."""
    bytes: float


@dataclass(frozen=True, slots=True)
class SourceState:
    """One source VM of a pool on one host, and whether it is frozen for instant cloning."""

    pool: str
    source: str
    host: str
    frozen: bool


@dataclass(frozen=True, slots=True)
class PoolCounts:
    """What the policy wants and what the pool has (see the metric help texts)."""

    pool: str
    desired: int
    ready: int
    spares: int


@dataclass(frozen=True, slots=True)
class CloneCount:
    pool: str
    kind: str
    """`instant`, `linked` or `full`."""
    state: str
    """Ledger state (`cloning`, `ready`, `claimed`, ...)."""
    count: int


def count_clones(clones: Iterable[tuple[str, str, str]]) -> list[CloneCount]:
    """Tally `(pool, kind, state)` triples (e.g. ledger rows) into `CloneCount`s."""
    tally = _Tally(clones)
    return [CloneCount(p, k, s, n) for (p, k, s), n in sorted(tally.items())]


@dataclass(slots=True)
class FleetSample:
    """Everything the fleet gauges show, from one inventory read plus the ledger and policies.

    Units are bytes and plain counts; convert vSphere's MB/KB when filling. Anything left out
    disappears from `/metrics` when the sample is applied. `taken_at` is the wall-clock time
    (`time.time()`) of the inventory read; it drives `forkscale_inventory_age_seconds`.
    """

    vms: list[VmMemory] = field(default_factory=list)
    hosts: list[HostMemory] = field(default_factory=list)
    chains: list[ChainDepth] = field(default_factory=list)
    deltas: list[DeltaDisk] = field(default_factory=list)
    sources: list[SourceState] = field(default_factory=list)
    pools: list[PoolCounts] = field(default_factory=list)
    clones: list[CloneCount] = field(default_factory=list)
    pool_pshare_saved_bytes: dict[str, float] = field(default_factory=dict)
    taken_at: float | None = None


class _FamilyBuilder:
    """Collects samples for fresh gauge families, refusing duplicate label sets."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily] = {}
        self._seen: set[tuple[str, tuple[str, ...]]] = set()
        for spec in METRICS:
            if spec.fleet:
                self._families[spec.name] = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        spec = _SPECS[name]
        key = (name, tuple(labels))
        if key in self._seen:
            pairs = ", ".join(f"{n}={v!r}" for n, v in zip(spec.labels, labels, strict=True))
            raise ValueError(f"fleet sample: duplicate series {name}{{{pairs}}}")
        self._seen.add(key)
        self._families[name].add_metric(list(labels), float(value))

    def families(self) -> dict[str, GaugeMetricFamily]:
        return self._families


def _build_fleet(sample: FleetSample) -> dict[str, GaugeMetricFamily]:
    b = _FamilyBuilder()
    for c in sample.clones:
        _check(c.kind, CLONE_KINDS, "clone kind")
        b.add("forkscale_clones", (c.pool, c.kind, c.state), c.count)
    for p in sample.pools:
        b.add("forkscale_pool_desired", (p.pool,), p.desired)
        b.add("forkscale_pool_ready", (p.pool,), p.ready)
        b.add("forkscale_pool_spares", (p.pool,), p.spares)
    for v in sample.vms:
        b.add("forkscale_vm_memory_shared_bytes", (v.pool, v.vm), v.shared_bytes)
        b.add("forkscale_vm_memory_private_bytes", (v.pool, v.vm), v.private_bytes)
    for h in sample.hosts:
        b.add("forkscale_host_memory_shared_bytes", (h.host,), h.shared_bytes)
        b.add("forkscale_host_memory_sharedcommon_bytes", (h.host,), h.sharedcommon_bytes)
        b.add("forkscale_host_pshare_saved_bytes", (h.host,), h.saved_bytes)
    for pool, saved in sorted(sample.pool_pshare_saved_bytes.items()):
        b.add("forkscale_pool_pshare_saved_bytes", (pool,), saved)
    for ch in sample.chains:
        _check(ch.role, CHAIN_ROLES, "chain role")
        if ch.depth < 0:
            raise ValueError(f"chain depth of {ch.vm}/{ch.disk} is negative: {ch.depth}")
        b.add("forkscale_delta_chain_depth", (ch.vm, ch.disk, ch.role), ch.depth)
    for d in sample.deltas:
        _check(d.role, CHAIN_ROLES, "delta disk role")
        b.add("forkscale_delta_disk_bytes", (d.vm, d.role), d.bytes)
    for s in sample.sources:
        b.add("forkscale_source_frozen", (s.pool, s.source, s.host), 1.0 if s.frozen else 0.0)
    return b.families()


_AGE = "forkscale_inventory_age_seconds"
_STATIC_FLEET: Final[frozenset[str]] = frozenset(m.name for m in METRICS if m.fleet and m.name != _AGE)
_OM_EOF = b"# EOF\n"
Encoder = Callable[[Any], bytes]


class _Families:
    """All `generate_latest` needs of a registry: `collect()` over given metric families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class _FleetCollector:
    """Serves the last applied fleet sample. The swap in `apply` is a single assignment.

    The state also carries the sample's exposition, rendered at most once per format (content
    type): at 5,000 clones formatting the fleet is most of a scrape's cost.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._state: tuple[dict[str, GaugeMetricFamily], float | None, dict[str, bytes]] = (
            _build_fleet(FleetSample()), None, {})
        self.formats: dict[str, Encoder] = {}
        """Content type -> encoder of every format scraped so far (what `prerender` warms)."""

    def apply(self, sample: FleetSample) -> None:
        families = _build_fleet(sample)  # may raise; the old state stays in place then
        self._state = (families, sample.taken_at, {})

    def rendered(self, content_type: str, encoder: Encoder) -> bytes:
        """The sample's families except the age, in one format (no OpenMetrics `# EOF`)."""
        families, _, cache = self._state
        body = cache.get(content_type)
        if body is None:
            body = encoder(_Families(families[m.name] for m in METRICS if m.name in _STATIC_FLEET))
            body = body[: -len(_OM_EOF)] if body.endswith(_OM_EOF) else body
            cache[content_type] = body
            self.formats.setdefault(content_type, encoder)
        return body

    def describe(self) -> Iterator[Metric]:
        for spec in METRICS:
            if spec.fleet:
                yield GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)

    def collect(self) -> Iterator[Metric]:
        families, taken_at, _ = self._state  # one read: never half of one sample and half of another
        for spec in METRICS:
            if not spec.fleet:
                continue
            if spec.name == "forkscale_inventory_age_seconds":
                age = GaugeMetricFamily(spec.name, spec.help)
                if taken_at is not None:
                    age.add_metric([], max(0.0, self._clock() - taken_at))
                yield age
            else:
                yield families[spec.name]


# ------------------------------------------------------------------------------------------------
# Telemetry
# ------------------------------------------------------------------------------------------------


class Telemetry:
    """All forkscale metrics on a private `CollectorRegistry`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        s = _SPECS

        def counter(name: str) -> Counter:
            return Counter(name, s[name].help, s[name].labels, registry=r)

        def gauge(name: str) -> Gauge:
            return Gauge(name, s[name].help, s[name].labels, registry=r)

        def histogram(name: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, s[name].help, s[name].labels, registry=r, buckets=buckets)

        self.clone_ready_seconds: Histogram = histogram(
            "forkscale_clone_ready_seconds", CLONE_LATENCY_BUCKETS
        )
        self.clone_faults: Counter = counter("forkscale_clone_faults_total")
        self.fallbacks: Counter = counter("forkscale_fallbacks_total")
        self.vsphere_task_seconds: Histogram = histogram(
            "forkscale_vsphere_task_seconds", CLONE_LATENCY_BUCKETS
        )
        self.vsphere_task_faults: Counter = counter("forkscale_vsphere_task_faults_total")
        self.budget_in_flight: Gauge = gauge("forkscale_budget_in_flight")
        self.budget_wait_seconds: Histogram = histogram("forkscale_budget_wait_seconds", BUDGET_WAIT_BUCKETS)
        self.policy_decisions: Counter = counter("forkscale_policy_decisions_total")
        self.up: Gauge = gauge("forkscale_up")
        self._fleet = _FleetCollector(clock)
        r.register(self._fleet)

    # --- fleet ------------------------------------------------------------------------------------

    def set_fleet(self, sample: FleetSample) -> None:
        """Replace every fleet gauge with this sample (all or nothing; ValueError leaves the old)."""
        self._fleet.apply(sample)

    # --- events -----------------------------------------------------------------------------------

    def observe_clone_ready(self, pool: str, kind: str, seconds: float) -> None:
        self.clone_ready_seconds.labels(pool, _check(kind, CLONE_KINDS, "clone kind")).observe(seconds)

    def record_clone_fault(self, pool: str, kind: str, fault: str) -> None:
        self.clone_faults.labels(pool, _check(kind, CLONE_KINDS, "clone kind"), fault).inc()

    def record_fallback(self, pool: str, from_kind: str, to_kind: str, reason: str) -> None:
        _check(from_kind, CLONE_KINDS, "from_kind")
        _check(to_kind, CLONE_KINDS, "to_kind")
        self.fallbacks.labels(pool, from_kind, to_kind, reason).inc()

    def observe_task(self, method: str, seconds: float, fault: str | None = None) -> None:
        """One finished vSphere task; `fault` is the fault's type name when it failed."""
        self.vsphere_task_seconds.labels(method).observe(seconds)
        if fault:
            self.vsphere_task_faults.labels(method, fault).inc()

    def record_policy_decision(self, pool: str, direction: str, reason: ReasonCode) -> None:
        self.policy_decisions.labels(pool, direction, reason).inc()

    def observe_budget_wait(self, scope: str, seconds: float) -> None:
        """`scope` may be a full scope (`host:esx-01`); only its class becomes a label."""
        self.budget_wait_seconds.labels(scope_class(scope)).observe(seconds)

    @contextmanager
    def budget_slot(self, scope: str) -> Iterator[None]:
        """Count an operation in `forkscale_budget_in_flight{scope=...}` while the block runs."""
        scope_class(scope)
        g = self.budget_in_flight.labels(scope)
        g.inc()
        try:
            yield
        finally:
            g.dec()

    def set_up(self, up: bool) -> None:
        self.up.set(1 if up else 0)

    # --- exposition -------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (0.0.4)."""
        return generate_latest(self.registry)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) of `/metrics` for an Accept header; same series as `registry`.

        The fleet families come from a rendering cached per sample and format, so a scrape only
        formats the event metrics (and the inventory age) itself.
        """
        encoder, content_type = choose_encoder(accept)
        fleet = self._fleet.rendered(content_type, encoder)
        rest = encoder(_Families(m for m in self.registry.collect() if m.name not in _STATIC_FLEET))
        if rest.endswith(_OM_EOF):
            return rest[: -len(_OM_EOF)] + fleet + _OM_EOF, content_type
        return rest + fleet, content_type

    def prerender(self) -> None:
        """Render the current fleet sample in every format scraped so far (before the first scrape:
        OpenMetrics 1.0.0, what Prometheus asks for), so the next scrape finds it ready. Call after
        `set_fleet`."""
        formats = dict(self._fleet.formats)
        if not formats:
            encoder, content_type = choose_encoder("application/openmetrics-text;version=1.0.0")
            formats[content_type] = encoder
        for content_type, encoder in formats.items():
            self._fleet.rendered(content_type, encoder)


def metrics_handler(telemetry: Telemetry) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for `/metrics` (negotiates OpenMetrics, gzips when asked)."""

    async def handle(request: web.Request) -> web.Response:
        body, content_type = telemetry.exposition(request.headers.get("Accept", ""))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    return handle


def metrics_app(telemetry: Telemetry) -> web.Application:
    """A tiny application serving only `GET /metrics`."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(telemetry))
    return app
