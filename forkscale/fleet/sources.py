"""A pool's sources: the VMs its instant clones fork from, one frozen replica per host.

An instant clone always runs on its source's host, so spreading a pool across a cluster takes
one source per host (Ray's vSphere provider does the same). `forkscale prepare` makes them: a
linked clone of the pool's golden VM (`source:`) from its current snapshot (a full clone when it
has none) on each host, frozen with the pool's `freeze:` method, named
`<golden>-<pool>-src-<host>-g<generation>`. Sources belong to one pool: two pools on one golden VM
(say `quickstart` and `workers` on `src-linux`) each get their own set, with their own freeze
method, rotation depth and lifetime (`destroy --sources` of one never touches the other's).

Crash safety follows the clones' rules: a source's ledger row (`sources` table, state
`preparing`) is written before its clone task is submitted, and the VM is tagged in extraConfig
(`forkscale.pool`, `forkscale.source=<generation>`) by the clone spec itself, so a restarted
controller, or one whose ledger was lost, finds and adopts its sources instead of treating them
as orphan clones (a clone always has `forkscale.id`; a source never does).

Before clones are planned, `SourceManager.for_converge` checks every active source in the same
inventory read the plan uses, plus one batched `layoutEx.disk` read for chain depths:

* frozen and shallow: kept;
* lost its frozen state (power cycle) but still running: frozen again (guestops or ssh);
* powered off or gone: replaced by a fresh replica (next generation);
* delta chain at or above `sources.rotate_depth`: rotated, i.e. replaced by a fresh replica, and
  only when clones are about to be made (a scale-down never pays for a rotation).

A replaced source is `retiring`: new clones come from its successor, and it is destroyed once no
live instant clone in the ledger names it (`retire`, run after every converge).

Image generations (forkscale/fleet/images.py): every source is a replica of one image of the
pool (golden VM + snapshot) and records its generation. A manager works for one image: its
sources are the ones it checks, rotates and clones from, one per host; sources of the pool's
other images are left as they are -- the previous image's stay (frozen, ready) while clones use
them, and for `rollout.keep_previous_s` after the image retired (a rollback finds them ready);
then, once no live clone uses them, `retire` removes them. A failed image's sources go as soon
as they are unused.

Source states in the ledger: preparing -> ready -> retiring -> gone, and failed (its VM, if any,
is removed by `retire`).

Limitation of `freeze: ssh` with per-host sources: the replicas are new VMs, so they cannot be
reached at the spec's `ssh.host` (the golden's address). Each replica is reached at the address
its guest reports (`guest.ipAddress`, so VMware Tools and DHCP on the pool's port group are
needed), with the spec's port, user, key and known_hosts. Instant clones of one golden share its
SSH host key, so known_hosts needs the golden's key under each replica's address (or
`insecure_host_key`). `freeze: guestops` has no such needs and is the better fit here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from forkscale.core.errors import PermanentError, SpecError, TemporaryError
from forkscale.core.identity import random_mac
from forkscale.fleet.images import ImageRef
from forkscale.ledger import LIVE_STATES, Ledger, SourceRecord
from forkscale.spec import Pool
from forkscale.vsphere.model import TAG_POOL, TAG_SOURCE, CloneRequest, Inventory, VmInfo
from forkscale.vsphere.ports import VSphere

log = logging.getLogger("forkscale.sources")
ACTIVE = ("preparing", "ready")
CLONE_ATTEMPTS = 3
RPCTOOL = "/usr/bin/vmware-rpctool"


@dataclass
class Source:
    """What the engine clones from on one host."""

    moref: str
    name: str
    host: str  # host moref
    snapshot: str | None
    frozen: bool
    generation: int = 1
    golden: str | None = None  # moref linked/full fallbacks clone from (None: this VM itself)
    problem: str | None = None  # set when no usable instant-clone source exists (skip the instant rung)
    image_generation: int | None = None  # the pool image it is (a replica of)


@dataclass
class SourceReport:
    """What prepare (or a converge) did about one host's source."""

    host: str
    name: str
    generation: int
    action: str  # kept, created, refrozen, replaced, rotated, adopted, failed, unavailable
    frozen: bool
    depth: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "name": self.name, "generation": self.generation, "action": self.action,
                "frozen": self.frozen, "depth": self.depth, "error": self.error}


