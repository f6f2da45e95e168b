"""Replace a clone: one primitive for refresh, push image and rebalance alike.

`Replacer.replace(pool, name, image, ...)` takes the clone holding `name` out and puts a fresh one
from `image` in its place, with the same identity (name, hostname, IP, MAC) unless told
otherwise, and its user disk moved over:

1. the clone is sent to `destroying` and its identity reserved, in one ledger transaction
   (`Ledger.replace`) -- only when the caller's capacity check allows one more clone out of
   service, with no await in between, so concurrent replacements never take the pool below its floor;
2. its user disk is detached and its VM destroyed (`Engine._destroy`);
3. a clone is made for the reservation from the image's sources (`Engine.create`), its disk
   attached, and it is ready (or handed straight back to its user, for a forced replacement).

Each call looks at the ledger first and does only what is left, so it can be called again after a
crash at any point: a clone already replaced (`done_if`) is never replaced twice, and a reserved
identity whose VM was destroyed is always made again (by this call, or by any converge of the pool,
which fills open reservations first) -- none is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forkscale.fleet.images import ImageRef
from forkscale.fleet.plan import LIVE, make_plan
from forkscale.fleet.result import Result
from forkscale.fleet.sources import Source
from forkscale.ledger import CloneRecord
from forkscale.spec import Pool
from forkscale.vsphere.model import Inventory

if TYPE_CHECKING:
    from forkscale.fleet.engine import Engine
    from forkscale.fleet.ladder import Ladder

log = logging.getLogger("forkscale.replace")
BUILDING = ("planned", "cloning", "customizing")
#: how long one inventory read and source list serve the replacements of a round
CONTEXT_TTL_S = 5.0

DONE, FAILED, GONE, BUSY, CLAIMED, NO_ROOM = "done", "failed", "gone", "busy", "claimed", "no-room"


@dataclass
class Replaced:
    """What one call came to: `done` (a ready clone on the image holds the identity), `failed`
    (why in `error`; the identity stays reserved), `gone` (the identity left the pool), `busy`
    (another caller is making or removing it: ask again), `claimed` (its user has it),
    `no-room` (taking it out now would take the pool below its floor: ask again)."""

    state: str
    record: CloneRecord | None = None
    error: str | None = None


@dataclass
class _Context:
    at: float
    inv: Inventory
    sources: list[Source]
    ladder: Ladder
    result: Result


class Replacer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._contexts: dict[tuple[str, int], _Context] = {}

    async def replace(self, pool: Pool, name: str, image: ImageRef, *, reason: str,
                      done_if: Callable[[CloneRecord], bool], room: Callable[[], bool],
                      keep_identity: bool = True, take_claimed: bool = False,
                      host: str | None = None, datastore: str | None = None) -> Replaced:
        """Replace the clone holding `name` by one from `image` (see the module docstring).

        `done_if(rec)`: the clone holding the name now needs no replacement (e.g. it is on `image`).
        `room()`: whether one more clone may go out of service now. `take_claimed`: replace it even
        though its user has it (a forced rollout); the replacement goes back to that user.
        `host` / `datastore`: where the replacement goes (a rebalance, an evacuation); by default
        the least-loaded host with a source of the image and the datastore with most free space."""
        ledger = self.engine.ledger
        rec = _holder(self.engine, name)
        if rec is not None and rec.state in ("ready", "claimed") and done_if(rec):
            return Replaced(DONE, rec)
        if rec is not None and rec.state == "customizing" and rec.id not in self.engine.in_flight:
            # adopted after a crash (made, not yet ready): finish it, then judge it like any other
            await self.engine.finish(pool, rec, Result(pool=pool.name, desired=0))
            rec = _holder(self.engine, name)
            if rec is not None and rec.state in ("ready", "claimed") and done_if(rec):
                return Replaced(DONE, rec)
        if rec is not None:
            if rec.state in BUILDING or (rec.state == "draining" and rec.id in self.engine.in_flight):
                return Replaced(BUSY, rec)  # being made, or drained by a scale-down of this process
            if rec.state == "claimed" and not take_claimed:
                return Replaced(CLAIMED, rec)
            if rec.state == "draining":  # released for a refresh: out of service already, replaced now
                rec = ledger.replace(rec.id, reason, keep_identity=keep_identity)
            elif rec.state in ("ready", "claimed"):
                if not room():
                    return Replaced(NO_ROOM, rec)
                rec = ledger.replace(rec.id, reason, keep_identity=keep_identity,
                                     claimed_by=rec.claimed_by if rec.state == "claimed" else None)
                log.info("pool %s: replacing %s (%s)", pool.name, name, reason)
            if rec.state in ("destroying", "failed"):
                self.engine.in_flight.add(rec.id)  # ours to remove: a concurrent reconcile leaves it be
                try:
                    removed = await self._remove(pool, rec)
                finally:
                    self.engine.in_flight.discard(rec.id)
                if not removed:
                    now = ledger.get(rec.id)
                    return Replaced(FAILED, now, f"could not be removed: {now.error if now else 'gone'}")
            if not keep_identity:  # `refresh.identity: new`: a fresh name, IP and MAC
                return await self._make(pool, None, image, host, datastore)
        if name not in {r.name for r in ledger.reservations.open(pool.name)}:
            return Replaced(GONE)
        return await self._make(pool, name, image, host, datastore)

    async def _remove(self, pool: Pool, rec: CloneRecord) -> bool:
        """Destroy the VM of a row in `destroying` (or `failed`): user disk detached first; True once gone."""
        now = self.engine.ledger.get(rec.id)
        if now is None or now.state == "gone":
            return True
        rec = now
        if rec.vm_moref:
            ok = await self.engine.reconcile.destroy_vm(rec.vm_moref, rec)
            if not ok:
                if rec.state != "failed":
                    self.engine.ledger.transition(rec.id, "failed", error="could not be destroyed for replacement")
                return False
        now = self.engine.ledger.get(rec.id)
        if now is None or now.state == "gone":
            return True  # (closed meanwhile by a reconcile of the same pool)
        if now.state == "destroying" or now.pending_task is None:
            self.engine.ledger.transition(rec.id, "gone")
            return True
        return False

    async def _make(self, pool: Pool, name: str | None, image: ImageRef, host: str | None = None,
                    datastore: str | None = None) -> Replaced:
        ctx = await self._context(pool, image)
        live = self.engine.ledger.clones(pool.name, states=list(LIVE))
        plan = make_plan(pool, ctx.inv, ctx.sources, live, len(live) + 1, rungs=ctx.ladder.rungs)
        host, ds = host or plan.create[0][0], datastore or plan.create[0][1]
        made = await self.engine.create(pool, ctx.inv, ctx.sources, host, ds, ctx.ladder, reservation=name)
        if made is None:
            return Replaced(BUSY, _holder(self.engine, name) if name else None)
        if made.state in ("ready", "claimed"):
            return Replaced(DONE, made)
        why = made.error or f"ended {made.state}"
        return Replaced(FAILED, made, f"the replacement from image g{image.generation} failed: {why}")

    async def _context(self, pool: Pool, image: ImageRef) -> _Context:
        key = (pool.name, image.generation)
        ctx = self._contexts.get(key)
        if ctx is not None and time.monotonic() - ctx.at < CONTEXT_TTL_S:
            return ctx
        engine = self.engine
        index = [p.name for p in engine.spec.pools].index(pool.name)
        inv = await engine.driver.inventory()
        engine.avoid_evacuated(inv)  # (a host being evacuated is no source's host for a replacement)
        golden, image = await engine.image_source(pool, inv, index, image)
        rungs, _ = engine.rungs(pool, index)
        mgr = engine.sources(pool, index, image)
        sources = (mgr.current(inv, inv.vms[golden.moref]) if "instant" in rungs else []) or [golden]
        folder = await engine.folder(pool, inv)
        result = Result(pool=pool.name, desired=0)
        live = engine.ledger.clones(pool.name, states=list(LIVE))
        ctx = _Context(time.monotonic(), inv, sources, engine.ladder(pool, inv, folder, rungs, result, golden, live),
                       result)
        self._contexts[key] = ctx
        return ctx


def _holder(engine: Engine, name: str) -> CloneRecord | None:
    """The row holding `name` now (not gone), if any."""
    rec = engine.ledger.by_name(name)
    return rec if rec is not None and rec.state != "gone" else None
