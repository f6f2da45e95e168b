"""PropertyCollector and PropertyFilter for the twin.

Selection follows the vSphere rules (ObjectSpec.skip, TraversalSpec by type and path, named
SelectionSpecs, cycles cut); properties are read as forkscale.sim.properties says. Updates are
diffs against what each filter last reported, driven by the world's change log so a wait costs
what changed, not the size of the inventory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl
from pyVmomi.Differ import Differ

from .mo import MO
from .properties import PC, content, prop_type, read_path, read_props, split_path
from .views import ContainerView

if TYPE_CHECKING:
    from .world import World
_differ = Differ(looseMatch=False, ignoreArrayOrder=False)


def equal(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, (VmomiSupport.DataObject, list)) or isinstance(b, (VmomiSupport.DataObject, list)):
        try:
            return bool(_differ.DiffAnyObjects(a, b))
        except Exception:
            return False
    return bool(a == b)


def _matches(mo: MO, typ: Any) -> bool:
    return isinstance(mo.ref, typ)


Resolve = Callable[[Any], MO]


def select(world: World, spec: Any, resolve: Resolve | None = None, *, strict: bool = False) -> list[MO]:
    """The objects a FilterSpec selects, in traversal order, each once.

    `resolve` finds an objectSet's starting object (the caller's session's own objects too).
    With `strict`, a starting object that does not exist is ManagedObjectNotFound unless the
    spec says `reportMissingObjectsInResults` (then it is left out), as vCenter answers
    RetrievePropertiesEx and CreateFilter; objects reached by traversal are never missing.
    """
    named: dict[str, Any] = {}
    for ospec in spec.objectSet:
        _collect_names(ospec.selectSet, named)
    result: dict[str, MO] = {}
    for ospec in spec.objectSet:
        try:
            start = (resolve or world.lookup)(ospec.obj)
        except vmodl.fault.ManagedObjectNotFound:
            if strict and not spec.reportMissingObjectsInResults:
                raise
            continue
        if not start.alive:
            if strict and not spec.reportMissingObjectsInResults:
                raise vmodl.fault.ManagedObjectNotFound(msg=f"The object '{start.moid}' has already been deleted "
                                                        "or has not been completely created", obj=ospec.obj)
            continue
        if not ospec.skip:
            result.setdefault(start.moid, start)
        _traverse(world, start, ospec.selectSet, named, result, set())
    return list(result.values())


def _collect_names(specs: list[Any], named: dict[str, Any]) -> None:
    for s in specs or []:
        if isinstance(s, PC.TraversalSpec):
            if s.name:
                named[s.name] = s
            _collect_names(s.selectSet, named)


def _traverse(world: World, mo: MO, specs: list[Any], named: dict[str, Any], result: dict[str, MO],
              visited: set[tuple[str, str | int]]) -> None:
    for s in specs or []:
        if not isinstance(s, PC.TraversalSpec):
            s = named.get(s.name)
            if s is None:
                continue
        if not _matches(mo, s.type):
            continue
        mark = (mo.moid, s.name or id(s))
        if mark in visited:
            continue
        visited.add(mark)
        try:
            val, _ = read_path(mo, s.path)
        except vmodl.query.InvalidProperty:
            continue
        refs = val if isinstance(val, list) else [val] if val is not None else []
        for ref in refs:
            if not isinstance(ref, VmomiSupport.ManagedObject):
                continue
            child = world.objects.get(ref._moId)
            if child is None:
                continue
            if not s.skip:
                result.setdefault(child.moid, child)
            _traverse(world, child, s.selectSet, named, result, visited)


def paths_for(mo: MO, prop_specs: list[Any]) -> list[str] | None:
    """The property paths a filter wants for this object; None if no PropertySpec matches it."""
    paths: list[str] = []
    matched = False
    for ps in prop_specs:
        if not _matches(mo, ps.type):
            continue
        matched = True
        if ps.all:
            paths.extend(p.name for p in type(mo.ref)._GetPropertyList())
        paths.extend(ps.pathSet or [])
    if not matched:
        return None
    return list(dict.fromkeys(paths))


def retrieve(world: World, specs: list[Any], resolve: Resolve | None = None) -> list[Any]:
    """RetrievePropertiesEx: the contents of every object the specs select (ManagedObjectNotFound
    for a starting object that is gone, unless the spec asks for missing objects to be left out)."""
    out: list[Any] = []
    seen: set[str] = set()
    for spec in specs:
        for mo in select(world, spec, resolve, strict=True):
            paths = paths_for(mo, spec.propSet)
            if paths is None or mo.moid in seen:
                continue
            seen.add(mo.moid)
            out.append(content(mo, paths))
    return out


class Filter(MO):
    """What one filter reported, and how to find what changed since: its selection is followed
    incrementally (a ContainerView's arrivals and departures, or recentTask when the task list
    changed), its objects' changes through the world's change log, and objects left over by a
    truncated answer are kept for the next one."""

    kind = PC.Filter
    session_scoped = True

    def __init__(self, world: World, moid: str, collector: Collector, spec: Any, partial: bool,
                 resolve: Resolve | None = None) -> None:
        super().__init__(world, moid)
        self.resolve = resolve
        self.collector = collector
        self.spec = spec
        self.partial = partial
        self.reported: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, Any] = {}
        self.seen_version: dict[str, int] = {}
        self.objects: dict[str, MO] = {}
        self.pending: set[str] = set()  # selected or changed, not reported yet (a truncated answer)
        self.log_pos = 0
        self.view, self.tasks_only = _shape(world, spec)
        self.structure_seen = -1
        self.followers: set[str] = set()  # selected objects whose properties follow the structure (views)
        self.selected_at = -1  # world.structure (or .tasklist) the selection reflects
        self.view_at = (-1, 0)  # (epoch, change) of the view the selection reflects

    def p_spec(self) -> Any:
        return self.spec

    def p_partialUpdates(self) -> bool:  # noqa: N802
        return self.partial

    def validate(self) -> None:
        select(self.world, self.spec, self.resolve, strict=True)  # ManagedObjectNotFound for a missing object
        for ps in self.spec.propSet:
            for path in ps.pathSet or []:
                first = split_path(path)[0][0]
                if prop_type(ps.type, first) is None:
                    raise vmodl.query.InvalidProperty(name=path, msg=f"'{first}' is not a property of {ps.type.__name__}")

    def reset(self) -> None:
        self.reported.clear()
        self.refs.clear()
        self.seen_version.clear()
        self.objects = {}
        self.pending.clear()
        self.selected_at = -1
        self.view_at = (-1, 0)
        self.followers = set()

    def _membership(self) -> set[str]:
        """Bring the selection up to date; the moids that joined or left it."""
        world = self.world
        view = self.view
        if view is not None and view.alive:
            view.sync()
            changes = view.changes_since(*self.view_at) if self.view_at[0] >= 0 else None
            self.view_at = (view.epoch, view.seq)
            if changes is not None:
                for moid, joined in changes:
                    mo = world.objects.get(moid)
                    if joined and mo is not None:
                        self.objects[moid] = mo
                        if mo.follows_structure:
                            self.followers.add(moid)
                    else:
                        self.objects.pop(moid, None)
                        self.followers.discard(moid)
                return {moid for moid, _ in changes}
            fresh = {moid: world.objects[moid] for moid in view.members if moid in world.objects}
        else:
            key = world.tasklist if self.tasks_only else world.structure
            if key == self.selected_at and view is None:
                return set()
            self.selected_at = key
            fresh = {} if view is not None else {m.moid: m for m in select(world, self.spec, self.resolve)}
        changed = set(fresh).symmetric_difference(self.objects)
        self.objects = fresh
        self.followers = {moid for moid, mo in fresh.items() if mo.follows_structure}
        return changed

    def updates(self, limit: int | None) -> tuple[list[Any], bool]:
        """Object updates since the last report; (updates, truncated)."""
        world = self.world
        restructured = self.structure_seen != world.structure  # views' own properties follow it
        self.structure_seen = world.structure
        candidates = self.pending | self._membership() | self._dirty()
        if restructured:
            candidates |= self.followers
        self.log_pos = world.seq
        self.pending = set()
        out: list[Any] = []
        ordered = sorted(candidates, key=_moid_order)
        for i, moid in enumerate(ordered):
            if limit is not None and len(out) >= limit:
                self.pending = set(ordered[i:])
                return out, True
            update = self._update(moid, restructured)
            if update is not None:
                out.append(update)
        return out, False

    def _update(self, moid: str, restructured: bool = False) -> Any:
        mo = self.objects.get(moid)
        before = self.reported.get(moid)
        if mo is None or not mo.alive:
            if before is None:
                return None
            del self.reported[moid]
            self.seen_version.pop(moid, None)
            return _data(PC.ObjectUpdate, kind="leave", obj=self.refs.pop(moid))
        if (before is not None and self.seen_version.get(moid) == mo.version
                and not (restructured and mo.follows_structure)):
            return None
        paths = paths_for(mo, self.spec.propSet)
        if paths is None:
            return None
        values, missing = read_props(mo, paths, strict=False)
        self.seen_version[moid] = mo.version
        self.reported[moid] = values
        if before is None:
            self.refs[moid] = mo.ref
            return _data(PC.ObjectUpdate, kind="enter", obj=mo.ref, missingSet=_missing(missing), changeSet=_ARRAY_CHANGE(
                [_data(PC.Change, name=k, op="assign", val=v) for k, v in values.items()]))
        changes = [_data(PC.Change, name=k, op="assign", val=v) for k, v in values.items()
                   if k not in before or not equal(before[k], v)]
        changes += [_data(PC.Change, name=k, op="assign") for k in before if k not in values]
        if not changes:
            return None
        return _data(PC.ObjectUpdate, kind="modify", obj=mo.ref, changeSet=_ARRAY_CHANGE(changes),
                     missingSet=_missing(missing))

    def _dirty(self) -> set[str]:
        log = self.world.log
        if not log or log[0][0] > self.log_pos + 1:
            return set(self.objects)
        dirty: set[str] = set()
        for seq, moid in reversed(log):
            if seq <= self.log_pos:
                break
            if moid in self.objects:
                dirty.add(moid)
        return dirty


_DEFAULTS: dict[type, dict[str, Any]] = {}
_ARRAY_CHANGE = VmomiSupport.GetVmodlType("vmodl.query.PropertyCollector.Change[]")
_ARRAY_MISSING = VmomiSupport.GetVmodlType("vmodl.query.PropertyCollector.MissingProperty[]")


def _missing(missing: list[Any]) -> Any:
    return _ARRAY_MISSING(missing)


def _data(cls: Any, **values: Any) -> Any:
    """`cls(**values)` without pyVmomi's per-field type check: an update is a dozen of these per
    object and 10,000 objects to a first report. Only for values already typed (`read_props`)."""
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        proto = cls()
        defaults = _DEFAULTS[cls] = {p.name: getattr(proto, p.name) for p in cls._GetPropertyList()}
    obj = cls.__new__(cls)
    for name, default in defaults.items():
        value = values.get(name, default)
        if isinstance(value, list) and value is default:
            value = type(default)()  # never share a default list between objects
        object.__setattr__(obj, name, value)
    return obj


def _shape(world: World, spec: Any) -> tuple[ContainerView | None, bool]:
    """(the ContainerView a filter lists, whether it lists recentTask): the two selections followed
    incrementally. Any other spec is selected again whenever the world's structure changes."""
    sets = spec.objectSet or []
    if len(sets) != 1 or not sets[0].skip or len(sets[0].selectSet or []) != 1:
        return None, False
    step = sets[0].selectSet[0]
    if not isinstance(step, PC.TraversalSpec) or step.selectSet or step.skip:
        return None, False
    start = world.objects.get(sets[0].obj._moId)
    if isinstance(start, ContainerView) and step.path == "view" and issubclass(vim.view.ContainerView, step.type):
        return start, False
    if start is not None and start is world.tasks.manager and step.path == "recentTask":
        return None, True
    return None, False