def replica_name(golden: str, pool: str, host: str, generation: int) -> str:
    return f"{golden}-{pool}-src-{host}-g{generation}"


def _fail(pool: Pool, what: str, exc: Exception) -> PermanentError:
    fault = getattr(exc, "fault", type(exc).__name__)
    return PermanentError(f"pool {pool.name}: {what}: {exc}", fault)


async def freeze_vm(driver: VSphere, pool: Pool, moref: str, name: str, *, ssh_host: str | None = None) -> None:
    """Freeze one VM with the pool's method and wait for `runtime.instantCloneFrozen`.

    guestops: waits until VMware Tools accept guest operations (a replica may still be booting),
    then runs `vmware-rpctool "instantclone.freeze"` through StartProgramInGuest. ssh: launches
    `<guest_script> prepare && <guest_script> freeze` detached at `ssh_host` (default: the
    spec's ssh.host). Errors are PermanentError naming the pool and the VM.
    """
    timeout = pool.guest_ready.timeout_s
    if pool.freeze == "guestops":
        assert pool.guestops is not None
        await _wait_guest(driver, moref, name, "guest.guestOperationsReady", timeout,
                          "VMware Tools did not accept guest operations")
        for attempt in range(1, CLONE_ATTEMPTS + 1):
            try:
                await driver.freeze_guestops(moref, pool.guestops.user, pool.guestops.password(), RPCTOOL,
                                             '"instantclone.freeze"')
                break
            except TemporaryError as exc:
                if attempt == CLONE_ATTEMPTS:
                    raise _fail(pool, f"cannot start the freeze in {name} (guest operations)", exc) from None
                await asyncio.sleep(exc.delay)
            except PermanentError as exc:
                raise _fail(pool, f"cannot start the freeze in {name} (guest operations)", exc) from None
    elif pool.freeze == "ssh":
        from forkscale.remote import ssh

        assert pool.ssh is not None
        cfg = pool.ssh
        target = ssh.SshTarget(ssh_host or cfg.host, user=cfg.user, port=cfg.port, key_file=cfg.key_file,
                               known_hosts=cfg.known_hosts or "~/.ssh/known_hosts",
                               insecure_host_key=cfg.insecure_host_key)
        try:
            await ssh.launch_detached(target, ssh.freeze_command(cfg.guest_script), timeout=60)
        except (PermanentError, TemporaryError) as exc:
            raise _fail(pool, f"cannot start the freeze of {name} over ssh", exc) from None
    else:
        raise AssertionError(f"freeze_vm with freeze: {pool.freeze}")
    await driver.wait_frozen(moref, timeout=timeout)


