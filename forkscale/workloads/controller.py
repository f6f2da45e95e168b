"""The long-running controller behind `forkscale serve`: one policy loop per pool, claims, releases.

Shape (one engine, one event loop):

* **A loop per pool.** Every `evaluate_every_s` -- or at once when something asks for it (a claim
  took a spare, a claim is waiting, a desktop was released, the count was changed over the API)
  -- the loop reads the pool's metric (a `TemporaryError` means "no value this round"), asks its
  `PolicyRunner`, logs the decision with its reason, counts it in
  `forkscale_policy_decisions_total`, and carries it out with `engine.converge(pool, desired)`
  (`begin` ... `mark_done`; a failed converge goes back to Idle without a cooldown so the next
  round looks at what was actually built).
* **Converges are serialized per pool** by a lock held for a whole round. **Claims never take
  it**: `Ledger.claim` is one atomic SQLite transaction, so a claim runs while the pool's converge
  is making clones, and takes one the moment it is ready.
* **Claims from another thread.** `serve` runs the HTTP API on its own thread and event loop,
  so a claim does not queue behind the refill's CPU-bound work on this loop. `try_claim` is the
  thread-safe part (a ledger claim plus a wake-up sent with `call_soon_threadsafe`); everything
  else -- waiting claims, releases, counts, status -- is run on the controller's loop.
* **Waiting claims** wait on the pool's ready event (the engine's progress callback fires it each
  time a clone reaches `ready`), never on a polling loop. While they wait they count as claimed
  for the policy, so a headroom pool sizes itself for the users at the door in one round instead
  of refilling one spare at a time.
* **Releases.** `on_release: keep` puts the clone back to `ready`. `on_release: refresh` (Horizon's
  refresh-on-logoff) marks it `draining` at once -- nobody can claim it, and it still counts as
  live for the engine's plan -- and wakes the pool. The round (under the lock, where no drain
  hook runs, so every `draining` row is such a release) moves those rows to `destroying` and
  converges to "what the policy wants + one per released clone": the engine's reconcile destroys
  them and its plan makes the fresh clones, exactly one for each, however many releases arrive
  meanwhile (they stay `draining`, counted, until the next round). The pool keeps its size; the
  surplus spares this adds above a headroom policy's target are trimmed by the policy, but no
  scale-down happens within `cooldown_down_s` of a refresh (cloning then destroying the fresh
  desktops at once would be churn for nothing). A `draining` row found at startup (a crash in
  between) is refreshed the same way.
* **`PUT count`.** A `fixed` pool gets the new count. A policy pool (headroom, target-value) gets
  the number as its *floor* (`min`): "keep at least N" is what an operator means before a login
  storm, and the policy keeps working above it; a floor above the policy's `max` is refused
  (HTTP 409). Overrides are kept in the ledger (`serve` always runs with ownership), so
  whichever replica owns the pool -- after a restart or a failover too -- applies them; an edit of
  the spec's own value wins over an older override.
* **Repair is not scaling.** A round whose policy says "no change" (a no-op, a cooldown, a held
  scale-down) still checks the pool against its current desired count: rows closed by another
  process (`forkscale destroy`) and clones whose VM left vCenter behind the ledger's back (one
  batched read of the live rows' morefs) are restored in that round, with no cooldown before or
  after. Cooldowns only delay changes of the desired count.
* **Drain.** Scale-down of a pool with a `drain:` hook goes through `forkscale.workloads.drain.Drainer`
  (installed as `engine.drainer`); a failed drain keeps the clone (back to `ready`), shows in the
  status, and the round ends without a cooldown, so the next one tries again while the policy
  still wants fewer clones.
* **Retention.** Once an hour (by the ledger's clock) history older than `ledger.retention_days`
  -- gone clones and their events, old events, gone sources -- moves to the archive file
  (`Ledger.prune`), so the ledger stays the size of its window however long `serve` runs.
* **Status** (`status()`): counts, the policy's state and cooldown, the last decision and its
  reason, the metric, the last converge, the last errors, and `actions`: the recent decisions
  that changed something, with when they were made and finished.
* **Shutdown** (`stop()`, SIGTERM in `serve`): no new rounds start, waiting claims are answered,
  rounds in flight get `grace_s` to finish; what is still running then is cancelled, which the
  ledger-first engine is built for (a cancelled clone stays `planned`/`cloning` and the next
  start's reconcile adopts or removes it; a cancelled drain puts its clone back).
* **`dry_run`**: every decision and the plan it would run are logged; nothing is changed and the
  mutating API calls are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from forkscale.core.errors import ForkscaleError, PermanentError, TemporaryError
from forkscale.fleet.engine import Engine
from forkscale.fleet.plan import LIVE
from forkscale.ledger import CloneRecord, IllegalTransition, LedgerError
from forkscale.policy import (
    Decision,
    Observed,
    PolicyConfig,
    PolicyRunner,
    ReasonCode,
    State,
    read_metric,
)
from forkscale.workloads.drain import Drainer
from forkscale.workloads.moves.auto import AutoMoves
from forkscale.workloads.operations import OperationRunner
from forkscale.workloads.operations import control as ops
from forkscale.workloads.operations.background import Background
from forkscale.workloads.operations.registry import kinds
from forkscale.workloads.ownership import Ownership
from forkscale.workloads.refreshpolicy import aged, worn
from forkscale.workloads.replica import apply_override, owner_doc, remote_status
from forkscale.workloads.runtime import ControllerError, PoolRuntime, iso, observed_of, status_doc
from forkscale.workloads.vcenters import VCenters

log = logging.getLogger("forkscale.controller")
_DIGITS = re.compile(r"\d+(?:\.\d+)?")
REMOTE_CLAIM_POLL_S = 0.25
#: How often (by the ledger's clock) history past `ledger.retention_days` is moved to the archive.
PRUNE_EVERY_S = 3600.0



class Controller:
    def __init__(self, engine: Engine, *, telemetry: Any = None, dry_run: bool = False, grace_s: float = 30.0,
                 publish_fleet: bool = True, ownership: Ownership | None = None,
                 vcenters: VCenters | None = None) -> None:
        self.engine = engine
        self.spec = engine.spec
        self.ledger = engine.ledger
        self.telemetry = telemetry
        self.dry_run = dry_run
        self.grace_s = grace_s
        self.publish_fleet = publish_fleet
        self.exporter: Any = None  # forkscale.observe.exporter.Exporter when `serve` runs one (set_desired)
        self.pools: dict[str, PoolRuntime] = {p.name: PoolRuntime(p, PolicyRunner(p.policy))
                                              for p in self.spec.pools}
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._event_loop: asyncio.AbstractEventLoop | None = None  # the loop `run` runs on (try_claim's wake-ups)
        self._session: aiohttp.ClientSession | None = None
        self._previous_progress = engine.progress
        # Several vCenters (workloads/vcenters.py): an engine each; a pool's rounds use its own.
        self.vcenters = vcenters or VCenters.single(engine, self.spec.vcenter_name(self.spec.pools[0]),
                                                    self.spec.vcenter.url)
        self.vcenters.on_attached.append(lambda name, attached: self._hook(attached))
        for link in self.vcenters.links.values():
            if link.engine is not None:
                self._hook(link.engine)
        self._hook(engine)
        self.started_at = time.time()
        # Several replicas on one ledger (forkscale/workloads/ownership.py): rounds run only for
        # the pools this one owns; claims, releases, counts and status answer for every pool.
        self.ownership = ownership
        self._ownership_stop = asyncio.Event()
        if ownership is not None:
            ownership.on_gained = self._gained
            ownership.on_lost = self._lost
            ownership.busy = lambda pool: self.pools[pool].round is not None or self.pools[pool].lock.locked()
            self.ledger.identify(ownership.holder.id)
        self.runner = OperationRunner(self.ledger, kinds(self._engine_for), stopping=lambda: self._stopping)
        self.operations = Background(self.runner, lambda pool, msg: self._error(self._runtime(pool), msg))
        #: starts evacuate / promote / rebalance when due (forkscale/workloads/moves/auto.py)
        self.moves = AutoMoves(self.spec, self.ledger, lambda name: self._engine_of(self.pools[name]), owns=self.owns,
                               poke=self.operations.poke, stopping=lambda: self._stopping, dry_run=dry_run)
        self._next_prune = 0.0  # on the ledger's clock; 0: prune at the first round
        self._pruning = False

    # lifecycle -----------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Begin a graceful shutdown (idempotent; safe from a signal handler)."""
        if self._stopping:
            return
        log.info("controller: stopping (grace %gs for rounds in flight)", self.grace_s)
        self._stopping = True
        self._stop_event.set()
        for pr in self.pools.values():
            pr.wake.set()
            self._notify_ready(pr)

    async def run(self) -> None:
        """Run every pool's loop until `stop()`; then finish or abandon in-flight rounds."""
        self._event_loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            self._session = session
            tasks = [asyncio.create_task(self._loop(pr), name=f"pool:{name}") for name, pr in self.pools.items()]
            owning = None if self.ownership is None else \
                asyncio.create_task(self.ownership.run(self._ownership_stop), name="ownership")
            probing = asyncio.create_task(self.vcenters.probe_forever(self._stop_event), name="vcenters")
            moving = asyncio.create_task(self.moves.run(), name="day2-moves")
            try:
                await self._stop_event.wait()
                done, pending = await asyncio.wait(tasks, timeout=self.grace_s)
                if pending:
                    log.warning("controller: %d pool round(s) still running after %gs; abandoning them "
                                "(the ledger keeps them for the next start to reconcile)", len(pending),
                                self.grace_s)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                moving.cancel()
                await asyncio.gather(moving, return_exceptions=True)
                await self.operations.stop()
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
                if owning is not None:  # only now: hand the pools back once no round of ours runs
                    self._ownership_stop.set()
                    await asyncio.gather(owning, return_exceptions=True)
                self._session = None
        log.info("controller: stopped")

    async def _loop(self, pr: PoolRuntime) -> None:
        while not self._stopping:
            pr.wake.clear()
            if not self.owns(pr.pool.name) or self._engine_of(pr) is None:
                # another replica acts on it (we are woken if it comes to us), or its vCenter
                # has not answered since we started (the probe keeps trying)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pr.wake.wait(), pr.runner.config.evaluate_every_s)
                continue
            pr.round = asyncio.create_task(self.evaluate(pr.pool.name), name=f"round:{pr.pool.name}")
            try:
                await pr.round
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                continue  # the round alone was cancelled: the pool's lease was lost (see _lost)
            except ForkscaleError as exc:
                self.vcenters.observe(self.spec.vcenter_name(pr.pool), exc)
                self._error(pr, f"round failed: {exc}")
            except Exception as exc:  # keep the controller up; the next round retries
                log.exception("pool %s: round failed", pr.pool.name)
                self._error(pr, f"round failed: {type(exc).__name__}: {exc}")
            finally:
                pr.round = None
            if self._stopping:
                break
            if not self.dry_run and self.owns(pr.pool.name):
                self.operations.poke(pr.pool.name)  # a push, refresh... recorded for this pool runs alongside
            await self._prune_if_due()
            interval = pr.runner.config.evaluate_every_s
            left = pr.runner.status().cooldown_left_s
            if left is not None:
                interval = min(interval, left + 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pr.wake.wait(), interval)

    async def _prune_if_due(self) -> None:
        """Once an hour by the ledger's clock (and at start): history older than
        `ledger.retention_days` moves to the archive file, so months of uptime keep the ledger
        the size of its window. Runs on a worker thread (the ledger is thread-safe)."""
        now = self.ledger.now()
        if now < self._next_prune or self._pruning:
            return
        self._pruning, self._next_prune = True, now + PRUNE_EVERY_S
        settings = self.spec.ledger
        archive = self.spec.archive(self.ledger.path)
        try:
            result = await asyncio.to_thread(self.ledger.prune, settings.retention_days * 86_400.0, archive)
        except (OSError, ForkscaleError, sqlite3.Error) as exc:
            log.warning("ledger: pruning history older than %g days failed (next try in an hour): %s",
                        settings.retention_days, exc)
            return
        finally:
            self._pruning = False
        if result.moved:
            log.info("ledger: moved %d clone(s), %d event(s) and %d source(s) older than %g days to %s",
                     result.clones, result.events, result.sources, settings.retention_days, archive)

    # one round -----------------------------------------------------------------------------------
    async def evaluate(self, pool_name: str) -> Decision:
        """One policy round for a pool, under its lock: observe, decide, act."""
        pr = self._runtime(pool_name)
        async with pr.lock:
            try:
                return await self._round(pr)
            finally:
                self._publish_status(pr)

    async def _round(self, pr: PoolRuntime) -> Decision:
        pool, runner = pr.pool, pr.runner
        pr.rounds += 1
        if self.ownership is not None:
            apply_override(pr, self.ledger)  # a count set over any replica's API
        metric = await self._read_metric(pr, runner.config) if runner.config.metric is not None else None
        # Outside a converge (we hold the pool's lock) no drain runs, so every `draining` row is a
        # clone released under on_release: refresh (or one a crash left mid-drain). They still
        # count as live for the engine's plan; the policy sees the pool without them, and each
        # one is replaced one for one on top of what the policy decides.
        self._age_out(pr)
        leaving = self.ledger.clones(pool.name, ["draining"])
        refresh = len(leaving)
        observed = self.observe(pr)
        was_idle = runner.state is State.IDLE
        decision = self._decide(pr, observed, metric)
        self._log_decision(pr, decision, refresh)
        repair = 0
        if decision.is_noop:
            if (was_idle and not pr.held) or pr.desired is None:
                pr.desired = decision.count + refresh
            target = observed.current + refresh
            if not (pr.needs_converge or refresh):
                repair = await self._missing(pr, target)
                if not repair:
                    self._publish()
                    return decision
            target = max(target, pr.desired)
        else:
            target = decision.count + refresh
        pr.desired = target
        if refresh:
            log.info("pool %s: refreshing %d released clone(s): %s", pool.name, refresh,
                     ", ".join(r.name for r in leaving))
        if self.dry_run:
            await self._dry_run(pr, decision, target)
        else:
            await self._carry_out(pr, decision, observed, leaving, target, repair=repair)
        return decision

    async def _missing(self, pr: PoolRuntime, live: int) -> int:
        """Clones the pool lacks against its current desired count: rows another process closed
        (a `forkscale destroy`) and VMs that left vCenter behind the ledger's back (removed by
        hand). Restoring them is a repair, not a scaling decision: it runs at once, in any
        policy state, and starts no cooldown (cooldowns only delay changes of the desired count)."""
        short = max(0, (pr.desired or 0) - live)
        rows = [r for r in self.ledger.clones(pr.pool.name, ["customizing", "ready", "claimed", "draining"])
                if r.vm_moref]
        vanished: list[str] = []
        if rows:
            try:
                driver = self._engine(pr).driver  # the pool's own vCenter (with several, not the default's)
                present = await driver.vm_props([r.vm_moref for r in rows if r.vm_moref], ["name"])
            except (PermanentError, TemporaryError) as exc:
                log.debug("pool %s: presence check skipped: %s", pr.pool.name, exc)
                present = {r.vm_moref: {} for r in rows if r.vm_moref}
            vanished = [r.name for r in rows if r.vm_moref not in present]
        if short or vanished:
            gone = f"; gone from vCenter: {', '.join(vanished[:10])}" if vanished else ""
            log.warning("pool %s: repairing toward desired %d: %d clone(s) missing%s (a repair waits for no "
                        "cooldown)", pr.pool.name, pr.desired or 0, short + len(vanished), gone)
        return short + len(vanished)

    def _decide(self, pr: PoolRuntime, observed: Observed, metric: float | None) -> Decision:
        """Ask the policy; a scale-down right after refreshing released clones is held back."""
        decision = pr.runner.evaluate(observed, metric, datetime.now(UTC))
        held = pr.hold_down_until - time.monotonic()
        pr.held = False
        if decision.direction == "down" and held > 0:
            # Refreshed clones were just replaced one for one; trimming them right away would
            # clone and destroy for nothing. A refresh counts as a change for cooldown_down_s.
            pr.runner.mark_done(decision, ok=False)
            decision = Decision(count=observed.current, direction="none", window=decision.window,
                                code=ReasonCode.COOLDOWN,
                                reason=f"holding scale-down for {held:.0f} s after refreshing released clones "
                                f"(cooldown_down_s); policy says: {decision.reason}")
            pr.held = True
        pr.decision, pr.decision_at = decision, time.time()
        return decision

    def _log_decision(self, pr: PoolRuntime, decision: Decision, refresh: int) -> None:
        """Every decision is logged with its reason and counted by its code; a no-op that only
        repeats the previous one (numbers aside: "12 s left" -> "11 s left") goes to DEBUG."""
        shape = _DIGITS.sub("#", decision.reason)
        level = logging.INFO if not decision.is_noop or refresh or shape != pr.logged_shape else logging.DEBUG
        pr.logged_shape = shape
        log.log(level, "pool %s: %s %s: %s", pr.pool.name, "decision" if not self.dry_run else "decision (dry run)",
                decision.direction, decision.reason)
        if self.telemetry is not None:
            self.telemetry.record_policy_decision(pr.pool.name, decision.direction, decision.code)

    async def _dry_run(self, pr: PoolRuntime, decision: Decision, target: int) -> None:
        result = await self._engine(pr).converge(pr.pool.name, target, dry_run=True)
        self.vcenters.observe(self.spec.vcenter_name(pr.pool), None)
        for line in result.errors:
            log.info("pool %s: (dry run) %s", pr.pool.name, line)
        if not decision.is_noop:
            pr.runner.mark_done(decision, ok=False)
        pr.needs_converge = False
        self._publish()

    async def _carry_out(self, pr: PoolRuntime, decision: Decision, observed: Observed,
                         leaving: list[CloneRecord], target: int, *, repair: int = 0) -> None:
        pool = pr.pool
        if not decision.is_noop:
            pr.runner.begin(decision)
        # No await since `leaving` was read: these rows are exactly the ones the target counted.
        # Releases from here on stay `draining` (live) until the next round, so the plan below
        # never replaces a clone twice.
        same = pool.refresh.identity == "same"
        for rec in leaving:  # its name, IP and MAC held for the fresh clone the converge makes
            try:
                self.ledger.replace(rec.id, "refresh", keep_identity=same)
            except IllegalTransition:  # a rollout of this pool took it first (it replaces it itself)
                continue
        ok = False
        pr.converging = True
        try:
            result = await self._engine(pr).converge(pool.name, target, set_by="policy")
            self.vcenters.observe(self.spec.vcenter_name(pool), None)
            pr.last_result = {**result.as_dict(), "at": iso(time.time())}
            for err in result.errors:
                self._error(pr, err)
            ok = result.failed == 0 and self._live(pool.name) == target
            pr.needs_converge = result.failed > 0
            if leaving:
                pr.hold_down_until = time.monotonic() + pr.runner.config.cooldown_down_s
            if result.errors or result.failed:
                log.warning("pool %s: converge to %d: %d ready, %d failed, %d error(s)", pool.name, target,
                            result.ready, result.failed, len(result.errors))
            else:
                log.info("pool %s: converged to %d in %.2fs (created %d, destroyed %d)", pool.name, target,
                         result.seconds, result.created, result.destroyed)
        except BaseException:
            pr.needs_converge = True
            raise
        finally:
            pr.converging = False
            if not decision.is_noop:
                pr.runner.mark_done(decision, ok=ok)
            if not decision.is_noop or leaving or repair:
                pr.history.append({"at": iso(pr.decision_at), "done_at": iso(time.time()),
                                   "direction": decision.direction, "from": observed.current,
                                   "count": decision.count, "target": target, "refreshed": len(leaving),
                                   "repaired": repair, "ok": ok, "reason": decision.reason,
                                   "code": str(decision.code)})
            self._notify_ready(pr)
            self._publish()

    async def _read_metric(self, pr: PoolRuntime, cfg: PolicyConfig) -> float | None:
        assert cfg.metric is not None
        session = self._session
        owned = session is None
        if session is None:
            session = aiohttp.ClientSession()
        try:
            value = await read_metric(cfg.metric, session)
        except TemporaryError as exc:
            if pr.metric_error != str(exc):
                self._error(pr, str(exc))
            pr.metric_error = str(exc)
            return None
        finally:
            if owned:
                await session.close()
        pr.metric, pr.metric_at, pr.metric_error = value, time.time(), None
        return value

    def observe(self, pr: PoolRuntime) -> Observed:
        return observed_of(pr, self.ledger.counts(pr.pool.name))


    # claims --------------------------------------------------------------------------------------
    async def claim(self, pool_name: str, user: str, wait_s: float = 0.0) -> CloneRecord | None:
        """Hand a ready clone to `user`; wait up to `wait_s` for one; None when none came."""
        pr = self._runtime(pool_name)
        self._refuse_when_read_only()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        waiting = False
        try:
            while True:
                event = pr.ready_event  # taken before the attempt: a clone ready after it still wakes us
                rec = self._take(pr, user)
                owned = self.owns(pool_name)
                if rec is not None:
                    return rec
                left = deadline - loop.time()
                if left <= 0 or self._stopping:
                    return None
                if not waiting:
                    waiting = True
                    pr.waiting += 1
                    pr.wake.set()
                # Clones of a pool another replica owns become ready there: look again now and then.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), left if owned else min(left, REMOTE_CLAIM_POLL_S))
        finally:
            if waiting:
                pr.waiting -= 1

    def try_claim(self, pool_name: str, user: str) -> CloneRecord | None:
        """One claim attempt, no waiting; safe to call from any thread (the API's). The ledger
        claim is one locked SQLite transaction; the pool's loop is woken so the headroom policy
        refills behind the user."""
        pr = self._runtime(pool_name)
        self._refuse_when_read_only()
        return self._take(pr, user)

    def _take(self, pr: PoolRuntime, user: str) -> CloneRecord | None:
        rec = self.ledger.claim(pr.pool.name, user)
        if rec is not None:
            log.info("pool %s: %s claimed by %s", pr.pool.name, rec.name, user)
            self._set_threadsafe(pr.wake)
        return rec

    def _set_threadsafe(self, event: asyncio.Event) -> None:
        """`event.set()` on the controller's loop, from whichever thread we are on."""
        loop = self._event_loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or loop.is_closed():
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def release(self, pool_name: str, vm: str) -> dict[str, Any]:
        """Give a claimed clone back: `keep` makes it ready again, `refresh` replaces it with a fresh one."""
        pr = self._runtime(pool_name)
        self._refuse_when_read_only()
        rec = self.ledger.by_name(vm)
        if rec is None or rec.pool != pool_name or rec.state == "gone":
            raise ControllerError(f"pool {pool_name!r} has no clone named {vm!r}", 404)
        if rec.state != "claimed":
            raise ControllerError(f"{vm} is {rec.state}, not claimed; only a claimed clone can be released", 409)
        # Not fenced (any replica takes releases): a row-locked claimed -> ready | draining.
        why = worn(pr.pool, self.ledger, rec, time.time())
        if why is None:
            self.ledger.release(rec.id, "ready")
            self._notify_ready(pr)
            action = "kept"
        else:
            # `draining` (live, not claimable) until the pool's next round replaces it one for one.
            self.ledger.release(rec.id, "draining")
            action = "refreshing"
        log.info("pool %s: %s released by %s (%s%s)", pool_name, vm, rec.claimed_by, action,
                 f": {why}" if why else "")
        pr.wake.set()
        return {"pool": pool_name, "vm": vm, "action": action, "on_release": pr.pool.on_release,
                **({"why": why} if why else {})}

    def _age_out(self, pr: PoolRuntime) -> None:
        """Idle clones past refresh.max_age_s go `draining`, to be refreshed this round (a few at a time)."""
        if pr.pool.refresh.max_age_s is None or self.dry_run:
            return
        counts = self.ledger.counts(pr.pool.name)
        for rec in aged(pr.pool, self.ledger, time.time(), counts["draining"] + counts["destroying"]):
            log.info("pool %s: refreshing %s: older than refresh.max_age_s %g", pr.pool.name, rec.name,
                     pr.pool.refresh.max_age_s)
            self.ledger.transition(rec.id, "draining")

    # day-2 operations (forkscale/workloads/operations) ------------------------------------------
    async def push_image(self, pool_name: str, body: dict[str, Any], by: str) -> dict[str, Any]:
        """`PUT /v1/pools/{pool}/image`: record a push (or its plan, with dry_run); serve runs it."""
        self._runtime(pool_name)
        if not body.get("dry_run"):
            self._refuse_when_read_only()
        at = ops.parse_at(body.get("at"))
        started = await ops.push(self._engine_for(pool_name), pool_name, snapshot=body.get("snapshot"), source=body.get("source"),
                                 created_by=by, allow_partial=bool(body.get("allow_partial")), at=at,
                                 dry_run=bool(body.get("dry_run")))
        return self._started(started)

    async def refresh(self, pool_name: str, vms: list[str], by: str) -> dict[str, Any]:
        self._runtime(pool_name)
        self._refuse_when_read_only()
        return self._started(await ops.refresh(self._engine_for(pool_name), pool_name, vms, created_by=by))

    async def rollout(self, pool_name: str, action: str, by: str) -> dict[str, Any]:
        """pause | resume | cancel the pool's operation, or rollback its image."""
        self._runtime(pool_name)
        self._refuse_when_read_only()
        if action == "rollback":
            return self._started(await ops.rollback(self._engine_for(pool_name), self.runner, pool_name,
                                                    created_by=by))
        if action == "pause":
            ops.pause(self.ledger, pool_name, by)
        elif action == "resume":
            ops.resume(self.ledger, pool_name, by)
        elif action == "cancel":
            await ops.cancel(self.runner, pool_name, by)
        else:
            raise ControllerError(f"unknown rollout action {action!r} (pause, resume, cancel, rollback)", 400)
        if self.owns(pool_name):
            self.operations.poke(pool_name)
        return ops.rollout_doc(self.ledger, pool_name)

    def rollout_status(self, pool_name: str) -> dict[str, Any]:
        self._runtime(pool_name)
        return ops.rollout_doc(self.ledger, pool_name, steps=True)

    def _started(self, started: ops.Started) -> dict[str, Any]:
        if started.nothing is not None:
            return {**ops.rollout_doc(self.ledger, started.pool), "dry_run": False, "nothing": started.nothing}
        if started.op is None:
            return {"pool": started.pool, "dry_run": True, "kind": started.kind, "params": started.params,
                    "plan": started.plan_lines()}
        if self.owns(started.pool):
            self.operations.poke(started.pool)
        return ops.rollout_doc(self.ledger, started.pool)

    def set_count(self, pool_name: str, count: int) -> dict[str, Any]:
        """`fixed`: the new count; headroom / target-value: the new floor (min). In memory only."""
        pr = self._runtime(pool_name)
        self._refuse_when_read_only()
        cfg = pr.runner.config
        if count > pr.pool.capacity():
            raise ControllerError(f"{count} clones need {count} addresses but pool {pool_name!r} holds "
                                  f"{pr.pool.capacity()}", 409)
        if cfg.strategy == "fixed":
            if cfg.max is not None and count > cfg.max:
                raise ControllerError(f"count {count} is above the policy's max {cfg.max}", 409)
            pr.runner.update_config(dataclasses.replace(cfg, count=count))
            pr.override = {"count": count}
            applied = "count"
        else:
            if cfg.max is not None and count > cfg.max:
                raise ControllerError(
                    f"pool {pool_name!r} is driven by its {cfg.strategy} policy (max {cfg.max}); a count sets its "
                    f"floor (min), and {count} is above max: raise policy.max in the spec", 409)
            pr.runner.update_config(dataclasses.replace(cfg, min=count))
            pr.override = {"min": count}
            applied = "min"
        if self.ownership is not None:  # for whichever replica owns the pool, now or after a failover
            spec_value = pr.pool.policy.count if applied == "count" else pr.pool.policy.min
            self.ledger.set_override(pool_name, applied, count, spec_value)
        log.info("pool %s: %s set to %d over the API", pool_name, applied, count)
        pr.wake.set()
        return {"pool": pool_name, "strategy": cfg.strategy, "applied": applied, applied: count}

    # status --------------------------------------------------------------------------------------
    def status(self, pool_name: str) -> dict[str, Any]:
        pr = self._runtime(pool_name)
        vcenter = self.vcenters.doc(self.spec.vcenter_name(pr.pool))
        if self.ownership is None:
            return {**status_doc(pr, self.ledger, dry_run=self.dry_run), "vcenter": vcenter}
        lease = self.ownership.owner(pool_name)
        owner = owner_doc(lease, self.ownership.holder.id, time.time())
        if not self.owns(pool_name):
            return {**remote_status(pr, self.ledger, owner, dry_run=self.dry_run), "vcenter": vcenter}
        return {**status_doc(pr, self.ledger, dry_run=self.dry_run), "owner": owner, "vcenter": vcenter}

    def owns(self, pool_name: str) -> bool:
        """Whether this controller acts on the pool (always, without replicas)."""
        return self.ownership is None or self.ownership.owns(pool_name)

    def desired_counts(self) -> dict[str, int]:
        """What each pool's policy wants now (for forkscale_pool_desired)."""
        out = {}
        for name, pr in self.pools.items():
            if not self.owns(name):  # the owner's last converge target, from the ledger
                last = self.ledger.desired(name)
                out[name] = last[0] if last is not None else self.observe(pr).current
                continue
            out[name] = pr.desired if pr.desired is not None else self.observe(pr).current
        return out

    def retry_after(self, pool_name: str) -> int:
        """Seconds a refused claimer should wait: the cooldown left plus about one clone's time."""
        pr = self._runtime(pool_name)
        left = pr.runner.status().cooldown_left_s or 0.0
        per_clone = 1.0
        if pr.last_result and pr.last_result.get("created"):
            per_clone = max(1.0, float(pr.last_result["seconds"]))
        return int(min(300, max(1, round(left + per_clone))))

    # internals -----------------------------------------------------------------------------------
    # engines (one per vCenter) ------------------------------------------------------------------
    def _hook(self, engine: Engine) -> None:
        """Our progress callback and drain hook on an engine (once)."""
        if engine.progress != self._on_progress:
            engine.progress = self._on_progress
        engine.drainer = Drainer(self.ledger)

    def _engine_of(self, pr: PoolRuntime) -> Engine | None:
        return self.vcenters.engine(self.spec.vcenter_name(pr.pool))

    def _engine_for(self, pool_name: str) -> Engine:
        """The engine of a pool's vCenter (what its operations run on)."""
        return self._engine(self._runtime(pool_name))

    def _engine(self, pr: PoolRuntime) -> Engine:
        engine = self._engine_of(pr)
        if engine is None:
            name = self.spec.vcenter_name(pr.pool)
            raise ControllerError(f"vCenter {name!r} has not answered since the controller started", 503)
        return engine

    # ownership (several replicas) -----------------------------------------------------------------
    def _gained(self, pool_name: str) -> None:
        """This replica now owns the pool: reconcile first (adopt or roll back what the previous
        owner left), with the policy's override from the ledger."""
        pr = self._runtime(pool_name)
        pr.needs_converge = True
        pr.desired = None
        pr.wake.set()

    def _lost(self, pool_name: str, why: str) -> None:
        """The pool's lease was taken over: stop acting at once (the writes were refused anyway)."""
        pr = self._runtime(pool_name)
        self._error(pr, f"lost the pool to another replica: {why}")
        if pr.round is not None and not pr.round.done():
            pr.round.cancel()
        self.operations.drop(pool_name)  # its operation goes on at the new owner (the steps are idempotent)
        pr.needs_converge = True
        pr.wake.set()

    def _publish_status(self, pr: PoolRuntime) -> None:
        """What only the owner knows, for the other replicas' status (after each round)."""
        if self.ownership is None or not self.owns(pr.pool.name):
            return
        try:
            self.ledger.publish_status(pr.pool.name, status_doc(pr, self.ledger, dry_run=self.dry_run))
        except LedgerError as exc:
            log.warning("pool %s: status not published: %s", pr.pool.name, exc)

    def _runtime(self, pool_name: str) -> PoolRuntime:
        pr = self.pools.get(pool_name)
        if pr is None:
            raise ControllerError(f"no pool named {pool_name!r} (pools: {', '.join(self.pools)})", 404)
        return pr

    def _refuse_when_read_only(self) -> None:
        if self.dry_run:
            raise ControllerError("the controller runs with --dry-run: it changes nothing", 409)
        if self._stopping:
            raise ControllerError("the controller is shutting down", 503)

    def _live(self, pool_name: str) -> int:
        counts = self.ledger.counts(pool_name)
        return sum(counts[s] for s in LIVE)

    def _on_progress(self, pool_name: str, counts: dict[str, int]) -> None:
        pr = self.pools.get(pool_name)
        if pr is not None and counts.get("ready"):
            self._notify_ready(pr)
        self._previous_progress(pool_name, counts)

    @staticmethod
    def _notify_ready(pr: PoolRuntime) -> None:
        event, pr.ready_event = pr.ready_event, asyncio.Event()
        event.set()

    def _error(self, pr: PoolRuntime, message: str) -> None:
        """Log and keep an error for the status; a repeat of the last one bumps its count instead."""
        log.warning("pool %s: %s", pr.pool.name, message)
        now = iso(time.time())
        if pr.errors and pr.errors[-1]["error"] == message:
            pr.errors[-1]["count"] += 1
            pr.errors[-1]["last_at"] = now
        else:
            pr.errors.append({"at": now, "last_at": now, "error": message, "count": 1})

    def _publish(self) -> None:
        """Show each pool's desired count: through the exporter when one runs (it owns the fleet
        gauges and refreshes them from vCenter), else as a fleet sample built from the ledger."""
        if self.exporter is not None:
            for name, want in self.desired_counts().items():
                self.exporter.set_desired(name, want)
            return
        if self.telemetry is None or not self.publish_fleet:
            return
        from forkscale.observe.images import image_states
        from forkscale.observe.telemetry import FleetSample, PoolCounts, count_clones

        pools, rows = [], []
        desired = self.desired_counts()
        for name in self.pools:
            counts = self.ledger.counts(name)
            pools.append(PoolCounts(name, desired[name], counts["ready"] + counts["claimed"], counts["ready"]))
            rows += self.ledger.clones(name, states=[*LIVE, "destroying"])
        triples = [(r.pool, r.kind, r.state) for r in rows]
        try:
            self.telemetry.set_fleet(FleetSample(pools=pools, clones=count_clones(triples),
                                                 images=image_states(self.ledger, list(self.pools), rows)))
        except ValueError as exc:
            log.warning("metrics: %s", exc)

