"""DevTest live-clone upgrade rehearsal: fork a *running* VM, upgrade the fork, check it, throw it away.

The flow (`Rehearsal.run`):

1. plan     - `plan.make_plan`: the spec checked against one inventory read plus one read of the
              source (power, NICs, `layoutEx`); any problem is a `SpecError` naming the field,
              raised before anything is created (exit 2).
2. clone    - a live clone: `InstantClone_Task` of the running source (no freeze), every NIC moved
              to the isolated port group and/or `migrateConnect='disconnect'`, with a fresh manual
              MAC, so the fork (which keeps the source's IP and hostname) never shows up on the
              source's network. An image clone (`rehearse --pool`): a linked clone of the golden
              VM's new snapshot, NICs disconnected. The task runs detached from the caller: when
              the caller is cancelled mid-clone, cleanup still learns the new VM and removes it.
3. wait     - the clone reports poweredOn, then its guest can run steps (`guest.GuestChannel.ready`:
              VMware Tools running and the guest login accepted, or SSH answering), all within
              `wait.timeout_s`; giving up says what it waited for and for how long.
4. steps    - the upgrade steps, in order, each with its uploads, its timeout and captured output;
              the first failure stops the upgrade and the checks are skipped (they would test a
              half-upgrade).
5. checks   - every check runs (each one's result is reported), each with its timeout.
6. cleanup  - always (try/finally, shielded from cancellation, a second Ctrl-C included): destroy
              the clone unless `keep`, then read the source again (power, delta chain depth).

The outcome is `passed` only when every step and check passed; the report's exit code and the
command's are the same number.

The source keeps running untouched apart from the delta disk vSphere adds to it for the fork:
the report shows its chain depth (files per disk in `layoutEx`) before and after — those deltas
are invisible in the snapshot tree, and the chain is limited to 255 levels (KB 67186 alarms
above ~100).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.core.logs import register_secret
from forkscale.remote import ssh
from forkscale.spec.model import Step
from forkscale.spec.rehearsal import RehearsalSpec
from forkscale.vsphere.model import GuestLogin, Inventory, VmDetail
from forkscale.vsphere.ports import VSphere
from forkscale.workloads.rehearsal.guest import (
    GuestChannel,
    GuestOpsChannel,
    GuestRefused,
    GuestUnreachable,
    SshChannel,
)
from forkscale.workloads.rehearsal.plan import TAG_REHEARSAL, Plan, make_plan
from forkscale.workloads.rehearsal.report import ERROR, INTERRUPTED, Report, StepResult

log = logging.getLogger("forkscale.rehearsal")


class RehearsalFailed(Exception):
    """The clone could not be made or reached; the report's `error` says why (exit 1)."""


