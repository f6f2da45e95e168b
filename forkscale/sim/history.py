"""History collectors (HistoryCollector, the base of Event- and TaskHistoryCollector) and the
journals they page through.

A journal keeps records under increasing integer keys, oldest dropped past its size. A collector
is a scrollable view over the records its filter matches, oldest to newest: its cursor sits
between two keys. `RewindCollector` (the position a new collector starts at) puts it before the
oldest record, `ResetCollector` just before the "viewable latest page" (the newest `page size`
matching records, the `latestPage` property); `ReadNext*` returns records after the cursor,
oldest first, and moves past them; `ReadPrevious*` returns the records just before it, also
oldest first within the page, and moves before them. A read scans from the cursor, so it costs
what it returns (plus the records the filter skips), not the length of the history.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pyVmomi import vim, vmodl

from .dispatch import Ctx, method
from .mo import MO

if TYPE_CHECKING:
    from .world import World

T = TypeVar("T")
PAGE_DEFAULT, PAGE_MAX = 10, 1000
MAX_COLLECTORS = 32  # per session and kind, vCenter's default (EventManager/TaskManager.maxCollector)


class Journal(Generic[T]):
    """Records under increasing keys, oldest dropped once more than `keep` are held."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.keys: list[int] = []
        self.records: list[T] = []

    def __len__(self) -> int:
        return len(self.records)

    def append(self, key: int, record: T) -> None:
        self.keys.append(key)
        self.records.append(record)
        if len(self.records) > self.keep + max(16, self.keep // 8):  # trim in batches, not per record
            drop = len(self.records) - self.keep
            del self.keys[:drop]
            del self.records[:drop]

    def last(self) -> T | None:
        return self.records[-1] if self.records else None

    def forward(self, key: int) -> Iterator[tuple[int, T]]:
        """(key, record) from the first key >= `key` on, oldest first."""
        for i in range(bisect.bisect_left(self.keys, key), len(self.keys)):
            yield self.keys[i], self.records[i]

    def backward(self, key: int) -> Iterator[tuple[int, T]]:
        """(key, record) from the last key < `key` back, newest first."""
        for i in range(bisect.bisect_left(self.keys, key) - 1, -1, -1):
            yield self.keys[i], self.records[i]


def lineage(mo: Any) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(the entity, its immediate parents, everything above it) as moids, for entity filters.

    A VM sits under its folder, its resource pool and its host (as a container view sees it).
    """
    parents: set[str] = set()
    ancestors: set[str] = set()
    starts = [getattr(mo, "parent", None)]
    if hasattr(mo, "pool") and hasattr(mo, "host"):
        starts += [mo.pool, mo.host]
    for start in starts:
        if start is None:
            continue
        parents.add(start.moid)
        node = start
        while node is not None:
            ancestors.add(node.moid)
            node = getattr(node, "parent", None)
    return frozenset({mo.moid}), frozenset(parents), frozenset(ancestors | {mo.moid})


def entity_matches(target: str, recursion: str, direct: frozenset[str], parents: frozenset[str],
                   ancestors: frozenset[str]) -> bool:
    """An entity filter (`self`, `children`, `all`) against a record's lineage."""
    if recursion == "self":
        return target in direct
    if recursion == "children":
        return target in direct or target in parents
    return target in ancestors


class HistoryCollector(MO, Generic[T]):
    """A scrollable view over the records of a journal that a filter matches."""

    session_scoped = True

    def __init__(self, world: World, moid: str, journal: Journal[T], spec: Any) -> None:
        super().__init__(world, moid)
        self.journal = journal
        self.spec = spec
        self.page_size = PAGE_DEFAULT
        self.cursor = 0  # records with a key below it are behind: a new collector is rewound

    def matches(self, record: T) -> bool:
        raise NotImplementedError

    def item(self, record: T) -> Any:
        """What a read returns for a record (an Event, a TaskInfo)."""
        raise NotImplementedError

    def p_filter(self) -> Any:
        return self.spec

    def p_latestPage(self) -> list[Any]:  # noqa: N802
        return [self.item(r) for _, r in self._latest()]

    def _latest(self) -> list[tuple[int, T]]:
        page: list[tuple[int, T]] = []
        for key, record in self.journal.backward(2**63):
            if len(page) >= self.page_size:
                break
            if self.matches(record):
                page.append((key, record))
        page.reverse()
        return page

    def read_next(self, count: int) -> list[Any]:
        out: list[tuple[int, T]] = []
        for key, record in self.journal.forward(self.cursor):
            if len(out) >= count:
                break
            if self.matches(record):
                out.append((key, record))
        if out:
            self.cursor = out[-1][0] + 1
        return [self.item(r) for _, r in out]

    def read_previous(self, count: int) -> list[Any]:
        out: list[tuple[int, T]] = []
        for key, record in self.journal.backward(self.cursor):
            if len(out) >= count:
                break
            if self.matches(record):
                out.append((key, record))
        if out:
            self.cursor = out[-1][0]
        out.reverse()
        return [self.item(r) for _, r in out]

    def rewind(self) -> None:
        self.cursor = 0

    def reset(self) -> None:
        page = self._latest()
        if page:
            self.cursor = page[0][0]
        elif self.journal.keys:
            self.cursor = self.journal.keys[-1] + 1

    def set_page_size(self, size: int) -> None:
        self.page_size = size
        self.world.touch(self)


def collector(this: MO) -> HistoryCollector[Any]:
    if not isinstance(this, HistoryCollector):
        raise vmodl.fault.InvalidArgument(msg="not a history collector", invalidProperty="_this")
    return this


def count(n: int) -> int:
    if n <= 0 or n > PAGE_MAX:
        raise vmodl.fault.InvalidArgument(msg=f"maxCount must be within 1..{PAGE_MAX}", invalidProperty="maxCount")
    return n


def open_collector(ctx: Ctx, make: Callable[[str], HistoryCollector[Any]], kind: type, prefix: str) -> Any:
    """Register a new collector of the session (at most MAX_COLLECTORS of one kind)."""
    session = ctx.session
    assert session is not None
    if sum(isinstance(o, kind) for o in session.objects.values()) >= MAX_COLLECTORS:
        raise vim.fault.InvalidState(msg=f"this session already has {MAX_COLLECTORS} {prefix}s; destroy one first")
    world = ctx.twin.world
    c = make(f"session[{session.key}]{world.new_id(prefix)}")
    session.objects[c.moid] = c
    world.add(c)
    return c.ref


@method("RewindCollector")
def rewind(ctx: Ctx, this: MO) -> None:
    collector(this).rewind()


@method("ResetCollector")
def reset(ctx: Ctx, this: MO) -> None:
    collector(this).reset()


@method("SetCollectorPageSize")
def set_page_size(ctx: Ctx, this: MO, maxCount: int) -> None:  # noqa: N803
    collector(this).set_page_size(PAGE_DEFAULT if maxCount == 0 else count(maxCount))


@method("DestroyCollector")
def destroy(ctx: Ctx, this: MO) -> None:
    c = collector(this)
    if ctx.session is not None:
        ctx.session.objects.pop(c.moid, None)
    ctx.twin.world.remove(c)