async def _wait_guest(driver: VSphere, moref: str, name: str, path: str, timeout: float, what: str) -> Any:
    """Poll one guest property until it is truthy; PermanentError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    while True:
        props = (await driver.vm_props([moref], [path, "runtime.powerState"])).get(moref)
        if props is None:
            raise PermanentError(f"{name} disappeared while waiting for its guest", "ManagedObjectNotFound")
        if props.get(path):
            return props[path]
        if props.get("runtime.powerState") != "poweredOn":
            raise PermanentError(f"{name} is {props.get('runtime.powerState')}; cannot reach its guest", "InvalidState")
        if loop.time() >= deadline:
            raise PermanentError(f"{name}: {what} within {timeout:.0f}s ({path} stayed empty)", "GuestNotReady")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 2.0)


class SourceManager:
    """Prepare, check, re-freeze, rotate and retire one pool's per-host sources."""

    #: source rows a `_create` of this process is making now: a concurrent `sync` (another host's
    #: priming step, a converge) must not take one for a vanished VM before its moref is recorded
    in_flight: set[int] = set()

    def __init__(self, driver: VSphere, ledger: Ledger, pool: Pool, index: int, *,
                 rng: random.Random | None = None, image: ImageRef | None = None,
                 keep_previous_s: float = 0.0) -> None:
        self.driver = driver
        self.ledger = ledger
        self.pool = pool
        self.index = index
        self.rng = rng or random.Random()
        self.image = image  # None: a pool without an image history (every source row is its own)
        self.keep_previous_s = keep_previous_s
        self._generation: int | None = None
        self.reports: list[SourceReport] = []

    # ledger <-> vCenter ------------------------------------------------------------------------
    def sync(self, inv: Inventory) -> set[str]:
        """Adopt tagged sources the ledger lacks, follow moves, mark vanished ones gone.

        Returns the hosts whose active source vanished (to be replaced).
        """
        pool = self.pool.name
        rows = [r for r in self.ledger.sources(pool) if r.state not in ("gone", "failed")]
        gen = self.image.generation if self.image is not None else None
        by_moref = {r.vm_moref: r for r in rows if r.vm_moref}
        tagged = [v for v in inv.vms.values() if v.pool == pool and v.is_source]
        for vm in tagged:
            if vm.moref in by_moref:
                continue
            row = next((r for r in rows if r.vm_name == vm.name and not r.vm_moref), None)
            host = inv.host_names.get(vm.host or "", "")
            if row is not None:  # made by a controller that died before recording the moref
                row = self.ledger.update_source(row.id, vm_moref=vm.moref)
            else:
                source_gen = (int(vm.source_tag) if vm.source_tag and vm.source_tag.isdigit()
                              else self.ledger.next_generation(pool))
                row = self.ledger.add_source(pool, vm.name, vm.moref, host, source_gen, "ready", frozen=vm.frozen,
                                             image_generation=gen)
                log.warning("pool %s: adopted source %s on %s (tagged %s=%s, unknown to the ledger)", pool, vm.name,
                            host, TAG_SOURCE, vm.source_tag)
                self.reports.append(SourceReport(host, vm.name, source_gen, "adopted", vm.frozen))
            rows.append(row)
            by_moref[vm.moref] = row
        vanished: set[str] = set()
        for row in [r for r in rows if self._mine(r) and r.id not in self.in_flight]:  # (others: their own business)
            found = inv.vms.get(row.vm_moref or "")
            if found is None or not found.is_source:
                if row.state in ACTIVE:
                    vanished.add(row.host)
                    log.warning("pool %s: source %s on %s is gone from vCenter", pool, row.vm_name, row.host)
                self.ledger.update_source(row.id, state="gone", frozen=False)
                continue
            host = inv.host_names.get(found.host or "", row.host)
            if host != row.host or bool(found.frozen) != row.frozen:
                self.ledger.update_source(row.id, host=host, frozen=found.frozen)
        # one active source per host: the newest generation; older ones retire
        active: dict[str, SourceRecord] = {}
        for row in sorted(self.rows(ACTIVE), key=lambda r: (r.generation, r.id)):
            older = active.get(row.host)
            if older is not None:
                self.ledger.update_source(older.id, state="retiring")
            active[row.host] = row
        return vanished - set(active)

    def rows(self, states: tuple[str, ...]) -> list[SourceRecord]:
        """This image's source rows in `states`."""
        return [r for r in self.pool_rows(states) if self._mine(r)]

    def pool_rows(self, states: tuple[str, ...]) -> list[SourceRecord]:
        """The pool's source rows in `states`, of every image."""
        return [r for r in self.ledger.sources(self.pool.name) if r.state in states]

    def _mine(self, row: SourceRecord) -> bool:
        return self.image is None or (row.image_generation or 1) == self.image.generation

    @property
    def snapshot(self) -> str | None:
        """The snapshot (moref) this image's sources and linked clones are made from."""
        return self.image.snapshot if self.image is not None else None

    def active(self) -> dict[str, SourceRecord]:
        return {r.host: r for r in sorted(self.rows(ACTIVE), key=lambda r: (r.generation, r.id))}

    def current(self, inv: Inventory, golden: VmInfo) -> list[Source]:
        """The usable sources according to the ledger and `inv`, changing nothing (dry runs)."""
        out = []
        for _host, row in sorted(self.active().items()):
            vm = inv.vms.get(row.vm_moref or "")
            if vm is None or not inv.placeable(inv.host_names.get(vm.host or "", "")) or vm.power != "poweredOn":
                continue
            if self.pool.freeze != "running" and not vm.frozen:
                continue
            out.append(self._source(row, vm, golden))
        return out

    def _source(self, row: SourceRecord, vm: VmInfo, golden: VmInfo) -> Source:
        snapshot = self.snapshot if self.image is not None else golden.snapshot
        return Source(moref=vm.moref, name=vm.name, host=vm.host or "", snapshot=snapshot, frozen=vm.frozen,
                      generation=row.generation, golden=golden.moref,
                      image_generation=self.image.generation if self.image is not None else None)

    # entry points --------------------------------------------------------------------------------
    def target_hosts(self, inv: Inventory, golden: VmInfo) -> list[str]:
        """placement.hosts, else every host of the golden VM's cluster (connected or not)."""
        if self.pool.placement.hosts:
            return list(self.pool.placement.hosts)
        cluster = inv.host_parent.get(golden.host or "")
        return sorted(name for name, moref in inv.hosts.items()
                      if cluster is None or inv.host_parent.get(moref) == cluster)

    async def prepare(self, inv: Inventory, golden: VmInfo, folder: str) -> list[SourceReport]:
        """`forkscale prepare`: a healthy frozen source on every target host (idempotent)."""
        if self.pool.freeze == "none":
            raise SpecError(f"pools[{self.index}].freeze", "prepare makes new source VMs and freezes them, which "
                            "needs freeze: guestops or ssh (or running, for sources that are not frozen)")
        self.sync(inv)
        await self._ensure_hosts(inv, golden, folder, self.target_hosts(inv, golden), rotate=True)
        return self.reports

    async def ensure(self, inv: Inventory, golden: VmInfo, folder: str, hosts: list[str]) -> list[SourceReport]:
        """A healthy frozen source of this image on each of `hosts` (kept, refrozen, made or replaced);
        what was done, per host. Sources of the pool's other images are left alone."""
        before = len(self.reports)
        await self._ensure_hosts(inv, golden, folder, hosts, rotate=True)
        return self.reports[before:]

    def per_host(self, inv: Inventory) -> bool:
        """Whether the pool has per-host sources: ledger rows not gone, or tagged sources in vCenter.

        Rows of removed sources (`destroy --sources`) do not count: such a pool is back to cloning
        from its golden VM, exactly as before its first `prepare`.
        """
        return any(r.state != "gone" for r in self.ledger.sources(self.pool.name)) or any(
            v.pool == self.pool.name and v.is_source for v in inv.vms.values())

    def check_freeze(self, inv: Inventory, golden: Source, *, instant: bool) -> None:
        """`freeze: none` promises a frozen golden VM; say so (SpecError) before anything is created.

        Only instant clones need a frozen source: a pool whose rungs are linked/full (or that
        clones from per-host sources) makes no promise to check.
        """
        if not instant or self.pool.freeze != "none" or golden.frozen or self.per_host(inv):
            return
        vm = inv.vms.get(golden.moref)
        if vm is None or vm.power == "poweredOn":
            raise SpecError(f"pools[{self.index}].freeze", f"'none' expects {golden.name} to be frozen already, but "
                            "runtime.instantCloneFrozen is false; freeze it in the guest (forkscale-guest freeze), "
                            "or use freeze: guestops / ssh, or freeze: running for live clones, or leave instant "
                            "out of fallback")

    async def for_converge(self, inv: Inventory, golden: Source, folder: str, creating: bool) -> list[Source]:
        """The sources a converge clones from: the per-host ones when the pool has any, else the golden.

        `creating`: instant clones are about to be made. Without per-host sources this is the
        single-source path: the golden VM itself is frozen (unless freeze is running/none) then.
        """
        if not self.per_host(inv):
            return [await self.freeze_golden(inv, golden)] if creating else [golden]
        golden_vm = inv.vms[golden.moref]
        vanished = self.sync(inv)
        if not creating:
            return self.current(inv, golden_vm) or [golden]
        hosts = sorted(set(self.active()) | vanished)
        await self._ensure_hosts(inv, golden_vm, folder, hosts, rotate=True)
        usable = self.current(inv, golden_vm)
        if usable:
            return usable
        problems = "; ".join(f"{r.host}: {r.action}{' (' + r.error + ')' if r.error else ''}" for r in self.reports)
        golden.problem = f"NoFrozenSource: no per-host source of pool {self.pool.name} is usable ({problems or 'none'})"
        log.error("%s", golden.problem)
        return [golden]

    async def freeze_golden(self, inv: Inventory, src: Source) -> Source:
        """Single-source path: freeze the golden VM when the pool asks for it and it is not frozen yet."""
        pool = self.pool
        if pool.freeze == "running" or src.frozen:
            return src
        if pool.freeze == "none":
            self.check_freeze(inv, src, instant=True)
            return src
        await freeze_vm(self.driver, pool, src.moref, src.name)
        src.frozen = True
        return src

    def _removable_images(self) -> set[int]:
        """Generations whose sources may go once unused: failed images, and retired ones past
        `keep_previous_s` (kept until then for a rollback)."""
        now = self.ledger._clock()
        out = set()
        for img in self.ledger.images.history(self.pool.name):
            if img.state == "failed" or (img.state == "retired" and (img.retired_at or 0) + self.keep_previous_s <= now):
                out.add(img.generation)
        return out

    async def retire(self) -> list[str]:
        """Destroy retiring (and failed) sources no live instant clone names any more, and the sources
        of images that are done with (`_removable_images`) once unused; their names."""
        users = {r.source for r in self.ledger.clones(self.pool.name, states=LIVE_STATES) if r.kind == "instant"}
        gone_images = self._removable_images()
        old = [r for r in self.pool_rows(ACTIVE) if (r.image_generation or 1) in gone_images]
        done = []
        for row in self.pool_rows(("retiring", "failed")) + old:
            if row.state != "failed" and row.vm_name in users:
                continue
            if row.vm_moref:
                try:
                    await self.driver.destroy(row.vm_moref)
                except (PermanentError, TemporaryError) as exc:
                    log.warning("pool %s: could not remove source %s: %s", self.pool.name, row.vm_name, exc)
                    continue
                log.info("pool %s: removed %s source %s (generation %d)", self.pool.name, row.state, row.vm_name,
                         row.generation)
            self.ledger.update_source(row.id, state="gone", frozen=False)
            done.append(row.vm_name)
        return done

    async def remove_all(self, inv: Inventory, keep: set[str] | frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
        """`forkscale destroy --sources`: retire every source of the pool and remove it from vCenter.

        Runs after the pool's clones are destroyed. Tagged sources the ledger lacks are adopted
        first (a lost ledger), so they go too. A source named in `keep` (a clone of it could not be
        destroyed) or by a live instant clone is kept; the golden VM (`source:`) is never a source
        row and is never touched. Returns (names removed from vCenter, names left).
        """
        self.sync(inv)
        goldens = {img.golden for img in self.ledger.images.history(self.pool.name)} | {self.pool.source}
        golden_morefs = {vm.moref for name in goldens if (vm := inv.vm_by_name(name.rsplit("/", 1)[-1])) is not None}
        for row in self.pool_rows(ACTIVE):
            if row.vm_name in keep or row.vm_moref in golden_morefs:
                continue
            self.ledger.update_source(row.id, state="retiring")
        with_vm = {r.vm_name for r in self.pool_rows(("retiring", "failed")) if r.vm_moref}
        removed = [name for name in await self.retire() if name in with_vm]
        return removed, self.remaining()

    def remaining(self) -> list[str]:
        """Names of the pool's sources still in the ledger (not gone), of every image."""
        return [r.vm_name for r in self.pool_rows((*ACTIVE, "retiring", "failed")) if r.vm_moref]

    # per host ------------------------------------------------------------------------------------
    async def _ensure_hosts(self, inv: Inventory, golden: VmInfo, folder: str, hosts: list[str], *,
                            rotate: bool) -> None:
        active = self.active()
        need = [h for h in hosts if h in active and active[h].vm_moref]
        depths = await self.driver.chain_depths([active[h].vm_moref or "" for h in need]) if rotate else {}
        await asyncio.gather(*(self._ensure_host(inv, golden, folder, host, active.get(host),
                                                 depths.get(active[host].vm_moref or "") if host in active else None,
                                                 rotate=rotate) for host in hosts))

    async def _ensure_host(self, inv: Inventory, golden: VmInfo, folder: str, host: str, row: SourceRecord | None,
                           depth: int | None, *, rotate: bool) -> None:
        host_moref = inv.hosts.get(host)
        if host_moref is None or not inv.placeable(host):
            why = ("no such host" if host_moref is None else "host is not connected"
                   if not inv.host_connected.get(host_moref, False) else "host is in (or being put into) maintenance")
            self.reports.append(SourceReport(host, row.vm_name if row else "-", row.generation if row else 0,
                                             "unavailable", bool(row and row.frozen), error=why))
            return
        if row is None:
            await self._create(inv, golden, folder, host, "created")
            return
        vm = inv.vms[row.vm_moref or ""]
        limit = self.pool.sources.rotate_depth
        if vm.power != "poweredOn":
            await self._replace(inv, golden, folder, row, "replaced", f"source {vm.name} is {vm.power}")
        elif rotate and depth is not None and depth >= limit:
            await self._replace(inv, golden, folder, row, "rotated",
                                f"delta chain of {vm.name} is {depth} deep (rotate_depth {limit})")
        elif self.pool.freeze in ("guestops", "ssh") and not vm.frozen:
            log.warning("pool %s: source %s on %s lost its frozen state; freezing it again", self.pool.name,
                        vm.name, host)
            try:
                await self._freeze(vm.moref, vm.name)
            except PermanentError as exc:
                log.warning("pool %s: %s; replacing the source", self.pool.name, exc)
                await self._replace(inv, golden, folder, row, "replaced", str(exc))
                return
            vm.frozen = True
            self.ledger.update_source(row.id, state="ready", frozen=True)
            self.reports.append(SourceReport(host, vm.name, row.generation, "refrozen", True, depth))
        else:
            if row.state != "ready":
                self.ledger.update_source(row.id, state="ready", frozen=vm.frozen)
            self.reports.append(SourceReport(host, vm.name, row.generation, "kept", vm.frozen, depth))

    async def _replace(self, inv: Inventory, golden: VmInfo, folder: str, old: SourceRecord, action: str,
                       why: str) -> None:
        log.warning("pool %s: replacing source %s on %s (%s): %s", self.pool.name, old.vm_name, old.host, action, why)
        ok = await self._create(inv, golden, folder, old.host, action, why=why)
        if ok:
            self.ledger.update_source(old.id, state="retiring")

    def _next_generation(self) -> int:
        if self._generation is None:
            self._generation = self.ledger.next_generation(self.pool.name)
        return self._generation

    async def _create(self, inv: Inventory, golden: VmInfo, folder: str, host: str, action: str, *,
                      why: str | None = None) -> bool:
        """One fresh replica of the golden VM on `host`, frozen and recorded; False on failure."""
        pool = self.pool
        gen = self._next_generation()
        name = replica_name(golden.name, pool.name, host, gen)
        taken = inv.vm_by_name(name)
        if taken is not None:
            self.reports.append(SourceReport(host, name, gen, "failed", False,
                                             error=f"a VM named {name} already exists and is not a source of {pool.name}"))
            return False
        image_gen = self.image.generation if self.image is not None else None
        row = self.ledger.add_source(pool.name, name, None, host, gen, "preparing", image_generation=image_gen)
        self.in_flight.add(row.id)
        try:
            return await self._make(inv, golden, folder, host, action, why, row)
        finally:
            self.in_flight.discard(row.id)

    async def _make(self, inv: Inventory, golden: VmInfo, folder: str, host: str, action: str, why: str | None,
                    row: SourceRecord) -> bool:
        pool, gen, name = self.pool, row.generation, row.vm_name
        datastore = (inv.datastores[pool.placement.datastores[0]][0] if pool.placement.datastores
                     else golden.datastores[0])
        mac = random_mac(set(inv.macs), self.rng)
        inv.macs.add(mac)
        req = CloneRequest(name=name, folder=folder, datastore=datastore, host=inv.hosts[host],
                           resource_pool=inv.pools.get(pool.placement.resource_pool or "", None),
                           network=inv.networks[pool.network.port_group], mac=mac, nic_key=None,
                           extra={TAG_POOL: pool.name, TAG_SOURCE: str(gen)},
                           disconnect=pool.freeze != "ssh")  # only an ssh freeze needs the source on the network
        snapshot = self.snapshot if self.image is not None else golden.snapshot
        kind = "linked" if snapshot else "full"
        moref = None
        try:
            for attempt in range(1, CLONE_ATTEMPTS + 1):
                try:
                    moref = await self.driver.clone(golden.moref, req, linked=snapshot is not None,
                                                    snapshot=snapshot)
                    break
                except TemporaryError as exc:
                    if attempt == CLONE_ATTEMPTS:
                        raise
                    await asyncio.sleep(exc.delay * (0.5 + self.rng.random()))
            assert moref is not None
            self.ledger.update_source(row.id, vm_moref=moref)
            inv.vms[moref] = VmInfo(moref=moref, name=name, folder=folder, host=inv.hosts[host], power="poweredOn",
                                    frozen=False, snapshot=None, datastores=[datastore], template=False,
                                    pool=pool.name, source_tag=str(gen))
            log.info("pool %s: %s clone %s of %s on %s (generation %d)", pool.name, kind, name, golden.name, host, gen)
            if pool.freeze in ("guestops", "ssh"):
                await self._freeze(moref, name)
                inv.vms[moref].frozen = True
        except (PermanentError, TemporaryError) as exc:
            log.error("pool %s: could not prepare a source on %s: %s", pool.name, host, exc)
            self.ledger.update_source(row.id, state="failed")
            if moref is not None:
                inv.vms.pop(moref, None)
                try:
                    await self.driver.destroy(moref)
                    self.ledger.update_source(row.id, state="gone")
                except (PermanentError, TemporaryError) as exc2:
                    log.warning("pool %s: could not remove the failed source %s: %s", pool.name, name, exc2)
            self.reports.append(SourceReport(host, name, gen, "failed", False, error=str(exc)))
            return False
        frozen = pool.freeze in ("guestops", "ssh")
        self.ledger.update_source(row.id, state="ready", frozen=frozen)
        depth = (await self.driver.chain_depths([moref])).get(moref)
        self.reports.append(SourceReport(host, name, gen, action, frozen, depth, error=why))
        return True

    async def _freeze(self, moref: str, name: str) -> None:
        ssh_host = None
        if self.pool.freeze == "ssh":
            ssh_host = str(await _wait_guest(self.driver, moref, name, "guest.ipAddress", self.pool.guest_ready.timeout_s,
                                             "the guest reported no IP address (freeze: ssh reaches each per-host "
                                             "source at its guest.ipAddress; the guest needs VMware Tools and "
                                             "DHCP on the pool's port group, or use freeze: guestops)"))
        await freeze_vm(self.driver, self.pool, moref, name, ssh_host=ssh_host)
