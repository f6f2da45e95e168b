"""`serve` does day-2 moves on its own (issue 15): a host asked into maintenance is evacuated so the
EnterMaintenanceMode_Task someone started completes; `kind_policy.promote_on_claim` promotes a
claimed linked clone; `rebalance.auto` spreads a pool whose datastores were added to."""

from __future__ import annotations

import json
import threading
from collections import Counter

from pyVmomi import vim

from tests.fixtures.twin import find
from tests.serve_helpers import base_pool, start_serve, write_pool_spec
from tests.spine_helpers import cli
from tests.test_evacuate import NOTIFY
from tests.test_linked_replicas import disks_of
from tests.test_prepare import clones_of, guestops_spec, read_vms, sources_of

POLICY = {"strategy": "fixed", "count": 8, "evaluate_every_s": 1}


def test_serve_evacuates_a_host_asked_into_maintenance_and_the_task_completes(twin, si, tmp_path):
    spec = guestops_spec(tmp_path, twin, placement={"hosts": ["esx-01", "esx-02"], "datastores": ["ds-ssd"],
                                                    "folder": "forkscale"},
                         policy=POLICY, rollout={"max_unavailable": 2}, notify=NOTIFY)
    assert cli("prepare", "-f", str(spec)) == 0
    served = start_serve(tmp_path, spec)
    try:
        served.wait_status("quickstart", lambda d: d["ready"] == 8, what="8 ready")
        host = find(si, vim.HostSystem, "esx-02")
        assert any(vm.name.startswith("quickstart-") for vm in host.vm)
        task = host.EnterMaintenanceMode_Task(timeout=120_000)  # simulated seconds (x0.001: two minutes)
        outcome: dict[str, object] = {}
        waiter = threading.Thread(target=lambda: outcome.update(state=_wait(task)), daemon=True)
        waiter.start()
        waiter.join(120)
        assert outcome.get("state") == "success", (outcome, served.log_tail())
        assert host.runtime.inMaintenanceMode is True
        doc = served.wait_status("quickstart", lambda d: d["ready"] == 8 and d["operation"]
                                 and d["operation"]["state"] == "done", what="evacuation done, 8 ready")
        assert doc["operation"]["kind"] == "evacuate"
        vms = read_vms(si)
        assert {v["host"] for v in clones_of(vms).values()} == {"esx-01"} and len(clones_of(vms)) == 8
        assert sorted(sources_of(vms)) == ["src-linux-quickstart-src-esx-01-g1"]
    finally:
        served.stop()


def test_serve_promotes_a_claimed_linked_clone_with_promote_on_claim(twin, si, tmp_path):
    pool = base_pool("vdi", fallback=["linked"], policy={"strategy": "fixed", "count": 3, "evaluate_every_s": 1},
                     kind_policy={"promote_on_claim": True})
    spec = write_pool_spec(tmp_path, twin, pool)
    served = start_serve(tmp_path, spec)
    try:
        served.wait_status("vdi", lambda d: d["ready"] == 3, what="3 ready")
        code, got, _ = served.call("POST", "/v1/pools/vdi/claim", {"user": "ann"})
        assert code == 200, got
        name = got["vm"] if isinstance(got, dict) and "vm" in got else got["name"]
        served.wait_status("vdi", lambda d: d.get("operation") and d["operation"]["kind"] == "promote"
                           and d["operation"]["state"] == "done", what="promote done")
        kinds = {c["name"]: c["kind"] for c in _status(spec)["clones"]}
        assert kinds[name] == "full" and Counter(kinds.values()) == {"full": 1, "linked": 2}
    finally:
        served.stop()


def test_serve_rebalances_by_itself_with_rebalance_auto(twin, si, tmp_path):
    pool = base_pool("web", fallback=["linked"], policy={"strategy": "fixed", "count": 12, "evaluate_every_s": 1})
    spec = write_pool_spec(tmp_path, twin, pool)
    assert cli("scale", "web", "12", "-f", str(spec)) == 0
    pool.update(placement={"datastores": ["ds-ssd", "ds-hdd"], "folder": "forkscale"},
                rebalance={"auto": True, "threshold": 0.2, "max_concurrent": 4})
    spec = write_pool_spec(tmp_path, twin, pool)
    served = start_serve(tmp_path, spec)
    try:
        served.wait_status("web", lambda d: d.get("operation") and d["operation"]["kind"] == "rebalance"
                           and d["operation"]["state"] == "done" and d["ready"] == 12, timeout=60,
                           what="rebalance done")
        on = Counter(v["datastore"] for v in disks_of(si).values() if v["extra"].get("forkscale.pool") == "web")
        assert set(on) == {"ds-ssd", "ds-hdd"} and sum(on.values()) == 12
    finally:
        served.stop()


def _wait(task) -> str:
    import time

    while task.info.state in ("queued", "running"):
        time.sleep(0.1)
    return str(task.info.state)


def _status(spec) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli("status", "-f", str(spec), "-o", "json") == 0
    return json.loads(out.getvalue())["pools"][0]
