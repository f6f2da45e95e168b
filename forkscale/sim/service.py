"""The twin's service: sessions, the ServiceInstance and its managers, and request dispatch."""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from . import soap
from .collector import Collector, ContainerView, Filter, ListView, content, retrieve
from .dispatch import ANONYMOUS, HANDLERS, Ctx, method
from .events import EventLog
from .guestrpc import GuestRPC
from .guests import GuestProcesses
from .inventory import Entity, Folder
from .mo import MO, Manager

if TYPE_CHECKING:
    from .world import World

COOKIE = "vmware_soap_session"
CURRENT_SESSION: ContextVar[Session | None] = ContextVar("forkscale_twin_session", default=None)  # noqa: F821


@dataclass
class Session:
    key: str
    user: str
    login_time: float
    last_active: float
    ip: str = ""
    user_agent: str = ""
    calls: int = 0
    objects: dict[str, MO] = field(default_factory=dict)  # per-session collectors, filters, views
    default_collector: Collector | None = None

    def user_session(self) -> Any:
        dt = datetime.fromtimestamp
        return vim.UserSession(key=self.key, userName=self.user, fullName=self.user,
                               loginTime=dt(self.login_time, tz=UTC),
                               lastActiveTime=dt(self.last_active, tz=UTC), locale="en",
                               messageLocale="en", extensionSession=False, ipAddress=self.ip or "127.0.0.1",
                               userAgent=self.user_agent or "unknown", callCount=self.calls)


