"""Steering a push (issue 14): --dry-run, --at, pause, cancel, a host that cannot be primed (with and
without --allow-partial), a re-run of a finished push, and the HTTP API's answers to bad requests."""

from __future__ import annotations

import json

from forkscale.ledger import Ledger
from tests.day2_helpers import guest_password_file, take_snapshot, vms_of
from tests.serve_helpers import base_pool, start_serve, write_pool_spec
from tests.spine_helpers import cli


def small_pool(tmp_path, **extra) -> dict:
    return base_pool("lab", count=8, freeze="guestops", fallback=["instant"], cidr="10.70.0.0/24",
                     guestops={"user": "root", "password_file": str(guest_password_file(tmp_path))},
                     rollout={"max_unavailable": 2, "keep_previous_s": 0}, **extra)


def ready(tmp_path, twin) -> tuple:
    spec = write_pool_spec(tmp_path, twin, small_pool(tmp_path))
    assert cli("prepare", "-f", str(spec)) == 0
    assert cli("apply", "-f", str(spec)) == 0
    return spec, tmp_path / "state.sqlite"


def run_json(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = cli(*args, "-o", "json")
    out = capsys.readouterr()
    run_json.err = out.err
    return code, json.loads(out.out) if out.out.strip() else {}


def test_dry_run_schedule_pause_cancel_then_push_and_push_again(twin, si, tmp_path, capsys):
    spec, state = ready(tmp_path, twin)
    before = {n: v["moref"] for n, v in vms_of(si, "lab").items() if not v["source"]}
    take_snapshot(si, "src-linux", "v2")
    push = ("push-image", "lab", "--snapshot", "v2", "-f", str(spec))

    code, plan = run_json(capsys, *push, "--dry-run")
    assert code == 0 and plan["dry_run"] and plan["params"]["max_unavailable"] == 2
    assert [(s["batch"], s["action"]) for s in plan["steps"]] == [(0, "prime")] * 4 + [
        (b, "replace") for b in (1, 1, 2, 2, 3, 3, 4, 4)]
    with Ledger(state) as ledger:
        assert ledger.operations.last("lab") is None and [i.generation for i in ledger.images.history("lab")] == [1]

    code, doc = run_json(capsys, *push, "--at", "+3600")  # tonight: recorded, not run
    assert code == 0 and doc["operation"]["state"] == "running" and doc["operation"]["not_before"]
    assert doc["operation"]["progress"]["finished"] == 0
    code, doc = run_json(capsys, "rollout", "pause", "lab", "-f", str(spec))
    assert code == 0 and doc["operation"]["state"] == "paused"
    code, doc = run_json(capsys, "rollout", "cancel", "lab", "-f", str(spec))
    assert code == 0 and doc["operation"]["state"] == "cancelled"
    code, doc = run_json(capsys, "rollout", "status", "lab", "-f", str(spec))
    assert doc["target_image"] is None and [i["state"] for i in doc["images"]] == ["active", "failed"]
    assert {n: v["moref"] for n, v in vms_of(si, "lab").items() if not v["source"]} == before  # untouched

    assert cli("push-image", "lab", "--snapshot", "nope", "-f", str(spec)) == 2
    assert "src-linux has no snapshot named 'nope'" in capsys.readouterr().err
    code, doc = run_json(capsys, *push)
    assert code == 0 and doc["clones_per_image"] == {"3": 8}  # generation 2 was the cancelled push
    code, doc = run_json(capsys, *push)  # run again after it completed: nothing to do
    assert code == 0 and doc["image"]["generation"] == 3 and doc["operation"]["state"] == "done"
    assert "pool lab already runs g3 (src-linux @ v2); nothing to push" in run_json.err


def test_a_host_that_cannot_be_primed_stops_the_push_unless_allow_partial(twin, si, tmp_path, capsys):
    spec, state = ready(tmp_path, twin)
    take_snapshot(si, "src-linux", "v2")
    twin.admin("fail_next", method="CloneVM_Task", fault="InvalidState")  # one host's new source fails
    code, doc = run_json(capsys, "push-image", "lab", "--snapshot", "v2", "-f", str(spec))
    assert code == 1 and doc["operation"]["state"] == "paused"
    assert "priming" in doc["operation"]["reason"] and doc["clones_per_image"] == {"1": 8}  # no clone touched
    assert cli("rollout", "cancel", "lab", "-f", str(spec)) == 0

    twin.admin("fail_next", method="CloneVM_Task", fault="InvalidState")
    code, doc = run_json(capsys, "push-image", "lab", "--snapshot", "v2", "--allow-partial", "-f", str(spec))
    assert code == 0 and doc["operation"]["state"] == "done" and doc["clones_per_image"] == {"3": 8}
    with Ledger(state) as ledger:
        steps = ledger.operations.steps(doc["operation"]["id"])
    skipped = [s for s in steps if s.state == "skipped"]
    assert len(skipped) == 1 and skipped[0].action == "prime" and "keeps the old image" in skipped[0].detail["skipped"]
    hosts = {v["host"] for v in vms_of(si, "lab").values() if not v["source"]}
    assert skipped[0].target not in hosts  # new clones went to the primed hosts


def test_api_refuses_bad_push_requests(twin, si, tmp_path):
    spec, _ = ready(tmp_path, twin)
    s = start_serve(tmp_path, spec)
    try:
        code, doc, _ = s.call("PUT", "/v1/pools/lab/image", {})
        assert code == 400 and doc["error"] == "snapshot is required"
        code, doc, _ = s.call("PUT", "/v1/pools/lab/image", {"snapshot": "nope"})
        assert code == 400 and "no snapshot named 'nope'" in doc["error"]
        code, doc, _ = s.call("POST", "/v1/pools/lab/rollout", {"action": "pause"})
        assert code == 409 and "no running or paused operation" in doc["error"]
        code, doc, _ = s.call("POST", "/v1/pools/lab/rollout", {"action": "explode"})
        assert code == 400
        take_snapshot(si, "src-linux", "v2")
        code, doc, _ = s.call("PUT", "/v1/pools/lab/image", {"snapshot": "v2", "at": "+3600"})
        assert code == 202 and doc["operation"]["state"] == "running"
        code, doc, _ = s.call("POST", "/v1/pools/lab/refresh", {"vms": ["lab-001"]})
        assert code == 409 and "already has operation" in doc["error"]
        code, doc, _ = s.call("GET", "/v1/pools/lab/rollout")
        assert code == 200 and doc["target_image"]["snapshot"] == "v2" and len(doc["operation"]["steps"]) == 12
    finally:
        assert s.stop() == 0
