"""The validated spec as frozen dataclasses (what the rest of forkscale reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.core.identity import NetworkAlloc, render_name
from forkscale.policy.config import PolicyConfig
from forkscale.spec.secrets import SecretRef
from forkscale.spec.state import HA, PostgresState
from forkscale.spec.vcenter import VCenter

FREEZE_METHODS = ("none", "ssh", "guestops", "running")


KINDS = ("instant", "linked", "full")


ON_RELEASE = ("refresh", "keep")


DEFAULT_STATE = ".forkscale/state.sqlite"


DEFAULT_FOLDER = "forkscale"


MAX_VM_NAME = 80


# Limits: every number in a spec has a sane range, and a value outside it is refused naming the
# range (a typo like `vcenter: 1e30` must not become an unbounded semaphore).
MAX_POOLS = 256
#: The most clones one pool may hold (count); the address range is the other bound.
MAX_CLONES = 100_000
#: vCenter runs at most 640 provisioning operations at once (vSphere configuration maximums).
MAX_BUDGET_VCENTER = 640
MAX_BUDGET_HOST = 256
MAX_BUDGET_DATASTORE = 640
MIN_RATE_PER_S = 0.01
MAX_RATE_PER_S = 10_000.0
#: Guest-ready and drain timeouts: at most a day.
MAX_TIMEOUT_S = 86_400.0
MAX_GUESTINFO_KEYS = 256
MAX_GUESTINFO_VALUE = 64 * 1024


@dataclass(frozen=True)
class SshConfig:
    """How to reach a source guest over SSH to freeze it."""

    host: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path | None = None
    insecure_host_key: bool = False
    guest_script: str = "/usr/local/sbin/forkscale-guest"  # run as `<script> prepare && <script> freeze`


@dataclass(frozen=True)
class GuestOps:
    """Guest-operations credentials (VMware Tools StartProgramInGuest) for the freeze."""

    user: str
    secret: SecretRef

    def password(self) -> str:
        return self.secret.read()


@dataclass(frozen=True)
class Upload:
    """A file copied into the guest before a step runs."""

    src: Path  # on the controller
    dest: str  # absolute path in the guest
    mode: int  # permission bits in the guest


@dataclass(frozen=True)
class Step:
    """A rehearsal step or check: a command run by `/bin/sh` in the guest, with a timeout."""

    name: str
    run: str  # never logged or put in a report: it may carry tokens
    timeout_s: float
    upload: tuple[Upload, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Network(NetworkAlloc):
    """A pool's network: the address plan (NetworkAlloc) plus where and how NICs connect."""

    port_group: str
    isolated: bool = False
    disconnect: bool = False
    range_given: bool = False  # whether `range` came from the spec (only changes messages)


@dataclass(frozen=True)
class Placement:
    hosts: tuple[str, ...] = ()  # empty: every host that has a source of this pool
    datastores: tuple[str, ...] = ()  # empty: the source's datastore
    folder: str = DEFAULT_FOLDER
    resource_pool: str | None = None


@dataclass(frozen=True)
class Budgets:
    """Concurrency and rate limits; defaults are well under vCenter's and ESXi's own limits."""

    vcenter: int = 32
    per_host: int = 8
    per_datastore: int = 16
    rate_per_s: float = 20.0


DEFAULT_BUDGETS = Budgets()


#: Delta-chain depth at which a per-host source is rotated; vSphere alarms above ~100 (KB 67186)
#: and refuses a 256th level, so the default leaves a wide margin.
DEFAULT_ROTATE_DEPTH = 32


MAX_ROTATE_DEPTH = 200


@dataclass(frozen=True)
class SourceSettings:
    """Per-host frozen sources (`forkscale prepare`): when to replace one with a fresh replica."""

    rotate_depth: int = DEFAULT_ROTATE_DEPTH


@dataclass(frozen=True)
class GuestReady:
    timeout_s: float = 300.0
    required: bool = True


@dataclass(frozen=True)
class DrainSsh:
    """SSH into the clone itself (at its allocated IP) to run the drain command.

    `host` replaces the clone's IP (a bastion that drains by name, or a test's loopback sshd);
    `insecure_host_key` is for clones of one source, which share its host key while their IPs
    are reused across generations (forkscale.remote.ssh logs a warning on every such connection).
    """

    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path | None = None
    port: int = 22
    host: str | None = None
    insecure_host_key: bool = False


@dataclass(frozen=True)
class Drain:
    command: str
    timeout_s: float = 300.0
    ssh: DrainSsh | None = None


@dataclass(frozen=True)
class Rebalance:
    """`forkscale rebalance` (and `serve` with `auto`): spread a pool's clones over placement.datastores in
    proportion to their free space, none filled past `max_used_pct`, at most `max_concurrent` moves at once."""

    auto: bool = False
    threshold: float = 0.10  # serve rebalances when a datastore is this far (a fraction of the pool) off its share
    max_used_pct: float = 80.0
    max_concurrent: int = 4


@dataclass(frozen=True)
class KindPolicy:
    """When `serve` promotes linked clones to full ones in place (PromoteDisks_Task)."""

    linked_max_age_s: float | None = None  # promote a linked clone older than this
    promote_on_claim: bool = False  # promote a linked clone when it is claimed (its user keeps it)


@dataclass(frozen=True)
class Share:
    """A count, or a percentage of the pool's count (`rollout.max_unavailable: 25%`)."""

    value: int
    percent: bool = False

    def of(self, count: int, *, minimum: int = 0) -> int:
        """The number this share is of a pool of `count` clones (percentages round down)."""
        n = count * self.value // 100 if self.percent else self.value
        return max(minimum, n)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


