"""The fallback ladder for one clone: instant → linked → full, each step down recorded with its fault.

What stops the ladder instead of stepping down:

* **DuplicateName** is an identity problem, not a rung problem: the VM holding the name is adopted
  if it is this very clone (a retried task that did land), else the clone stops with one error
  naming the VM that holds the name (forkscale never adopts or replaces a VM it did not make).
* **A task timeout**: the task is still queued or running in vCenter and may yet make the clone,
  so trying again (or another rung, with the same name) would race it. The clone's row is
  quarantined — `failed` with its task recorded, still holding its name, IP and MAC — until a
  later reconcile sees vCenter end that task and removes what it made.
* **A lost answer** (the connection dropped while the clone call was out): the clone may exist
  already, or be queued. If a VM with this clone's tags is there, it is adopted; else the
  identity is quarantined (task unknown) rather than sent again — a server without DuplicateName
  would make the clone twice.
* **A lost task** (`TaskLost`: a restarted vCenter no longer knows it, so it will never land): the
  VM it made, if it made one before the restart, is adopted; else the clone is sent again.
* **A thawed source** (`SourceThawed`): no instant clone from it any more; one made after the
  thaw (a copy of a running machine, with its IP) is removed, and the clone steps down a rung.

A rung vCenter does not implement (`MethodNotFound`, `NotSupported`) is switched off for the rest
of the converge, with one recorded reason. Linked and full clones need not run where their source
runs: stepping down from instant moves the clone to the least-loaded host the placement allows,
and a host that turns out full or unreachable (`InsufficientMemoryResourcesFault`,
`HostNotConnected`...) is left out for the rest of the converge, the clone tried on another.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.fleet.plan import Spread
from forkscale.fleet.replicas import ReplicaManager
from forkscale.fleet.result import Result
from forkscale.fleet.sources import Source
from forkscale.ledger import CloneRecord, Ledger
from forkscale.spec import Pool
from forkscale.vsphere.model import CloneRequest, Inventory
from forkscale.vsphere.ports import SourceThawed, TaskLost, TaskTimeout, VSphere

log = logging.getLogger("forkscale.engine")
RETRIES = 3
#: Faults that say this vCenter has no such operation at all.
UNSUPPORTED = frozenset({"MethodNotFound", "NotSupported", "NotImplemented"})
#: Temporary faults after which the call may or may not have happened (the answer was lost).
ANSWER_LOST = frozenset({"ConnectionError"})
#: Faults that say the host a linked/full clone was sent to cannot take it: try another host.
HOST_FAULTS = frozenset({"InsufficientMemoryResourcesFault", "InsufficientResourcesFault", "HostNotConnected",
                         "HostCommunication"})


@dataclass
class Ladder:
    """One converge's clone attempts for a pool (shared by its clones)."""

    driver: VSphere
    ledger: Ledger
    pool: Pool
    inv: Inventory
    folder: str
    rungs: list[str]
    result: Result
    spread: Spread  # hosts for linked/full clones that step down from instant
    host_slot: Callable[[str], AbstractAsyncContextManager[Any]]  # the pool's per-host budget
    rng: random.Random
    telemetry: Any = None
    replicas: ReplicaManager | None = None  # linked clones fork from the replica on their datastore
    disabled: dict[str, str] = field(default_factory=dict)  # rung -> why vCenter cannot do it
    no_replica: dict[str, str] = field(default_factory=dict)  # datastore -> why its linked clones fork from the golden

    async def run(self, rec: CloneRecord, req: CloneRequest, src: Source) -> tuple[str | None, str]:
        """(moref, rung) of the clone made, or (None, "") with the row failed (or quarantined)."""
        reason = prev = ""
        host = rec.host
        # placed for an instant clone (on a source's host): a linked/full attempt may go anywhere
        move = next((r for r in self.rungs if not r.startswith("!")), "") == "instant"
        for rung in self.rungs:
            if rung.startswith("!"):
                prev, reason = rung[1:].split(":", 1)
                continue
            if rung in self.disabled:
                continue
            if prev:
                self._fallback(prev, rung, reason, rec.id)
            if rung != "instant" and move:
                req, host = self._move(rec, req)
                move = False
            try:
                moref, req, host = await self._on_some_host(rec, req, host, src, rung)
                return moref, rung
            except TaskTimeout as exc:
                self._quarantine(rec, str(exc), exc.task)
                return None, ""
            except TemporaryError as exc:
                if exc.fault in ANSWER_LOST:
                    self._quarantine(rec, str(exc), "")
                    return None, ""
                prev, reason = rung, exc.fault
                self.result.errors.append(str(exc))
            except SourceThawed as exc:
                if exc.clone is not None and not await self._discard(rec, exc.clone, str(exc)):
                    return None, ""
                prev, reason = rung, exc.fault
                self.result.errors.append(str(exc))
            except PermanentError as exc:
                if exc.fault == "DuplicateName":
                    return await self._duplicate(rec, req, rung, str(exc))
                if exc.fault in UNSUPPORTED:
                    self.disabled[rung] = str(exc)
                    self.result.skipped.setdefault(rung, str(exc))
                prev, reason = rung, exc.fault
                self.result.errors.append(str(exc))
        self.ledger.transition(rec.id, "failed", error=f"every rung failed (last: {reason})")
        self.ledger.transition(rec.id, "gone")
        return None, ""

    async def _on_some_host(self, rec: CloneRecord, req: CloneRequest, host: str, src: Source,
                            rung: str) -> tuple[str, CloneRequest, str]:
        """One rung on `host`; a linked/full clone a host cannot take goes to the next least-loaded host."""
        while True:
            try:
                hop = rung != "instant" and self.spread.others(host)  # a host fault: another host, not a retry here
                async with self.host_slot(host):
                    return await self._attempt(src, req, rung, rec, hop=hop), req, host
            except TemporaryError as exc:
                if rung == "instant" or exc.fault not in HOST_FAULTS or not self.spread.drop(host):
                    raise
                log.warning("%s: host %s cannot take it (%s); leaving %s out and trying another", rec.name, host,
                            exc.fault, host)
                self.result.errors.append(str(exc))
                req, host = self._move(rec, req)

    async def _attempt(self, src: Source, req: CloneRequest, rung: str, rec: CloneRecord, *, hop: bool = False) -> str:
        clone_id = rec.id
        delay = 1.0
        for attempt in range(1, RETRIES + 1):
            try:
                if rung == "instant":
                    return await self.driver.instant_clone(src.moref, req)
                if rung == "linked" and self.replicas is not None:
                    return await self._linked(src, req, rec)
                if rung == "full" and self.replicas is not None:
                    self.ledger.bind_replica(clone_id, None)  # a linked attempt that failed made nothing to depend on
                # a full clone too is made from the image's snapshot, not from whatever the golden is now
                return await self.driver.clone(src.golden or src.moref, req, linked=rung == "linked",
                                               snapshot=src.snapshot)
            except TaskTimeout:
                raise
            except TaskLost as exc:  # it will never land: what it made before the restart is ours, else again
                found = await self._ours(req.name, clone_id)
                if found is not None:
                    return found
                if attempt == RETRIES:
                    raise
                log.warning("%s: %s; its VM is not there: cloning again", req.name, exc)
                continue
            except TemporaryError as exc:
                if exc.fault in ANSWER_LOST:  # the clone may have been made all the same: never make it twice
                    found = await self._ours(req.name, clone_id)
                    if found is not None:
                        return found
                    raise
                if attempt == RETRIES or (hop and exc.fault in HOST_FAULTS):
                    raise
                wait = exc.delay * delay * (0.5 + self.rng.random())
                log.info("%s: %s; retry %d/%d in %.1fs", req.name, exc, attempt, RETRIES - 1, wait)
                await asyncio.sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")

    async def _linked(self, src: Source, req: CloneRequest, rec: CloneRecord) -> str:
        """A linked clone of the replica on the clone's datastore (made first if it has none); the
        clone is recorded as its dependant before the task is sent."""
        assert self.replicas is not None
        ds = self.inv.datastore_name(req.datastore) or rec.datastore
        try:
            replica = await self.replicas.for_clone(src, ds)
        except PermanentError as exc:
            # no replica there now (no room, vCenter refused it, its task's outcome unknown): the clone forks
            # from the golden VM's snapshot itself, as it would without replicas (said once per datastore)
            if ds not in self.no_replica:
                self.no_replica[ds] = str(exc)
                log.warning("pool %s: no replica on %s (%s); linked clones there fork from the golden snapshot",
                            self.pool.name, ds, exc)
            self.ledger.bind_replica(rec.id, None)
            return await self.driver.clone(src.golden or src.moref, req, linked=True, snapshot=src.snapshot)
        self.ledger.bind_replica(rec.id, replica.id)
        return await self.driver.clone(replica.moref, req, linked=True, snapshot=replica.snapshot)

    async def _ours(self, name: str, clone_id: int) -> str | None:
        """The VM `name` in our folder if it carries this clone's tags (a call whose answer was lost, or a retry)."""
        try:
            found = await self.driver.tagged_child(self.folder, name)
        except (PermanentError, TemporaryError) as exc:
            log.info("%s: cannot tell whether it was made (%s)", name, exc)
            return None
        if found is not None and found[1:] == (self.pool.name, str(clone_id)):
            return found[0]
        return None

    async def _duplicate(self, rec: CloneRecord, req: CloneRequest, rung: str, error: str) -> tuple[str | None, str]:
        found = await self._ours(req.name, rec.id)
        if found is not None:
            return found, rung
        holder = await self.driver.tagged_child(self.folder, req.name)
        who = holder[0] if holder is not None else "a VM"
        why = (f"{req.name}: the name is held by {who}, which forkscale did not make for clone {rec.id} of pool "
               f"{self.pool.name}; it is left alone — rename or remove it ({error})")
        self.result.errors.append(why)
        self.ledger.transition(rec.id, "failed", error=why)
        self.ledger.transition(rec.id, "gone")
        return None, ""

    async def _discard(self, rec: CloneRecord, vm: str, why: str) -> bool:
        """Remove the VM an attempt made that must not live (made from a thawed source). False when it
        stays: the row is then failed, holding the VM for the next reconcile to remove."""
        try:
            await self.driver.destroy(vm)
            left = bool(await self.driver.vm_props([vm], ["name"]))
            error = f"{vm} is still in vCenter after Destroy_Task"
        except (PermanentError, TemporaryError) as exc:
            left, error = True, str(exc)
        if left:
            msg = f"{rec.name}: {why}; it could not be removed ({error}): the next run removes it"
            self.result.errors.append(msg)
            self.ledger.transition(rec.id, "failed", vm_moref=vm, error=msg)
            return False
        log.warning("%s: removed %s (%s)", rec.name, vm, why)
        return True

    def _quarantine(self, rec: CloneRecord, why: str, task: str) -> None:
        """Hold the clone's identity: its task may still make a VM with this name, IP and MAC."""
        msg = (f"{rec.name}: {why}; quarantined: its name, IP and MAC stay reserved until vCenter says the task "
               "ended and no VM holds them")
        log.warning("%s", msg)
        self.result.errors.append(msg)
        self.ledger.transition(rec.id, "failed", error=f"quarantined: {why}", pending_task=task)

    def _move(self, rec: CloneRecord, req: CloneRequest) -> tuple[CloneRequest, str]:
        """A linked/full clone after an instant one failed: the least-loaded host the placement allows."""
        host = self.spread.take()
        self.ledger.update(rec.id, host=host)
        return dataclasses.replace(req, host=self.inv.hosts[host]), host

    def _fallback(self, frm: str, to: str, reason: str, clone_id: int) -> None:
        self.result.fallbacks[f"{frm}->{to}:{reason}"] += 1
        self.ledger.update(clone_id, fallback_reason=f"{frm}->{to}: {reason}", kind=to)
        if self.telemetry is not None:
            self.telemetry.record_fallback(self.pool.name, frm, to, reason)
