"""Helpers for the day-2 tests (push image, rollback, refresh, user disks) against the twin."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from forkscale.ledger import Ledger
from tests.fixtures.twin import find_vm
from tests.serve_helpers import base_pool, write_pool_spec

GUEST_PASSWORD = "vmfork-guest"  # the twin's guest login (world.guest)
HOSTS = ["esx-01", "esx-02", "esx-03", "esx-04"]


def guest_password_file(tmp_path: Path) -> Path:
    pw = tmp_path / "guest-password"
    pw.write_text(GUEST_PASSWORD)
    os.chmod(pw, 0o600)
    return pw


def vdi_pool(tmp_path: Path, *, count: int = 40, rollout: dict[str, Any] | None = None, **extra: Any) -> dict:
    """A fixed-size instant-clone desktop pool with per-host sources frozen through guest operations.

    (Its policy stays in its scale-up cooldown for the test: outside one, a fixed policy that sees a
    released desktop leave asks for one more clone on top of its refresh -- serve's known surplus,
    trimmed after cooldown_down_s -- which would blur the exact counts these tests check.)"""
    extra.setdefault("policy", {"strategy": "fixed", "count": count, "cooldown_up_s": 3600, "evaluate_every_s": 1})
    return base_pool("vdi", source="src-win", port_group="dvpg-vdi", cidr="10.30.0.0/24", freeze="guestops",
                     count=count, on_release="refresh", fallback=["instant"],
                     guestops={"user": "root", "password_file": str(guest_password_file(tmp_path))},
                     rollout={"max_unavailable": 4, "keep_previous_s": 0, **(rollout or {})}, **extra)


def write_vdi_spec(tmp_path: Path, twin, **kw: Any) -> Path:
    return write_pool_spec(tmp_path, twin, vdi_pool(tmp_path, **kw))


def take_snapshot(si, vm: str, name: str) -> str:
    """A new snapshot of the golden VM (what an administrator does after patching it); its moref."""
    golden = find_vm(si, vm)
    WaitForTask(golden.CreateSnapshot_Task(name, "patched", False, False))
    return str(golden.snapshot.currentSnapshot._moId)


def vms_of(si, pool: str) -> dict[str, dict[str, Any]]:
    """Every VM tagged for `pool` as vCenter shows it: clones and per-host sources."""
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        out = {}
        for vm in view.view:
            try:
                extra = {o.key: o.value for o in vm.config.extraConfig}
            except vmodl.fault.ManagedObjectNotFound:
                continue  # destroyed since the view was read (a replacement going on)
            if extra.get("forkscale.pool") != pool:
                continue
            try:
                out[vm.name] = _vm(vm, extra)
            except vmodl.fault.ManagedObjectNotFound:
                continue
        return out
    finally:
        view.DestroyView()


def _vm(vm: Any, extra: dict[str, Any]) -> dict[str, Any]:
    devices = vm.config.hardware.device
    nic = next((d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)), None)
    disks = [d.backing.fileName for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    return {"moref": vm._moId, "extra": extra, "mac": nic.macAddress if nic else None,
            "source": "forkscale.source" in extra and "forkscale.id" not in extra,
            "disks": disks, "host": vm.runtime.host.name, "uuid": vm.config.instanceUuid}


def availability_floor(state: Path, pool: str, since_event: int = 0) -> tuple[int, int]:
    """(lowest, highest) number of the pool's clones `ready` or `claimed` at any moment after event
    `since_event`, replayed from every state change in the ledger (an exact record, not a sample)."""
    with Ledger(state) as ledger:
        states: dict[int, str] = {r.id: "" for r in ledger.clones(pool)}
        rows = ledger._read("SELECT e.id, e.clone_id, e.what FROM events e JOIN clones c ON c.id = e.clone_id "
                            "WHERE c.pool = ? ORDER BY e.id", (pool,))
    up = Counter[str]()
    low, high = None, 0
    for event_id, clone_id, what in rows:
        if what not in ("planned", "cloning", "customizing", "ready", "claimed", "draining", "destroying", "gone",
                        "failed"):
            continue
        states[clone_id] = what
        up = Counter(states.values())
        now = up["ready"] + up["claimed"]
        if event_id > since_event:
            low = now if low is None else min(low, now)
            high = max(high, now)
    return (low if low is not None else up["ready"] + up["claimed"]), high


def last_event(state: Path) -> int:
    with Ledger(state) as ledger:
        row = ledger._read("SELECT MAX(id) FROM events")
    return int(row[0][0] or 0)
