"""Worker autoscaling: target-value on a real Prometheus query, cooldowns, max_step, drain over real SSH."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web

from forkscale.ledger import Ledger
from tests.serve_helpers import base_pool, check_example, start_serve, write_pool_spec
from tests.spine_helpers import pool_vms

COOLDOWN_UP = 1.5
COOLDOWN_DOWN = 2.5
MAX_STEP = 8


class JobsExporter:
    """The application being scaled: `jobs` waiting, shared by the workers that are up.

    Serves `test_jobs_per_worker` = jobs / ready workers (read from the controller's ledger at
    scrape time) on /metrics, from an aiohttp server on its own thread and loop.
    """

    def __init__(self, state: Path) -> None:
        self.jobs = 0.0
        self.state = state
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None
        self._ledger: Ledger | None = None

    def workers(self) -> int:
        if self._ledger is None:
            if not self.state.exists():
                return 0
            self._ledger = Ledger(self.state)
        counts = self._ledger.counts("workers")
        return counts["ready"] + counts["claimed"]

    async def metrics(self, request: web.Request) -> web.Response:
        value = self.jobs / max(1, self.workers())
        body = f"# TYPE test_jobs_per_worker gauge\ntest_jobs_per_worker {value}\n"
        return web.Response(text=body, content_type="text/plain")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        if self._ledger is not None:
            self._ledger.close()

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def jobs(tmp_path) -> Iterator[JobsExporter]:
    exporter = JobsExporter(tmp_path / "state.sqlite")
    exporter.start()
    yield exporter
    exporter.stop()


def drain_block(sshd, command: str) -> dict:
    return {"command": command, "timeout_s": 15,
            "ssh": {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key_file": str(sshd.client_key),
                    "known_hosts": str(sshd.known_hosts)}}


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.prometheus
@pytest.mark.sshd
def test_target_value_on_prometheus_scales_2_to_20_to_4_and_drains(twin, si, sshd, prometheus_factory, jobs,
                                                                     tmp_path):
    twin.admin("freeze", vm="src-linux")
    prom = prometheus_factory([f"127.0.0.1:{jobs.port}"], scrape_interval="1s")
    prom.wait_for("test_jobs_per_worker", timeout=30)
    drained = tmp_path / "drained.log"
    pool = base_pool(
        "workers", cidr="10.40.0.0/24", on_release="keep",
        policy={"strategy": "target-value", "min": 2, "max": 20, "target": 10, "precision": 0.1,
                "max_step": MAX_STEP, "cooldown_up_s": COOLDOWN_UP, "cooldown_down_s": COOLDOWN_DOWN,
                "evaluate_every_s": 0.25,
                "metric": {"prometheus": {"url": prom.url, "query": "sum(test_jobs_per_worker)", "timeout_s": 2}}},
        drain=drain_block(sshd, f"echo {{name}} >> {drained}"))
    spec = write_pool_spec(tmp_path, twin, pool)
    s = start_serve(tmp_path, spec)
    try:
        st = s.wait_status("workers", lambda d: d["spares"] == 2, timeout=20, what="the floor of 2 workers")
        assert st["current"] == 2

        jobs.jobs = 200.0  # 100 per worker against a target of 10: scale up, max_step at a time
        s.wait_status("workers", lambda d: d["spares"] == 20 and d["policy"]["state"] == "idle", timeout=40,
                      what="20 workers")
        time.sleep(1.5)  # 10 jobs per worker is on target: nothing more happens
        st = s.status("workers")
        assert st["current"] == 20 and "within precision" in st["last_decision"]["reason"]
        assert st["metric"]["value"] == pytest.approx(10.0)
        assert not drained.exists()

        jobs.jobs = 40.0  # 2 per worker: scale down to 4, draining each worker first
        st = s.wait_status("workers", lambda d: d["current"] == 4 and d["spares"] == 4 and d["draining"] == 0
                           and d["policy"]["state"] == "idle", timeout=40, what="4 workers")
        time.sleep(1.0)
        st = s.status("workers")
        assert st["current"] == 4 and st["errors"] == []
    finally:
        assert s.stop() == 0

    actions = [a for a in st["actions"] if a["direction"] != "none"]
    first = actions.pop(0)
    assert (first["from"], first["count"]) == (0, 2) and "raised to min 2" in first["reason"]
    print("\n".join(f"{a['direction']:>4} {a['from']:>2} -> {a['count']:>2}  {a['at']}  {a['reason']}" for a in actions))
    ups = [a for a in actions if a["direction"] == "up"]
    downs = [a for a in actions if a["direction"] == "down"]
    assert actions == ups + downs, "first all the way up, then all the way down"
    assert ups[0]["from"] == 2 and ups[-1]["count"] == 20 and downs[-1]["count"] == 4
    assert max(a["count"] for a in actions) == 20
    assert len(ups) >= 3 and len(downs) >= 2  # 18 up and 16 down at max_step 8
    for a in actions:
        assert a["ok"] and abs(a["count"] - a["from"]) <= MAX_STEP, a
    for a, b in zip(actions, actions[1:], strict=False):
        cooldown = COOLDOWN_UP if a["direction"] == "up" else COOLDOWN_DOWN
        assert ts(b["at"]) - ts(a["done_at"]) >= cooldown - 0.05, (a, b)
    assert any("capped by max_step 8" in a["reason"] for a in ups)

    # Every removed worker was drained (on the real sshd) before it was destroyed, exactly once.
    names = drained.read_text().split()
    with Ledger(tmp_path / "state.sqlite") as led:
        gone = [r for r in led.clones("workers", ["gone"])]
        assert sorted(names) == sorted(r.name for r in gone) and len(names) == 16
        for rec in gone:
            what = [e.what for e in led.events(rec.id)]
            assert what[-4:] == ["draining", "drained", "destroying", "gone"], (rec.name, what)
        live = {r.name for r in led.live("workers")}
    assert live == {v["name"] for v in pool_vms(si, "workers")}
    assert len(live) == 4


@pytest.mark.sshd
def test_failed_drain_keeps_the_worker_until_the_policy_agrees(twin, si, sshd, tmp_path):
    twin.admin("freeze", vm="src-linux")
    drained = tmp_path / "drained.log"
    command = (f"if [ {{name}} = work-002 ]; then echo 'jobs still running' >&2; exit 3; fi; "
               f"echo {{name}} >> {drained}")
    pool = base_pool("work", count=3, cidr="10.41.0.0/24",
                     policy={"strategy": "fixed", "evaluate_every_s": 0.2, "cooldown_up_s": 0, "cooldown_down_s": 0},
                     drain=drain_block(sshd, command))
    spec = write_pool_spec(tmp_path, twin, pool)
    s = start_serve(tmp_path, spec)
    try:
        s.wait_status("work", lambda d: d["spares"] == 3, what="3 workers")
        code, _, _ = s.call("PUT", "/v1/pools/work/count", {"count": 1})
        assert code == 202
        st = s.wait_status("work", lambda d: d["errors"] and d["errors"][-1]["count"] >= 2,
                           what="the failed drain retried")
        assert st["current"] == 2 and st["counts"] == {"ready": 2}
        assert [e["error"] for e in st["errors"]] == [
            "work-002: drain command exited with status 3: jobs still running (kept)"]
        assert drained.read_text().split() == ["work-003"]

        code, _, _ = s.call("PUT", "/v1/pools/work/count", {"count": 2})  # the policy agrees now
        assert code == 202
        s.wait_status("work", lambda d: d["last_decision"]["reason"].startswith("fixed count 2 → keep"))
        with Ledger(tmp_path / "state.sqlite") as led:
            rec = led.by_name("work-002")
            tries = sum(e.what == "drain-failed" for e in led.events(rec.id))
            time.sleep(1.0)
            assert sum(e.what == "drain-failed" for e in led.events(rec.id)) == tries >= 2
            assert led.get(rec.id).state == "ready" and "status 3" in (led.get(rec.id).error or "")
    finally:
        assert s.stop() == 0
    assert sorted(v["name"] for v in pool_vms(si, "work")) == ["work-001", "work-002"]


def test_workers_example_is_valid_against_the_twin(twin, tmp_path, monkeypatch):
    spec = check_example("workers.yaml", twin, tmp_path, monkeypatch)
    (pool,) = spec.pools
    p = pool.policy
    assert p.strategy == "target-value" and p.metric.query and "/" in p.metric.query
    assert 0 < p.min < p.max and p.max_step and p.cooldown_up_s and p.cooldown_down_s
    assert pool.drain is not None and "{name}" in pool.drain.command and pool.drain.timeout_s > 0
