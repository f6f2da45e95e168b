"""EventManager for the twin: events for clone, destroy, power and reconfigure operations.

`record()` is the one hook the operations call. Events keep their entity arguments (names and
morefs) after the entities are gone, as vCenter's do, and remember the inventory ancestors they
had, so an entity filter with recursion `all` on a folder still finds a destroyed VM's removal.
`QueryEvents` answers newest first; an `EventHistoryCollector` pages through the same journal
(forkscale.sim.history has the paging rules).
vSphere has no instant-clone event type: an instant clone is recorded as `VmClonedEvent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from .dispatch import Ctx, method
from .history import HistoryCollector, Journal, count, open_collector
from .mo import MO, Manager

if TYPE_CHECKING:
    from .tasks import Task
    from .vm import VM
    from .world import World

KEEP = 20_000  # events kept, oldest dropped first
DEFAULT_MAX = 1000  # QueryEvents answers at most this many when filter.maxCount is unset
_ERROR_TYPES = ("VmFailedToPowerOnEvent", "VmCloneFailedEvent")


@dataclass
class Recorded:
    event: Any
    category: str
    direct: frozenset[str]  # moids of the entity arguments
    parents: frozenset[str]  # moids of their immediate parents
    ancestors: frozenset[str]  # moids of everything above them


_DESCRIBED = ("VmClonedEvent", "VmBeingClonedEvent", "VmRemovedEvent", "VmPoweredOnEvent", "VmPoweredOffEvent",
              "VmResettingEvent", "VmReconfiguredEvent", "VmFailedToPowerOnEvent", "VmCloneFailedEvent")


class EventLog:
    """The twin's events, and the EventManager object that serves them (`latestEvent`)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.manager = world.add(Manager(world, "EventManager", vim.event.EventManager,
                                         computed={"latestEvent": self.latest}, maxCollector=32,
                                         description=_description()))
        self.items: Journal[Recorded] = Journal(KEEP)
        self.next_key = 1
        self.collectors: set[EventCollector] = set()  # touched when an event they match arrives

    def latest(self) -> Any:
        last = self.items.last()
        return last.event if last is not None else None

    def post(self, kind: type, *, user: str = "", chain: int | None = None, message: str = "",
             vm: VM | None = None, host: Any = None, category: str = "info", **fields: Any) -> Any:
        key = self.next_key
        self.next_key += 1
        event = kind(key=key, chainId=chain if chain is not None else key, createdTime=datetime.now(tz=UTC),
                     userName=user or "", fullFormattedMessage=message, **fields)
        direct: set[str] = set()
        parents: set[str] = set()
        ancestors: set[str] = set()
        if vm is not None:
            host = host or vm.host
            event.vm = vim.event.VmEventArgument(name=vm.name, vm=vm.ref)
            event.ds = vim.event.DatastoreEventArgument(name=vm.home.name, datastore=vm.home.ref)
            if isinstance(event, vim.event.VmEvent):
                event.template = bool(vm.template)
            direct |= {vm.moid, vm.home.moid}
            for start in (vm.parent, vm.pool):
                if start is not None:
                    parents.add(start.moid)
                    ancestors |= _up(start)
        if host is not None:
            event.host = vim.event.HostEventArgument(name=host.name, host=host.ref)
            direct.add(host.moid)
            if host.parent is not None:
                parents.add(host.parent.moid)
                ancestors |= _up(host.parent)
                cr = host.parent
                if isinstance(cr.ref, vim.ComputeResource):
                    event.computeResource = vim.event.ComputeResourceEventArgument(name=cr.name, computeResource=cr.ref)
                    direct.add(cr.moid)
            dc = _datacenter(host)
            if dc is not None:
                event.datacenter = vim.event.DatacenterEventArgument(name=dc.name, datacenter=dc.ref)
                direct.add(dc.moid)
        recorded = Recorded(event, category, frozenset(direct), frozenset(parents), frozenset(ancestors | direct))
        self.items.append(key, recorded)
        self.world.touch(self.manager)
        for c in list(self.collectors):
            if not c.alive:
                self.collectors.discard(c)
            elif c.matches(recorded):
                self.world.touch(c)
        return event

    def newest(self, spec: Any, root: MO | None, limit: int) -> list[Recorded]:
        """The newest `limit` events matching an EventFilterSpec, newest first."""
        out: list[Recorded] = []
        for _, r in self.items.backward(self.next_key):
            if len(out) >= limit:
                break
            if _matches(r, spec, root):
                out.append(r)
        return out


def _up(mo: Any) -> set[str]:
    out: set[str] = set()
    node = mo
    while node is not None:
        out.add(node.moid)
        node = getattr(node, "parent", None)
    return out


def _datacenter(mo: Any) -> Any:
    node = mo
    while node is not None and not isinstance(node.ref, vim.Datacenter):
        node = getattr(node, "parent", None)
    return node


