"""The engine: pool spec → desired count → reconcile with ledger and inventory → plan → execute.

Every clone is written to the ledger (with its whole identity) before its task is submitted,
and tagged in vCenter (`forkscale.pool`, `forkscale.id` in extraConfig), so a controller
killed at any point converges to the same answer when run again: it adopts what finished,
rolls back what did not, and removes orphans it made. The ladder of one clone (instant → linked
→ full, duplicates, timeouts) is `forkscale.fleet.ladder`; budgets are `forkscale.fleet.budgets`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from forkscale.core.errors import PermanentError, SpecError, TemporaryError
from forkscale.core.identity import guestinfo
from forkscale.fleet.budgets import Budgets
from forkscale.fleet.images import ImageRef, first_image, golden_vm, image_for_new
from forkscale.fleet.ladder import UNSUPPORTED, Ladder
from forkscale.fleet.plan import LIVE, Spread, fallback_hosts, make_plan, placement_datastores
from forkscale.fleet.reconcile import Reconciler, VmIndex
from forkscale.fleet.replicas import ReplicaManager
from forkscale.fleet.result import Result
from forkscale.fleet.sources import Source, SourceManager
from forkscale.fleet.userdisks import UserDiskKeeper
from forkscale.ledger import CloneRecord, Ledger, ReservationTaken
from forkscale.spec import Pool, Spec
from forkscale.vsphere.model import TAG_ID, TAG_POOL, TAG_REPLICA, TAG_SOURCE, CloneRequest, Inventory
from forkscale.vsphere.ports import VSphere

log = logging.getLogger("forkscale.engine")
#: The first vCenter API with InstantClone_Task and CheckInstantClone_Task.
INSTANT_API = (6, 7)
#: Passes of one converge at most: another follows a pass during which vCenter restarted.
PASSES = 3


Progress = Callable[[str, dict[str, int]], None]
#: Runs a pool's drain hook on a clone picked for scale-down; True when it may be destroyed now
#: (forkscale.workloads.drain.Drainer; the clone is left `draining` then, or put back as it was on False).
DrainHook = Callable[[Pool, Any, Result], Awaitable[bool]]


async def gather_or_cancel(*aws: Awaitable[Any]) -> None:
    """Run `aws` together; the first error (vCenter gone for good, a bug) cancels the rest, which
    the ledger leaves for the next run to reconcile, and is raised once they have stopped."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if not t.cancelled() and (exc := t.exception()) is not None:
            raise exc


