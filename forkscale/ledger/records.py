"""What the ledger holds: clone states and their allowed transitions, clone and source rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forkscale.core.errors import ForkscaleError

STATES = ("planned", "cloning", "customizing", "ready", "claimed", "draining", "destroying", "gone", "failed")


KINDS = ("instant", "linked", "full")


#: States whose clones still hold their name, IP and MAC (everything but gone).
HOLDING_STATES = tuple(s for s in STATES if s != "gone")


#: States of clones that count toward a pool's size.
LIVE_STATES = tuple(s for s in STATES if s not in ("gone", "failed"))


# The normal path, one step at a time. On top of it: `failed` and `destroying` are reachable from
# any state but `gone`; `gone` is terminal. planned->gone abandons a plan before anything was
# sent to vCenter; failed->gone records that nothing is left to remove; claimed->ready is a
# release with on_release: keep; draining->ready/claimed puts back a clone whose drain hook failed
# (or was abandoned at shutdown), as it was before.
_FORWARD: dict[str, frozenset[str]] = {
    "planned": frozenset({"cloning", "gone"}),
    "cloning": frozenset({"customizing"}),
    "customizing": frozenset({"ready"}),
    "ready": frozenset({"claimed", "draining"}),
    "claimed": frozenset({"ready", "draining"}),
    "draining": frozenset({"ready", "claimed"}),
    "destroying": frozenset({"gone"}),
    "failed": frozenset({"gone"}),
    "gone": frozenset(),
}


_ANYWHERE = frozenset({"failed", "destroying"})


#: Fields `transition` and `update` may set (state, identity and timestamps are managed here).
MUTABLE_FIELDS = frozenset({"vm_moref", "kind", "host", "datastore", "fallback_reason", "error", "claimed_by",
                            "instance_uuid", "pending_task"})


NOT_NULL_FIELDS = frozenset({"kind", "host", "datastore"})


SOURCE_FIELDS = frozenset({"vm_name", "vm_moref", "host", "state", "frozen"})


class LedgerError(ForkscaleError):
    """The ledger refused an operation (unknown clone, bad field, unreadable schema)."""


class IllegalTransition(LedgerError):
    def __init__(self, clone_id: int, old: str, new: str) -> None:
        super().__init__(f"clone {clone_id}: {old} -> {new} is not an allowed transition")
        self.clone_id = clone_id
        self.old = old
        self.new = new


class UnknownClone(LedgerError):
    pass


@dataclass(frozen=True)
class CloneRecord:
    id: int
    pool: str
    name: str
    hostname: str
    ip: str
    mac: str
    kind: str
    source: str
    source_generation: int
    host: str
    datastore: str
    port_group: str
    vm_moref: str | None
    state: str
    fallback_reason: str | None
    error: str | None
    claimed_by: str | None
    claimed_at: float | None
    created_at: float
    updated_at: float
    ready_at: float | None
    instance_uuid: str | None = None  # config.instanceUuid, recorded once the VM is seen
    pending_task: str | None = None  # quarantined: the clone task that may still land ("" if unknown)
    replica_id: int | None = None  # a linked clone's replica (forkscale.fleet.replicas), None for other kinds
    image_generation: int | None = None  # the pool image it was made from (forkscale/ledger/images.py)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class SourceRecord:
    id: int
    pool: str
    vm_name: str
    vm_moref: str | None
    host: str
    generation: int
    state: str
    frozen: bool
    created_at: float
    updated_at: float
    image_generation: int | None = None  # the pool image it is a replica of


#: A replica's life: preparing (row written before its clone task) -> ready -> removing (row
#: written before its destroy task) -> gone; failed when it could not be made (its VM, if any, removed).
REPLICA_STATES = ("preparing", "ready", "removing", "gone", "failed")


#: Replicas new linked clones may be bound to (at most one per pool, image and datastore).
USABLE_REPLICA_STATES = ("preparing", "ready")


@dataclass(frozen=True)
class ReplicaRecord:
    """A full clone of a pool's image on one datastore, which that datastore's linked clones fork from."""

    id: int
    pool: str
    image: str  # "<golden VM>@<snapshot>"
    datastore: str
    vm_name: str
    vm_moref: str | None
    state: str
    created_at: float
    updated_at: float
    refs: int = 0  # clones (not gone) bound to it


@dataclass(frozen=True)
class Event:
    id: int
    clone_id: int
    at: float
    what: str
    detail: dict[str, Any]
    #: who wrote it: `<lease holder>#<fencing token>` for an owner's write, a holder id, or None
    writer: str | None = None


def allowed_transition(old: str, new: str) -> bool:
    """Whether a clone may move from `old` to `new` (see the table above)."""
    if old not in STATES or new not in STATES:
        return False
    if old == "gone" or old == new:
        return False
    return new in _ANYWHERE or new in _FORWARD[old]
