"""One property collector, owned by one coroutine, tracking every task and every clone's status.

Instead of a wait per task (and a CreateFilter per task), one filter follows
`TaskManager.recentTask` so new tasks appear on their own, and one follows the VMs of the
inventory for `guestinfo.forkscale.status`. A single `WaitForUpdatesEx` loop with
`maxWaitSeconds` feeds futures; nothing ever waits without a timeout. Tasks that leave
`recentTask` before we saw them end are read directly, in one batched call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pyVmomi import vim, vmodl

from forkscale.vsphere.faults import TaskFailed
from forkscale.vsphere.model import STATUS_KEY
from forkscale.vsphere.transport import Soap

log = logging.getLogger("forkscale.vsphere.watcher")
PC = vmodl.query.PropertyCollector
STATUS_PATH = f'config.extraConfig["{STATUS_KEY}"]'
TASK_PATHS = ["info.state", "info.error", "info.result"]
# After an update, wait this long before asking again, so changes that arrive together come back
# in one WaitForUpdatesEx instead of one each (bench/fanout.py: ~1.1 -> ~0.6 waits per clone at
# 500 clones, for at most this much added latency per completion).
COALESCE_S = 0.02


class Watcher:
    def __init__(self, soap: Soap, *, max_wait_s: int = 10, coalesce_s: float = COALESCE_S) -> None:
        self.soap = soap
        self.max_wait_s = max_wait_s
        self.coalesce_s = coalesce_s
        self.collector: Any = None
        self.tasks: dict[str, asyncio.Future[Any]] = {}
        self.finished: dict[str, tuple[str, Any]] = {}  # task moid -> (state, result|fault) seen before awaited
        self.status: dict[str, str] = {}  # vm moid -> guestinfo.forkscale.status
        self.status_waiters: dict[str, list[asyncio.Future[str]]] = {}
        self.power: dict[str, str] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._version = ""
        self.updates = 0

    async def start(self) -> None:
        await self._create()
        self.soap.on_relogin.append(self._recreate)
        self._loop_task = asyncio.create_task(self._loop(), name="forkscale-watcher")

    async def _create(self) -> None:
        content = self.soap.content
        self.collector = await self.soap.invoke(content.propertyCollector, "CreatePropertyCollector")
        tasks = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=content.taskManager, skip=True, selectSet=[
                PC.TraversalSpec(name="recent", type=vim.TaskManager, path="recentTask", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.Task, pathSet=TASK_PATHS)])
        await self.soap.invoke(self.collector, "CreateFilter", tasks, True)
        view = await self.soap.invoke(content.viewManager, "CreateContainerView", content.rootFolder,
                                      [vim.VirtualMachine], True)
        vms = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                PC.TraversalSpec(name="view", type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=[STATUS_PATH, "runtime.powerState"])])
        await self.soap.invoke(self.collector, "CreateFilter", vms, True)
        self._version = ""

    async def _recreate(self) -> None:
        """Collectors die with the session: build them again after a re-login."""
        await self._create()

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        if self.collector is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.soap.invoke(self.collector, "DestroyPropertyCollector"), 5)
        for fut in self.tasks.values():
            if not fut.done():
                fut.cancel()

    async def _loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                opts = PC.WaitOptions(maxWaitSeconds=self.max_wait_s)
                update = await self.soap.invoke(self.collector, "WaitForUpdatesEx", self._version, opts,
                                                timeout=self.max_wait_s + 60)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except vmodl.fault.ManagedObjectNotFound:
                await self._create()
                continue
            except Exception as exc:
                log.warning("task watcher: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            if update is None:
                await self._reap()
                continue
            self._version = update.version
            self.updates += 1
            for fs in update.filterSet or []:
                for obj in fs.objectSet or []:
                    self._apply(obj)
            if self.coalesce_s > 0:
                await asyncio.sleep(self.coalesce_s)

    def _apply(self, obj: Any) -> None:
        moid = obj.obj._moId
        if isinstance(obj.obj, vim.Task):
            if obj.kind == "leave":
                return
            props = {c.name: c.val for c in obj.changeSet or []}
            state = props.get("info.state")
            if state in ("success", "error"):
                self._finish(moid, state, props.get("info.result") if state == "success" else props.get("info.error"))
            return
        if obj.kind == "leave":
            self.status.pop(moid, None)
            self.power.pop(moid, None)
            for fut in self.status_waiters.pop(moid, []):
                if not fut.done():
                    fut.set_result("error:vm-removed")
            return
        for c in obj.changeSet or []:
            if c.name == STATUS_PATH:
                value = str(c.val.value) if c.val is not None and c.val.value is not None else ""
                self.status[moid] = value
                if value == "ready" or value.startswith("error"):
                    for fut in self.status_waiters.pop(moid, []):
                        if not fut.done():
                            fut.set_result(value)
            elif c.name == "runtime.powerState":
                self.power[moid] = str(c.val)

    def _finish(self, moid: str, state: str, value: Any) -> None:
        fut = self.tasks.pop(moid, None)
        if fut is None:
            self.finished[moid] = (state, value)
            if len(self.finished) > 20000:
                self.finished.pop(next(iter(self.finished)))
            return
        if fut.done():
            return
        if state == "success":
            fut.set_result(value)
        else:
            fut.set_exception(TaskFailed(value))

    async def wait_task(self, task: Any, timeout: float) -> Any:
        """Result of a task, or TaskFailed(fault). Never waits longer than `timeout`."""
        moid = task._moId
        seen = self.finished.pop(moid, None)
        if seen is not None:
            if seen[0] == "success":
                return seen[1]
            raise TaskFailed(seen[1])
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.tasks[moid] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            # maybe it left recentTask before we saw it end: read it once, directly
            info = await self._read_task(task)
            if info is not None and info.state in ("success", "error"):
                self.tasks.pop(moid, None)
                if info.state == "success":
                    return info.result
                raise TaskFailed(info.error) from None
            raise
        finally:
            self.tasks.pop(moid, None)

    async def _read_task(self, task: Any) -> Any:
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=task)], propSet=[PC.PropertySpec(type=vim.Task,
                                                                                           pathSet=["info"])])
        res = await self.soap.invoke(self.soap.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                     PC.RetrieveOptions())
        if res is None or not res.objects:
            return None
        return res.objects[0].propSet[0].val

    async def _reap(self) -> None:
        """On a quiet wait, read pending tasks directly in one call (covers tasks that left recentTask)."""
        pending = [m for m, f in self.tasks.items() if not f.done()]
        if not pending:
            return
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.Task(m)) for m in pending],
                             propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state", "info.result",
                                                                               "info.error"])])
        try:
            res = await self.soap.invoke(self.soap.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                         PC.RetrieveOptions())
        except Exception as exc:
            log.debug("reap failed: %s", exc)
            return
        for oc in (res.objects if res else []) or []:
            props = {p.name: p.val for p in oc.propSet}
            state = props.get("info.state")
            if state in ("success", "error"):
                self._finish(oc.obj._moId, state, props.get("info.result") if state == "success"
                             else props.get("info.error"))

    async def wait_status(self, vm_moid: str, timeout: float) -> str:
        """`ready` or `error:...` as reported by the guest; TimeoutError after `timeout`."""
        value = self.status.get(vm_moid, "")
        if value == "ready" or value.startswith("error"):
            return value
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.status_waiters.setdefault(vm_moid, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:  # a waiter that timed out or was cancelled does not stay behind (bounded forever)
            waiters = self.status_waiters.get(vm_moid)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self.status_waiters[vm_moid]
