"""The fleet sample (plain data, filled from one inventory read) and the series built from it.

`Telemetry.set_fleet` builds the complete new set of series and swaps it in with one reference
assignment: a scrape sees either the whole previous sample or the whole new one.
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily, Metric

from forkscale.observe.catalog import CHAIN_ROLES, CLONE_KINDS, IMAGE_ROLES, METRICS, SPECS, check_label
from forkscale.observe.gzipjoin import Deflated, part


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


@dataclass(frozen=True, slots=True)
class ImageState:
    """A pool's image generations and its open operation's progress (forkscale/ledger/images.py)."""

    pool: str
    clones: dict[str, int]
    """Image generation (as text; `unknown` for rows older than image histories) -> live clones."""
    generations: dict[str, int]
    """`active` / `target` -> generation."""
    operation: tuple[str, dict[str, int]] | None = None
    """(kind, step state -> count) of the pool's open operation."""


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
    images: list[ImageState] = field(default_factory=list)
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
        spec = SPECS[name]
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
        check_label(c.kind, CLONE_KINDS, "clone kind")
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
        check_label(ch.role, CHAIN_ROLES, "chain role")
        if ch.depth < 0:
            raise ValueError(f"chain depth of {ch.vm}/{ch.disk} is negative: {ch.depth}")
        b.add("forkscale_delta_chain_depth", (ch.vm, ch.disk, ch.role), ch.depth)
    for d in sample.deltas:
        check_label(d.role, CHAIN_ROLES, "delta disk role")
        b.add("forkscale_delta_disk_bytes", (d.vm, d.role), d.bytes)
    for s in sample.sources:
        b.add("forkscale_source_frozen", (s.pool, s.source, s.host), 1.0 if s.frozen else 0.0)
    for img in sample.images:
        for generation, n in sorted(img.clones.items()):
            b.add("forkscale_pool_image_clones", (img.pool, generation), n)
        for role, generation_number in sorted(img.generations.items()):
            check_label(role, IMAGE_ROLES, "image role")
            b.add("forkscale_pool_image_generation", (img.pool, role), generation_number)
        if img.operation is not None:
            kind, steps = img.operation
            for state, n in sorted(steps.items()):
                b.add("forkscale_operation_steps", (img.pool, kind, state), n)
    return b.families()


_AGE = "forkscale_inventory_age_seconds"
STATIC_FLEET: Final[frozenset[str]] = frozenset(m.name for m in METRICS if m.fleet and m.name != _AGE)
OM_EOF = b"# EOF\n"
Encoder = Callable[[Any], bytes]


class Families:
    """All `generate_latest` needs of a registry: `collect()` over given metric families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _render(families: dict[str, GaugeMetricFamily], cache: dict[str, tuple[bytes, Deflated]], content_type: str,
            encoder: Encoder) -> None:
    body = encoder(Families(families[m.name] for m in METRICS if m.name in STATIC_FLEET))
    body = body[: -len(OM_EOF)] if body.endswith(OM_EOF) else body
    cache[content_type] = (body, part(body))  # deflated once per sample, not per scrape


class FleetCollector:
    """Serves the last applied fleet sample. The swap in `apply` is a single assignment.

    The state also carries the sample's exposition, rendered at most once per format (content
    type): at 5,000 clones formatting the fleet is most of a scrape's cost.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._state: tuple[dict[str, GaugeMetricFamily], float | None, dict[str, tuple[bytes, Deflated]]] = (
            _build_fleet(FleetSample()), None, {})
        self.formats: dict[str, Encoder] = {}
        """Content type -> encoder of every format scraped so far (what `prerender` warms)."""

    def apply(self, sample: FleetSample) -> None:
        """Swap in `sample`, already formatted (and gzipped) in every format scraped so far: a
        scrape never finds a sample it has to format itself (seconds at 10,000 clones)."""
        families = _build_fleet(sample)  # may raise; the old state stays in place then
        cache: dict[str, tuple[bytes, Deflated]] = {}
        for content_type, encoder in list(self.formats.items()):
            _render(families, cache, content_type, encoder)
        self._state = (families, sample.taken_at, cache)

    def rendered(self, content_type: str, encoder: Encoder) -> tuple[bytes, Deflated]:
        """The sample's families except the age, in one format (no OpenMetrics `# EOF`), and the
        same deflated (`gzipjoin`)."""
        families, _, cache = self._state
        if content_type not in cache:
            _render(families, cache, content_type, encoder)
            self.formats.setdefault(content_type, encoder)
        return cache[content_type]

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
