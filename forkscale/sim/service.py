"""The twin's service: sessions and request dispatch (the managers' methods are in forkscale.sim.methods)."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from . import required, soap
from .collector import Collector
from .dispatch import ANONYMOUS, HANDLERS, Ctx
from .events import EventLog
from .guestrpc import GuestRPC
from .guests import GuestProcesses
from .inventory import Folder
from .mo import MO, Manager
from .properties import read_path
from .transfers import Transfers

if TYPE_CHECKING:
    from .keeper import Keeper
    from .world import World

COOKIE = "vmware_soap_session"
_FETCH = re.compile(rb'<_this[^>]*type="([^"]+)"[^>]*>([^<]+)</_this>\s*<prop[^>]*>([^<]+)</prop>')
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
        self.keeper: Keeper | None = None  # keeps the world in a state directory (forkscale sim --state-dir)
        self.si = world.add(Manager(world, "ServiceInstance", vim.ServiceInstance))
        self.events = EventLog(world)
        world.tasks.on_created = self.events.task_created
        self.guests = GuestProcesses(world)
        self.guest_rpc = GuestRPC(world)
        self.guest_transfers = Transfers()  # the guest file manager's /guestFile URLs

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
        if (mo is None or mo.session_scoped
                or not (isinstance(mo.ref, type(ref)) or isinstance(ref, type(mo.ref)))):
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
            required.check_arguments(req.args)
            this = self.resolve(req.this, session)
            if not isinstance(this.ref, type(req.this)) and not isinstance(req.this, type(this.ref)):
                raise vmodl.fault.ManagedObjectNotFound(msg=f"{req.this} is not a {type(req.this).__name__}",
                                                        obj=req.this)
            self.world.faults.before_call(name)
            CURRENT_SESSION.set(session)
            ctx = Ctx(self, session, this, name)
            self.world.pin_time()
            try:
                result = handler(ctx, this, **req.args)
            finally:
                self.world.unpin_time()
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
        m = _FETCH.search(body)
        if not m:
            return 500, soap.serialize_fault(vmodl.fault.InvalidRequest(msg="malformed Fetch"))
        kind, moid, prop = (g.decode() for g in m.groups())
        session = self.session_for(cookie)
        try:
            ref = VmomiSupport.GetWsdlType(soap.NAMESPACE, kind)(moid)
            if session is None:
                raise vim.fault.NotAuthenticated(msg="The session is not authenticated.", object=ref,
                                                 privilegeId="System.View")
            CURRENT_SESSION.set(session)
            mo = self.resolve(ref, session)
            self.world.pin_time()
            try:
                val, typ = read_path(mo, prop)
            finally:
                self.world.unpin_time()
            return 200, soap.serialize_fetch(val, typ)
        except vmodl.MethodFault as fault:
            return 500, soap.serialize_fault(fault)
        except Exception as exc:  # a twin bug becomes a SystemError fault, never a broken response
            return 500, soap.serialize_fault(vmodl.fault.SystemError(msg=f"twin internal error in Fetch {prop}: "
                                                                         f"{exc!r}", reason=repr(exc)))
