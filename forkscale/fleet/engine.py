"""The engine: pool spec → desired count → reconcile with ledger and inventory → plan → execute.

Every clone is written to the ledger (with its whole identity) before its task is submitted,
and tagged in vCenter (`forkscale.pool`, `forkscale.id` in extraConfig), so a controller
killed at any point converges to the same answer when run again: it adopts what finished,
rolls back what did not, and removes orphans it made.
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
from forkscale.fleet.budgets import Budget, Rate
from forkscale.fleet.plan import LIVE, Plan, make_plan
from forkscale.fleet.reconcile import Reconciler
from forkscale.fleet.result import Result
from forkscale.fleet.sources import Source, SourceManager
from forkscale.ledger import Ledger
from forkscale.spec import Pool, Spec
from forkscale.vsphere.model import TAG_ID, TAG_POOL, TAG_SOURCE, CloneRequest, Inventory
from forkscale.vsphere.ports import VSphere

log = logging.getLogger("forkscale.engine")
NIC_KEY = 4000
RETRIES = 3


Progress = Callable[[str, dict[str, int]], None]
#: Runs a pool's drain hook on a clone picked for scale-down; True when it may be destroyed now
#: (forkscale.workloads.drain.Drainer; the clone is left `draining` then, or put back as it was on False).
DrainHook = Callable[[Pool, Any, Result], Awaitable[bool]]


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
        self.budgets: dict[str, Budget] = {}
        self.rates: dict[str, Rate] = {}
        self.reconcile = Reconciler(ledger, driver)
        self.drainer: DrainHook | None = None
        #: the spec's vCenter this engine's driver speaks to (None: the only one); with several,
        #: one engine per vCenter, each with its own session and budgets, acts on its pools only
        self.vcenter = vcenter

    def _check_vcenter(self, pool: Pool) -> None:
        where = self.spec.vcenter_name(pool)
        if self.vcenter is not None and where != self.vcenter:
            raise SpecError("pool", f"pool {pool.name!r} is on vCenter {where!r}, not {self.vcenter!r}")

    # validation against vCenter ------------------------------------------------------------
    def check_pool(self, pool: Pool, inv: Inventory, index: int) -> Source:
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

    # reconcile -------------------------------------------------------------------------------
    async def _destroy_vm(self, moref: str) -> None:
        try:
            await self.driver.destroy(moref)
        except PermanentError as exc:
            log.warning("could not destroy %s: %s", moref, exc)

    # planning --------------------------------------------------------------------------------
    # execution -------------------------------------------------------------------------------
    def budget(self, scope: str, limit: int) -> Budget:
        b = self.budgets.get(scope)
        if b is None:
            b = self.budgets[scope] = Budget(scope, limit, telemetry=self.telemetry)
        return b

    async def converge(self, pool_name: str, desired: int | None = None, *, dry_run: bool = False,
                       set_by: str | None = None) -> Result:
        started = time.monotonic()
        index, pool = next(((i, p) for i, p in enumerate(self.spec.pools) if p.name == pool_name), (-1, None))
        if pool is None:
            raise SpecError("pool", f"no pool named {pool_name!r} in the spec "
                            f"(pools: {', '.join(p.name for p in self.spec.pools)})")
        self._check_vcenter(pool)
        want = desired if desired is not None else (pool.count or 0)
        if want < 0:
            raise SpecError("count", "must be >= 0")
        if want > pool.capacity():
            raise SpecError("count", f"{want} clones need {want} addresses but the pool's range holds {pool.capacity()}")
        inv = await self.driver.inventory()
        source = self.check_pool(pool, inv, index)
        result = Result(pool=pool.name, desired=want)
        if dry_run:
            sources = self._sources(pool, index).current(inv, inv.vms[source.moref]) or [source]
            plan = make_plan(pool, inv, sources, self.ledger.clones(pool.name, states=list(LIVE)), want)
            result.errors = plan.describe()
            return result
        self.ledger.set_desired(pool.name, want, set_by or ("spec" if desired is None else "scale"))
        folder = await self._folder(pool, inv)
        await self.reconcile(pool, inv, result)
        mgr = self._sources(pool, index)
        creating = want > len(self.ledger.clones(pool.name, states=list(LIVE)))
        sources = await mgr.for_converge(inv, source, folder, creating)  # per-host sources, else the golden VM
        plan = make_plan(pool, inv, sources, self.ledger.clones(pool.name, states=list(LIVE)), want)
        rungs = await self._preflight(pool, plan, inv, sources[0], folder)
        await asyncio.gather(
            *(self._create(pool, inv, sources, host, ds, folder, rungs, result) for host, ds in plan.create),
            *(self._destroy(pool, name, result, scale_down=True) for name in plan.destroy),
            *(self._finish_customizing(pool, rec, result) for rec in self.ledger.clones(pool.name, ["customizing"])
              if rec.name not in plan.destroy))
        await mgr.retire()
        counts = self.ledger.counts(pool.name)
        result.ready = counts.get("ready", 0) + counts.get("claimed", 0)
        result.seconds = time.monotonic() - started
        self.progress(pool.name, counts)
        return result

    async def _folder(self, pool: Pool, inv: Inventory) -> str:
        name = pool.placement.folder
        if name in inv.folders:
            return inv.folders[name]
        folder = await self.driver.create_folder(await self.driver.vm_folder(), name)
        inv.folders[name] = folder
        return folder

    def _sources(self, pool: Pool, index: int) -> SourceManager:
        return SourceManager(self.driver, self.ledger, pool, index, rng=self.rng)

    async def _preflight(self, pool: Pool, plan: Plan, inv: Inventory, src: Source, folder: str) -> list[str]:
        rungs = list(pool.fallback)
        if "instant" in rungs and plan.create:
            host, ds = plan.create[0]
            req = CloneRequest(name=f"{pool.name}-preflight", folder=folder, datastore=inv.datastores[ds][0],
                               host=inv.hosts[host], resource_pool=None, network=inv.networks[pool.network.port_group],
                               mac="00:50:56:00:00:01", nic_key=NIC_KEY, extra={})
            try:
                problems = [src.problem] if src.problem else await self.driver.check_instant_clone(src.moref, req)
            except (PermanentError, TemporaryError) as exc:
                problems = [] if isinstance(exc, TemporaryError) or exc.fault == "MethodNotFound" else [str(exc)]
            if problems:
                reason = problems[0].split(":", 1)[0]
                plan.skipped_rungs["instant"] = problems[0]
                log.warning("pool %s: instant clone pre-flight failed (%s); falling back", pool.name, problems[0])
                rungs.remove("instant")
                rungs.insert(0, f"!instant:{reason}")
        return rungs

    async def _create(self, pool: Pool, inv: Inventory, sources: list[Source], host: str, ds: str, folder: str,
                      rungs: list[str], result: Result) -> None:
        src = next((s for s in sources if inv.host_names.get(s.host) == host), sources[0])
        first = next(r for r in rungs if not r.startswith("!"))
        started = time.monotonic()
        async with self.budget("vcenter", pool.budgets.vcenter), \
                self.budget(f"host:{host}", pool.budgets.per_host), \
                self.budget(f"datastore:{ds}", pool.budgets.per_datastore):
            await self.rates.setdefault(pool.name, Rate(pool.budgets.rate_per_s)).wait()
            # Identity is allocated (and the row written) once a slot is ours, still before the task
            # is submitted: planning all N up front blocked the loop before the first clone went out
            # (bench/fanout.py: 500 plans delayed the first wave by ~0.3 s).
            rec = self.ledger.plan_clone(
                pool.name, name_pattern=pool.name_pattern, hostname_pattern=pool.hostname_pattern,
                network=pool.network, kind=first, source=src.name, source_generation=src.generation, host=host,
                datastore=ds, port_group=pool.network.port_group, taken_macs=inv.macs, rng=self.rng)
            extra = guestinfo(rec, pool.network, pool.guestinfo)
            extra[TAG_POOL] = pool.name
            extra[TAG_ID] = str(rec.id)
            extra[TAG_SOURCE] = ""  # an instant clone inherits its source's extraConfig; an empty value drops the tag
            req = CloneRequest(name=rec.name, folder=folder, datastore=inv.datastores[ds][0], host=inv.hosts[host],
                               resource_pool=inv.pools.get(pool.placement.resource_pool or "", None),
                               network=inv.networks[pool.network.port_group], mac=rec.mac, nic_key=NIC_KEY,
                               extra=extra, disconnect=pool.network.disconnect)
            self.ledger.transition(rec.id, "cloning")
            moref, kind = await self._ladder(pool, src, req, rungs, rec.id, result)
        if moref is None:
            result.failed += 1
            self._report(pool)
            return
        self.ledger.transition(rec.id, "customizing", vm_moref=moref, kind=kind)
        self._report(pool)
        if pool.guest_ready.required and not (pool.freeze == "running" and kind == "instant"):
            status = await self.driver.wait_ready(moref, pool.guest_ready.timeout_s)
            if status != "ready":
                why = "guest did not report ready in time" if status == "timeout" else f"guest reported {status}"
                result.errors.append(f"{rec.name}: {why}")
                self.ledger.transition(rec.id, "failed", error=why)
                await self._destroy_vm(moref)
                self.ledger.transition(rec.id, "gone")
                result.failed += 1
                self._report(pool)
                return
        self.ledger.transition(rec.id, "ready")
        result.created += 1
        if self.telemetry is not None:
            self.telemetry.observe_clone_ready(pool.name, kind, time.monotonic() - started)
        self._report(pool)

    async def _ladder(self, pool: Pool, src: Source, req: CloneRequest, rungs: list[str], clone_id: int,
                      result: Result) -> tuple[str | None, str]:
        """instant → linked → full; each step down recorded with the fault that forced it."""
        reason = ""
        prev = ""
        for rung in rungs:
            if rung.startswith("!"):
                prev, reason = rung[1:].split(":", 1)
                continue
            if prev:
                self._fallback(pool, prev, rung, reason, clone_id, result)
            try:
                moref = await self._attempt(pool, src, req, rung)
                return moref, rung
            except PermanentError as exc:
                if exc.fault == "DuplicateName":
                    found = await self._adopt_by_name(req.folder, req.name, pool.name, clone_id)
                    if found:
                        return found, rung
                prev, reason = rung, exc.fault
                result.errors.append(str(exc))
            except TemporaryError as exc:
                prev, reason = rung, exc.fault
                result.errors.append(str(exc))
        self.ledger.transition(clone_id, "failed", error=f"every rung failed (last: {reason})")
        self.ledger.transition(clone_id, "gone")
        return None, ""

    async def _attempt(self, pool: Pool, src: Source, req: CloneRequest, rung: str) -> str:
        delay = 1.0
        for attempt in range(1, RETRIES + 1):
            try:
                if rung == "instant":
                    return await self.driver.instant_clone(src.moref, req)
                return await self.driver.clone(src.golden or src.moref, req, linked=rung == "linked",
                                               snapshot=src.snapshot if rung == "linked" else None)
            except TemporaryError as exc:
                if attempt == RETRIES:
                    raise
                wait = exc.delay * delay * (0.5 + self.rng.random())
                log.info("%s: %s; retry %d/%d in %.1fs", req.name, exc, attempt, RETRIES - 1, wait)
                await asyncio.sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")

    async def _finish_customizing(self, pool: Pool, rec: Any, result: Result) -> None:
        """A clone adopted while customizing (e.g. after a crash): wait for its guest like a new one."""
        if not rec.vm_moref:
            return
        if pool.guest_ready.required and not (pool.freeze == "running" and rec.kind == "instant"):
            status = await self.driver.wait_ready(rec.vm_moref, pool.guest_ready.timeout_s)
            if status != "ready":
                result.errors.append(f"{rec.name}: guest {status}")
                self.ledger.transition(rec.id, "failed", error=f"guest {status}")
                await self._destroy_vm(rec.vm_moref)
                self.ledger.transition(rec.id, "gone")
                result.failed += 1
                return
        self.ledger.transition(rec.id, "ready")
        self._report(pool)

    async def _adopt_by_name(self, folder: str, name: str, pool: str, clone_id: int) -> str | None:
        """After DuplicateName: the VM is ours if it carries this clone's tags (a retried task that did land)."""
        found = await self.driver.tagged_child(folder, name)
        if found is not None and found[1:] == (pool, str(clone_id)):
            return found[0]
        return None

    def _fallback(self, pool: Pool, frm: str, to: str, reason: str, clone_id: int, result: Result) -> None:
        result.fallbacks[f"{frm}->{to}:{reason}"] += 1
        self.ledger.update(clone_id, fallback_reason=f"{frm}->{to}: {reason}", kind=to)
        if self.telemetry is not None:
            self.telemetry.record_fallback(pool.name, frm, to, reason)

    async def _destroy(self, pool: Pool, name: str, result: Result, *, scale_down: bool = False) -> None:
        """Destroy one clone. `scale_down`: a victim of a plan, so spare a clone claimed since the
        plan was made (no await separates this check from the transition), and drain it first
        when the pool has a drain hook (a failed drain keeps it)."""
        rec = self.ledger.by_name(name)
        if rec is None or rec.state not in LIVE:
            return
        if scale_down and rec.state == "claimed" and pool.drain is None:
            return
        if scale_down and pool.drain is not None and self.drainer is not None and rec.state in ("ready", "claimed"):
            if not await self.drainer(pool, rec, result):
                return
        self.ledger.transition(rec.id, "destroying")
        async with self.budget("vcenter", pool.budgets.vcenter):
            if rec.vm_moref:
                try:
                    await self.driver.destroy(rec.vm_moref)
                except (PermanentError, TemporaryError) as exc:
                    result.errors.append(f"{name}: {exc}")
                    self.ledger.transition(rec.id, "failed", error=str(exc))
                    result.failed += 1
                    return
        self.ledger.transition(rec.id, "gone")
        result.destroyed += 1
        self._report(pool)

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
        await asyncio.gather(*(self._destroy(pool, r.name, result) for r in live))
        mgr = self._sources(pool, [p.name for p in self.spec.pools].index(pool.name))
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
        return result

    def _report(self, pool: Pool) -> None:
        self.progress(pool.name, self.ledger.counts(pool.name))
