"""Issue 4 end to end: `forkscale metrics` against the twin, scraped by a real Prometheus.

Two pools: `live` makes 5 instant clones of the *running* src-linux (each adds a delta to the
source: its chain grows from 2 to 7), `vdi` makes 3 of the frozen src-win. Every value read back
through Prometheus' HTTP API is compared with what the twin shows a stock pyVmomi client.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.spine_helpers import cli, cli_process, write_spec
from tests.test_exporter import chain_depths, steady_shared, vms_by_name

MiB = 1024**2


def two_pool_spec(tmp_path: Path, twin: Any) -> Path:
    path = write_spec(tmp_path, twin)
    spec = yaml.safe_load(path.read_text())
    base = spec["pools"][0]
    live = dict(base, name="live", source="src-linux", freeze="running", count=5, fallback=["instant"],
                name_pattern="live-{index:02d}",
                network={"port_group": "isolated", "cidr": "10.30.0.0/24", "isolated": True})
    vdi = dict(base, name="vdi", source="src-win", freeze="none", count=3, fallback=["instant", "linked"],
               name_pattern="vdi-{index:02d}",
               network={"port_group": "dvpg-vdi", "cidr": "10.40.0.0/24", "gateway": "10.40.0.1"})
    spec["pools"] = [live, vdi]
    path.write_text(yaml.safe_dump(spec))
    return path


def start_metrics(spec: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`forkscale metrics` on a free loopback port; returns (process, host:port) once it listens."""
    proc = cli_process("metrics", "-f", str(spec), "--listen", "127.0.0.1:0", *extra)
    box: dict[str, str] = {}

    def read_first_line() -> None:
        assert proc.stdout is not None
        box["line"] = proc.stdout.readline()

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(timeout=60)
    m = re.search(r"http://(127\.0\.0\.1:\d+)/metrics", box.get("line", ""))
    if m is None:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"forkscale metrics did not start: {box.get('line')!r} {out} {err}")
    return proc, m.group(1)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def values(prom: Any, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in prom.query(expr)}


def test_prometheus_sees_what_the_twin_implies(twin, si, tmp_path, prometheus_factory):
    twin.admin("freeze", vm="src-win")
    spec = two_pool_spec(tmp_path, twin)
    assert cli("apply", "-f", str(spec)) == 0
    names = sorted(vms_by_name(si))
    live = [n for n in names if n.startswith("live-")]
    vdi = [n for n in names if n.startswith("vdi-")]
    assert (len(live), len(vdi)) == (5, 3)
    depths = chain_depths(si, names)
    assert depths[("src-linux", "2000")] == 7  # base + `base` snapshot delta + one delta per live clone
    assert depths[("src-win", "2000")] == 3  # base + snapshot delta + the one freeze delta
    shared = steady_shared(si, names)
    sessions_before = twin.admin("stats")["sessions"]

    proc, target = start_metrics(spec, "--interval", "1")
    try:
        with urllib.request.urlopen(f"http://{target}/healthz", timeout=10) as resp:
            health = resp.status, resp.read().decode()
        prom = prometheus_factory([target], scrape_interval="1s")
        prom.wait_for('forkscale_delta_chain_depth{vm="src-linux",role="source"}',
                      lambda r: bool(r) and r[0]["value"][1] == "7", timeout=30)
        assert twin.admin("stats")["sessions"] == sessions_before + 1

        # pools, from the ledger
        assert values(prom, "forkscale_pool_desired", "pool") == {("live",): 5, ("vdi",): 3}
        assert values(prom, "forkscale_pool_ready", "pool") == {("live",): 5, ("vdi",): 3}
        assert values(prom, "forkscale_pool_spares", "pool") == {("live",): 5, ("vdi",): 3}
        assert values(prom, "forkscale_clones", "pool", "kind", "state") == {
            ("live", "instant", "ready"): 5, ("vdi", "instant", "ready"): 3}

        # delta chains: every VM of the twin is a source or a clone here; depths as layoutEx shows them
        chains = values(prom, "forkscale_delta_chain_depth", "vm", "disk")
        assert chains == {k: float(v) for k, v in depths.items()}
        roles = values(prom, "forkscale_delta_chain_depth", "vm", "role")
        assert {vm for vm, role in roles if role == "source"} == {"src-linux", "src-win"}
        assert sorted(vm for vm, role in roles if role == "clone") == sorted(live + vdi)
        assert values(prom, "max by (role) (forkscale_delta_chain_depth)", "role")[("source",)] == 7.0
        deltas = values(prom, "forkscale_delta_disk_bytes", "vm")
        assert all(deltas[(n,)] > 0 for n in live + vdi)

        # P-Share: per clone as quickStats says; per pool one fork group (source + its clones)
        vm_shared = values(prom, "forkscale_vm_memory_shared_bytes", "pool", "vm")
        assert vm_shared == {**{("live", n): shared[n] * MiB for n in live}, **{("vdi", n): shared[n] * MiB for n in vdi}}
        assert all(v > 0 for v in vm_shared.values())
        saved = values(prom, "forkscale_pool_pshare_saved_bytes", "pool")
        for pool, source, clones in (("live", "src-linux", live), ("vdi", "src-win", vdi)):
            group = [shared[n] for n in clones] + [shared[source]]
            assert saved[(pool,)] == (sum(group) - max(group)) * MiB > 0
        # esx-01 holds exactly these two fork groups and nothing else: its shared - sharedcommon is theirs
        host_saved = values(prom, "forkscale_host_pshare_saved_bytes", "host")
        assert host_saved[("esx-01",)] == saved[("live",)] + saved[("vdi",)]
        assert host_saved[("esx-02",)] == 0

        # frozen sources: only for the pool that clones a frozen source
        frozen = values(prom, "forkscale_source_frozen", "pool", "source", "host")
        assert frozen == {("vdi", "src-win", "esx-01"): 1.0}
        assert values(prom, "forkscale_up", "job") == {("forkscale",): 1.0}
        assert values(prom, "forkscale_inventory_age_seconds", "job")[("forkscale",)] < 10

        # the exporter keeps refreshing in the background: a source losing its frozen state shows
        twin.admin("lose_frozen", vm="src-win")
        prom.wait_for('forkscale_source_frozen{pool="vdi"}', lambda r: bool(r) and r[0]["value"][1] == "0",
                      timeout=20)
    finally:
        code, out, err = stop(proc)
    assert health[0] == 200 and health[1].startswith("ok"), health
    assert code == 0, (out, err)
    assert "stopped" in out
    assert twin.admin("stats")["sessions"] == sessions_before  # logged out on the way out


def test_metrics_stops_cleanly_on_sigint_and_refuses_a_bad_listen_address(twin, si, tmp_path, capsys):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, count=1)
    sessions_before = twin.admin("stats")["sessions"]
    proc, target = start_metrics(spec)
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    assert resp.status == 200 and "forkscale_pool_desired" in body
    code, out, err = stop(proc, signal.SIGINT)
    assert code == 0, (out, err)
    assert twin.admin("stats")["sessions"] == sessions_before
    assert cli("metrics", "-f", str(spec), "--listen", "nonsense") == 2
    assert "--listen" in capsys.readouterr().err
