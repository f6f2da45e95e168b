"""The twin's object registry, clock and change log.

Every managed object is an `MO` holding its properties as real pyVmomi data objects. Any change
goes through `World.touch`, which bumps the object's version and appends to a change log; the
property collector reads that log to answer `WaitForUpdatesEx` with exactly what changed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

MAX_LOG = 200_000


class MO:
    """A managed object: a pyVmomi moref plus properties, stored or computed.

    Subclasses compute a property by defining `p_<name>(self)`; stored ones live in `props`.
    """

    kind: type = VmomiSupport.ManagedObject

    def __init__(self, world: World, moid: str, **props: Any) -> None:
        self.world = world
        self.moid = moid
        self.ref = self.kind(moid)
        self.props: dict[str, Any] = props
        self.version = 0
        self.alive = True

    def get(self, name: str) -> Any:
        getter = getattr(self, "p_" + name, None)
        if getter is not None:
            return getter()
        return self.props.get(name)

    def set(self, **props: Any) -> None:
        self.props.update(props)
        self.world.touch(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.moid}>"


class World:
    """Registry of managed objects with a change log and a sim clock.

    Single-threaded: only the twin's event loop touches it.
    """

    def __init__(self, time_scale: float = 1.0, seed: int = 0) -> None:
        import random

        self.objects: dict[str, MO] = {}
        self.index: dict[type, dict[str, MO]] = {}
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self._ids: dict[str, Iterator[int]] = {}
        self.seq = 0
        self.structure = 0  # bumped when objects appear, disappear or move
        self.log: deque[tuple[int, str]] = deque()
        self._changed: asyncio.Event | None = None
        self.started_mono = time.monotonic()
        self.started_wall = time.time()

    # identity -----------------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        counter = self._ids.setdefault(prefix, itertools.count(1))
        return f"{prefix}-{next(counter)}"

    def add(self, mo: MO) -> MO:
        self.objects[mo.moid] = mo
        self.index.setdefault(type(mo.ref), {})[mo.moid] = mo
        self.structure += 1
        self.touch(mo)
        return mo

    def remove(self, mo: MO) -> None:
        mo.alive = False
        self.objects.pop(mo.moid, None)
        self.index.get(type(mo.ref), {}).pop(mo.moid, None)
        self.structure += 1
        self.touch(mo)

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
        return time.time()

    def sim_seconds(self) -> float:
        """Simulated seconds since start: real time divided by the time scale."""
        elapsed = time.monotonic() - self.started_mono
        return elapsed / self.time_scale if self.time_scale > 0 else elapsed

    def latency(self, mean: float, jitter: float = 0.2) -> float:
        """Real seconds a task of `mean` simulated seconds takes (uniform ±jitter)."""
        if self.time_scale <= 0 or mean <= 0:
            return 0.0
        return max(0.0, mean * (1 + self.rng.uniform(-jitter, jitter))) * self.time_scale


def wsdl_name(ref: Any) -> str:
    return str(VmomiSupport.GetWsdlName(type(ref)))


def moref(kind: type, moid: str) -> Any:
    return kind(moid)


ENTITY_KINDS = (vim.Folder, vim.Datacenter, vim.ComputeResource, vim.HostSystem, vim.ResourcePool,
                vim.Datastore, vim.Network, vim.VirtualMachine, vim.DistributedVirtualSwitch)