class Twin:
    """A vCenter stand-in: holds the world, the sessions, and answers SOAP bodies.

    Besides the world it owns what only its methods use: the sessions, the event log, the
    simulated guests' processes and the guest RPC of the `vmware-rpctool` stand-in.
    """

    def __init__(self, world: World, root: Folder, *, user: str, password: str,
                 session_idle_s: float = 1800.0) -> None:
        self.world = world
        self.root = root
        self.user = user
        self.password = password
        self.session_idle_s = session_idle_s
        self.sessions: dict[str, Session] = {}
        self.instance_uuid = str(uuid.UUID(int=world.rng.getrandbits(128)))
        self.request_count = 0
        self.method_counts: dict[str, int] = {}
        self.si = world.add(Manager(world, "ServiceInstance", vim.ServiceInstance))
        self.events = EventLog(world)
        self.guests = GuestProcesses(world)
        self.guest_rpc = GuestRPC(world)

    # sessions -------------------------------------------------------------------------------
    def session_for(self, key: str | None) -> Session | None:
        if not key:
            return None
        s = self.sessions.get(key)
        if s is None:
            return None
        now = time.time()
        if now - s.last_active > self.session_idle_s:
            self.end_session(s)
            return None
        s.last_active = now
        s.calls += 1
        return s

    def end_session(self, s: Session) -> None:
        self.sessions.pop(s.key, None)
        for mo in list(s.objects.values()):
            if isinstance(mo, Collector):
                mo.cancel.set()
            self.world.remove(mo)
        s.objects.clear()
        self.world.touch(self.world.objects["SessionManager"])

    def new_session(self, user: str, ip: str, agent: str) -> Session:
        key = str(uuid.uuid4())
        now = time.time()
        s = Session(key=key, user=user, login_time=now, last_active=now, ip=ip, user_agent=agent)
        self.sessions[key] = s
        pc = Collector(self.world, f"session[{key}]propertyCollector", s)
        s.default_collector = pc
        s.objects[pc.moid] = pc
        self.world.add(pc)
        self.world.touch(self.world.objects["SessionManager"])
        return s

    def resolve(self, ref: Any, session: Session | None) -> MO:
        """Find the MO behind a moref; per-session objects are only visible to their session."""
        moid = ref._moId
        if moid == "propertyCollector" and session is not None and session.default_collector is not None:
            return session.default_collector
        if session is not None and moid in session.objects:
            return session.objects[moid]
        mo = self.world.objects.get(moid)
        if mo is None or isinstance(mo, (Collector, Filter, ContainerView, ListView)):
            raise vmodl.fault.ManagedObjectNotFound(msg=f"The object '{moid}' has already been deleted or "
                                                    "has not been completely created", obj=ref)
        return mo

    # dispatch -------------------------------------------------------------------------------
    async def handle(self, body: bytes, cookie: str | None, ip: str = "", agent: str = "") -> tuple[int, bytes, str | None]:
        """Answer one SOAP request: (HTTP status, body, new session cookie or None)."""
        self.request_count += 1
        req = None
        try:
            req = soap.parse_request(body)
            name = req.name
            self.method_counts[name] = self.method_counts.get(name, 0) + 1
            session = self.session_for(cookie)
            if session is None and name not in ANONYMOUS:
                raise vim.fault.NotAuthenticated(msg="The session is not authenticated.", object=req.this,
                                                 privilegeId="System.View")
            handler = HANDLERS.get(name)
            if handler is None:
                raise vmodl.fault.MethodNotFound(msg=f"Method {name} is not implemented by the forkscale twin",
                                                 receiver=req.this, method=name)
            this = self.resolve(req.this, session)
            if not isinstance(this.ref, type(req.this)) and not isinstance(req.this, type(this.ref)):
                raise vmodl.fault.ManagedObjectNotFound(msg=f"{req.this} is not a {type(req.this).__name__}",
                                                        obj=req.this)
            self.world.faults.before_call(name)
            CURRENT_SESSION.set(session)
            ctx = Ctx(self, session, this, name)
            result = handler(ctx, this, **req.args)
            if inspect.isawaitable(result):
                result = await result
            new_cookie = None
            if name == "Login" and isinstance(result, vim.UserSession):
                new_cookie = result.key
            return 200, soap.serialize_response(req.method, result), new_cookie
        except soap.BadRequest as exc:
            return 500, soap.serialize_fault(vmodl.fault.InvalidRequest(msg=str(exc))), None
        except vmodl.MethodFault as fault:
            return 500, soap.serialize_fault(fault), None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a twin bug becomes a SystemError fault, never a dropped connection
            bug = vmodl.fault.SystemError(msg=f"twin internal error in {getattr(req, 'name', '?')}: {exc!r}",
                                          reason=repr(exc))
            return 500, soap.serialize_fault(bug), None

    async def fetch(self, body: bytes, cookie: str | None) -> tuple[int, bytes]:
        """pyVmomi's property accessor calls `Fetch(prop)`, which is not in the WSDL."""
        import re

        m = re.search(rb'<_this[^>]*type="([^"]+)"[^>]*>([^<]+)</_this>\s*<prop[^>]*>([^<]+)</prop>', body)
        if not m:
            return 500, soap.serialize_fault(vmodl.fault.InvalidRequest(msg="malformed Fetch"))
        kind, moid, prop = (g.decode() for g in m.groups())
        session = self.session_for(cookie)
        try:
            if session is None:
                raise vim.fault.NotAuthenticated(msg="The session is not authenticated.")
            CURRENT_SESSION.set(session)
            ref = VmomiSupport.GetWsdlType(soap.NAMESPACE, kind)(moid)
            mo = self.resolve(ref, session)
            from .collector import read_path

            val, typ = read_path(mo, prop)
            info = VmomiSupport.Object(name="returnval", type=typ or object, version=soap.VERSION,
                                       flags=VmomiSupport.F_OPTIONAL)
            inner = "" if val is None else soap._serialize(val, info)
            xml = (f'{soap.XML_HEADER}\n{soap.SOAP_ENVELOPE_START}{soap.SOAP_BODY_START}'
                   f'<FetchResponse xmlns="{soap.NAMESPACE}">{inner}</FetchResponse>'
                   f'{soap.SOAP_BODY_END}{soap.SOAP_ENVELOPE_END}')
            return 200, xml.encode()
        except vmodl.MethodFault as fault:
            return 500, soap.serialize_fault(fault)
        except Exception as exc:  # a twin bug becomes a SystemError fault, never a broken response
            return 500, soap.serialize_fault(vmodl.fault.SystemError(msg=f"twin internal error in Fetch {prop}: "
                                                                         f"{exc!r}", reason=repr(exc)))


def _mo_list(mos: list[MO]) -> list[Any]:
    return [m.ref for m in mos]