def _moid_order(moid: str) -> tuple[str, int]:
    prefix, _, num = moid.rpartition("-")
    return (prefix, int(num)) if num.isdigit() else (moid, 0)


class Collector(MO):
    kind = PC
    session_scoped = True

    def __init__(self, world: World, moid: str, session: Any) -> None:
        super().__init__(world, moid)
        self.session = session
        self.filters: dict[str, Filter] = {}
        self.data_version = 0  # not `version`: MO.version is the world's change counter for this object
        self.pages: dict[str, tuple[list[Any], int]] = {}  # token -> (objects left, page size)
        self.waiting = False
        self.cancel = asyncio.Event()

    def p_filter(self) -> list[Any]:
        return [f.ref for f in self.filters.values()]

    def page(self, objects: list[Any], max_objects: int | None) -> Any:
        if not objects:
            return None
        if not max_objects or len(objects) <= max_objects:
            return PC.RetrieveResult(objects=objects)
        token = f"{self.moid}-{time.monotonic_ns()}"
        self.pages[token] = (objects[max_objects:], max_objects)
        return PC.RetrieveResult(objects=objects[:max_objects], token=token)

    def continue_page(self, token: str, max_objects: int | None) -> Any:
        left = self.pages.pop(token, None)
        if left is None:
            raise vmodl.fault.InvalidArgument(invalidProperty="token", msg=f"unknown or expired token {token}")
        rest, size = left
        page = self.page(rest, max_objects or size)
        return page

    async def wait(self, version: str | None, max_wait: float | None, max_updates: int | None) -> Any:
        if self.waiting:
            # govmomi's rule, and vCenter's: one outstanding wait per collector.
            raise vmodl.fault.NotSupported(msg="a WaitForUpdates call is already in progress on this collector")
        self.waiting = True
        self.cancel.clear()
        try:
            if not version:
                for f in self.filters.values():
                    f.reset()
            elif version != str(self.data_version):
                raise vmodl.query.InvalidCollectorVersion(
                    msg=f"version {version!r} is not the collector's current data version")
            deadline = None if max_wait is None else time.monotonic() + max_wait
            while True:
                changed = self.world.changed()
                self.world.pin_time()
                try:
                    update = self._collect(max_updates)
                finally:
                    self.world.unpin_time()
                if update is not None:
                    return update
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                waiter = asyncio.ensure_future(changed.wait())
                canceller = asyncio.ensure_future(self.cancel.wait())
                try:
                    done, _ = await asyncio.wait({waiter, canceller}, timeout=remaining,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    canceller.cancel()
                if canceller in done:
                    raise vmodl.fault.RequestCanceled(msg="WaitForUpdates canceled")
        finally:
            self.waiting = False

    def _collect(self, max_updates: int | None) -> Any:
        sets = []
        truncated = False
        budget = max_updates
        for f in list(self.filters.values()):
            ups, trunc = f.updates(budget)
            truncated = truncated or trunc
            if ups:
                sets.append(PC.FilterUpdate(filter=f.ref, objectSet=ups))
                if budget is not None:
                    budget = max(0, budget - len(ups))
        if not sets:
            return None
        self.data_version += 1
        return PC.UpdateSet(version=str(self.data_version), filterSet=sets, truncated=truncated)
