"""ContainerView and ListView of the twin: the object lists a ViewManager makes for a session."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim

from .inventory import Entity
from .mo import MO

MAX_CHANGES = 100_000

if TYPE_CHECKING:
    from .world import World


class ContainerView(MO):
    """The entities under `container` of `types`, kept current from the world's tree log: an
    entity arriving or leaving costs O(1) (its ancestry is checked), a move recomputes the view."""

    kind = vim.view.ContainerView

    def __init__(self, world: World, moid: str, container: Entity, types: list[Any], recursive: bool) -> None:
        super().__init__(world, moid)
        self.container = container
        self.types = tuple(types)
        self.recursive = recursive
        self.members: dict[str, Any] = {}  # moid -> ref, in traversal (then arrival) order
        self.tree = -1  # the world's tree version `members` reflect
        self.epoch = 0  # bumped on each full recompute: followers start over
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
        ops = world.tree_since(self.tree) if self.tree >= 0 else None
        if ops is None or any(op == "move" for op, _ in ops) or len(ops) > max(64, len(self.members)):
            self._recompute()
        else:
            for op, moid in ops:
                mo = world.objects.get(moid)
                if op == "add" and mo is not None and self._holds(mo):
                    if moid not in self.members:
                        self.members[moid] = mo.ref
                        self._note(moid, True)
                elif op == "remove" and self.members.pop(moid, None) is not None:
                    self._note(moid, False)
        self.tree = world.tree

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
        if not mo.alive or (self.types and not isinstance(mo.ref, self.types)):
            return False
        node = getattr(mo, "parent", None)
        while node is not None:
            if node is self.container:
                return True
            if not self.recursive:
                return False
            node = getattr(node, "parent", None)
        return False

    def _recompute(self) -> None:
        out: dict[str, Any] = {}
        seen: set[str] = set()
        stack = list(reversed(self.container.children()))
        while stack:
            node = stack.pop()
            if node.moid in seen or not node.alive:
                continue
            seen.add(node.moid)
            if not self.types or isinstance(node.ref, self.types):
                out[node.moid] = node.ref
            if self.recursive:
                stack.extend(reversed(node.children()))
        self.members = out
        self.epoch += 1
        self.changes.clear()
        self.seq = 0


class ListView(MO):
    kind = vim.view.ListView

    def __init__(self, world: World, moid: str, refs: list[Any]) -> None:
        super().__init__(world, moid)
        self.refs = list(refs)

    def p_view(self) -> list[Any]:
        return [r for r in self.refs if r._moId in self.world.objects]
