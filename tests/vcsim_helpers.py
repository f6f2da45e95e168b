"""Helpers for driving forkscale against govmomi's vcsim and reading vcsim's own inventory back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pyVmomi import vim, vmodl

from tests.fixtures.vcsim import VcsimHandle

POOL = "p"


def vcsim_spec(tmp_path: Path, handle: VcsimHandle, *, pools: list[dict[str, Any]] | None = None,
               **pool: Any) -> Path:
    """A spec for one pool `p` on vcsim's golden VM (overrides in `pool`), or the given `pools`."""
    pw = tmp_path / "vc-password"
    pw.write_text(handle.password)
    os.chmod(pw, 0o600)
    base = {
        "name": POOL, "source": "golden", "freeze": "none", "count": 3, "name_pattern": "p-{index:03d}",
        "network": {"port_group": "VM Network", "cidr": "10.20.0.0/22", "gateway": "10.20.0.1", "dns": ["10.20.0.2"]},
        "placement": {"datastores": ["ds-ssd"], "folder": "forkscale"},
        "fallback": ["linked", "full"],
        "budgets": {"vcenter": 8, "per_host": 8, "per_datastore": 8, "rate_per_s": 1000},
        "guest_ready": {"timeout_s": 30, "required": False},
    }
    base.update(pool)
    spec = {"vcenter": {"url": handle.url, "user": handle.user, "password_file": str(pw), "ca_file": handle.ca_file},
            "state": str(tmp_path / "state.sqlite"), "pools": pools or [base]}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def prop(si: Any, obj: Any, path: str) -> Any:
    """One property through RetrievePropertiesEx (vcsim 0.24's `Fetch` drops the connection on unset properties)."""
    PC = vmodl.query.PropertyCollector
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=obj)],
                         propSet=[PC.PropertySpec(type=type(obj), pathSet=[path])])
    res = si.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    return next((p.val for p in res.objects[0].propSet or [] if p.name == path), None)


def inventory(si: Any) -> dict[str, list[dict[str, Any]]]:
    """Every VM vcsim holds, by name (a list: vcsim allows two VMs with one name), as vcsim reports it."""
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        vms = list(view.view)
    finally:
        view.DestroyView()
    out: dict[str, list[dict[str, Any]]] = {}
    for vm in vms:
        devices = vm.config.hardware.device
        nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        extra: dict[str, str] = {}
        for o in vm.config.extraConfig or []:  # vcsim appends a key set twice; vCenter keeps the last value
            extra[o.key] = o.value
        out.setdefault(vm.name, []).append({
            "moref": vm._moId, "power": vm.runtime.powerState, "host": vm.runtime.host.name,
            "nics": [(type(n).__name__, n.key, n.macAddress, getattr(n.backing, "deviceName", None)) for n in nics],
            "disks": [d.backing.fileName for d in devices if isinstance(d, vim.vm.device.VirtualDisk)],
            "extra": {k: v for k, v in extra.items() if v != ""},
        })
    return out


def clones(inv: dict[str, list[dict[str, Any]]], pool: str = POOL) -> list[dict[str, Any]]:
    return [dict(vm, name=name) for name, vms in inv.items() for vm in vms
            if vm["extra"].get("forkscale.pool") == pool and "forkscale.id" in vm["extra"]]
