"""Refresh policies (issue 14) behind `forkscale serve`: `refresh.max_uses: 1` gives every claim a fresh
clone (the CI-runner pattern), `refresh.max_age_s` retires clones past an age, with the same identity."""

from __future__ import annotations

import time

from forkscale.ledger import Ledger
from tests.serve_helpers import base_pool, start_serve, write_pool_spec


def test_max_uses_1_gives_each_of_20_claims_a_clone_nobody_had(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    pool = base_pool("ci", count=3, cidr="10.60.0.0/24", on_release="keep", refresh={"max_uses": 1},
                     policy={"strategy": "fixed", "count": 3, "cooldown_up_s": 3600, "evaluate_every_s": 0.5})
    spec = write_pool_spec(tmp_path, twin, pool)
    s = start_serve(tmp_path, spec)
    seen: set[int] = set()
    names: set[str] = set()
    try:
        s.wait_status("ci", lambda d: d["spares"] == 3, what="3 runners")
        with Ledger(tmp_path / "state.sqlite") as ledger:
            for job in range(20):
                code, doc, _ = s.call("POST", "/v1/pools/ci/claim", {"user": f"job{job}", "wait_s": 30})
                assert code == 200, doc
                rec = ledger.by_name(doc["vm"])
                assert rec is not None and rec.state == "claimed"
                assert rec.id not in seen, f"job{job} got clone {rec.id} ({rec.name}), which ran a job before"
                assert sum(e.what == "claimed" for e in ledger.events(rec.id)) == 1
                seen.add(rec.id)
                names.add(rec.name)
                code, doc, _ = s.call("POST", "/v1/pools/ci/release", {"vm": doc["vm"]})
                assert code == 202 and doc["action"] == "refreshing" and "max_uses" in doc["why"], doc
        st = s.wait_status("ci", lambda d: d["spares"] == 3 and d["current"] == 3, what="3 fresh runners")
        assert st["refresh"]["max_uses"] == 1
    finally:
        assert s.stop() == 0
    assert len(seen) == 20
    assert names <= {"ci-001", "ci-002", "ci-003"}  # a refresh keeps the runner's identity


def test_max_age_refreshes_idle_clones_with_their_identity(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    pool = base_pool("aged", count=2, cidr="10.61.0.0/24", refresh={"max_age_s": 2},
                     rollout={"max_unavailable": 1},
                     policy={"strategy": "fixed", "count": 2, "cooldown_up_s": 3600, "evaluate_every_s": 0.5})
    spec = write_pool_spec(tmp_path, twin, pool)
    s = start_serve(tmp_path, spec)
    try:
        s.wait_status("aged", lambda d: d["spares"] == 2, what="2 clones")
        with Ledger(tmp_path / "state.sqlite") as ledger:
            first = {r.name: (r.id, r.mac, r.ip) for r in ledger.live("aged")}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = {r.name: (r.id, r.mac, r.ip) for r in ledger.live("aged") if r.state == "ready"}
                if len(now) == 2 and all(now[n][0] != first[n][0] for n in first if n in now):
                    break
                time.sleep(0.1)
            assert set(now) == set(first)
            for name, (clone_id, mac, ip) in now.items():
                assert clone_id != first[name][0] and (mac, ip) == first[name][1:]  # new VM, same identity
    finally:
        assert s.stop() == 0
