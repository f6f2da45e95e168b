"""DevTest live-clone upgrade rehearsal: fork a *running* VM, upgrade the fork, check it, throw it away.

The flow (`Rehearsal.run`):

1. plan     - one inventory read plus one read of the source (power, NICs, `layoutEx`): the
              source exists, is powered on and not frozen, the port group exists and is not the
              source's own network, the clone's name is free. Any problem is a `SpecError` naming
              the field, raised before anything is created (exit 2).
2. clone    - `InstantClone_Task` of the running source (no freeze), every NIC edited: moved to
              the isolated port group and/or `migrateConnect='disconnect'`, with a fresh manual
              MAC, so the fork (which keeps the source's IP and hostname) never shows up on the
              source's network. The clone is tagged `forkscale.rehearsal=<source>` in extraConfig
              so a leftover (kill -9) can be recognised. The task runs detached from the caller:
              when the caller is cancelled mid-clone, cleanup still learns the new VM and removes it.
3. wait     - the clone reports poweredOn, then its guest answers over SSH, within `wait.timeout_s`.
4. steps    - the upgrade steps, in order, each with its own timeout and captured output; the first
              failure stops the upgrade and the checks are skipped (they would test a half-upgrade).
5. checks   - every check runs (each one's result is reported), each with its timeout.
6. cleanup  - always (try/finally, shielded from cancellation, a second Ctrl-C included): destroy
              the clone unless `keep`, then read the source again (power, delta chain depth).

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from forkscale.core.errors import PermanentError, SpecError, TemporaryError
from forkscale.core.identity import random_mac
from forkscale.remote import ssh
from forkscale.spec.rehearsal import RehearsalSpec, Step
from forkscale.vsphere.model import CloneRequest, Inventory, VmDetail
from forkscale.vsphere.ports import VSphere
from forkscale.workloads.rehearsal.report import (
    CHAIN_ALARM,
    ERROR,
    FAILED,
    INTERRUPTED,
    PASSED,
    Report,
    StepResult,
    clip,
)

log = logging.getLogger("forkscale.rehearsal")


TAG_REHEARSAL = "forkscale.rehearsal"




class RehearsalFailed(Exception):
    """The clone could not be made or reached; the report's `error` says why (exit 1)."""


