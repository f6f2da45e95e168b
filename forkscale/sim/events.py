"""EventManager for the twin: events for clone, destroy, power and reconfigure operations.

`record()` is the one hook the operations call. Events keep their entity arguments (names and
morefs) after the entities are gone, as vCenter's do, and remember the inventory ancestors they
had, so an entity filter with recursion `all` on a folder still finds a destroyed VM's removal.
`QueryEvents` answers newest first; an `EventHistoryCollector` pages through the same journal
(forkscale.sim.history has the paging rules).

What vCenter posts, the twin posts: a `TaskEvent` when a task is created (its `info` a snapshot
taken then, state `queued`), `VmBeingClonedEvent` on the source when a linked or full clone
starts and `VmClonedEvent` on the clone when it ends, and for an instant clone the extended
event `com.vmware.vc.VmInstantClonedEvent` (an `EventEx` about the clone whose first argument
names the source) - vSphere has no instant-clone event class.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from .dispatch import Ctx, method
from .history import HistoryCollector, Journal, count, open_collector
from .inventory import Host
from .mo import MO, Manager
from .vm import VM

if TYPE_CHECKING:
    from .tasks import Task
    from .world import World

KEEP = 20_000  # events kept, oldest dropped first
ARG_CACHE = 50_000  # entity arguments kept for reuse
DEFAULT_MAX = 1000  # QueryEvents answers at most this many when filter.maxCount is unset
_ERROR_TYPES = ("VmFailedToPowerOnEvent", "VmCloneFailedEvent")


@dataclass
class Recorded:
    event: Any
    category: str
    direct: frozenset[str]  # moids of the entity arguments
    parents: frozenset[str]  # moids of their immediate parents
    ancestors: frozenset[str]  # moids of everything above them


_DESCRIBED = ("TaskEvent", "VmClonedEvent", "VmBeingClonedEvent", "VmCloneFailedEvent", "VmRemovedEvent",
              "VmRegisteredEvent", "VmCreatedEvent", "VmBeingCreatedEvent", "VmStartingEvent", "VmPoweredOnEvent",
              "VmStoppingEvent", "VmPoweredOffEvent", "VmSuspendingEvent", "VmSuspendedEvent", "VmResumingEvent",
              "VmResettingEvent", "VmGuestShutdownEvent", "VmGuestRebootEvent", "VmGuestStandbyEvent",
              "VmReconfiguredEvent", "VmFailedToPowerOnEvent", "VmRenamedEvent", "VmBeingRelocatedEvent",
              "VmRelocatedEvent", "VmBeingHotMigratedEvent", "VmMigratedEvent", "EnteringMaintenanceModeEvent",
              "EnteredMaintenanceModeEvent", "ExitMaintenanceModeEvent", "CustomFieldDefAddedEvent",
              "CustomFieldValueChangedEvent")
INSTANT_CLONED = "com.vmware.vc.VmInstantClonedEvent"


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
        self._args: dict[tuple[type, str, str], Any] = {}

    def latest(self) -> Any:
        last = self.items.last()
        return last.event if last is not None else None

    def task_created(self, task: Task) -> None:
        """The `TaskEvent` vCenter posts when a task is created (its info as it was then: queued)."""
        info = task.info
        entity = self.world.objects.get(info.entity._moId) if info.entity is not None else None
        vm = entity if isinstance(entity, VM) else None
        host = entity if isinstance(entity, Host) else None
        user = info.reason.userName if isinstance(info.reason, vim.TaskReasonUser) else ""
        self.post(vim.event.TaskEvent, user=user, chain=info.eventChainId, vm=vm, host=host,
                  about=None if vm or host else entity, message=f"Task: {info.descriptionId}", info=info)

    def post(self, kind: type, *, user: str = "", chain: int | None = None, message: str = "",
             vm: VM | None = None, host: Any = None, about: Any = None, category: str = "info",
             **fields: Any) -> Any:
        key = self.next_key
        self.next_key += 1
        event = kind(key=key, chainId=chain if chain is not None else key, createdTime=datetime.now(tz=UTC),
                     userName=user or "", fullFormattedMessage=message, **fields)
        direct: set[str] = set()
        parents: set[str] = set()
        ancestors: set[str] = set()
        if about is not None:  # any other entity the event is about
            direct.add(about.moid)
            start = getattr(about, "parent", None)
            if start is not None:
                parents.add(start.moid)
                ancestors |= _up(start)
        if vm is not None:
            host = host or vm.host
            event.vm = self._arg(vim.event.VmEventArgument, "vm", vm)
            event.ds = self._arg(vim.event.DatastoreEventArgument, "datastore", vm.home)
            if isinstance(event, vim.event.VmEvent):
                event.template = bool(vm.template)
            direct |= {vm.moid, vm.home.moid}
            for start in (vm.parent, vm.pool):
                if start is not None:
                    parents.add(start.moid)
                    ancestors |= _up(start)
        if host is not None:
            event.host = self._arg(vim.event.HostEventArgument, "host", host)
            direct.add(host.moid)
            if host.parent is not None:
                parents.add(host.parent.moid)
                ancestors |= _up(host.parent)
                cr = host.parent
                if isinstance(cr.ref, vim.ComputeResource):
                    event.computeResource = self._arg(vim.event.ComputeResourceEventArgument, "computeResource", cr)
                    direct.add(cr.moid)
            dc = _datacenter(host)
            if dc is not None:
                event.datacenter = self._arg(vim.event.DatacenterEventArgument, "datacenter", dc)
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

    def _arg(self, kind: type, field: str, mo: Any) -> Any:
        """An entity argument (name and moref, as they are now), shared by the events that name it."""
        key = (kind, mo.moid, mo.name)
        arg = self._args.get(key)
        if arg is None:
            if len(self._args) > ARG_CACHE:
                self._args.clear()
            arg = self._args[key] = kind(name=mo.name, **{field: mo.ref})
        return arg


def _up(mo: Any) -> set[str]:
    """`mo` and its ancestors: its parents, and a vApp's folder (its VMs' events show there too)."""
    out: set[str] = set()
    todo = [mo]
    while todo:
        node = todo.pop()
        if node is None or node.moid in out:
            continue
        out.add(node.moid)
        todo += [getattr(node, "parent", None), getattr(node, "parent_folder", None)]
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
    ctx.twin.events.post(typ, user=ctx.user, chain=_chain(task), message=message, vm=vm,
                         category="error" if kind in _ERROR_TYPES else "info", **fields)


def record_host(ctx: Ctx, kind: str, host: Any, message: str, *, task: Task | None = None, **fields: Any) -> None:
    """Post a `kind` event about a host (maintenance mode and the like)."""
    typ = VmomiSupport.GetWsdlType("urn:vim25", kind)
    ctx.twin.events.post(typ, user=ctx.user, chain=_chain(task), message=message, host=host, **fields)


def record_entity(ctx: Ctx, kind: type, target: Any, message: str, *, task: Task | None = None,
                  **fields: Any) -> None:
    """Post a `kind` event about any managed entity (its VM, host or own arguments as they apply)."""
    vm = target if isinstance(target, VM) else None
    host = target if isinstance(target, Host) else None
    ctx.twin.events.post(kind, user=ctx.user, chain=_chain(task), message=message, vm=vm, host=host,
                         about=None if vm or host else target, **fields)


def record_ex(ctx: Ctx, type_id: str, vm: VM, message: str, *, task: Task | None = None,
              arguments: dict[str, str] | None = None, severity: str = "info") -> None:
    """Post an extended event (`EventEx`, identified by `type_id`) about `vm`."""
    args = [vmodl.KeyAnyValue(key=k, value=v) for k, v in (arguments or {}).items()]
    ctx.twin.events.post(vim.event.EventEx, user=ctx.user, chain=_chain(task), message=message, vm=vm,
                         category=severity, eventTypeId=type_id, severity=severity, arguments=args,
                         objectId=vm.moid, objectType=vim.VirtualMachine, objectName=vm.name)


def _chain(task: Task | None) -> int | None:
    return task.info.eventChainId if task is not None and task.info is not None else None


def vm_arg(vm: VM) -> Any:
    return vim.event.VmEventArgument(name=vm.name, vm=vm.ref)


def host_arg(host: Any) -> Any:
    return vim.event.HostEventArgument(name=host.name, host=host.ref)


def folder_arg(folder: Any) -> Any:
    return vim.event.FolderEventArgument(name=folder.name, folder=folder.ref)


def ds_arg(ds: Any) -> Any:
    return vim.event.DatastoreEventArgument(name=ds.name, datastore=ds.ref)


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
