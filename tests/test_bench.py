"""The benchmarks run end to end at a tiny size and report what they promise (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.spine_helpers import REPO


def bench(script: str, *args: str, timeout: float = 120) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--json"], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, "a human table comes before the JSON line"
    return json.loads(lines[-1])


def positive(doc: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(doc[key], (int, float)) and doc[key] > 0, (key, doc[key])


def test_fanout_reports_forkscale_the_ideal_and_both_baselines():
    doc = bench("fanout.py", "--n", "8", "--time-scale", "0.01", "--quick")
    assert doc["n"] == 8 and doc["hosts"] == 4 and doc["ratios_to_ideal"] == [doc["ratio_to_ideal"]]
    positive(doc, "forkscale_s", "ideal_s", "naive_s", "pool8_s", "ratio_to_ideal", "speedup_vs_naive",
             "speedup_vs_pool8", "soap_requests_per_clone", "controller_cpu_s_per_1000", "controller_maxrss_mib")
    # every clone is one InstantClone_Task, and the twin counted the forkscale run's requests only
    assert doc["soap_methods"]["InstantClone_Task"] == 8
    assert doc["soap_requests"] == sum(doc["soap_methods"].values())
    assert doc["soap_requests_per_clone"] == pytest.approx(doc["soap_requests"] / 8, abs=0.001)
    assert doc["naive_prefix"] == 3 and doc["pool_prefix"] == 8


def test_fanout_without_prepare_runs_one_pool_per_host_source():
    doc = bench("fanout.py", "--n", "8", "--time-scale", "0.01", "--quick", "--mode", "pools", "--no-baselines")
    assert doc["mode"] == "pools" and doc["sources"] == 4
    positive(doc, "forkscale_s", "ideal_s", "ratio_to_ideal", "soap_requests_per_clone")
    assert doc["naive_s"] is None and doc["speedup_vs_naive"] is None


def test_fanout_over_more_hosts_than_the_default_world_prepares_a_source_on_each():
    doc = bench("fanout.py", "--n", "16", "--hosts", "8", "--time-scale", "0.01", "--quick", "--no-baselines")
    assert doc["mode"] == "prepare" and doc["hosts"] == 8 and doc["sources"] == 8
    assert doc["soap_methods"]["InstantClone_Task"] == 16
    positive(doc, "forkscale_s", "ideal_s", "soap_requests_per_clone")


def test_fanout_ideal_is_the_twins_own_queueing_of_its_draws():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from fanout import ideal_makespan
    finally:
        sys.path.remove(str(REPO / "bench"))
    jobs = [{"host": "h1", "seq": i, "run_s": 1.0, "resume_s": 2.0} for i in range(5)]
    assert ideal_makespan(jobs, per_host=2, vcenter=640) == pytest.approx(3 + 2)  # waves of 2, 2, 1
    jobs += [{"host": "h2", "seq": 10 + i, "run_s": 0.5, "resume_s": 0.0} for i in range(4)]
    assert ideal_makespan(jobs, per_host=2, vcenter=640) == pytest.approx(5)
    assert ideal_makespan(jobs, per_host=4, vcenter=2) > ideal_makespan(jobs, per_host=4, vcenter=640)


def test_inventory_measures_each_size_with_a_no_op_converge_with_and_without_the_informer():
    doc = bench("inventory.py", "--sizes", "20,60", "--quick", "--changes", "3")
    assert doc["sizes"] == [20, 60]
    for row, n in zip(doc["results"], (20, 60), strict=True):
        assert row["clones"] == n and row["vms"] >= n
        positive(row, "inventory_s", "converge_s", "converge_requests", "controller_maxrss_mib")
        assert "InstantClone_Task" not in row["soap_methods"]  # a no-op converge makes nothing
        # the informer: one full read, then rounds that ask vCenter nothing when nothing changed
        positive(row, "first_read_s", "steady_s", "change_p50_s", "change_p99_s", "informed_maxrss_mib")
        assert row["steady_requests"] == 0 and row["changes"] == 3
        assert row["change_p50_s"] <= row["change_p99_s"]
        assert "InstantClone_Task" not in row["informed_methods"]
        assert row["informed_methods"]["CreatePropertyCollector"] == 2  # the task watcher's and the informer's
    assert doc["rss_mib_at_max"] == doc["results"][-1]["controller_maxrss_mib"]


def test_scrape_times_metrics_idle_refreshing_and_during_a_fanout():
    doc = bench("scrape.py", "--clones", "30", "--scrapes", "5", "--busy-seconds", "1", "--fanout", "6",
                timeout=300)
    assert doc["clones"] == 30 and doc["scrapes"] == 5 and doc["fanout_ready"] == 36
    positive(doc, "p50_ms", "p99_ms", "busy_p99_ms", "fanout_p99_ms", "direct_refresh_s", "series",
             "idle_maxrss_mib")
    assert doc["p50_ms"] <= doc["p99_ms"] <= doc["max_ms"] and doc["fanout_scrapes"] >= 1


def test_claim_reports_latency_percentiles_or_says_why_it_skipped():
    doc = bench("claim.py", "--claims", "10", "--rate", "50", "--time-scale", "0.01")
    if "skipped" in doc:
        assert "API" in doc["skipped"]
        return
    assert doc["claims"] == 10 and doc["ok"] == 10 and doc["unavailable"] == 0 and doc["errors"] == 0
    positive(doc, "p50_ms", "p99_ms", "max_ms")
    assert doc["p50_ms"] <= doc["p99_ms"] <= doc["max_ms"]


def test_soak_reports_day_one_against_the_last_day_and_prunes_the_ledger():
    doc = bench("soak.py", "--quick", timeout=300)
    assert doc["days"] == 3 and doc["users"] == 4 and doc["retention_days"] == 1.0
    assert doc["claims"] == 12 and doc["failures"] == 0
    assert doc["first"]["day"] == 1 and doc["last"]["day"] == 3 and doc["window_end"]["day"] == 2
    for day in (doc["first"], doc["last"]):
        positive(day, "rss_kib", "open_files", "ledger_bytes", "ledger_clones", "ledger_events", "claim_p99_ms")
        assert day["claims"] == 4
    assert all(len(series) == 3 for series in doc["series"].values())
    # three days of refreshes against a one-day window: the old history was moved to the archive
    assert doc["archived_lines"] > 0
    assert doc["last"]["ledger_clones"] < 3 * 4 * 2
    positive(doc, "serve_cpu_s", "serve_maxrss_mib", "twin_requests")