# ServiceInstance and sessions -------------------------------------------------------------------
@method("RetrieveServiceContent")
def retrieve_service_content(ctx: Ctx, this: MO) -> Any:
    return ctx.twin.world.objects["ServiceInstance"].get("content")


@method("CurrentTime")
def current_time(ctx: Ctx, this: MO) -> Any:
    return datetime.now(tz=UTC)


@method("Login")
def login(ctx: Ctx, this: MO, userName: str, password: str, locale: str | None = None) -> Any:  # noqa: N803
    twin = ctx.twin
    if not (secrets.compare_digest(userName, twin.user) and secrets.compare_digest(password, twin.password)):
        raise vim.fault.InvalidLogin(msg="Cannot complete login due to an incorrect user name or password.")
    s = twin.new_session(userName, "", "")
    CURRENT_SESSION.set(s)
    return s.user_session()


@method("Logout")
def logout(ctx: Ctx, this: MO) -> None:
    if ctx.session is not None:
        ctx.twin.end_session(ctx.session)


@method("SessionIsActive")
def session_is_active(ctx: Ctx, this: MO, sessionID: str, userName: str) -> bool:  # noqa: N803
    if ctx.session is None:
        raise vim.fault.NotAuthenticated(msg="The session is not authenticated.")
    s = ctx.twin.sessions.get(sessionID)
    return s is not None and s.user == userName


# Property collector --------------------------------------------------------------------------
def _collector(ctx: Ctx, this: MO) -> Collector:
    assert isinstance(this, Collector)
    return this


@method("RetrievePropertiesEx")
def retrieve_properties_ex(ctx: Ctx, this: MO, specSet: list[Any], options: Any) -> Any:  # noqa: N803
    objects = retrieve(ctx.twin.world, specSet)
    return _collector(ctx, this).page(objects, options.maxObjects if options else None)


@method("ContinueRetrievePropertiesEx")
def continue_retrieve(ctx: Ctx, this: MO, token: str) -> Any:
    return _collector(ctx, this).continue_page(token, None)


@method("CancelRetrievePropertiesEx")
def cancel_retrieve(ctx: Ctx, this: MO, token: str) -> None:
    _collector(ctx, this).pages.pop(token, None)


@method("RetrieveProperties")
def retrieve_properties(ctx: Ctx, this: MO, specSet: list[Any]) -> Any:  # noqa: N803
    return retrieve(ctx.twin.world, specSet)


@method("CreatePropertyCollector")
def create_property_collector(ctx: Ctx, this: MO) -> Any:
    assert ctx.session is not None
    pc = Collector(ctx.twin.world, f"session[{ctx.session.key}]{ctx.twin.world.new_id('pc')}", ctx.session)
    ctx.session.objects[pc.moid] = pc
    ctx.twin.world.add(pc)
    return pc.ref


@method("DestroyPropertyCollector")
def destroy_property_collector(ctx: Ctx, this: MO) -> None:
    pc = _collector(ctx, this)
    pc.cancel.set()
    for f in list(pc.filters.values()):
        _drop(ctx, f)
    _drop(ctx, pc)


def _drop(ctx: Ctx, mo: MO) -> None:
    if ctx.session is not None:
        ctx.session.objects.pop(mo.moid, None)
    ctx.twin.world.remove(mo)


@method("CreateFilter")
def create_filter(ctx: Ctx, this: MO, spec: Any, partialUpdates: bool) -> Any:  # noqa: N803
    pc = _collector(ctx, this)
    assert ctx.session is not None
    f = Filter(ctx.twin.world, f"session[{ctx.session.key}]{ctx.twin.world.new_id('filter')}", pc, spec,
               bool(partialUpdates))
    f.validate()
    pc.filters[f.moid] = f
    ctx.session.objects[f.moid] = f
    ctx.twin.world.add(f)
    return f.ref


@method("DestroyPropertyFilter")
def destroy_filter(ctx: Ctx, this: MO) -> None:
    assert isinstance(this, Filter)
    this.collector.filters.pop(this.moid, None)
    _drop(ctx, this)


