"""ContainerView and ListView of the twin: the object lists a ViewManager makes for a session.

A ContainerView follows vCenter's containment (CreateContainerView): a Folder contains its
`childEntity`, a Datacenter its four folders, a ComputeResource its hosts and root resource
pool, a ResourcePool (or vApp) its child pools and its VMs, a HostSystem its VMs. With
`recursive`, the walk goes on through each child, and every object appears once. A view's list
follows the inventory as it changes; a ListView holds what its client put in it, less what has
been destroyed since. Views belong to the session that made them and end with it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from . import soap
from .dispatch import Ctx, method
from .inventory import Datacenter, Entity, Host, ResourcePool
from .mo import MO
from .vapp import VirtualApp

if TYPE_CHECKING:
    from .world import World

# What CreateContainerView accepts as a container (a vApp is a ResourcePool).
CONTAINERS = (vim.Folder, vim.Datacenter, vim.ComputeResource, vim.ResourcePool, vim.HostSystem)


def _moid_order(node: Entity) -> tuple[str, int]:
    prefix, _, num = node.moid.rpartition("-")
    return (prefix, int(num)) if num.isdigit() else (node.moid, 0)


_CLASSES: list[tuple[type, str]] = [(Datacenter, "datacenter"), (VirtualApp, "vapp"), (ResourcePool, "pool"),
                                    (Host, "host")]
_KINDS: dict[type, str] = {}  # twin class -> how a view expands it (decided once per class)
_PLAIN: set[type] = set()  # the classes whose contents are their children()


class _Contents:
    """The immediate contents of containers, as a view counts them (one walk's worth of lookups).

    Every VM sits in a folder of its datacenter, and a datacenter lists its VM folder first: once
    a recursive walk has gone through a datacenter, its hosts and pools add no VM it has not seen,
    and are not asked for them (so a view of the root costs what it did before hosts and pools
    contained VMs). Nor are they when the view takes no VMs.
    """

    def __init__(self, world: World, wants_vms: bool) -> None:
        self.world = world
        self.wants_vms = wants_vms
        self.walked: set[str] = set()  # datacenters whose VM folders this walk has gone through
        self._pool_vms: dict[str, list[Entity]] | None = None

    def of(self, node: Entity) -> list[Entity]:
        kind = _KINDS.get(type(node))
        if kind is None:
            kind = _KINDS[type(node)] = next((k for cls, k in _CLASSES if isinstance(node, cls)), "other")
            if kind == "other":
                _PLAIN.add(type(node))
        if kind == "other":
            return node.children()
        if kind == "datacenter":
            self.walked.add(node.moid)
            return node.children()
        if kind == "vapp":  # its VMs are in no folder: the walk always lists them here
            assert isinstance(node, VirtualApp)
            return node.children()
        if kind == "pool":
            assert isinstance(node, ResourcePool)
            return [*node.pools, *self.pool_vms().get(node.moid, [])] if self._vms_of(node) else list(node.pools)
        assert isinstance(node, Host)
        return sorted(node.vms, key=_moid_order) if self._vms_of(node) else []

    def _vms_of(self, node: Entity) -> bool:
        if not self.wants_vms:
            return False
        up: Entity | None = node
        while up is not None and not isinstance(up, Datacenter):
            up = up.parent
        return up is None or up.moid not in self.walked

    def pool_vms(self) -> dict[str, list[Entity]]:
        """VMs by resource pool (templates belong to no pool), built once per walk."""
        if self._pool_vms is None:
            from .vm import VM

            index: dict[str, list[Entity]] = {}
            for vm in self.world.instances(VM):
                if not vm.template:
                    index.setdefault(vm.pool.moid, []).append(vm)
            self._pool_vms = index
        return self._pool_vms


MAX_CHANGES = 100_000


class ContainerView(MO):
    """Kept current from the world's tree log (`World.tree_since`), not walked again after each
    change: a VM arriving, leaving or moving costs O(1) (its folder, host and pool chains are
    checked against the container); anything else that changes the tree walks it again."""

    kind = vim.view.ContainerView
    session_scoped = True
    follows_structure = True

    def __init__(self, world: World, moid: str, container: Entity, types: list[Any], recursive: bool) -> None:
        super().__init__(world, moid)
        self.container = container
        self.types = tuple(types)
        self.recursive = recursive
        self.members: dict[str, Any] = {}  # moid -> ref, in walk (then arrival) order
        self.tree = -1  # the world's tree version `members` reflect
        self.epoch = 0  # bumped on each walk: followers (filters) start over
        self.changes: deque[tuple[int, str, bool]] = deque()  # (change number, moid, joined?)
        self.seq = 0

    def p_container(self) -> Any:
        return self.container.ref

    def p_type(self) -> list[str]:
        return [VmomiSupport.GetWsdlName(t) for t in self.types]

    def p_recursive(self) -> bool:
        return self.recursive

    def p_view(self) -> list[Any]:
        self.sync()
        return list(self.members.values())

    def sync(self) -> None:
        world = self.world
        if self.tree == world.tree:
            return
        ops = world.tree_since(self.tree) if self.tree >= 0 and self.container.alive else None
        if ops is None or len(ops) > max(64, len(self.members)) or not all(self._follows(op, m) for op, m in ops):
            self._recompute()
        else:
            for op, moid in ops:
                mo = world.objects.get(moid)
                was = self.members.pop(moid, None) is not None
                now = op != "remove" and mo is not None and self._holds(mo)
                if now:
                    self.members[moid] = mo.ref  # type: ignore[union-attr]
                if now != was:
                    self._note(moid, now)
        self.tree = world.tree

    def _follows(self, op: str, moid: str) -> bool:
        """Whether this tree change can be followed without a walk: a VM anywhere, or a leaf entity
        (datastore, network...) arriving or leaving; not a container's (its contents come or go)."""
        mo = self.world.objects.get(moid)
        if op == "remove" and mo is None:
            return True
        return mo is not None and (isinstance(mo, _vm_class()) or not isinstance(mo.ref, CONTAINERS))

    def _note(self, moid: str, joined: bool) -> None:
        self.seq += 1
        self.changes.append((self.seq, moid, joined))
        if len(self.changes) > MAX_CHANGES:
            self.changes.popleft()

    def changes_since(self, epoch: int, seq: int) -> list[tuple[str, bool]] | None:
        """(moid, joined) after change `seq` of `epoch`; None when the follower must start over."""
        self.sync()
        if epoch != self.epoch or (self.changes and self.changes[0][0] > seq + 1) or \
                (not self.changes and seq != self.seq):
            return None
        out: list[tuple[str, bool]] = []
        for n, moid, joined in reversed(self.changes):
            if n <= seq:
                break
            out.append((moid, joined))
        out.reverse()
        return out

    def _holds(self, mo: MO) -> bool:
        """Whether the walk would find `mo`: a VM through its folder, its host or its pool
        (templates have none), anything else through its parents."""
        if not mo.alive or (self.types and not isinstance(mo.ref, self.types)):
            return False
        if isinstance(mo, _vm_class()):
            vm: Any = mo
            starts = [vm.parent, vm.host, None if vm.template else vm.pool]
        else:
            starts = [getattr(mo, "parent", None), getattr(mo, "parent_folder", None)]  # a vApp is in both
        seen: set[str] = set()
        while starts:
            node = starts.pop()
            if node is None or node.moid in seen:
                continue
            if node is self.container:
                return True
            seen.add(node.moid)
            if self.recursive:  # up through parents, and a vApp's folder too
                starts += [getattr(node, "parent", None), getattr(node, "parent_folder", None)]
        return False

    def _recompute(self) -> None:
        self.members = {ref._moId: ref for ref in self._walk()} if self.container.alive else {}
        self.epoch += 1
        self.changes.clear()
        self.seq = 0

    def _walk(self) -> list[Any]:
        wants_vms = not self.types or any(issubclass(vim.VirtualMachine, t) for t in self.types)
        contents = _Contents(self.world, wants_vms)
        out: list[Any] = []
        seen: set[str] = {self.container.moid}
        stack = list(reversed(contents.of(self.container)))
        while stack:
            node = stack.pop()
            if node.moid in seen or not node.alive:
                continue
            seen.add(node.moid)
            if not self.types or isinstance(node.ref, self.types):
                out.append(node.ref)
            if self.recursive:
                if type(node) in _PLAIN:  # most nodes (VMs, folders): their children, no lookups
                    stack.extend(reversed(node.children()))
                else:
                    stack.extend(reversed(contents.of(node)))
        return out


def _vm_class() -> type:
    from .vm import VM

    return VM


class ListView(MO):
    kind = vim.view.ListView
    session_scoped = True
    follows_structure = True

    def __init__(self, world: World, moid: str, refs: list[Any]) -> None:
        super().__init__(world, moid)
        self.refs = list(refs)

    def p_view(self) -> list[Any]:
        return [r for r in self.refs if r._moId in self.world.objects]

    def replace(self, refs: list[Any]) -> None:
        self.refs = list(refs)
        self.world.touch(self)


def _session_view(ctx: Ctx, world: World, view: MO) -> Any:
    assert ctx.session is not None
    ctx.session.objects[view.moid] = view
    world.add(view)
    return view.ref


def _types(names: list[Any] | None) -> list[Any]:
    types = []
    for t in names or []:
        try:
            typ = VmomiSupport.GetWsdlType(soap.NAMESPACE, t) if isinstance(t, str) else t
        except KeyError:
            typ = None
        if typ is None or not issubclass(typ, vim.ManagedEntity):
            raise vmodl.fault.InvalidArgument(msg=f"type {t!r} is not a managed entity type", invalidProperty="type")
        types.append(typ)
    return types


def _resolved(ctx: Ctx, refs: list[Any] | None) -> tuple[list[Any], list[Any]]:
    """(found, unresolved) morefs, each found object once, in the order given."""
    found: dict[str, Any] = {}
    missing: list[Any] = []
    for ref in refs or []:
        try:
            mo = ctx.twin.resolve(ref, ctx.session)
        except vmodl.fault.ManagedObjectNotFound:
            missing.append(ref)
            continue
        found.setdefault(mo.moid, mo.ref)
    return list(found.values()), missing


def _list_view(this: MO) -> ListView:
    if not isinstance(this, ListView):
        raise vmodl.fault.InvalidArgument(msg="not a list view", invalidProperty="_this")
    return this


def _view(ctx: Ctx, ref: Any) -> ContainerView | ListView:
    view = ctx.twin.resolve(ref, ctx.session)
    if not isinstance(view, (ContainerView, ListView)):
        raise vmodl.fault.InvalidArgument(msg="view is not a view of this session", invalidProperty="view")
    return view


@method("CreateContainerView")
def create_container_view(ctx: Ctx, this: MO, container: Any, type: list[Any], recursive: bool) -> Any:  # noqa: A002
    world = ctx.twin.world
    root = ctx.twin.resolve(container, ctx.session)
    if not isinstance(root, Entity) or not isinstance(root.ref, CONTAINERS):
        raise vmodl.fault.InvalidArgument(msg="container must be a Folder, Datacenter, ComputeResource, "
                                              "ResourcePool or HostSystem", invalidProperty="container")
    assert ctx.session is not None
    view = ContainerView(world, f"session[{ctx.session.key}]{world.new_id('view')}", root, _types(type),
                         bool(recursive))
    return _session_view(ctx, world, view)


@method("CreateListView")
def create_list_view(ctx: Ctx, this: MO, obj: list[Any] | None = None) -> Any:
    assert ctx.session is not None
    world = ctx.twin.world
    found, _ = _resolved(ctx, obj)
    return _session_view(ctx, world, ListView(world, f"session[{ctx.session.key}]{world.new_id('view')}", found))


@method("CreateListViewFromView")
def create_list_view_from_view(ctx: Ctx, this: MO, view: Any) -> Any:
    assert ctx.session is not None
    world = ctx.twin.world
    source = _view(ctx, view)
    return _session_view(ctx, world, ListView(world, f"session[{ctx.session.key}]{world.new_id('view')}",
                                              source.p_view()))


@method("ModifyListView")
def modify_list_view(ctx: Ctx, this: MO, add: list[Any] | None = None, remove: list[Any] | None = None) -> list[Any]:
    lv = _list_view(this)
    found, missing = _resolved(ctx, add)
    gone = {r._moId for r in remove or []}
    kept = [r for r in lv.refs if r._moId not in gone]
    have = {r._moId for r in kept}
    lv.replace(kept + [r for r in found if r._moId not in have])
    return missing


@method("ResetListView")
def reset_list_view(ctx: Ctx, this: MO, obj: list[Any] | None = None) -> list[Any]:
    lv = _list_view(this)
    found, missing = _resolved(ctx, obj)
    lv.replace(found)
    return missing


@method("ResetListViewFromView")
def reset_list_view_from_view(ctx: Ctx, this: MO, view: Any) -> None:
    _list_view(this).replace(_view(ctx, view).p_view())


@method("DestroyView")
def destroy_view(ctx: Ctx, this: MO) -> None:
    if ctx.session is not None:
        ctx.session.objects.pop(this.moid, None)
    ctx.twin.world.remove(this)


def session_views(session: Any) -> list[Any]:
    """ViewManager.viewList: the views of the calling session."""
    if session is None:
        return []
    return [mo.ref for mo in session.objects.values() if isinstance(mo, (ContainerView, ListView))]
