"""Helpers for end-to-end tests: write a spec that points at a running twin, run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from pyVmomi import vim

from forkscale.cli import main

REPO = Path(__file__).resolve().parent.parent


def write_spec(tmp_path: Path, twin, *, count: int = 10, freeze: str = "none", fallback=("instant", "linked", "full"),
               extra_pool: dict | None = None, **overrides) -> Path:
    pw = tmp_path / "vc-password"
    pw.write_text(twin.password)
    os.chmod(pw, 0o600)
    pool = {
        "name": "quickstart", "source": "src-linux", "freeze": freeze, "count": count,
        "name_pattern": "quickstart-{index:03d}",
        "network": {"port_group": "VM Network", "cidr": "10.20.0.0/22", "gateway": "10.20.0.1", "dns": ["10.20.0.2"]},
        "placement": {"datastores": ["ds-ssd"], "folder": "forkscale"},
        "fallback": list(fallback),
        "budgets": {"vcenter": 64, "per_host": 16, "per_datastore": 64, "rate_per_s": 1000},
        "guest_ready": {"timeout_s": 60, "required": True},
    }
    pool.update(extra_pool or {})
    spec = {"vcenter": {"url": twin.url, "user": twin.user, "password_file": str(pw), "ca_file": twin.ca_file},
            "state": str(tmp_path / "state.sqlite"), "pools": [pool]}
    spec.update(overrides)
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str) -> int:
    return main(list(args))


def cli_process(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "forkscale.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def pool_vms(si, pool: str = "quickstart") -> list[dict[str, str]]:
    """Every VM tagged for `pool`, with its extraConfig, read over SOAP like a user would."""
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        out = []
        for vm in view.view:
            extra = {o.key: o.value for o in vm.config.extraConfig}
            if extra.get("forkscale.pool") == pool:
                extra["name"] = vm.name
                extra["nic_mac"] = next(d.macAddress for d in vm.config.hardware.device
                                        if isinstance(d, vim.vm.device.VirtualEthernetCard))
                out.append(extra)
        return out
    finally:
        view.DestroyView()
