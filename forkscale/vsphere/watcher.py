"""One property collector, owned by one coroutine, tracking every task and every clone's status.

Instead of a wait per task (and a CreateFilter per task), one filter follows
`TaskManager.recentTask` so new tasks appear on their own, and one follows the VMs of the
inventory for `guestinfo.forkscale.status`. A single `WaitForUpdatesEx` loop with
`maxWaitSeconds` feeds futures; nothing ever waits without a timeout. Tasks that leave
`recentTask` before we saw them end are read directly, in one batched call.

**Epochs.** A re-login (an expired session, a restarted vCenter) is a new epoch: what the old
session said is dropped (tasks seen ending, guest statuses, power states: a task id a restarted
vCenter hands out again must not find an old result), the collector is made again, and every
task still awaited is read back. One vCenter no longer knows (or that now concerns another
object) is lost with the old server: its wait ends with `TaskLost`, and the caller looks for what
it made. A vCenter that stays unreachable past the transport's outage budget ends every wait
with `VCenterUnavailable`.

**Sources.** Clone sources are followed in the same stream (`follow`: their
`runtime.instantCloneFrozen`), so the order in which vCenter reports changes says whether an
instant clone ended before or after its source thawed (`thawed_at`): a property collector
reports, in one update, every change made before that update was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from pyVmomi import SoapAdapter, vim, vmodl

from forkscale.vsphere import taskxml
from forkscale.vsphere.faults import TaskFailed, fault_name
from forkscale.vsphere.model import STATUS_KEY
from forkscale.vsphere.ports import TaskLost, VCenterUnavailable
from forkscale.vsphere.transport import OFFLOAD_BYTES, Soap, method_info
from forkscale.vsphere.updatexml import Unsupported

log = logging.getLogger("forkscale.vsphere.watcher")
PC = vmodl.query.PropertyCollector
STATUS_PATH = f'config.extraConfig["{STATUS_KEY}"]'
TASK_PATHS = list(taskxml.TASK_PATHS)
# After an update, wait this long before asking again, so changes that arrive together come back
# in one WaitForUpdatesEx instead of one each (bench/fanout.py: ~1.1 -> ~0.6 waits per clone at
# 500 clones, for at most this much added latency per completion).
COALESCE_S = 0.02
FROZEN_PATH = "runtime.instantCloneFrozen"
#: Thaws remembered per followed source (a thaw, then perhaps a freeze again).
THAWS_KEPT = 8


@dataclass
class _Wait:
    fut: asyncio.Future[tuple[Any, int | None]]
    epoch: int
    entity: str | None  # the object the task is about, to recognise it after a re-login


class Watcher:
    def __init__(self, soap: Soap, *, max_wait_s: int = 10, coalesce_s: float = COALESCE_S,
                 vms: bool = True) -> None:
        self.soap = soap
        # False: guest status and power come from the inventory informer (`vm_update`), which
        # already follows every VM: no second filter over all of them, no second first read.
        self.follow_vms = vms
        self.max_wait_s = max_wait_s
        self.coalesce_s = coalesce_s
        self.collector: Any = None
        self.tasks: dict[str, _Wait] = {}
        # task moid -> (state, result|fault, update seq) seen before awaited
        self.finished: dict[str, tuple[str, Any, int | None]] = {}
        self.status: dict[str, str] = {}  # vm moid -> guestinfo.forkscale.status
        self.status_waiters: dict[str, list[asyncio.Future[str]]] = {}
        self.power: dict[str, str] = {}
        self.followed: set[str] = set()  # clone sources whose frozen state is followed
        self.frozen: dict[str, bool] = {}
        self.thaws: dict[str, list[tuple[int, int | None]]] = {}  # source -> (thawed at, frozen again at)
        self._loop_task: asyncio.Task[None] | None = None
        self._version = ""
        self._epoch: int | None = None
        self._cleared = 0
        self.updates = 0
        self.epochs = 0  # new epochs taken (re-logins seen)
        self.lost = 0  # task waits ended with TaskLost

    async def start(self) -> None:
        await self._create()
        self._epoch = self._cleared = self.soap.epoch
        self.soap.on_relogin.append(self._relogin)
        self._loop_task = asyncio.create_task(self._loop(), name="forkscale-watcher")

    async def _create(self) -> None:
        content = self.soap.content
        self.collector = await self.soap.invoke(content.propertyCollector, "CreatePropertyCollector")
        tasks = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=content.taskManager, skip=True, selectSet=[
                PC.TraversalSpec(name="recent", type=vim.TaskManager, path="recentTask", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.Task, pathSet=TASK_PATHS)])
        await self.soap.invoke(self.collector, "CreateFilter", tasks, True)
        self._version = ""
        for vm in list(self.followed):
            await self._follow_filter(vm)
        if not self.follow_vms:
            return
        view = await self.soap.invoke(content.viewManager, "CreateContainerView", content.rootFolder,
                                      [vim.VirtualMachine], True)
        vms = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                PC.TraversalSpec(name="view", type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=[STATUS_PATH, "runtime.powerState"])])
        await self.soap.invoke(self.collector, "CreateFilter", vms, True)
        self._version = ""

    async def _follow_filter(self, vm: str) -> None:
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine(vm))],
                             propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=[FROZEN_PATH])])
        await self.soap.invoke(self.collector, "CreateFilter", spec, True)

    async def follow(self, vm: str) -> None:
        """Follow a clone source's `runtime.instantCloneFrozen` in this stream (see `thawed_at`)."""
        if vm in self.followed:
            return
        self.followed.add(vm)
        try:
            await self._follow_filter(vm)
        except BaseException:
            self.followed.discard(vm)
            raise

    async def _relogin(self) -> None:
        """A re-login: drop at once what the old session said (the loop makes the rest new)."""
        self._drop(self.soap.epoch)

    def _drop(self, epoch: int) -> None:
        if self._cleared == epoch:
            return
        self._cleared = epoch
        self.finished.clear()
        self.status.clear()
        self.power.clear()

    async def _new_epoch(self) -> None:
        """A new session (or a collector vCenter no longer has): a new collector, and the tasks
        still awaited read back; those vCenter no longer knows are lost."""
        epoch = self.soap.epoch
        if self._epoch is not None and epoch != self._epoch:
            self.epochs += 1
            log.warning("task watcher: new vCenter session; %d task(s) in flight are checked", len(self.tasks))
        self._drop(epoch)
        await self._create()
        self._epoch = epoch
        await self._reap()

    async def stop(self) -> None:
        if self._relogin in self.soap.on_relogin:
            self.soap.on_relogin.remove(self._relogin)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        if self.collector is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.soap.invoke(self.collector, "DestroyPropertyCollector"), 5)
        for w in self.tasks.values():
            if not w.fut.done():
                w.fut.cancel()

    async def _loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                if self._epoch != self.soap.epoch:
                    await self._new_epoch()
                opts = PC.WaitOptions(maxWaitSeconds=self.max_wait_s)
                data = await self.soap.invoke(self.collector, "WaitForUpdatesEx", self._version, opts,
                                              timeout=self.max_wait_s + 60, raw=True)
                version, updates = await self._decode(data)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except vmodl.fault.ManagedObjectNotFound:
                self._epoch = None  # the collector is gone (with its session): make it new
                continue
            except Exception as exc:
                if isinstance(exc, VCenterUnavailable):
                    self._fail_all(exc)
                log.warning("task watcher: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            if version is None:
                await self._reap()
                continue
            self._version = version
            self.updates += 1
            for one in updates:
                self._apply(one)
            if self.coalesce_s > 0:
                await asyncio.sleep(self.coalesce_s)

    def _fail_all(self, exc: Exception) -> None:
        """vCenter is gone for good (past the outage budget): no wait may outlive that."""
        for moid, w in list(self.tasks.items()):
            if not w.fut.done():
                _fail(w.fut, exc)
            self.tasks.pop(moid, None)
        for moid, futs in list(self.status_waiters.items()):
            for fut in futs:
                if not fut.done():
                    _fail(fut, exc)
            self.status_waiters.pop(moid, None)

    async def _decode(self, data: bytes) -> tuple[str | None, list[taskxml.Update]]:
        """An answer's updates, read from its XML (`taskxml`); with pyVmomi when it carries what
        only pyVmomi decodes (a task's fault, a result that is not a moref)."""
        if len(data) > OFFLOAD_BYTES:  # e.g. the first report over every VM: not on the event loop
            return await asyncio.to_thread(self._decode_now, data)
        return self._decode_now(data)

    def _decode_now(self, data: bytes) -> tuple[str | None, list[taskxml.Update]]:
        try:
            return taskxml.decode(data, self.soap.stub)
        except Unsupported:
            parse = SoapAdapter.SoapResponseDeserializer(self.soap.stub).Deserialize
            return taskxml.from_objects(parse(data, method_info(PC, "WaitForUpdatesEx").result))

    def _apply(self, obj: taskxml.Update) -> None:
        moid = obj.moid
        props = obj.values
        if obj.task:
            if obj.kind == "leave":
                return
            state = props.get("info.state")
            if state in ("success", "error"):
                self._finish(moid, state, props.get("info.result") if state == "success" else props.get("info.error"),
                             self.updates)
            return
        if obj.kind == "leave":
            self.vm_update(moid, left=True)
            return
        for name, val in props.items():
            if name == STATUS_PATH:
                self.vm_update(moid, status="" if val is None else str(val))
            elif name == "runtime.powerState":
                self.vm_update(moid, power=str(val))
            elif name == FROZEN_PATH and moid in self.followed:
                self._frozen(moid, bool(val))

    def _frozen(self, moid: str, frozen: bool) -> None:
        was = self.frozen.get(moid)
        self.frozen[moid] = frozen
        thaws = self.thaws.setdefault(moid, [])
        if was and not frozen:
            log.warning("source %s thawed (runtime.instantCloneFrozen is false): no more instant clones from it",
                        moid)
            thaws.append((self.updates, None))
            del thaws[:-THAWS_KEPT]
        elif frozen and thaws and thaws[-1][1] is None:
            thaws[-1] = (thaws[-1][0], self.updates)

    def thawed_at(self, vm: str, seq: int | None) -> bool:
        """Whether source `vm` was thawed when update `seq` was cut (None: now). A VM not followed,
        or never seen frozen (a `running` source), never thawed."""
        for thawed, refrozen in self.thaws.get(vm, []):
            if seq is None:
                if refrozen is None:
                    return True
            elif thawed <= seq and (refrozen is None or seq < refrozen):
                return True
        return False

    def vm_update(self, moid: str, *, status: str | None = None, power: str | None = None, left: bool = False) -> None:
        """A VM's guest status or power changed, or it is gone (from this watcher's filter, or the informer's)."""
        if left:
            self.status.pop(moid, None)
            self.power.pop(moid, None)
            for fut in self.status_waiters.pop(moid, []):
                if not fut.done():
                    fut.set_result("error:vm-removed")
            return
        if power is not None:
            self.power[moid] = power
        if status is not None:
            self.status[moid] = status
            if status == "ready" or status.startswith("error"):
                for fut in self.status_waiters.pop(moid, []):
                    if not fut.done():
                        fut.set_result(status)

    def _finish(self, moid: str, state: str, value: Any, seq: int | None) -> None:
        w = self.tasks.pop(moid, None)
        if w is None:
            self.finished[moid] = (state, value, seq)
            if len(self.finished) > 20000:
                self.finished.pop(next(iter(self.finished)))
            return
        if w.fut.done():
            return
        if state == "success":
            w.fut.set_result((value, seq))
        else:
            _fail(w.fut, TaskFailed(value))

    def _lose(self, moid: str, why: str) -> None:
        w = self.tasks.pop(moid, None)
        if w is not None and not w.fut.done():
            self.lost += 1
            _fail(w.fut, TaskLost(f"task {moid} {why}", moid))

    async def wait_task(self, task: Any, timeout: float, *, entity: str | None = None) -> Any:
        """Result of a task, or TaskFailed(fault), or TaskLost. Never waits longer than `timeout`."""
        return (await self.wait_task_end(task, timeout, entity=entity))[0]

    async def wait_task_end(self, task: Any, timeout: float, *,
                            entity: str | None = None) -> tuple[Any, int | None]:
        """(result, the update that reported its end: None when read directly) — see `thawed_at`."""
        moid = task._moId
        seen = self.finished.pop(moid, None)
        if seen is not None:
            if seen[0] == "success":
                return seen[1], seen[2]
            raise TaskFailed(seen[1])
        older = self.tasks.get(moid)
        if older is not None and older.epoch != self.soap.epoch:
            self._lose(moid, "was handed out again by a restarted vCenter")  # two live tasks never share an id
        fut: asyncio.Future[tuple[Any, int | None]] = asyncio.get_running_loop().create_future()
        self.tasks[moid] = _Wait(fut, self.soap.epoch, entity)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            # maybe it left recentTask before we saw it end: read it once, directly
            info = await self._read_task(task)
            if info is None:
                raise TaskLost(f"task {moid} is unknown to vCenter", moid) from None
            if info.state in ("success", "error"):
                if info.state == "success":
                    return info.result, None
                raise TaskFailed(info.error) from None
            raise
        finally:
            if self.tasks.get(moid) is not None and self.tasks[moid].fut is fut:
                del self.tasks[moid]

    async def _read_task(self, task: Any) -> Any:
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=task)], propSet=[PC.PropertySpec(type=vim.Task,
                                                                                           pathSet=["info"])],
                             reportMissingObjectsInResults=True)
        res = await self.soap.invoke(self.soap.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                     PC.RetrieveOptions())
        if res is None or not res.objects or not res.objects[0].propSet:
            return None
        return res.objects[0].propSet[0].val

    async def _reap(self) -> None:
        """Read the tasks still awaited directly, in one call: those that left recentTask before we saw
        them end, and those vCenter no longer knows (lost with a restart) or that now concern another
        object (an id handed out again)."""
        pending = {m: w for m, w in self.tasks.items() if not w.fut.done()}
        if not pending:
            return
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.Task(m)) for m in pending],
                             propSet=[PC.PropertySpec(type=vim.Task, pathSet=[*TASK_PATHS, "info.entity"])],
                             reportMissingObjectsInResults=True)
        try:
            res = await self.soap.invoke(self.soap.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                         PC.RetrieveOptions())
        except Exception as exc:
            log.debug("reap failed: %s", exc)
            return
        answered: set[str] = set()
        for oc in (res.objects if res else []) or []:
            moid = oc.obj._moId
            answered.add(moid)
            if any(fault_name(m.fault) == "ManagedObjectNotFound" for m in oc.missingSet or []):
                self._lose(moid, "is unknown to vCenter (lost with a restart)")
                continue
            props = {p.name: p.val for p in oc.propSet or []}
            entity = props.get("info.entity")
            w = pending.get(moid)
            if w is not None and w.entity and entity is not None and entity._moId != w.entity:
                self._lose(moid, f"now concerns {entity._moId}, not {w.entity} (an id handed out again)")
                continue
            state = props.get("info.state")
            if state in ("success", "error"):
                self._finish(moid, state, props.get("info.result") if state == "success"
                             else props.get("info.error"), None)
        if res is None or not res.token:  # a complete answer: what it left out does not exist
            for moid in pending.keys() - answered:
                self._lose(moid, "is unknown to vCenter (lost with a restart)")

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


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """End a wait with `exc`. Marked as seen: a waiter that already gave up (its run cancelled)
    must not make asyncio print "Future exception was never retrieved" with a traceback."""
    fut.set_exception(exc)
    fut.exception()
