"""Methods of the service's own managers: ServiceInstance, SessionManager, PropertyCollector,
ViewManager and Task (the SearchIndex is in forkscale.sim.search, VM operations in
forkscale.sim.ops, events and performance in forkscale.sim.events and forkscale.sim.perf)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim

from . import (
    views,  # noqa: F401  (registers the ViewManager's and views' handlers)
)
from .collector import Collector, Filter, retrieve
from .dispatch import Ctx, method
from .mo import MO
from .service import CURRENT_SESSION


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
    objects = retrieve(ctx.twin.world, specSet, _resolver(ctx))
    return _collector(ctx, this).page(objects, options.maxObjects if options else None)


@method("ContinueRetrievePropertiesEx")
def continue_retrieve(ctx: Ctx, this: MO, token: str) -> Any:
    return _collector(ctx, this).continue_page(token, None)


@method("CancelRetrievePropertiesEx")
def cancel_retrieve(ctx: Ctx, this: MO, token: str) -> None:
    _collector(ctx, this).pages.pop(token, None)


@method("RetrieveProperties")
def retrieve_properties(ctx: Ctx, this: MO, specSet: list[Any]) -> Any:  # noqa: N803
    return retrieve(ctx.twin.world, specSet, _resolver(ctx))


def _resolver(ctx: Ctx) -> Any:
    """Find a moref as the calling session sees it (its own collectors, filters and views too)."""
    return lambda ref: ctx.twin.resolve(ref, ctx.session)


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
               bool(partialUpdates), _resolver(ctx))
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




# Tasks ---------------------------------------------------------------------------------------
@method("CancelTask")
def cancel_task(ctx: Ctx, this: MO) -> None:
    raise vim.fault.InvalidState(msg="The task cannot be cancelled")
