"""VDI on the twin: a headroom pool behind `forkscale serve` serves a login storm and refreshes on logoff."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from forkscale.cli import main
from forkscale.ledger import Ledger
from tests.serve_helpers import base_pool, check_example, start_serve, write_pool_spec
from tests.spine_helpers import pool_vms


def vdi_pool(**policy):
    return base_pool(
        "vdi", source="src-win", port_group="dvpg-vdi", cidr="10.30.0.0/24", on_release="refresh",
        policy={"strategy": "headroom", "headroom": 5, "min": 0, "max": 120, "cooldown_up_s": 0,
                "cooldown_down_s": 120, "evaluate_every_s": 1.0, **policy})


def test_fifty_concurrent_claims_then_refresh_on_release(twin, si, tmp_path, capsys, ledger_state):
    twin.admin("freeze", vm="src-win")
    spec = write_pool_spec(tmp_path, twin, vdi_pool(), state=ledger_state)
    s = start_serve(tmp_path, spec)
    try:
        s.wait_status("vdi", lambda d: d["spares"] == 5 and d["current"] == 5, what="5 spares")

        # The login storm: 50 users at once, over real HTTP, each waiting up to 30 s.
        def login(i: int):
            return s.call("POST", "/v1/pools/vdi/claim", {"user": f"user{i:02d}", "wait_s": 30})

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(login, range(50)))
        storm_s = time.monotonic() - started
        assert [code for code, _, _ in answers] == [200] * 50, [a[1] for a in answers if a[0] != 200]
        desktops = [doc for _, doc, _ in answers]
        assert len({d["vm"] for d in desktops}) == 50
        assert len({d["ip"] for d in desktops}) == 50
        assert {d["user"] for d in desktops} == {f"user{i:02d}" for i in range(50)}
        assert storm_s < 25

        # Spares refilled to 5 behind the users, and vCenter agrees with every answer given.
        st = s.wait_status("vdi", lambda d: d["claimed"] == 50 and d["spares"] == 5 and d["building"] == 0,
                           what="50 claimed + 5 spares")
        assert st["current"] == 55 and st["desired"] == 55 and st["errors"] == []
        vms = {v["name"]: v for v in pool_vms(si, "vdi")}
        assert len(vms) == 55
        for d in desktops:
            assert vms[d["vm"]]["guestinfo.forkscale.ip"] == d["ip"]
            assert vms[d["vm"]]["guestinfo.forkscale.status"] == "ready"
        ids_before = {v["forkscale.id"] for v in vms.values()}

        # Ten users log off: each desktop is destroyed and a fresh clone takes its place.
        released = desktops[:10]
        released_ids = {vms[d["vm"]]["forkscale.id"] for d in released}
        for d in released[:9]:
            code, doc, _ = s.call("POST", "/v1/pools/vdi/release", {"vm": d["vm"]})
            assert code == 202 and doc["action"] == "refreshing", doc
        # ... one through the thin CLI client
        capsys.readouterr()
        assert main(["release", "vdi", released[9]["vm"], "--url", s.url,
                     "--token-file", str(tmp_path / "api-token-600")]) == 0
        assert "released, refreshing" in capsys.readouterr().out
        code, doc, _ = s.call("POST", "/v1/pools/vdi/release", {"vm": released[0]["vm"]})
        assert code in (404, 409)  # already on its way out

        st = s.wait_status("vdi", lambda d: d["claimed"] == 40 and d["spares"] == 15 and d["current"] == 55
                           and set(d["counts"]) == {"ready", "claimed"}, what="10 desktops refreshed")
        vms_after = {v["forkscale.id"]: v for v in pool_vms(si, "vdi")}
        assert len(vms_after) == 55
        assert not released_ids & set(vms_after), "a released desktop is still in vCenter"
        fresh = set(vms_after) - ids_before
        assert len(fresh) == 10
        assert all(vms_after[i]["guestinfo.forkscale.status"] == "ready" for i in fresh)
        # The surplus spares stay until cooldown_down_s has passed since the refresh.
        time.sleep(1.5)
        st = s.status("vdi")
        assert st["current"] == 55 and st["spares"] == 15
        assert st["last_decision"]["reason"].startswith("holding scale-down")
        assert sum(a["refreshed"] for a in st["actions"]) == 10

        # A claim through the CLI gets one of the fresh desktops (the longest-ready spare first).
        capsys.readouterr()
        assert main(["claim", "vdi", "--user", "late", "--wait", "5", "--url", s.url, "-o", "json",
                     "--token-file", str(tmp_path / "api-token-600")]) == 0
        late = json.loads(capsys.readouterr().out)
        assert late["user"] == "late" and late["vm"] in {v["name"] for v in vms_after.values()}
    finally:
        code = s.stop()
    assert code == 0
    assert "forkscale serve: stopped" in s.proc.stdout.read()
    # The ledger agrees with vCenter after the graceful stop.
    with Ledger(ledger_state) as led:
        live = {r.name for r in led.live("vdi")}
        assert {r.state for r in led.live("vdi")} <= {"ready", "claimed"}
        assert len(led.clones("vdi", ["claimed"])) == 41
    assert live == {v["name"] for v in pool_vms(si, "vdi")}


def test_sigterm_mid_converge_then_restart_reconciles(twin, si, tmp_path):
    """SIGTERM while clones are being made: exit 0 at once, and the next start converges cleanly."""
    twin.admin("freeze", vm="src-win")
    twin.admin("time_scale", value=0.5)  # an instant clone ~0.5 s, the guest ~1 s more
    spec = write_pool_spec(tmp_path, twin, vdi_pool(headroom=40, evaluate_every_s=0.2))
    s = start_serve(tmp_path, spec, args=("--grace", "0"))
    try:
        s.wait_status("vdi", lambda d: d["converging"] and 0 < len(pool_vms(si, "vdi")), timeout=30,
                      what="a converge in flight")
    finally:
        started = time.monotonic()
        assert s.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert "abandoning them" in s.log.read_text()
    twin.admin("time_scale", value=0.001)
    s = start_serve(tmp_path, spec)
    try:
        st = s.wait_status("vdi", lambda d: d["spares"] == 40 and d["current"] == 40, timeout=60, what="40 spares")
        assert st["errors"] == []
    finally:
        assert s.stop() == 0
    vms = pool_vms(si, "vdi")
    assert len(vms) == 40
    for key in ("name", "nic_mac", "guestinfo.forkscale.ip", "forkscale.id"):
        assert len({v[key] for v in vms}) == 40, key


def test_vdi_example_is_valid_against_the_twin(twin, tmp_path, monkeypatch):
    spec = check_example("vdi.yaml", twin, tmp_path, monkeypatch)
    (pool,) = spec.pools
    assert (pool.source, pool.network.port_group, pool.on_release) == ("src-win", "dvpg-vdi", "refresh")
    assert pool.policy.strategy == "headroom" and pool.policy.headroom == 5
    assert pool.policy.max is not None and pool.policy.cooldown_down_s > pool.policy.cooldown_up_s