CLAIMED_POLICIES = ("on-release", "force")


@dataclass(frozen=True)
class Rollout:
    """How clones are replaced in batches (push image, refresh, and the other day-2 operations)."""

    max_unavailable: Share = Share(1)  # clones out of service at once: ready + claimed >= count - this
    batch: int | None = None  # steps per batch (default: max_unavailable)
    max_failure: Share = Share(0)  # failed replacements per batch above this pause the rollout
    claimed: str = "on-release"  # a claimed clone: replaced when released, or after force_after_s
    force_after_s: float = 3600.0
    keep_previous_s: float = 86400.0  # the previous image's sources are kept this long (rollback)


IDENTITY_POLICIES = ("same", "new")


@dataclass(frozen=True)
class Refresh:
    """When a clone is replaced by a fresh one from the pool's current image."""

    max_uses: int | None = None  # after this many claims (the CI-runner pattern)
    max_age_s: float | None = None  # no clone older than this
    identity: str = "same"  # the replacement keeps name, IP, MAC and hostname ("new": fresh ones)


USER_DISK_MODES = ("independent_persistent",)


@dataclass(frozen=True)
class UserDiskSpec:
    """A persistent disk per clone identity, kept across refresh and push image."""

    size_gb: int
    datastore: str | None = None  # default: the clone's datastore
    mode: str = "independent_persistent"
    keep: bool = False  # keep the file when its identity leaves the pool for good


def default_name_pattern(pool: str) -> str:
    return f"{pool}-{{index:03d}}"


@dataclass(frozen=True)
class Pool:
    name: str
    source: str
    network: Network
    count: int | None = None
    snapshot: str | None = None
    freeze: str = "none"
    ssh: SshConfig | None = None
    guestops: GuestOps | None = None
    name_pattern: str = ""
    hostname_pattern: str | None = None
    placement: Placement = field(default_factory=Placement)
    fallback: tuple[str, ...] = KINDS
    budgets: Budgets = DEFAULT_BUDGETS
    guest_ready: GuestReady = field(default_factory=GuestReady)
    guestinfo: dict[str, str] = field(default_factory=dict)
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(strategy="fixed", count=0))
    on_release: str = "refresh"
    drain: Drain | None = None
    sources: SourceSettings = field(default_factory=SourceSettings)
    checks: tuple[Step, ...] = ()  # what `forkscale rehearse --pool` runs in a clone of a new image
    rebalance: Rebalance = field(default_factory=Rebalance)
    kind_policy: KindPolicy = field(default_factory=KindPolicy)
    vcenter: str = ""  # the name of its vCenter in the spec's `vcenters:` (resolved by load_spec)
    rollout: Rollout = field(default_factory=Rollout)
    refresh: Refresh = field(default_factory=Refresh)
    user_disk: UserDiskSpec | None = None
    notify: Drain | None = None  # run in a claimed clone before it is replaced by force (shaped like drain:)

    def __post_init__(self) -> None:
        if not self.name_pattern:
            object.__setattr__(self, "name_pattern", default_name_pattern(self.name))

    def rendered_name(self, index: int) -> str:
        return render_name(self.name_pattern, index, pool=self.name)

    def rendered_hostname(self, index: int) -> str:
        if self.hostname_pattern is None:
            return self.rendered_name(index)
        return render_name(self.hostname_pattern, index, pool=self.name)

    def capacity(self) -> int:
        return self.network.capacity()


#: How long `gone` clones, their events and other history stay in the ledger (`ledger.retention_days`).
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True)
class LedgerSettings:
    """`ledger:` -- history older than `retention_days` moves from the ledger to `archive` (JSON lines)."""

    retention_days: float = DEFAULT_RETENTION_DAYS
    archive: Path | None = None  # None: `<state>.archive.jsonl` next to the ledger

    def archive_for(self, state: Path) -> Path:
        return self.archive if self.archive is not None else state.with_name(state.name + ".archive.jsonl")


DEFAULT_VCENTER = "default"


@dataclass(frozen=True)
class Spec:
    vcenter: VCenter  # the default vCenter (`vcenter:`, else the first of `vcenters:`)
    state: Path | PostgresState  # the ledger: a SQLite file or a PostgreSQL database
    pools: tuple[Pool, ...]
    base_dir: Path
    ha: HA = field(default_factory=HA)
    #: every vCenter by name (`vcenter:` is "default"); each pool names one (`Pool.vcenter`)
    vcenters: dict[str, VCenter] = field(default_factory=dict)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)

    def __post_init__(self) -> None:
        if not self.vcenters:
            object.__setattr__(self, "vcenters", {DEFAULT_VCENTER: self.vcenter})

    def vcenter_of(self, pool: Pool) -> VCenter:
        return self.vcenters[pool.vcenter] if pool.vcenter in self.vcenters else self.vcenter

    def vcenter_name(self, pool: Pool) -> str:
        return pool.vcenter if pool.vcenter in self.vcenters else next(iter(self.vcenters))

    def archive(self, ledger_file: Path | None) -> Path:
        """Where pruned history goes: `ledger.archive`, else next to a SQLite ledger, else (a
        PostgreSQL ledger) `.forkscale/ledger.archive.jsonl` next to the spec."""
        if ledger_file is not None or self.ledger.archive is not None:
            return self.ledger.archive_for(ledger_file or self.base_dir)
        return self.base_dir / ".forkscale" / "ledger.archive.jsonl"

    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        known = ", ".join(p.name for p in self.pools)
        raise SpecError("pools", f"no pool named {name!r} (pools: {known})")
