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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder, generate_latest

from forkscale.observe.catalog import (
    BUDGET_SCOPE_CLASSES,
    BUDGET_WAIT_BUCKETS,
    CHAIN_ROLES,
    CLONE_KINDS,
    CLONE_LATENCY_BUCKETS,
    DELTA_CHAIN_LIMIT,
    METRICS,
    SPECS,
    MetricSpec,
    check_label,
    scope_class,
)
from forkscale.observe.fleet import (
    OM_EOF,
    STATIC_FLEET,
    ChainDepth,
    CloneCount,
    DeltaDisk,
    Families,
    FleetCollector,
    FleetSample,
    HostMemory,
    ImageState,
    PoolCounts,
    SourceState,
    VmMemory,
    count_clones,
)
from forkscale.observe.gzipjoin import join
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
    "ImageState",
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



class Telemetry:
    """All forkscale metrics on a private `CollectorRegistry`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        s = SPECS

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
        self.vcenter_up: Gauge = gauge("forkscale_vcenter_up")
        self.pool_owned: Gauge = gauge("forkscale_pool_owned")
        self.pool_failovers: Counter = counter("forkscale_pool_failovers_total")
        self.replicas: Gauge = gauge("forkscale_replicas")
        self.fenced_writes: Counter = counter("forkscale_ledger_fenced_writes_total")
        self._fenced_seen = 0
        self._fleet = FleetCollector(clock)
        r.register(self._fleet)

    # --- fleet ------------------------------------------------------------------------------------

    def set_fleet(self, sample: FleetSample) -> None:
        """Replace every fleet gauge with this sample (all or nothing; ValueError leaves the old)."""
        self._fleet.apply(sample)

    # --- events -----------------------------------------------------------------------------------

    def observe_clone_ready(self, pool: str, kind: str, seconds: float) -> None:
        self.clone_ready_seconds.labels(pool, check_label(kind, CLONE_KINDS, "clone kind")).observe(seconds)

    def record_clone_fault(self, pool: str, kind: str, fault: str) -> None:
        self.clone_faults.labels(pool, check_label(kind, CLONE_KINDS, "clone kind"), fault).inc()

    def record_fallback(self, pool: str, from_kind: str, to_kind: str, reason: str) -> None:
        check_label(from_kind, CLONE_KINDS, "from_kind")
        check_label(to_kind, CLONE_KINDS, "to_kind")
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

    def set_vcenter_up(self, vcenter: str, up: bool) -> None:
        self.vcenter_up.labels(vcenter).set(1 if up else 0)

    # --- several controllers on one ledger --------------------------------------------------------

    def set_pool_owned(self, pool: str, owned: bool) -> None:
        self.pool_owned.labels(pool).set(1 if owned else 0)

    def record_failover(self, pool: str) -> None:
        self.pool_failovers.labels(pool).inc()

    def set_replicas(self, count: int) -> None:
        self.replicas.set(count)

    def set_fenced_writes(self, total: int) -> None:
        """The ledger's running count of refused writes (a counter: only what is new is added)."""
        if total > self._fenced_seen:
            self.fenced_writes.inc(total - self._fenced_seen)
            self._fenced_seen = total

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
        fleet, _ = self._fleet.rendered(content_type, encoder)
        rest = encoder(Families(m for m in self.registry.collect() if m.name not in STATIC_FLEET))
        if rest.endswith(OM_EOF):
            return rest[: -len(OM_EOF)] + fleet + OM_EOF, content_type
        return rest + fleet, content_type

    def exposition_gzip(self, accept: str = "") -> tuple[bytes, str]:
        """`exposition`, gzipped, the fleet part compressed once per sample (not per scrape: at
        10,000 clones compressing it took ~40 ms), one gzip member (`gzipjoin`)."""
        encoder, content_type = choose_encoder(accept)
        _, fleet = self._fleet.rendered(content_type, encoder)
        rest = encoder(Families(m for m in self.registry.collect() if m.name not in STATIC_FLEET))
        tail = b""
        if rest.endswith(OM_EOF):
            rest, tail = rest[: -len(OM_EOF)], OM_EOF
        return join(rest, fleet, tail), content_type

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
        accept = request.headers.get("Accept", "")
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body, content_type = telemetry.exposition_gzip(accept)
            return web.Response(body=body, headers={"Content-Type": content_type, "Content-Encoding": "gzip"})
        body, content_type = telemetry.exposition(accept)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handle


def metrics_app(telemetry: Telemetry) -> web.Application:
    """A tiny application serving only `GET /metrics`."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(telemetry))
    return app
