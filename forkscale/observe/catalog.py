"""The metric catalog: every family forkscale exports, with its type, labels and help.

Names, types and labels are a contract with `metrics/` (rules, alerts, dashboard); the tests in
`tests/test_metrics_assets.py` check every name used there against `METRICS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

MetricType = Literal["gauge", "counter", "histogram"]

CLONE_KINDS: Final[tuple[str, ...]] = ("instant", "linked", "full")
CHAIN_ROLES: Final[tuple[str, ...]] = ("source", "clone")
BUDGET_SCOPE_CLASSES: Final[tuple[str, ...]] = ("vcenter", "host", "datastore")
IMAGE_ROLES: Final[tuple[str, ...]] = ("active", "target")
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
    _spec("forkscale_pool_image_clones", "gauge", ("pool", "generation"),
          "Live clones of the pool by the image generation they were made from.", fleet=True),
    _spec("forkscale_pool_image_generation", "gauge", ("pool", "role"),
          "The pool's image generation: the active one (role=active) and one being pushed (role=target).",
          fleet=True),
    _spec("forkscale_operation_steps", "gauge", ("pool", "kind", "state"),
          "Steps of the pool's open day-2 operation (push-image, refresh...) by step state.", fleet=True),
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
    _spec("forkscale_vcenter_up", "gauge", ("vcenter",),
          "1 while the controller reaches the named vCenter (spec `vcenters:`), 0 while it is down."),
    # --- several controllers on one ledger (serve replicas) ----------------------------------------
    _spec("forkscale_pool_owned", "gauge", ("pool",),
          "1 when this controller owns the pool (holds its lease) and acts on it, 0 otherwise."),
    _spec("forkscale_pool_failovers_total", "counter", ("pool",),
          "Pools this controller took over from an owner that died or stopped renewing its lease."),
    _spec("forkscale_replicas", "gauge", (),
          "Live `serve` replicas on this controller's ledger (itself included)."),
    _spec("forkscale_ledger_fenced_writes_total", "counter", (),
          "Ledger writes refused because this controller's lease had been taken over (stale token)."),
)  # fmt: skip

SPECS: Final[dict[str, MetricSpec]] = {m.name: m for m in METRICS}


def scope_class(scope: str) -> str:
    """`host:esx-01` -> `host`; `vcenter` -> `vcenter`. Raises ValueError for anything else."""
    cls = scope.split(":", 1)[0]
    if cls not in BUDGET_SCOPE_CLASSES:
        raise ValueError(f"budget scope {scope!r}: class must be one of {BUDGET_SCOPE_CLASSES}")
    if cls != "vcenter" and (":" not in scope or not scope.split(":", 1)[1]):
        raise ValueError(f"budget scope {scope!r}: expected {cls}:NAME")
    return cls


def check_label(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} {value!r}: must be one of {allowed}")
    return value