async def _uncancellable(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to its end even if the caller is cancelled (again and again); re-raise after."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
            log.warning("cleanup in progress: waiting for it to finish before stopping")
    if task.cancelled():
        raise asyncio.CancelledError
    task.result()
    if cancelled:
        raise asyncio.CancelledError


class Rehearsal:
    """One run. `report` is filled in as the run goes, so an interrupted run still has one."""

    def __init__(self, spec: RehearsalSpec, driver: VSphere, *, keep: bool = False,
                 progress: Callable[[str], None] | None = None, now: datetime | None = None) -> None:
        self.spec = spec
        self.driver = driver
        self.keep = keep
        self.progress = progress or (lambda _msg: None)
        started = now or datetime.now(UTC)
        self.clone_name = spec.clone_name_at(started.astimezone())
        self.login: GuestLogin | None = None
        self.ssh: ssh.SshTarget | None = None
        if spec.transport == "guestops":
            assert spec.guestops is not None
            self.login = GuestLogin(spec.guestops.user, spec.guestops.password())  # SpecError when unset
            register_secret(self.login.password)
            target = f"as {spec.guestops.user!r} through VMware Tools (no network to the clone)"
        else:
            assert spec.ssh is not None
            c = spec.ssh
            self.ssh = ssh.SshTarget(c.host, user=c.user, port=c.port, key_file=c.key_file,
                                     known_hosts=c.known_hosts or "~/.ssh/known_hosts",
                                     insecure_host_key=c.insecure_host_key,
                                     connect_timeout=min(10.0, spec.wait_timeout_s))
            target = self.ssh.where
        self.report = Report(source=spec.source, clone_name=self.clone_name, network_mode=spec.network.mode,
                             port_group=spec.network.port_group, disconnect=spec.network.disconnect,
                             transport=spec.transport, target=target, started_at=started, pool=spec.pool,
                             snapshot=spec.snapshot)
        self.report.steps = [StepResult(st.name, "skipped", st.timeout_s) for st in spec.steps]
        self.report.checks = [StepResult(st.name, "skipped", st.timeout_s) for st in spec.checks]
        self.channel: GuestChannel | None = None
        self._create: asyncio.Task[str] | None = None
        self._doing = "planning"
        self._t0 = time.monotonic()

    async def run(self) -> Report:
        r = self.report
        try:
            plan = await self.plan()  # SpecError (exit 2) propagates: nothing was created
        except (PermanentError, TemporaryError, asyncio.CancelledError) as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            r.outcome = INTERRUPTED if cancelled else ERROR
            r.error = "interrupted before anything was created" if cancelled else str(exc)
            self._finish()
            if cancelled:
                raise
            return r
        try:
            self._create = asyncio.create_task(self._clone(plan), name=f"rehearsal-clone-{self.clone_name}")
            # shielded: a cancelled caller must not lose track of a clone vCenter is still making
            moref = await asyncio.shield(self._create)
            await self._wait(moref, plan)
            await self._steps()
            r.settle()
        except asyncio.CancelledError:
            r.outcome = INTERRUPTED
            r.error = f"interrupted (Ctrl-C, SIGTERM or a cancelled caller) while {self._doing}; cleanup still ran"
            raise
        except (RehearsalFailed, PermanentError, TemporaryError) as exc:
            r.outcome = ERROR
            r.error = str(exc)
        except BaseException as exc:  # a bug or an unexpected fault: still clean up, then raise
            r.outcome = ERROR
            r.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            try:
                await _uncancellable(self._cleanup(plan))
            finally:
                self._finish()  # also when cleanup re-raises a cancellation: the report's times hold
        return r

    def _finish(self) -> None:
        self.report.finished_at = datetime.now(UTC)
        self.report.duration_s = time.monotonic() - self._t0

    async def plan(self) -> Plan:
        """Check the spec against the inventory (SpecError naming the field) and plan the clone; no changes."""
        return await make_plan(self.spec, self.driver, self.clone_name, self.report)

    # 2. clone -----------------------------------------------------------------------------
    async def _clone(self, plan: Plan) -> str:
        phase = self.report.phases["clone"]
        if plan.snapshot is not None:
            self._doing = f"cloning snapshot {self.spec.snapshot!r} of {self.spec.source} as {self.clone_name}"
        else:
            self._doing = f"instant-cloning running {self.spec.source} as {self.clone_name}"
        self.progress(f"{self._doing} ({self.spec.network.mode})")
        t = time.monotonic()
        try:
            if plan.snapshot is not None:
                moref = await self.driver.clone(plan.source, plan.request, linked=True, snapshot=plan.snapshot)
            else:
                moref = await self.driver.instant_clone(plan.source, plan.request)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            phase.status = "interrupted" if cancelled else "failed"
            phase.error = "interrupted" if cancelled else str(exc) or type(exc).__name__
            raise
        finally:
            phase.duration_s = time.monotonic() - t
        phase.status = "ok"
        self.report.clone_moref = moref
        return moref

    # 3. wait ------------------------------------------------------------------------------
    def _channel(self, moref: str) -> GuestChannel:
        if self.login is not None:
            return GuestOpsChannel(self.driver, moref, self.clone_name, self.login)
        assert self.ssh is not None
        return SshChannel(self.ssh)

    async def _wait(self, moref: str, plan: Plan) -> None:
        phase = self.report.phases["wait"]
        limit = self.spec.wait_timeout_s
        t = time.monotonic()
        deadline = t + limit
        what = f"{self.clone_name} to power on"
        try:
            self._doing = f"waiting for {what}"
            detail = await self._powered_on(moref, deadline)
            self.report.clone_nics = [
                {"label": n.label, "mac": n.mac, "port_group": plan.net_names.get(n.network[1]),
                 "connected": n.connected, "start_connected": n.start_connected} for n in detail.nics]
            channel = self._channel(moref)
            what = channel.waiting_for()
            self._doing = f"waiting for {what}"
            self.progress(f"{self.clone_name} is powered on; waiting up to {deadline - time.monotonic():.0f}s "
                          f"for {what}")
            await channel.ready(deadline)
            self.channel = channel
        except GuestRefused as exc:
            phase.status, phase.error = "failed", str(exc)
            raise RehearsalFailed(str(exc)) from None
        except GuestUnreachable as exc:
            phase.status = "failed"
            phase.error = (f"gave up after {time.monotonic() - t:.1f}s (wait.timeout_s: {limit:g}) waiting for "
                           f"{what}: {exc}")
            raise RehearsalFailed(phase.error) from None
        except asyncio.CancelledError:
            phase.status = "interrupted"
            phase.error = f"interrupted after {time.monotonic() - t:.1f}s while waiting for {what}"
            raise
        except BaseException as exc:
            phase.status, phase.error = "failed", str(exc) or type(exc).__name__
            raise
        finally:
            phase.duration_s = time.monotonic() - t
        phase.status = "ok"

    async def _powered_on(self, moref: str, deadline: float) -> VmDetail:
        delay = 0.2
        while True:
            detail = await self.driver.vm_detail(moref)
            if detail.power == "poweredOn":
                return detail
            if time.monotonic() >= deadline:
                raise GuestUnreachable(f"the clone is {detail.power}")
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, 3.0)

    # 4./5. steps and checks ---------------------------------------------------------------
    async def _steps(self) -> None:
        r = self.report
        for i, step in enumerate(self.spec.steps):
            if await self._run_one("step", step, r.steps, i, i + 1) != "passed":
                self.progress(f"upgrade step {step.name!r} did not pass; skipping the rest and the checks")
                return
        for i, step in enumerate(self.spec.checks):
            await self._run_one("check", step, r.checks, i, len(self.spec.steps) + i + 1)

    async def _run_one(self, phase: str, step: Step, results: list[StepResult], i: int, index: int) -> str:
        assert self.channel is not None
        self._doing = f"running {phase} {step.name!r}"
        self.progress(f"{phase} {step.name!r} ...")
        res = results[i] = StepResult(step.name, "error", step.timeout_s)
        t = time.monotonic()
        try:
            for item in step.upload:
                self.progress(f"{phase} {step.name!r}: copying {item.src.name} to {item.dest}")
                await self.channel.upload(item)
            t = time.monotonic()
            out = await self.channel.run(step, index)
        except asyncio.CancelledError:
            res.status, res.error = "interrupted", "interrupted while running (the command was killed)"
            res.duration_s = time.monotonic() - t
            raise
        except (TemporaryError, PermanentError) as exc:
            res.error = str(exc)
            res.duration_s = time.monotonic() - t
        else:
            res.take_output(out.stdout, out.stderr)
            res.duration_s = out.duration_s if out.duration_s is not None else time.monotonic() - t
            if out.timed_out:
                res.status, res.error = "timeout", out.note
            elif out.exit_code is None:
                res.error = out.note or "the guest reported no exit code"
            else:
                res.exit_code = out.exit_code
                res.status = "passed" if out.exit_code == 0 else "failed"
        self.progress(f"{phase} {step.name!r}: {res.status} in {res.duration_s:.2f}s"
                      + (f" ({res.reason()})" if res.status != "passed" else ""))
        return res.status

    # 6. cleanup ---------------------------------------------------------------------------
    async def _cleanup(self, plan: Plan) -> None:
        r, phase = self.report, self.report.phases["cleanup"]
        t = time.monotonic()
        try:
            moref = await self._made()
            r.clone_moref = moref or r.clone_moref
            if moref is not None and self.keep:
                r.kept = True
                self.progress(f"keeping {self.clone_name} ({moref}) as asked (--keep)")
            elif moref is not None:
                self.progress(f"destroying {self.clone_name} ({moref})")
                await self.driver.destroy(moref)
                r.destroyed = True
            phase.status = "ok"
        except Exception as exc:
            phase.status, phase.error = "failed", str(exc) or type(exc).__name__
            r.cleanup_error = f"{type(exc).__name__}: {exc}"
            log.error("rehearsal: could not destroy %s: %s; remove it by hand (extraConfig %s=%s)",
                      self.clone_name, exc, TAG_REHEARSAL, self.spec.source)
        try:
            after = await self.driver.vm_detail(plan.source)
            r.power_after, r.chains_after = after.power, after.chains
        except Exception as exc:
            r.warnings.append(f"could not read {self.spec.source} after the rehearsal: {exc}")
        phase.duration_s = time.monotonic() - t

    async def _made(self) -> str | None:
        """The clone's moref: from the clone task; else, when the outcome is unknown (timeout, lost
        connection, cancelled), the VM of that name - only if it carries this rehearsal's tag."""
        if self._create is None:
            return None
        try:
            return await self._create
        except PermanentError:
            return None  # vCenter answered: the task failed, no VM was made
        except (TemporaryError, asyncio.CancelledError):
            pass
        inv: Inventory = await self.driver.inventory()
        vm = inv.vm_by_name(self.clone_name)
        if vm is None or vm.moref == self.report.source_moref:
            return None
        detail = await self.driver.vm_detail(vm.moref, tags=(TAG_REHEARSAL,))
        return vm.moref if detail.extra.get(TAG_REHEARSAL) == self.spec.source else None