@dataclass
class Plan:
    source: str  # moref
    request: CloneRequest
    net_names: dict[str, str]  # network moref -> name


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
        c = spec.ssh
        self.target = ssh.SshTarget(c.host, user=c.user, port=c.port, key_file=c.key_file,
                                    known_hosts=c.known_hosts or "~/.ssh/known_hosts",
                                    insecure_host_key=c.insecure_host_key,
                                    connect_timeout=min(10.0, spec.wait_timeout_s))
        self.report = Report(source=spec.source, clone_name=self.clone_name, network_mode=spec.network.mode,
                             port_group=spec.network.port_group, disconnect=spec.network.disconnect,
                             ssh_target=self.target.where, started_at=started)
        self.report.steps = [StepResult(st.name, "skipped", st.timeout_s) for st in spec.steps]
        self.report.checks = [StepResult(st.name, "skipped", st.timeout_s) for st in spec.checks]
        self._create: asyncio.Task[str] | None = None
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
            r.outcome = FAILED if r.failures() else PASSED
        except asyncio.CancelledError:
            r.outcome = INTERRUPTED
            r.error = "interrupted (Ctrl-C, SIGTERM or a cancelled caller); cleanup still ran"
            raise
        except (RehearsalFailed, PermanentError, TemporaryError) as exc:
            r.outcome = ERROR
            r.error = str(exc)
        except BaseException as exc:  # a bug or an unexpected fault: still clean up, then raise
            r.outcome = ERROR
            r.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            await _uncancellable(self._cleanup(plan))
            self._finish()
        return r

    def _finish(self) -> None:
        self.report.finished_at = datetime.now(UTC)
        self.report.duration_s = time.monotonic() - self._t0

    # 1. plan ------------------------------------------------------------------------------
    async def plan(self) -> Plan:
        """Check the spec against the inventory (SpecError naming the field) and plan the clone; no changes."""
        spec, r = self.spec, self.report
        inv = await self.driver.inventory()
        src = inv.vm_by_name(spec.source)
        if src is None:
            names = sorted(v.name for v in inv.vms.values() if not v.pool)[:10]
            raise SpecError("source", f"no VM named {spec.source!r} in vCenter (some VMs: {', '.join(names)})")
        if src.template:
            raise SpecError("source", f"{spec.source} is a template; a rehearsal clones a running VM")
        if src.power != "poweredOn":
            raise SpecError("source", f"{spec.source} is {src.power}; a rehearsal instant-clones a running VM, "
                                      "so it must be powered on")
        if src.frozen:
            raise SpecError("source", f"{spec.source} is frozen (runtime.instantCloneFrozen); a rehearsal clones a "
                                      "running VM - its clone would resume the freeze script instead")
        if inv.vm_by_name(self.clone_name) is not None:
            raise SpecError("clone_name", f"a VM named {self.clone_name!r} already exists")
        if not src.datastores:
            raise SpecError("source", f"{spec.source} has no datastore")
        detail = await self.driver.vm_detail(src.moref)
        if not detail.nics:
            raise SpecError("source", f"{spec.source} has no network adapter; there is no way to reach its clone")
        net_names = {moref: name for name, (_, moref, _) in inv.networks.items()}
        if spec.network.port_group is not None:
            pg = spec.network.port_group
            if pg not in inv.networks:
                raise SpecError("network.port_group", f"no port group named {pg!r} (port groups: "
                                                      f"{', '.join(sorted(inv.networks))})")
            if any(n.network[1] == inv.networks[pg][1] for n in detail.nics):
                raise SpecError("network.port_group", f"{pg!r} is a network {spec.source} is on; its clone keeps the "
                                                      "source's IP, so use a port group isolated from it")
        folder = src.folder
        if spec.folder is not None:
            folder = inv.folders.get(spec.folder)
            if folder is None:
                raise SpecError("folder", f"no VM folder named {spec.folder!r}")
        if folder is None:
            raise SpecError("folder", f"cannot tell the folder of {spec.source}; name one")
        r.source_moref, r.source_host = src.moref, inv.host_names.get(src.host or "", src.host)
        r.power_before, r.chains_before = detail.power, detail.chains
        depth = Report.depth(detail.chains) or 0
        if depth + 1 > CHAIN_ALARM:
            r.warnings.append(f"{spec.source}'s delta chain will be {depth + 1} levels deep (alarm above "
                              f"{CHAIN_ALARM}, limit 255; KB 67186): consolidate it")
        taken = set(inv.macs) | {n.mac for n in detail.nics}
        nics = []
        for n in detail.nics:
            mac = random_mac(taken)
            taken.add(mac)
            network = inv.networks[spec.network.port_group] if spec.network.port_group else n.network
            nics.append((n.key, mac, network))
        first, *more = nics
        req = CloneRequest(name=self.clone_name, folder=folder, datastore=src.datastores[0], host=src.host or "",
                           resource_pool=None, network=first[2], mac=first[1], nic_key=first[0],
                           extra={TAG_REHEARSAL: spec.source}, disconnect=spec.network.disconnect,
                           more_nics=tuple(more))
        return Plan(source=src.moref, request=req, net_names=net_names)

    # 2. clone -----------------------------------------------------------------------------
    async def _clone(self, plan: Plan) -> str:
        phase = self.report.phases["clone"]
        self.progress(f"instant-cloning running {self.spec.source} as {self.clone_name} "
                      f"({self.spec.network.mode})")
        t = time.monotonic()
        try:
            moref = await self.driver.instant_clone(plan.source, plan.request)
        except BaseException as exc:
            phase.status, phase.error = "failed", str(exc) or type(exc).__name__
            raise
        finally:
            phase.duration_s = time.monotonic() - t
        phase.status = "ok"
        self.report.clone_moref = moref
        return moref

    # 3. wait ------------------------------------------------------------------------------
    async def _wait(self, moref: str, plan: Plan) -> None:
        phase = self.report.phases["wait"]
        t = time.monotonic()
        deadline = t + self.spec.wait_timeout_s
        try:
            detail = await self._powered_on(moref, deadline)
            self.report.clone_nics = [
                {"label": n.label, "mac": n.mac, "port_group": plan.net_names.get(n.network[1]),
                 "connected": n.connected, "start_connected": n.start_connected} for n in detail.nics]
            self.progress(f"{self.clone_name} is powered on; waiting for ssh {self.target.where}")
            await self._reachable(deadline)
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
            if time.monotonic() + delay > deadline:
                raise RehearsalFailed(f"the clone {self.clone_name} is {detail.power}, not poweredOn, after "
                                      f"{self.spec.wait_timeout_s:g}s (wait.timeout_s)")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 3.0)

    async def _reachable(self, deadline: float) -> None:
        delay = 0.5
        while True:
            remaining = deadline - time.monotonic()
            try:
                await ssh.run(self.target, "true", timeout=max(1.0, min(remaining, 30.0)))
                return
            except PermanentError as exc:  # host key, auth, key file: waiting will not help
                raise RehearsalFailed(f"cannot log in to the clone's guest: {exc}") from None
            except TemporaryError as exc:
                if time.monotonic() + delay >= deadline:
                    raise RehearsalFailed(f"the clone's guest did not answer over ssh within "
                                          f"{self.spec.wait_timeout_s:g}s (wait.timeout_s): {exc}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    # 4./5. steps and checks ---------------------------------------------------------------
    async def _steps(self) -> None:
        r = self.report
        for i, step in enumerate(self.spec.steps):
            if await self._run_one("step", step, r.steps, i) != "passed":
                self.progress(f"upgrade step {step.name!r} did not pass; skipping the rest and the checks")
                return
        for i, step in enumerate(self.spec.checks):
            await self._run_one("check", step, r.checks, i)

    async def _run_one(self, phase: str, step: Step, results: list[StepResult], i: int) -> str:
        self.progress(f"{phase} {step.name!r} ...")
        res = results[i] = StepResult(step.name, "error", step.timeout_s)
        t = time.monotonic()
        try:
            out = await ssh.run(self.target, step.run, timeout=step.timeout_s)
        except asyncio.CancelledError:
            res.status, res.error = "interrupted", "interrupted while running (the command was killed)"
            raise
        except TemporaryError as exc:
            res.status = "timeout" if exc.fault == "SshTimeout" else "error"
            res.error = str(exc)
        except PermanentError as exc:
            res.error = str(exc)
        else:
            res.exit_code = out.exit_status
            res.status = "passed" if out.exit_status == 0 else "failed"
            res.stdout, cut_out = clip(out.stdout)
            res.stderr, cut_err = clip(out.stderr)
            res.stdout_bytes, res.stderr_bytes = len(out.stdout), len(out.stderr)
            res.truncated = cut_out or cut_err
        finally:
            res.duration_s = time.monotonic() - t
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

