"""Managed objects of the twin: an `MO` is a pyVmomi moref plus properties, stored or computed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pyVmomi import VmomiSupport

if TYPE_CHECKING:
    from .world import World


class MO:
    """A managed object: a pyVmomi moref plus properties, stored or computed.

    Subclasses compute a property by defining `p_<name>(self)`; stored ones live in `props`.
    """

    kind: type = VmomiSupport.ManagedObject
    in_tree = False
    """A ManagedEntity of the inventory tree (what a ContainerView lists): its arrival, departure
    and moves are logged apart (`World.tree`), so that tasks, sessions, views and filters coming
    and going never make a view or a filter look at the whole inventory again."""
    # Belongs to one session (collectors, filters, views): other sessions cannot see it, and it
    # ends with its session.
    session_scoped: ClassVar[bool] = False
    # Gone when the twin restarts, as on a restarted vCenter (tasks; every session-scoped object).
    transient: ClassVar[bool] = False
    # Its properties follow the inventory's structure (a view's list) without the object itself
    # being touched: a filter re-reads it whenever the structure changes.
    follows_structure: ClassVar[bool] = False

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


class Manager(MO):
    """A singleton manager object whose properties are stored, or computed by a callback."""

    def __init__(self, world: World, moid: str, kind: type, *,
                 computed: dict[str, Callable[[], Any]] | None = None, **props: Any) -> None:
        self.kind = kind
        self.computed = dict(computed or {})
        super().__init__(world, moid, **props)

    def get(self, name: str) -> Any:
        compute = self.computed.get(name)
        return compute() if compute is not None else super().get(name)


def wsdl_name(ref: Any) -> str:
    return str(VmomiSupport.GetWsdlName(type(ref)))
