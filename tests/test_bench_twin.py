"""bench/twin.py keeps working: its quick mode runs end to end (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_twin_quick_mode_runs_and_reports(tmp_path):
    profile = tmp_path / "twin.prof"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "twin.py"), "--quick", "--json", "--profile",
                          str(profile)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["quick"] is True and report["vms"] == 24
    results = report["results"]
    assert [(r["workload"].split()[0], r["connections"]) for r in results] == [
        ("RetrievePropertiesEx", 1), ("RetrievePropertiesEx", 4), ("InstantClone_Task", 1), ("InstantClone_Task", 4)]
    assert [r["operations"] for r in results] == [2, 4, 3, 4]
    assert all(r["seconds"] > 0 and r["soap_requests"] >= r["operations"] for r in results)
    assert any(line.startswith("InstantClone_Task + wait") for line in lines)  # the table
    assert profile.stat().st_size > 0
