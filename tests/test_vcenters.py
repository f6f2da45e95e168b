"""Several vCenters under one controller (issue 18): `vcenters:` by name, each pool names its own.

Two twins stand in for two vCenters, one pool on each, one `serve`: each vCenter has its own
session and engine; stopping one twin leaves the other pool serving claims and refilling, and
status (and /metrics) show the stopped one unreachable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from forkscale.core.errors import SpecError
from forkscale.sim import start_in_thread
from forkscale.spec import load_spec
from tests.serve_helpers import base_pool, start_serve
from tests.spine_helpers import cli


@pytest.fixture
def west(tmp_path: Path):
    handle = start_in_thread(time_scale=0.001, state_dir=str(tmp_path / "sim-west"))
    try:
        yield handle
    finally:
        handle.stop()


def vc_block(tmp_path: Path, twin, name: str) -> dict[str, Any]:
    pw = tmp_path / f"vc-password-{name}"
    pw.write_text(twin.password)
    os.chmod(pw, 0o600)
    return {"url": twin.url, "user": twin.user, "password_file": str(pw), "ca_file": twin.ca_file}


def pool_on(name: str, vcenter: str, cidr: str) -> dict[str, Any]:
    return base_pool(name, cidr=cidr, vcenter=vcenter, on_release="keep",
                     policy={"strategy": "headroom", "headroom": 3, "min": 0, "max": 30, "cooldown_up_s": 0,
                             "cooldown_down_s": 600, "evaluate_every_s": 0.5})


def two_vcenter_spec(tmp_path: Path, east, west) -> Path:
    spec = {"vcenters": {"east": vc_block(tmp_path, east, "east"), "west": vc_block(tmp_path, west, "west")},
            "state": str(tmp_path / "state.sqlite"),
            "pools": [pool_on("east-vdi", "east", "10.50.0.0/24"), pool_on("west-vdi", "west", "10.60.0.0/24")]}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tagged(twin, pool: str) -> list[str]:
    return twin.call(lambda t: [mo.name for mo in list(t.world.objects.values())
                                if getattr(mo, "extra", {}).get("forkscale.pool") == pool])


def test_each_pool_runs_on_its_own_vcenter_and_one_down_degrades_only_its_pools(twin, west, tmp_path, monkeypatch):
    monkeypatch.delenv("FORKSCALE_CA_FILE", raising=False)
    east = twin
    east.admin("freeze", vm="src-linux")
    west.admin("freeze", vm="src-linux")
    spec = two_vcenter_spec(tmp_path, east, west)
    s = start_serve(tmp_path, spec)
    try:
        for pool in ("east-vdi", "west-vdi"):
            st = s.wait_status(pool, lambda d: d["spares"] == 3 and d["building"] == 0, timeout=60, what="3 spares")
            assert st["vcenter"]["reachable"] is True
        assert st["vcenter"] == {**st["vcenter"], "name": "west", "url": west.url}
        # each pool's clones are on its own vCenter, and only there
        assert sorted(tagged(east, "east-vdi")) == ["east-vdi-001", "east-vdi-002", "east-vdi-003"]
        assert sorted(tagged(west, "west-vdi")) == ["west-vdi-001", "west-vdi-002", "west-vdi-003"]
        assert tagged(east, "west-vdi") == [] and tagged(west, "east-vdi") == []

        east.stop()  # the east vCenter goes away
        down = s.wait_status("east-vdi", lambda d: d["vcenter"]["reachable"] is False, timeout=30,
                             what="east unreachable")
        assert down["vcenter"]["name"] == "east" and down["vcenter"]["error"]
        # the west pool goes on: claims are served and the policy refills behind them
        for i in range(5):
            code, doc, _ = s.call("POST", "/v1/pools/west-vdi/claim", {"user": f"w{i}", "wait_s": 30})
            assert code == 200, doc
        st = s.wait_status("west-vdi", lambda d: d["claimed"] == 5 and d["spares"] == 3 and d["building"] == 0,
                           timeout=60, what="west refilled")
        assert st["vcenter"]["reachable"] is True
        assert len(tagged(west, "west-vdi")) == 8
        code, body, _ = s.call("GET", "/metrics", token=None)
        text = body if isinstance(body, str) else str(body)
        assert 'forkscale_vcenter_up{vcenter="east"} 0.0' in text
        assert 'forkscale_vcenter_up{vcenter="west"} 1.0' in text
        code, doc, _ = s.call("GET", "/v1/pools")
        assert {p["pool"]: p["vcenter"]["reachable"] for p in doc["pools"]} == {"east-vdi": False, "west-vdi": True}
    finally:
        assert s.stop() == 0


def test_one_shot_commands_use_each_pools_vcenter(twin, west, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FORKSCALE_CA_FILE", raising=False)
    twin.admin("freeze", vm="src-linux")
    west.admin("freeze", vm="src-linux")
    spec = two_vcenter_spec(tmp_path, twin, west)
    assert cli("scale", "east-vdi", "2", "-f", str(spec)) == 0
    assert cli("scale", "west-vdi", "4", "-f", str(spec)) == 0
    assert len(tagged(twin, "east-vdi")) == 2 and len(tagged(west, "west-vdi")) == 4
    capsys.readouterr()
    assert cli("status", "-f", str(spec)) == 0
    out = capsys.readouterr().out
    assert "east-vdi: desired 2" in out and "west-vdi: desired 4" in out
    assert cli("destroy", "west-vdi", "-f", str(spec), "--yes") == 0
    assert tagged(west, "west-vdi") == [] and len(tagged(twin, "east-vdi")) == 2


def test_vcenters_in_the_spec_are_checked(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VC_PW", "x")
    block = {"url": "https://vc-a.example.com/sdk", "user": "u", "password_env": "VC_PW"}

    def spec_with(**top: Any) -> Path:
        doc = {"pools": [base_pool("p1", cidr="10.1.0.0/24", count=1)], **top}
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    two = {"a": block, "b": {**block, "url": "https://vc-b.example.com/sdk"}}
    for top, where, why in (
        ({"vcenters": two}, "pools[0].vcenter", "several vCenters (a, b)"),
        ({"vcenters": {"A!": block}}, "vcenters.A!", "lowercase"),
        ({"vcenters": {}}, "vcenters", "is empty"),
        ({"vcenters": {"default": block}, "vcenter": block}, "vcenters.default", "name of `vcenter:`"),
        ({}, "vcenter", "required"),
    ):
        with pytest.raises(SpecError) as info:
            load_spec(spec_with(**top))
        assert info.value.path == where and why in info.value.message, str(info.value)
    doc = {"vcenters": two, "pools": [base_pool("p1", cidr="10.1.0.0/24", count=1, vcenter="c")]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match=r"pools\[0\].vcenter: no vCenter named 'c' \(vcenters: a, b\)"):
        load_spec(tmp_path / "s.yaml")
    # one named vCenter, or `vcenter:` next to named ones: pools default to it
    spec = load_spec(spec_with(vcenters={"a": block}))
    assert spec.pools[0].vcenter == "a" and spec.vcenter.url == "https://vc-a.example.com/sdk"
    spec = load_spec(spec_with(vcenter=block, vcenters={"b": two["b"]}))
    assert spec.pools[0].vcenter == "default" and set(spec.vcenters) == {"default", "b"}