def api_tuple(version: str) -> tuple[int, ...]:
    """"6.7.3" -> (6, 7, 3); unreadable parts stop the tuple."""
    out: list[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


class Engine:
    def __init__(self, spec: Spec, ledger: Ledger, driver: VSphere, *, telemetry: Any = None,
                 progress: Progress | None = None, rng: random.Random | None = None,
                 vcenter: str | None = None) -> None:
        self.spec = spec
        self.ledger = ledger
        self.driver = driver
        self.telemetry = telemetry
        self.progress = progress or (lambda pool, counts: None)
        self.rng = rng or random.Random()
        # the vCenter-wide budget is one number per vCenter (see forkscale/fleet/budgets.py): with several,
        # each engine's is the largest of its own pools'
        mine = [p for p in spec.pools if vcenter is None or spec.vcenter_name(p) == vcenter]
        self.budgets = Budgets(max((p.budgets.vcenter for p in mine), default=1), telemetry=telemetry)
        self.disks = UserDiskKeeper(driver, ledger)
        #: clones a `create` of this process is making now (ids): a concurrent reconcile or converge
        #: of the same pool (a rollout next to the policy loop) leaves them to it
        self.in_flight: set[int] = set()
        self.reconcile = Reconciler(ledger, driver, before_destroy=self._release_disks, busy=self.in_flight)
        self.drainer: DrainHook | None = None
        #: one lock per pool and datastore: a replica is made once however many clones want it at once
        self.replica_locks: dict[str, dict[str, asyncio.Lock]] = {}
        #: the spec's vCenter this engine's driver speaks to (None: the only one); with several,
        #: one engine per vCenter, each with its own session and budgets, acts on its pools only
        self.vcenter = vcenter

    def _check_vcenter(self, pool: Pool) -> None:
        where = self.spec.vcenter_name(pool)
        if self.vcenter is not None and where != self.vcenter:
            raise SpecError("pool", f"pool {pool.name!r} is on vCenter {where!r}, not {self.vcenter!r}")

    # validation against vCenter ------------------------------------------------------------
    @staticmethod
    def check_pool(pool: Pool, inv: Inventory, index: int) -> Source:
        """Inventory-dependent spec checks; SpecError (exit 2) before anything is created."""
        path = f"pools[{index}]"
        src = inv.vm_by_name(pool.source.rsplit("/", 1)[-1])
        if src is None:
            raise SpecError(f"{path}.source", f"no VM named {pool.source!r} in vCenter")
        if pool.network.port_group not in inv.networks:
            raise SpecError(f"{path}.network.port_group", f"no port group named {pool.network.port_group!r} "
                            f"(known: {', '.join(sorted(inv.networks))})")
        for i, ds in enumerate(pool.placement.datastores):
            if ds not in inv.datastores:
                raise SpecError(f"{path}.placement.datastores[{i}]", f"no datastore named {ds!r}")
        for i, host in enumerate(pool.placement.hosts):
            if host not in inv.hosts:
                raise SpecError(f"{path}.placement.hosts[{i}]", f"no host named {host!r}")
        if pool.placement.resource_pool and pool.placement.resource_pool not in inv.pools:
            raise SpecError(f"{path}.placement.resource_pool", f"no resource pool named {pool.placement.resource_pool!r}")
        if "linked" in pool.fallback and pool.snapshot and src.snapshot is None:
            raise SpecError(f"{path}.snapshot", f"{pool.source} has no snapshot {pool.snapshot!r}")
        return Source(moref=src.moref, name=src.name, host=src.host or "", snapshot=src.snapshot, frozen=src.frozen)

    async def image_source(self, pool: Pool, inv: Inventory, index: int,
                           image: ImageRef | None = None) -> tuple[Source, ImageRef]:
        """The spec checked against `inv`, and the golden VM new clones come from: the image's (by default
        the one new clones of the pool come from, forkscale/fleet/images.py), at its snapshot."""
        self.check_pool(pool, inv, index)
        if image is None:
            rec = image_for_new(self.ledger, pool.name) or await first_image(self.ledger, self.driver, pool, inv, index)
            image = ImageRef.of(rec)
        vm = golden_vm(inv, image.golden, f"pools[{index}].source")
        return Source(moref=vm.moref, name=vm.name, host=vm.host or "", snapshot=image.snapshot, frozen=vm.frozen,
                      image_generation=image.generation), image

    def rungs(self, pool: Pool, index: int) -> tuple[list[str], dict[str, str]]:
        """The rungs this vCenter can run for `pool`, and why any were left out (said once, not per clone)."""
        rungs, skipped = list(pool.fallback), {}
        version = self.driver.api_version
        if "instant" in rungs and version and api_tuple(version) < INSTANT_API:
            skipped["instant"] = (f"vCenter API {version} has no instant clone (InstantClone_Task needs "
                                  f"{'.'.join(map(str, INSTANT_API))}); using {', '.join(rungs[1:]) or 'nothing'}")
            rungs.remove("instant")
        if not rungs:
            raise SpecError(f"pools[{index}].fallback", f"{skipped['instant']}: add linked or full")
        return rungs, skipped

    # execution -------------------------------------------------------------------------------
    async def converge(self, pool_name: str, desired: int | None = None, *, dry_run: bool = False,
                       set_by: str | None = None) -> Result:
        started = time.monotonic()
        index, pool = self._pool(pool_name)
        self._check_vcenter(pool)
        want = desired if desired is not None else (pool.count or 0)
        if want < 0:
            raise SpecError("count", "must be >= 0")
        if want > pool.capacity():
            raise SpecError("count", f"{want} clones need {want} addresses but the pool's range holds {pool.capacity()}")
        inv = await self.driver.inventory()
        self.avoid_evacuated(inv)
        source, image = await self.image_source(pool, inv, index)
        rungs, skipped = self.rungs(pool, index)
        result = Result(pool=pool.name, desired=want, skipped=dict(skipped))
        mgr = self.sources(pool, index, image)
        if dry_run:
            sources = (mgr.current(inv, inv.vms[source.moref]) if "instant" in rungs else []) or [source]
            plan = make_plan(pool, inv, sources, self.ledger.clones(pool.name, states=list(LIVE)), want, rungs=rungs)
            plan.skipped_rungs.update(skipped)
            result.errors = plan.describe()
            return result
        mgr.check_freeze(inv, source, instant="instant" in rungs)  # bad input: exit 2 before anything is created
        for rung, why in skipped.items():
            log.warning("pool %s: rung %s skipped: %s", pool.name, rung, why)
        self.ledger.set_desired(pool.name, want, set_by or ("spec" if desired is None else "scale"))
        folder = await self._folder(pool, inv)
        for attempt in range(1, PASSES + 1):
            epoch = self.driver.epoch
            await self._pass(pool, inv, source, mgr, folder, rungs, want, result)
            if self.driver.epoch == epoch or attempt == PASSES:
                break
            # vCenter restarted (or the session was renewed) under this pass: what it held may be gone,
            # answers were lost. Reconcile against what it holds now and carry the work on.
            log.warning("pool %s: a new vCenter session began during the run; reconciling with what vCenter "
                        "holds now and carrying on (pass %d of at most %d)", pool.name, attempt + 1, PASSES)
            inv = await self.driver.inventory()
            source, _ = await self.image_source(pool, inv, index, image)
            result.failed = 0  # what failed is judged again by the next pass's reconcile
        counts = self.ledger.counts(pool.name)
        result.ready = counts.get("ready", 0) + counts.get("claimed", 0)
        result.seconds = time.monotonic() - started
        self.progress(pool.name, counts)
        return result

    async def _pass(self, pool: Pool, inv: Inventory, source: Source, mgr: SourceManager, folder: str,
                    rungs: list[str], want: int, result: Result) -> None:
        """Reconcile, plan and carry out one pass of a converge."""
        await self.reconcile(pool, inv, result)
        live = self.ledger.clones(pool.name, states=list(LIVE))
        # a clone being replaced right now (its identity reserved, its old row still destroying) comes back
        # through its replacement: it counts as there, or both would make one
        pending = self._replacing(pool, live)
        creating = want - pending > len(live)
        reserved = await self._reserved(pool, want - len(live) - pending)
        sources = await mgr.for_converge(inv, source, folder, creating and "instant" in rungs)
        if creating:
            rungs = await self._preflight(pool, rungs, inv, sources[0], folder, result)
        plan = make_plan(pool, inv, sources, live, want - pending, rungs=rungs)
        busy = {r.name for r in live if r.id in self.in_flight}  # made by a rollout right now: not a victim
        ladder = self.ladder(pool, inv, folder, rungs, result, source, live)
        if ladder.replicas is not None:
            await ladder.replicas.sync()
        names = reserved + [None] * len(plan.create)
        await gather_or_cancel(
            *(self.create(pool, inv, sources, host, ds, ladder, reservation=name)
              for (host, ds), name in zip(plan.create, names, strict=False)),
            *(self._destroy(pool, name, result, scale_down=True) for name in plan.destroy if name not in busy),
            *(self._finish(pool, rec, result) for rec in self.ledger.clones(pool.name, ["customizing"])
              if rec.name not in plan.destroy and rec.id not in self.in_flight))
        await mgr.retire()
        if ladder.replicas is not None:
            await ladder.replicas.retire()

    def _pool(self, name: str) -> tuple[int, Pool]:
        for i, p in enumerate(self.spec.pools):
            if p.name == name:
                return i, p
        raise SpecError("pool", f"no pool named {name!r} in the spec (pools: {', '.join(p.name for p in self.spec.pools)})")

    async def _folder(self, pool: Pool, inv: Inventory) -> str:
        name = pool.placement.folder
        if name in inv.folders:
            return inv.folders[name]
        folder = await self.driver.create_folder(await self.driver.vm_folder(), name)
        inv.folders[name] = folder
        return folder

    def sources(self, pool: Pool, index: int, image: ImageRef | None) -> SourceManager:
        """The per-host sources of one image of the pool."""
        return SourceManager(self.driver, self.ledger, pool, index, rng=self.rng, image=image,
                             keep_previous_s=pool.rollout.keep_previous_s)

    def ladder(self, pool: Pool, inv: Inventory, folder: str, rungs: list[str], result: Result, golden: Source,
               live: list[CloneRecord]) -> Ladder:
        return Ladder(self.driver, self.ledger, pool, inv, folder, rungs, result,
                      Spread.over(fallback_hosts(pool, inv, golden), live),
                      lambda host: self.budgets.of(pool, f"host:{host}"), self.rng, self.telemetry,
                      replicas=self.replicas(pool, inv, folder))

    def replicas(self, pool: Pool, inv: Inventory, folder: str) -> ReplicaManager:
        """The pool's replicas for linked clones (forkscale/fleet/replicas.py), seen through `inv`."""
        return ReplicaManager(self.driver, self.ledger, pool, inv, folder, rng=self.rng,
                              locks=self.replica_locks.setdefault(pool.name, {}))

    def sources_of(self, pool: Pool) -> SourceManager:
        """Every per-host source of the pool, whatever its image (forkscale/fleet/sources.py)."""
        return self.sources(pool, [p.name for p in self.spec.pools].index(pool.name), None)

    def avoid_evacuated(self, inv: Inventory) -> None:
        """Place nothing on a host being evacuated (an open `evacuate` operation of any pool)."""
        for p in self.spec.pools:
            op = self.ledger.operations.open(p.name)
            if op is not None and op.kind == "evacuate" and op.params.get("host"):
                inv.avoid.add(str(op.params["host"]))

    def _replacing(self, pool: Pool, live: list[CloneRecord]) -> int:
        """Reserved identities still held by a row on its way out (destroying, or failed and quarantined)."""
        held = {r.name for r in live}
        out = {r.name for r in self.ledger.reservations.of(pool.name)} - held
        open_ = {r.name for r in self.ledger.reservations.open(pool.name)}
        return len(out - open_)

    async def _reserved(self, pool: Pool, room: int) -> list[str]:
        """The open reservations (identities of replaced clones) the next `room` new clones take; those
        beyond `room` are given up (the pool shrank meanwhile), their detached user disks with them."""
        open_ = self.ledger.reservations.open(pool.name)
        keep = max(0, room)
        for res in open_[keep:]:
            log.info("pool %s: %s is not made again (the pool shrank); its identity is released", pool.name, res.name)
            await self.disks.forget(pool.name, bool(pool.user_disk and pool.user_disk.keep), res.name)
            self.ledger.reservations.drop(res.name)
        return [r.name for r in open_[:keep]]

    async def folder(self, pool: Pool, inv: Inventory) -> str:
        return await self._folder(pool, inv)

    async def _preflight(self, pool: Pool, rungs: list[str], inv: Inventory, src: Source, folder: str,
                         result: Result) -> list[str]:
        """CheckInstantClone_Task once: a problem makes every clone fall back (recorded per clone); a
        vCenter without the method skips the rung (recorded once). A temporary failure is no verdict."""
        if "instant" not in rungs:
            return rungs
        ds = placement_datastores(pool, inv, [src])[0]
        req = CloneRequest(name=f"{pool.name}-preflight", folder=folder, datastore=inv.datastores[ds][0],
                           host=src.host, resource_pool=None, network=inv.networks[pool.network.port_group],
                           mac="00:50:56:00:00:01", nic_key=None, extra={})
        try:
            problems = [src.problem] if src.problem else await self.driver.check_instant_clone(src.moref, req)
        except TemporaryError:
            problems = []
        except PermanentError as exc:
            if exc.fault in UNSUPPORTED:
                result.skipped["instant"] = f"vCenter cannot check or make instant clones ({exc})"
                log.warning("pool %s: rung instant skipped: %s", pool.name, exc)
                return [r for r in rungs if r != "instant"] or rungs
            problems = [str(exc)]
        if not problems:
            return rungs
        reason = problems[0].split(":", 1)[0]
        log.warning("pool %s: instant clone pre-flight failed (%s); falling back", pool.name, problems[0])
        return [f"!instant:{reason}" if r == "instant" else r for r in rungs]

    async def create(self, pool: Pool, inv: Inventory, sources: list[Source], host: str, ds: str,
                     ladder: Ladder, *, reservation: str | None = None) -> CloneRecord | None:
        """Make one clone on `host` / `ds` (with the reserved identity `reservation`, if given), wait until it
        is ready; its row (None when a reservation was taken by another caller meanwhile)."""
        src = next((s for s in sources if inv.host_names.get(s.host) == host), sources[0])
        first = next(r for r in ladder.rungs if not r.startswith("!"))
        started = time.monotonic()
        rec: CloneRecord | None = None
        try:
            async with self.budgets.task(pool, f"datastore:{ds}"):
                await self.budgets.rate(pool).wait()
                # Identity is allocated (and the row written) once a slot is ours, still before the task
                # is submitted: planning all N up front blocked the loop before the first clone went out
                # (bench/fanout.py: 500 plans delayed the first wave by ~0.3 s).
                try:
                    rec = self.ledger.plan_clone(
                        pool.name, name_pattern=pool.name_pattern, hostname_pattern=pool.hostname_pattern,
                        network=pool.network, kind=first, source=src.name, source_generation=src.generation,
                        host=host, datastore=ds, port_group=pool.network.port_group, taken_macs=inv.macs,
                        rng=self.rng, image_generation=src.image_generation, reservation=reservation,
                        sending=True)
                except ReservationTaken:
                    return None
                self.in_flight.add(rec.id)  # this process is making it: a concurrent reconcile leaves it be
                moref, kind = await ladder.run(rec, self._request(pool, inv, rec, host, ds, ladder), src)
            if moref is None:
                ladder.result.failed += 1
                self._report(pool)
                return self.ledger.get(rec.id)
            rec = self.ledger.transition(rec.id, "customizing", vm_moref=moref, kind=kind)
            self._report(pool)
            if await self._finish(pool, rec, ladder.result):
                ladder.result.created += 1
                if self.telemetry is not None:
                    self.telemetry.observe_clone_ready(pool.name, kind, time.monotonic() - started)
            return self.ledger.get(rec.id)
        finally:
            if rec is not None:
                self.in_flight.discard(rec.id)

    def _request(self, pool: Pool, inv: Inventory, rec: CloneRecord, host: str, ds: str,
                 ladder: Ladder) -> CloneRequest:
        """The clone spec of a row planned and `cloning` (its identity and tags in extraConfig)."""
        extra = guestinfo(rec, pool.network, pool.guestinfo)
        extra[TAG_POOL] = pool.name
        extra[TAG_ID] = str(rec.id)
        extra[TAG_SOURCE] = ""  # an instant clone inherits its source's extraConfig; an empty value drops the tag
        extra[TAG_REPLICA] = ""  # and a linked clone its replica's
        req = CloneRequest(name=rec.name, folder=ladder.folder, datastore=inv.datastores[ds][0],
                           host=inv.hosts[host], resource_pool=inv.pools.get(pool.placement.resource_pool or "", None),
                           network=inv.networks[pool.network.port_group], mac=rec.mac, nic_key=None,
                           extra=extra, disconnect=pool.network.disconnect)
        return req

    async def finish(self, pool: Pool, rec: CloneRecord, result: Result) -> bool:
        """Finish a clone found `customizing` that no call of this process is making (adopted after a crash)."""
        if rec.id in self.in_flight or rec.state != "customizing":
            return False
        self.in_flight.add(rec.id)
        try:
            return await self._finish(pool, rec, result)
        finally:
            self.in_flight.discard(rec.id)

    async def _finish(self, pool: Pool, rec: CloneRecord, result: Result) -> bool:
        """A clone vCenter made (or one adopted while customizing): powered on, then its guest ready when
        the pool asks for that. True once it is `ready`; else it is removed and counted as failed."""
        if not rec.vm_moref:
            return False
        waits = pool.guest_ready.required and not (pool.freeze == "running" and rec.kind == "instant")
        why = None if (waits and rec.kind == "instant") else await self._powered_on(rec.id, rec.name, rec.vm_moref)
        if why is None:
            why = await self._user_disk(pool, rec)
        if why is None and waits:
            status = await self.driver.wait_ready(rec.vm_moref, pool.guest_ready.timeout_s)
            if status != "ready":
                why = "guest did not report ready in time" if status == "timeout" else f"guest reported {status}"
        if why is not None:
            result.errors.append(f"{rec.name}: {why}")
            self.ledger.transition(rec.id, "failed", error=why)
            if await self.reconcile.destroy_vm(rec.vm_moref, rec):
                self.ledger.transition(rec.id, "gone")
            result.failed += 1
            self._report(pool)
            return False
        self.ledger.make_ready(rec.id)
        self._report(pool)
        return True

    async def _user_disk(self, pool: Pool, rec: CloneRecord) -> str | None:
        """None once the clone has its identity's user disk (or the pool gives none); else why not."""
        try:
            await self.disks.attach(pool, rec)
        except (PermanentError, TemporaryError) as exc:
            return f"its user disk could not be attached: {exc}"
        return None

    async def _release_disks(self, pool_name: str, rec: CloneRecord | None, vm_moref: str) -> None:
        """Before a clone VM is destroyed: its user disk detached (kept for a replacement, else deleted)."""
        pool = next((p for p in self.spec.pools if p.name == pool_name), None)
        keep = bool(pool is not None and pool.user_disk is not None and pool.user_disk.keep)
        await self.disks.release(pool_name, keep, rec, vm_moref)

    async def _powered_on(self, rec_id: int, name: str, moref: str) -> str | None:
        """None once the clone runs; a clone that came up powered off (vCenter may not honour `powerOn`)
        is powered on here. Else why it does not run."""
        props = (await self.driver.vm_props([moref], ["runtime.powerState", "config.instanceUuid"])).get(moref, {})
        power = props.get("runtime.powerState")
        if power is None:
            return "the VM vanished from vCenter"
        rec = self.ledger.get(rec_id)
        if rec is not None and props.get("config.instanceUuid") and rec.state != "gone":
            self.ledger.update(rec.id, instance_uuid=str(props["config.instanceUuid"]))
        if power == "poweredOn":
            return None
        log.info("%s came up %s; powering it on", name, power)
        try:
            await self.driver.power_on(moref)
        except (PermanentError, TemporaryError) as exc:
            return f"came up {power} and could not be powered on: {exc}"
        power = (await self.driver.vm_props([moref], ["runtime.powerState"])).get(moref, {}).get("runtime.powerState")
        return None if power == "poweredOn" else f"is {power} after PowerOnVM_Task"

    async def _destroy(self, pool: Pool, name: str, result: Result, *, scale_down: bool = False) -> bool:
        """Destroy one clone. `scale_down`: a victim of a plan, so spare a clone claimed since the
        plan was made (no await separates this check from the transition), and drain it first
        when the pool has a drain hook (a failed drain keeps it). The row is `gone` only once
        vCenter no longer has the VM. False when the destroy failed (the error is in `result`)."""
        rec = self.ledger.by_name(name)
        if rec is None or rec.state not in LIVE:
            return True
        if scale_down and rec.state == "claimed" and pool.drain is None:
            return True
        if scale_down and pool.drain is not None and self.drainer is not None and rec.state in ("ready", "claimed"):
            self.in_flight.add(rec.id)  # `draining` while its hook runs: a rollout leaves it be
            try:
                if not await self.drainer(pool, rec, result):
                    return True
            finally:
                self.in_flight.discard(rec.id)
        if rec.state != "destroying":
            self.ledger.transition(rec.id, "destroying")
        if rec.vm_moref:
            async with self.budgets.task(pool):
                try:
                    await self._release_disks(pool.name, rec, rec.vm_moref)
                    await self.driver.destroy(rec.vm_moref)
                    left = await self.driver.vm_props([rec.vm_moref], ["name"])
                except (PermanentError, TemporaryError) as exc:
                    left, error = {rec.vm_moref: {}}, str(exc)
                else:
                    error = f"{rec.vm_moref} is still in vCenter after Destroy_Task"
            if left:
                result.errors.append(f"{name}: {error}")
                self.ledger.transition(rec.id, "failed", error=error)
                result.failed += 1
                return False
        self.ledger.transition(rec.id, "gone")
        result.destroyed += 1
        self._report(pool)
        return True

    async def destroy_pool(self, pool_name: str, *, sources: bool = False) -> Result:
        """Remove every clone of a pool: ledger rows and anything tagged for it in vCenter.

        Its per-host sources are kept (retiring ones no clone uses any more go, as after a
        converge) unless `sources`: then they are removed too, after the clones. The golden VM
        is never touched. `result.sources` names what was removed and what remains.
        """
        pool = self.spec.pool(pool_name)
        self._check_vcenter(pool)
        result = Result(pool=pool.name, desired=0)
        inv = await self.driver.inventory()
        await self.reconcile(pool, inv, result)
        live = self.ledger.clones(pool.name, states=list(LIVE))
        done = await asyncio.gather(*(self._destroy(pool, r.name, result) for r in live))
        reported = {r.name for r, ok in zip(live, done, strict=True) if not ok}
        await self._forget_identities(pool)
        mgr = self.sources(pool, [p.name for p in self.spec.pools].index(pool.name), None)
        if sources:
            # a clone whose destroy failed may still be in vCenter: keep the source it was forked from
            keep = {r.source for r in self.ledger.clones(pool.name, states=["failed"]) if r.kind == "instant"}
            removed, remaining = await mgr.remove_all(inv, keep)
            for name in remaining:
                result.errors.append(f"source {name} was not removed (a live clone still uses it, or its destroy failed)")
        else:
            mgr.sync(inv)
            had_vm = set(mgr.remaining())
            removed = [name for name in await mgr.retire() if name in had_vm]
            remaining = mgr.remaining()
        result.sources = {"removed": removed, "remaining": remaining}
        result.replicas = await self._drop_replicas(pool, inv, result)
        await self._leftovers(pool, result, reported)
        return result

    async def _drop_replicas(self, pool: Pool, inv: Inventory, result: Result) -> dict[str, list[str]]:
        """After a pool's clones: its replicas no clone depends on any more (every one, normally)."""
        replicas = self.replicas(pool, inv, inv.folders.get(pool.placement.folder, ""))
        await replicas.sync()
        removed = await replicas.retire()
        kept = self.ledger.replicas(pool.name, ("preparing", "ready", "removing"))
        for r in kept:
            result.errors.append(f"replica {r.vm_name} was kept: {r.refs} clone(s) still depend on it"
                                 if r.refs else f"replica {r.vm_name} could not be removed; run destroy again")
        return {"removed": removed, "remaining": [r.vm_name for r in kept]}

    async def _forget_identities(self, pool: Pool) -> None:
        """The pool is gone: no identity is held for a replacement, no user disk waits for one."""
        keep = bool(pool.user_disk is not None and pool.user_disk.keep)
        for res in self.ledger.reservations.of(pool.name):
            self.ledger.reservations.drop(res.name)
        for disk in self.ledger.user_disks.all(pool.name, ("creating", "detached")):
            try:
                await self.disks.forget(pool.name, keep, disk.identity)
            except (PermanentError, TemporaryError) as exc:
                log.warning("pool %s: user disk %s: %s", pool.name, disk.path, exc)

    async def _leftovers(self, pool: Pool, result: Result, reported: set[str]) -> None:
        """Never report a pool destroyed while vCenter still holds a VM of it: every VM tagged for the
        pool, and every VM any of its ledger rows recorded (moref, instance UUID), is looked for in a
        fresh inventory; `result.failed` is how many remain (those in `reported` already said why)."""
        inv = await self.driver.inventory()
        index = VmIndex(inv)
        left = {v.moref: v for v in inv.vms.values() if v.pool == pool.name and not v.is_source}
        for rec in self.ledger.clones(pool.name):
            vm = index.find(rec)
            if vm is not None and not vm.is_source:
                left[vm.moref] = vm
        pending = [r for r in self.ledger.clones(pool.name, ["failed"]) if r.pending_task is not None]
        result.failed = len(left) + len(pending)
        for vm in sorted(left.values(), key=lambda v: v.name):
            if vm.name not in reported:
                result.errors.append(f"{vm.name} ({vm.moref}) is still in vCenter; run destroy again")
        for rec in pending:
            result.errors.append(f"{rec.name}: its clone task {rec.pending_task or '(unknown)'} may still land; "
                                 "run destroy again once vCenter shows it ended")

    def _report(self, pool: Pool) -> None:
        self.progress(pool.name, self.ledger.counts(pool.name))
