"""The inventory as a cache kept current by the property collector (the informer pattern).

One full read at start (the first `WaitForUpdatesEx` of a new filter reports every object), then
only deltas, on a collector of its own owned by one coroutine, applied to an `InventoryModel`.
`inventory()` and `fleet()` answer from the model, without a vCenter round trip.

Why a collector of its own, not the task watcher's: the watcher is on the fan-out's critical path
(a clone is ready when the watcher sees its task end and its guest report, 20 ms of coalescing),
while the informer moves bulk: a first read or a resync is 10,000 objects over several pages,
seconds of parsing that would sit in front of every task completion on a shared collector. Two
collectors, one waiter each, keep vCenter's rule (never two waits on one collector) and let each
coalesce at its own pace.

Consistency. The model is *as fresh as* the issue time of the latest wait that completed
(`fresh_as_of`): every change made before a wait was sent is in what that wait returned.
`inventory()` returns a model at least as fresh as the latest answer the controller received
from vCenter on any other request (`Soap.observed_at`: a task that ended, a read); so a converge
sees the clones it just made and never the ones it just destroyed (read-your-writes, as
Kubernetes controllers get from their "expectations"). When nothing was observed since the last
wait, that costs nothing; otherwise the loop skips its coalescing pause and sends a zero-second
wait (one request), cancelling a long poll that was sent before the observation
(`CancelWaitForUpdates`) when no change wakes it within `hurry_s`.

Resync from scratch (a new collector, a fresh model swapped in once complete): on a collector
error, on a session re-login (`Soap.on_relogin`), when vCenter refuses a version
(`InvalidCollectorVersion`), and every `resync_s` as a safety net (then on the same filter, from
the initial version). A truncated update set is resumed with its version, as the API requires
(a truncated version is usable once); its pages are applied together, and the model counts as
fresh only once the set is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from pyVmomi import SoapAdapter, vim, vmodl

from forkscale.core.errors import TemporaryError
from forkscale.vsphere import informspec, updatexml
from forkscale.vsphere.faults import fault_name
from forkscale.vsphere.invmodel import STATUS_PATH, VM, Change, InventoryModel
from forkscale.vsphere.keyed import key_of, keyed
from forkscale.vsphere.model import TAG_POOL, FleetRead, Inventory
from forkscale.vsphere.transport import Soap, method_info

log = logging.getLogger("forkscale.vsphere.informer")
PC = vmodl.query.PropertyCollector
NEVER = float("-inf")
POWER_PATH = "runtime.powerState"


class VmHook(Protocol):
    def __call__(self, moid: str, *, status: str | None = ..., power: str | None = ...,
                 left: bool = ...) -> None: ...


class Informer:
    """`inventory()` / `fleet()` from a model kept current by `WaitForUpdatesEx`."""

    def __init__(self, soap: Soap, *, fleet: bool = False, max_wait_s: int = 30, coalesce_s: float = 0.1,
                 hurry_s: float = 0.1, resync_s: float = 3600.0, page: int = 2000,
                 sync_timeout_s: float = 600.0) -> None:
        self.soap = soap
        self.fleet_paths = fleet
        """Also follow what `read_fleet` needs (quick stats, layoutEx): `forkscale serve` and `metrics`."""
        self.max_wait_s = max_wait_s
        self.coalesce_s = coalesce_s
        self.hurry_s = hurry_s
        self.resync_s = resync_s
        self.page = page
        self.sync_timeout_s = sync_timeout_s
        self.model: InventoryModel | None = None
        self.fresh_as_of = NEVER
        self.synced_at = NEVER
        self.syncs = 0
        self.first_sync_s: float | None = None
        """Seconds the first full read took (view, filter and every page applied)."""
        self.updates = 0
        self.errors = 0
        self._collector: Any = None
        self._view: Any = None
        self._whole_extra = False
        self._version = ""
        self._recreate = True
        self._resync = True
        self._want = NEVER
        self._cancelled = False
        self._tick: asyncio.Future[None] | None = None
        self.vm_hooks: list[VmHook] = []
        """Called as hook(moref, status=, power=, left=) for each VM whose guest status or power the
        model learns (every VM at each sync): the task watcher's wait_ready rides on it."""
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.soap.on_relogin.append(self._relogin)
        self._task = asyncio.create_task(self._run(), name="forkscale-informer")

    async def stop(self) -> None:
        if self._relogin in self.soap.on_relogin:
            self.soap.on_relogin.remove(self._relogin)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._destroy()

    async def _relogin(self) -> None:
        """The session (and every collector with it) is gone: start over once the loop runs again."""
        self._recreate = self._resync = True
        self._hurry.set()

    # -- answers --------------------------------------------------------------------------------
    async def inventory(self) -> Inventory:
        """The model, at least as fresh as anything else the controller heard from vCenter."""
        model = await self.barrier(self.soap.observed_at)
        return model.inventory(taken_at=time.time())

    async def fleet(self) -> FleetRead:
        """VMs and hosts for the exporter, once the first sync is complete (no barrier after that:
        metrics may lag a fraction of a second)."""
        model = self.model or await self.barrier(NEVER)
        return model.fleet(taken_at=time.time())

    async def barrier(self, target: float, timeout: float | None = None) -> InventoryModel:
        """The model once it is fresh as of `target` (a `time.monotonic()`); TemporaryError after `timeout`.

        A model being resynced still answers for any `target` it was fresh for: it was exact then.
        """
        limit = self.sync_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        while self.model is None or self.fresh_as_of < target:
            if self._task is None or self._task.done():
                raise TemporaryError("the inventory informer is not running", "InformerStopped")
            if target > self._want:
                self._want = target
                self._hurry.set()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TemporaryError(f"the inventory model did not catch up with vCenter within {limit:.0f}s",
                                     "InventoryStale")
            if self._tick is None or self._tick.done():
                self._tick = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._tick), left)
        return self.model

    # -- the loop -----------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                if self.soap.keyed_paths_refused != self._whole_extra:  # found out since the filter was made
                    self._recreate = self._resync = True
                if self._resync or time.monotonic() - self.synced_at > self.resync_s:
                    await self._sync()
                    if self._resync:  # the sync found it must start over (keyed paths refused)
                        continue
                await self._step()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except informspec.KeyedRefused as exc:  # ask for extraConfig whole from now on (keyed.py)
                log.warning("inventory informer: %s; reading extraConfig whole", exc)
                self.soap.keyed_paths_refused = True
                self._recreate = self._resync = True
            except Exception as exc:
                self.errors += 1
                self._recreate = self._resync = True
                log.warning("inventory informer: %s; resyncing in %.1fs", _why(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _sync(self) -> None:
        """Read everything into a fresh model and swap it in once complete."""
        started = time.monotonic()
        if self._recreate:
            await self._destroy()
            await self._create()
        self._resync = True
        staging = InventoryModel()
        version = await self._pages(await self._wait("", 0), staging.apply, in_thread=True)
        if not self._whole_extra and staging.vms:
            await self._probe_keyed(next(iter(staging.vms)))
            if self.soap.keyed_paths_refused:  # this model may miss tags: start over with extraConfig whole
                self._recreate = True
                return
        self.model, self._version = staging, version or ""
        for moref, vm in staging.vms.items():
            self._tell(moref, status=vm.status or "", power=vm.power)
        self.syncs += 1
        self.synced_at = time.monotonic()
        self._resync = False
        if self.first_sync_s is None:
            self.first_sync_s = self.synced_at - started
        self._fresh(started)
        log.info("inventory informer: %d VMs in %.2fs (sync %d)", len(staging.vms), self.synced_at - started,
                 self.syncs)

    async def _pages(self, data: bytes, apply: Callable[[list[Change]], None], *, in_thread: bool = False) -> str | None:
        """Decode and apply an answer and, while it is truncated, the next pages; the last version.

        The next page is asked for (its version read from the text, `updatexml.scan`) before this
        one is decoded, so vCenter's work on page k+1 overlaps ours on page k.
        """
        version: str | None = None
        while True:
            version, truncated = updatexml.scan(data)
            following = asyncio.ensure_future(self._wait(version, 0)) if version is not None and truncated else None
            try:
                page = await self._decode(data)
                if (page.version, page.truncated) != (version, truncated):
                    raise ValueError(f"an update set reads as version {page.version!r} (truncated "
                                     f"{page.truncated}) but scans as {version!r} ({truncated})")
                if in_thread and len(page.changes) > THREAD_OBJECTS:
                    await asyncio.to_thread(apply, page.changes)
                else:
                    apply(page.changes)
            except BaseException:
                if following is not None:
                    following.cancel()
                raise
            if following is None:
                return version
            data = await following

    async def _decode(self, data: bytes) -> updatexml.Page:
        if len(data) > THREAD_BYTES:  # a page of thousands of objects: off the loop
            return await asyncio.to_thread(self._decode_now, data)
        return self._decode_now(data)

    def _decode_now(self, data: bytes) -> updatexml.Page:
        try:
            return updatexml.decode(data)
        except updatexml.Unsupported as exc:  # a value only pyVmomi knows: decode this answer the slow way
            log.debug("update set decoded by pyVmomi: %s", exc)
        update = SoapAdapter.SoapResponseDeserializer(self.soap.stub).Deserialize(data, _WAIT_RESULT)
        if update is None:
            return updatexml.Page(None, False)
        return updatexml.Page(str(update.version), bool(update.truncated), informspec.changes(update))

    async def _step(self) -> None:
        """One wait (long, or zero seconds when someone waits on the barrier), its pages applied."""
        hurry = self._want > self.fresh_as_of
        resync_in = self.synced_at + self.resync_s - time.monotonic()  # a long poll ends in time for it
        data, issued = await self._poll(self._version, 0 if hurry else max(1, min(self.max_wait_s,
                                                                                  math.ceil(resync_in))))
        found: list[Change] = []
        version = await self._pages(data, found.extend)
        if version is None:
            self._fresh(issued)
            return
        self._version = version
        assert self.model is not None
        self.model.apply(found)
        for ch in found:
            if ch.what == VM and (ch.kind == "leave" or STATUS_PATH in ch.values or POWER_PATH in ch.values):
                vm = self.model.vms.get(ch.moref)
                if vm is None:
                    self._tell(ch.moref, left=True)
                else:
                    self._tell(ch.moref, status=vm.status or "" if STATUS_PATH in ch.values else None,
                               power=vm.power if POWER_PATH in ch.values else None)
        self.updates += 1
        self._fresh(issued)
        if self.coalesce_s > 0 and self._want <= self.fresh_as_of:
            self._hurry.clear()
            with contextlib.suppress(TimeoutError):  # let changes that come together arrive together
                await asyncio.wait_for(self._hurry.wait(), self.coalesce_s)

    async def _poll(self, version: str, max_wait: int) -> tuple[bytes, float]:
        """A wait that a barrier can cut short, and when it was sent. Cut short: when a barrier
        wants the model fresher than it is and no change ends the wait within `hurry_s`, it is
        cancelled and a zero-second wait sent instead (an outstanding wait proves nothing until it
        returns)."""
        self._hurry.clear()
        issued = time.monotonic()
        wait = asyncio.ensure_future(self._wait(version, max_wait))
        try:
            while not wait.done():
                hurry = asyncio.ensure_future(self._hurry.wait())
                try:
                    await asyncio.wait({wait, hurry}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    hurry.cancel()
                if wait.done() or self._want <= self.fresh_as_of:
                    self._hurry.clear()
                    continue
                await asyncio.wait({wait}, timeout=self.hurry_s)
                if not wait.done():
                    await self._cancel()
            return await wait, issued
        except vmodl.fault.RequestCanceled:
            if not self._cancelled:
                raise
            issued = time.monotonic()
            return await self._wait(version, 0), issued
        finally:
            self._cancelled = False
            if not wait.done():
                wait.cancel()

    async def _cancel(self) -> None:
        self._cancelled = True
        try:
            await self.soap.invoke(self._collector, "CancelWaitForUpdates", observe=False)
        except vmodl.MethodFault as exc:
            log.debug("CancelWaitForUpdates: %s", _why(exc))

    async def _wait(self, version: str, max_wait: int) -> bytes:
        """One `WaitForUpdatesEx`, its answer undecoded (`_pages` decodes it)."""
        opts = PC.WaitOptions(maxWaitSeconds=max_wait, maxObjectUpdates=self.page)
        try:
            data: bytes = await self.soap.invoke(self._collector, "WaitForUpdatesEx", version, opts,
                                                 timeout=max_wait + 120, observe=False, raw=True)
            return data
        except vmodl.query.InvalidCollectorVersion:
            self._resync = True
            raise

    def _tell(self, moref: str, *, status: str | None = None, power: str | None = None, left: bool = False) -> None:
        for hook in self.vm_hooks:
            try:
                hook(moref, status=status, power=power, left=left)
            except Exception:  # a broken hook must not stop the model
                log.exception("VM hook %r failed", hook)

    def _fresh(self, issued: float) -> None:
        self.fresh_as_of = max(self.fresh_as_of, issued)
        if self._tick is not None and not self._tick.done():
            self._tick.set_result(None)

    # -- the collector ---------------------------------------------------------------------------
    async def _create(self) -> None:
        c = self.soap.content
        self._collector = await self.soap.invoke(c.propertyCollector, "CreatePropertyCollector", observe=False)
        self._view = await self.soap.invoke(c.viewManager, "CreateContainerView", c.rootFolder,
                                            informspec.VIEW_TYPES, True, observe=False)
        self._whole_extra = self.soap.keyed_paths_refused
        spec = informspec.filter_spec(self._view, fleet=self.fleet_paths, whole_extra=self._whole_extra)
        await self.soap.invoke(self._collector, "CreateFilter", spec, True, observe=False)
        self._recreate = False

    async def _probe_keyed(self, vm: str) -> None:
        """One VM's keyed extraConfig path, read once per sync: a server that refuses it
        (InvalidProperty) may also leave it out of updates without a word (govmomi's simulator
        does), and a tagged VM must never look untagged; extraConfig is then read whole
        (`forkscale.vsphere.keyed`)."""
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine(vm))],
                             propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=[keyed(TAG_POOL)])])
        res = await self.soap.invoke(self.soap.content.propertyCollector, "RetrievePropertiesEx", [spec],
                                     PC.RetrieveOptions(), observe=False)
        for oc in (res.objects if res is not None else None) or []:
            if any(key_of(m.path) and fault_name(m.fault) == "InvalidProperty" for m in oc.missingSet or []):
                log.warning("vCenter refuses keyed extraConfig paths; the informer reads extraConfig whole")
                self.soap.keyed_paths_refused = True

    async def _destroy(self) -> None:
        """Best effort: both die with the session anyway."""
        for mo, method in ((self._collector, "DestroyPropertyCollector"), (self._view, "DestroyView")):
            if mo is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.soap.invoke(mo, method, observe=False), 5)
        self._collector = self._view = None


#: Pages with more object updates than this are applied on a worker thread during a sync, and
#: answers larger than THREAD_BYTES are decoded on one (the loop keeps serving meanwhile).
THREAD_OBJECTS = 200
THREAD_BYTES = 128 * 1024
_WAIT_RESULT = method_info(PC, "WaitForUpdatesEx").result


def _why(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__

