"""ContainerView and ListView of the twin: the object lists a ViewManager makes for a session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim

from .inventory import Entity
from .mo import MO

if TYPE_CHECKING:
    from .world import World


class ContainerView(MO):
    kind = vim.view.ContainerView

    def __init__(self, world: World, moid: str, container: Entity, types: list[Any], recursive: bool) -> None:
        super().__init__(world, moid)
        self.container = container
        self.types = tuple(types)
        self.recursive = recursive
        self._cache: tuple[int, list[Any]] | None = None

    def p_container(self) -> Any:
        return self.container.ref

    def p_type(self) -> list[str]:
        return [VmomiSupport.GetWsdlName(t) for t in self.types]

    def p_recursive(self) -> bool:
        return self.recursive

    def p_view(self) -> list[Any]:
        if self._cache and self._cache[0] == self.world.structure:
            return self._cache[1]
        out: list[Any] = []
        seen: set[str] = set()
        stack = list(reversed(self.container.children()))
        while stack:
            node = stack.pop()
            if node.moid in seen or not node.alive:
                continue
            seen.add(node.moid)
            if not self.types or isinstance(node.ref, self.types):
                out.append(node.ref)
            if self.recursive:
                stack.extend(reversed(node.children()))
        self._cache = (self.world.structure, out)
        return out


class ListView(MO):
    kind = vim.view.ListView

    def __init__(self, world: World, moid: str, refs: list[Any]) -> None:
        super().__init__(world, moid)
        self.refs = list(refs)

    def p_view(self) -> list[Any]:
        return [r for r in self.refs if r._moId in self.world.objects]
