"""`forkscale demo` end to end: what the README's first command runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_scales_a_frozen_source_and_reports_sharing(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "forkscale.cli", "demo", "--clones", "6", "--time-scale", "0.01",
                           "-o", "json"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["clones"] == 6 and summary["failed"] == 0
    assert summary["fallbacks"] == {}
    assert summary["memory_shared_mb"] > summary["memory_private_mb"] > 0
    assert summary["metrics_url"].startswith("http://127.0.0.1:")
    assert not list(tmp_path.glob("forkscale-demo-*")), "the demo cleans up its temporary files"


def test_demo_rejects_a_nonsense_count():
    proc = subprocess.run([sys.executable, "-m", "forkscale.cli", "demo", "--clones", "0"],
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--clones" in proc.stderr