def type_id(event: Any) -> str:
    """An event's type as eventTypeId filters name it (an EventEx's own id)."""
    if isinstance(event, vim.event.EventEx) and event.eventTypeId:
        return str(event.eventTypeId)
    if isinstance(event, vim.event.ExtendedEvent) and event.eventTypeId:
        return str(event.eventTypeId)
    return str(VmomiSupport.GetWsdlName(type(event)))


def _matches(r: Recorded, spec: Any, root: MO | None) -> bool:
    e = r.event
    if spec is None:
        return True
    if spec.entity is not None:
        target = spec.entity.entity._moId
        recursion = spec.entity.recursion or "self"
        if root is not None and target == root.moid and recursion == "all":
            pass
        elif recursion == "self":
            if target not in r.direct:
                return False
        elif recursion == "children":
            if target not in r.direct and target not in r.parents:
                return False
        elif target not in r.ancestors:
            return False
    if spec.time is not None:
        if spec.time.beginTime is not None and e.createdTime < _aware(spec.time.beginTime):
            return False
        if spec.time.endTime is not None and e.createdTime > _aware(spec.time.endTime):
            return False
    if spec.userName is not None:
        users = set(spec.userName.userList or [])
        if not (e.userName in users or (spec.userName.systemUser and not e.userName)):
            return False
    if spec.eventChainId is not None and e.chainId != spec.eventChainId:
        return False
    if spec.category and r.category not in spec.category:
        return False
    if spec.type and not any(isinstance(e, t) for t in spec.type):
        return False
    return not (spec.eventTypeId and type_id(e) not in spec.eventTypeId)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _description() -> Any:
    return vim.event.EventDescription(
        category=[vim.ElementDescription(key=k, label=k.capitalize(), summary=k.capitalize())
                  for k in ("info", "warning", "error", "user")],
        eventInfo=[vim.event.EventDescription.EventDetail(key=VmomiSupport.GetWsdlType("urn:vim25", k),
                                                          category="error" if k in _ERROR_TYPES else "info",
                                                          description=k, formatOnVm="", formatOnHost="",
                                                          formatOnComputeResource="", formatOnDatacenter="",
                                                          fullFormat="")
                   for k in _DESCRIBED])


def record(ctx: Ctx, kind: str, vm: VM, message: str, *, task: Task | None = None, **fields: Any) -> None:
    """Post a `kind` event (a vim.event wsdl name) about `vm`; never fails the operation."""
    typ = VmomiSupport.GetWsdlType("urn:vim25", kind)
    chain = task.info.eventChainId if task is not None and task.info is not None else None
    ctx.twin.events.post(typ, user=ctx.user, chain=chain, message=message, vm=vm,
                         category="error" if kind in _ERROR_TYPES else "info", **fields)


def vm_arg(vm: VM) -> Any:
    return vim.event.VmEventArgument(name=vm.name, vm=vm.ref)


# methods ------------------------------------------------------------------------------------------
@method("QueryEvents")
def query_events(ctx: Ctx, this: MO, filter: Any, eventViewSpec: Any = None) -> list[Any]:  # noqa: A002, N803
    if filter is not None and filter.entity is not None:
        ctx.twin.resolve(filter.entity.entity, ctx.session)
    limit = filter.maxCount if filter is not None and filter.maxCount else DEFAULT_MAX
    if limit < 0:
        raise vmodl.fault.InvalidArgument(msg="maxCount must not be negative", invalidProperty="maxCount")
    return [r.event for r in ctx.twin.events.newest(filter, ctx.twin.root, limit)]


class EventCollector(HistoryCollector[Recorded]):
    """An EventHistoryCollector over the event journal."""

    kind = vim.event.EventHistoryCollector

    def __init__(self, world: World, moid: str, log: EventLog, spec: Any, root: MO) -> None:
        super().__init__(world, moid, log.items, spec)
        self.root = root

    def matches(self, record: Recorded) -> bool:
        return _matches(record, self.spec, self.root)

    def item(self, record: Recorded) -> Any:
        return record.event

    def p_initialized(self) -> bool:
        return True


@method("CreateCollectorForEvents")
def create_collector(ctx: Ctx, this: MO, filter: Any) -> Any:  # noqa: A002
    if filter.entity is not None:
        ctx.twin.resolve(filter.entity.entity, ctx.session)
    log = ctx.twin.events

    def make(moid: str) -> EventCollector:
        c = EventCollector(ctx.twin.world, moid, log, filter, ctx.twin.root)
        log.collectors.add(c)
        return c

    return open_collector(ctx, make, EventCollector, "EventHistoryCollector")


def _events_collector(this: MO) -> EventCollector:
    if not isinstance(this, EventCollector):
        raise vmodl.fault.InvalidArgument(msg="not an event history collector", invalidProperty="_this")
    return this


@method("ReadNextEvents")
def read_next(ctx: Ctx, this: MO, maxCount: int) -> list[Any]:  # noqa: N803
    return _events_collector(this).read_next(count(maxCount))


@method("ReadPreviousEvents")
def read_previous(ctx: Ctx, this: MO, maxCount: int) -> list[Any]:  # noqa: N803
    return _events_collector(this).read_previous(count(maxCount))