@method("WaitForUpdatesEx")
async def wait_for_updates_ex(ctx: Ctx, this: MO, version: str | None, options: Any) -> Any:
    max_wait = options.maxWaitSeconds if options is not None else None
    max_updates = options.maxObjectUpdates if options is not None else None
    return await _collector(ctx, this).wait(version, max_wait, max_updates)


@method("WaitForUpdates")
async def wait_for_updates(ctx: Ctx, this: MO, version: str | None) -> Any:
    return await _collector(ctx, this).wait(version, None, None)


@method("CheckForUpdates")
async def check_for_updates(ctx: Ctx, this: MO, version: str | None) -> Any:
    return await _collector(ctx, this).wait(version, 0, None)


@method("CancelWaitForUpdates")
def cancel_wait(ctx: Ctx, this: MO) -> None:
    _collector(ctx, this).cancel.set()


# Views -----------------------------------------------------------------------------------------
@method("CreateContainerView")
def create_container_view(ctx: Ctx, this: MO, container: Any, type: list[Any], recursive: bool) -> Any:  # noqa: A002
    assert ctx.session is not None
    world = ctx.twin.world
    root = ctx.twin.resolve(container, ctx.session)
    if not isinstance(root, Entity):
        raise vmodl.fault.InvalidArgument(msg="container is not a managed entity", invalidProperty="container")
    types = []
    for t in type or []:
        typ = VmomiSupport.GetWsdlType(soap.NAMESPACE, t) if isinstance(t, str) else t
        types.append(typ)
    view = ContainerView(world, f"session[{ctx.session.key}]{world.new_id('view')}", root, types, bool(recursive))
    ctx.session.objects[view.moid] = view
    world.add(view)
    return view.ref


@method("CreateListView")
def create_list_view(ctx: Ctx, this: MO, obj: list[Any] | None = None) -> Any:
    assert ctx.session is not None
    world = ctx.twin.world
    view = ListView(world, f"session[{ctx.session.key}]{world.new_id('view')}", list(obj or []))
    ctx.session.objects[view.moid] = view
    world.add(view)
    return view.ref


@method("DestroyView")
def destroy_view(ctx: Ctx, this: MO) -> None:
    _drop(ctx, this)


# Search index ----------------------------------------------------------------------------------
@method("FindByInventoryPath")
def find_by_inventory_path(ctx: Ctx, this: MO, inventoryPath: str) -> Any:  # noqa: N803
    node: Any = ctx.twin.root
    for part in [p for p in inventoryPath.strip("/").split("/") if p]:
        node = next((c for c in node.children() if c.name == part), None)
        if node is None:
            return None
    return node.ref


@method("FindChild")
def find_child(ctx: Ctx, this: MO, entity: Any, name: str) -> Any:
    parent = ctx.twin.resolve(entity, ctx.session)
    if not isinstance(parent, Entity):
        raise vmodl.fault.InvalidArgument(msg="entity is not a managed entity", invalidProperty="entity")
    child = next((c for c in parent.children() if c.name == name), None)
    return child.ref if child else None


@method("FindByUuid")
def find_by_uuid(ctx: Ctx, this: MO, uuid: str, vmSearch: bool, datacenter: Any = None,  # noqa: N803
                 instanceUuid: bool | None = None) -> Any:  # noqa: N803
    from .vm import VM

    for vm in ctx.twin.world.of_kind(vim.VirtualMachine):
        assert isinstance(vm, VM)
        if (vm.instance_uuid if instanceUuid else vm.uuid).lower() == uuid.lower():
            return vm.ref
    return None


@method("FindAllByUuid")
def find_all_by_uuid(ctx: Ctx, this: MO, uuid: str, vmSearch: bool, datacenter: Any = None,  # noqa: N803
                     instanceUuid: bool | None = None) -> Any:  # noqa: N803
    found = find_by_uuid(ctx, this, uuid, vmSearch, datacenter, instanceUuid)
    return [found] if found is not None else []


# Tasks ---------------------------------------------------------------------------------------
@method("CancelTask")
def cancel_task(ctx: Ctx, this: MO) -> None:
    raise vim.fault.InvalidState(msg="The task cannot be cancelled")


__all__ = ["Twin", "Session", "content"]
