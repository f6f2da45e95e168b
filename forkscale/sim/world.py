"""The twin's world: its object registry, clock and change log, and the parts its physics shares.

Every managed object is an `MO` (forkscale.sim.mo) holding its properties as real pyVmomi data
objects. Any change goes through `World.touch`, which bumps the object's version and appends to a
change log; the property collector reads that log to answer `WaitForUpdatesEx` with exactly what
changed. The world also owns what any operation reaches from a bare VM: the latencies and memory
model, the disk files, the MACs in use, the task queue, the injected faults and the clone hooks.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pyVmomi import VmomiSupport, vmodl

from .disks import DiskStore
from .faults import FaultPlan
from .fields import CustomFields
from .files import FileStore
from .memory import MemoryModel
from .mo import MO
from .sandbox import Sandboxes
from .tasks import TaskRunner

if TYPE_CHECKING:
    from .vm import VM

MAX_LOG = 200_000
M = TypeVar("M", bound=MO)
CloneHook = Callable[["VM", "VM"], None]  # (source, clone), run when a clone of a frozen source resumes


@dataclass
class Settings:
    """What a world file sets besides the inventory (see forkscale.sim.builder.DEFAULT_WORLD)."""

    latencies: dict[str, float] = field(default_factory=dict)  # simulated seconds per operation, and "jitter"
    memory: MemoryModel = field(default_factory=MemoryModel)
    guest_credentials: tuple[str, str] = ("root", "vmfork-guest")
    vcenter_limit: int = 640
    host_limit: int = 16
    failure_rates: dict[str, Any] = field(default_factory=dict)


class World:
    """Registry of managed objects with a change log, a sim clock, and the physics' shared parts.

    Single-threaded: only the twin's event loop touches it.
    """

    def __init__(self, time_scale: float = 1.0, seed: int = 0, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.objects: dict[str, MO] = {}
        self.index: dict[type, dict[str, MO]] = {}
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self._ids: dict[str, Iterator[int]] = {}
        self.seq = 0
        self.structure = 0  # bumped when objects appear, disappear or move
        self.log: deque[tuple[int, str]] = deque()
        self.tree = 0  # bumped when an inventory entity appears, disappears or moves (views follow it)
        self.tree_log: deque[tuple[int, str, str]] = deque()  # (tree version, "add" | "remove" | "move", moid)
        self.tasklist = 0  # bumped when TaskManager.recentTask gains or loses a task
        self._changed: asyncio.Event | None = None
        self.started_mono = time.monotonic()
        self.started_wall = time.time()
        self._pinned: tuple[float, float] | None = None  # (wall, sim) while a request is answered
        # the parts operations share
        self.latencies = settings.latencies
        self.memory = settings.memory
        self.guest_credentials = settings.guest_credentials
        self.disks = DiskStore(clock=self.sim_seconds)
        self.files = FileStore()  # what datastores hold besides disks
        self.custom_fields = CustomFields()
        self.macs: dict[str, str | None] = {}  # every MAC in use -> owning VM moid (or None)
        self.clone_hooks: list[CloneHook] = []
        self.tasks = TaskRunner(self, vcenter_limit=settings.vcenter_limit, host_limit=settings.host_limit)
        self.faults = FaultPlan(self, settings.failure_rates)
        self.sandboxes = Sandboxes(self)  # the Linux guests' files and real programs

    # identity -----------------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        counter = self._ids.setdefault(prefix, itertools.count(1))
        return f"{prefix}-{next(counter)}"

    def new_mac(self) -> str:
        """A vCenter-assigned MAC (00:50:56:80-BF range), unique in the world (its owner is set by the caller)."""
        while True:
            a, b, c = 0x80 + self.rng.randrange(0x40), self.rng.randrange(256), self.rng.randrange(256)
            mac = f"00:50:56:{a:02x}:{b:02x}:{c:02x}"
            if mac not in self.macs:
                self.macs[mac] = None
                return mac

    def add(self, mo: M) -> M:
        self.objects[mo.moid] = mo
        self.index.setdefault(type(mo.ref), {})[mo.moid] = mo
        self.structure += 1
        if mo.in_tree:
            self._tree("add", mo)
        self.touch(mo)
        return mo

    def remove(self, mo: MO) -> None:
        mo.alive = False
        self.objects.pop(mo.moid, None)
        self.index.get(type(mo.ref), {}).pop(mo.moid, None)
        self.structure += 1
        if mo.in_tree:
            self._tree("remove", mo)
        self.touch(mo)

    def moved(self, mo: MO) -> None:
        """An entity changed parents (views recompute: its whole subtree may have come or gone)."""
        self.structure += 1
        self._tree("move", mo)

    def _tree(self, op: str, mo: MO) -> None:
        self.tree += 1
        self.tree_log.append((self.tree, op, mo.moid))
        if len(self.tree_log) > MAX_LOG:
            self.tree_log.popleft()

    def tree_since(self, version: int) -> list[tuple[str, str]] | None:
        """Entity arrivals, departures and moves after `version`, oldest first; None when the log
        no longer reaches back that far."""
        log = self.tree_log
        if version == self.tree:
            return []
        if not log or log[0][0] > version + 1:
            return None
        out: list[tuple[str, str]] = []
        for seq, op, moid in reversed(log):
            if seq <= version:
                break
            out.append((op, moid))
        out.reverse()
        return out

    def lookup(self, ref: Any) -> MO:
        """The MO for a moref; ManagedObjectNotFound (as vCenter answers) if it's gone."""
        moid = ref._moId if isinstance(ref, VmomiSupport.ManagedObject) else str(ref)
        mo = self.objects.get(moid)
        if mo is None or (isinstance(ref, VmomiSupport.ManagedObject) and not isinstance(ref, type(mo.ref))
                          and not isinstance(mo.ref, type(ref))):
            raise vmodl.fault.ManagedObjectNotFound(msg=f"The object '{moid}' has already been deleted "
                                                    "or has not been completely created", obj=ref)
        return mo

    def of_kind(self, kind: type) -> list[MO]:
        out: list[MO] = []
        for t, members in self.index.items():
            if issubclass(t, kind):
                out.extend(members.values())
        return out

    def instances(self, cls: type[M]) -> list[M]:
        """The live objects of one twin class (`VM`, `Host`...), found by its vSphere kind."""
        return [mo for mo in self.of_kind(cls.kind) if isinstance(mo, cls)]

    # change tracking ----------------------------------------------------------------------
    def touch(self, mo: MO, structural: bool = False) -> None:
        self.seq += 1
        mo.version = self.seq
        if structural:
            self.structure += 1
        self.log.append((self.seq, mo.moid))
        if len(self.log) > MAX_LOG:
            self.log.popleft()
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def changed(self) -> asyncio.Event:
        """An event set at the next change; waiters re-arm after each wake-up."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    # time -----------------------------------------------------------------------------------
    def now(self) -> float:
        """Wall-clock seconds (UTC epoch) as vCenter reports them."""
        return self._pinned[0] if self._pinned is not None else time.time()

    def sim_seconds(self) -> float:
        """Simulated seconds since start: real time divided by the time scale."""
        if self._pinned is not None:
            return self._pinned[1]
        elapsed = time.monotonic() - self.started_mono
        return elapsed / self.time_scale if self.time_scale > 0 else elapsed

    def pin_time(self) -> None:
        """Hold the clock still while one request is answered (it never yields meanwhile), so every
        value it reads is as of one instant (a datastore's free space in its summary and its info)."""
        self._pinned = None
        self._pinned = (self.now(), self.sim_seconds())

    def unpin_time(self) -> None:
        self._pinned = None

    def latency(self, mean: float, jitter: float = 0.2) -> float:
        """Real seconds a task of `mean` simulated seconds takes (uniform ±jitter)."""
        if self.time_scale <= 0 or mean <= 0:
            return 0.0
        return max(0.0, mean * (1 + self.rng.uniform(-jitter, jitter))) * self.time_scale

    def draw(self, op: str, default: float = 1.0) -> float:
        """Real seconds `op` takes this time: its latency from the world file (`default` if unset)."""
        return self.latency(float(self.latencies.get(op, default)), float(self.latencies.get("jitter", 0.2)))

    def delay(self, op: str, default: float = 1.0) -> float:
        """`draw`, slowed down as injected faults say (`slow` admin action)."""
        return self.draw(op, default) * self.faults.slowdown(op)
