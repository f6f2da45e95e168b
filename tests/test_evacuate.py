"""`forkscale evacuate HOST` (issue 15): every clone leaves the host (instant clones re-created from
other hosts' sources, claimed ones forced per the pool's rollout settings and handed back), the
host's source goes, EnterMaintenanceMode_Task then succeeds, and the pool never has fewer than
count - max_unavailable clones in service. Through the CLI against the twin, checked with pyVmomi."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

from pyVmomi import vim

from forkscale.ledger import Ledger
from tests.fixtures.twin import find
from tests.spine_helpers import cli
from tests.test_prepare import clones_of, guestops_spec, read_vms, sources_of
from tests.test_rebalance import _progress, check_pool_consistent, kill_at_random_moments

HOSTS = ["esx-01", "esx-02"]
ROLLOUT = {"claimed": "force", "force_after_s": 1, "max_unavailable": 2}
#: the users are told over SSH; nothing listens on this port, so the notice fails at once (which does not
#: hold the forced move back)
NOTIFY = {"command": "wall 'this desktop moves in a moment'", "timeout_s": 2,
          "ssh": {"host": "127.0.0.1", "port": 22999, "insecure_host_key": True}}


def evac_spec(tmp_path: Path, twin, count: int = 32, **extra) -> Path:
    return guestops_spec(tmp_path, twin, count=count, placement={"hosts": HOSTS, "datastores": ["ds-ssd"],
                                                                 "folder": "forkscale"},
                         rollout=ROLLOUT, notify=NOTIFY, **extra)


def claim(state: Path, names: list[str]) -> None:
    with Ledger(state) as ledger:
        for name in names:
            rec = ledger.by_name(name)
            assert rec is not None
            ledger.transition(rec.id, "claimed", claimed_by=f"user-{name}")


class InService:
    """Samples the pool's clones in service (ready + claimed) in the ledger every 20 ms, on a thread."""

    def __init__(self, state: Path, pool: str = "quickstart") -> None:
        self.state, self.pool = state, pool
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with Ledger(self.state) as ledger:
            while not self._stop.is_set():
                counts = ledger.counts(self.pool)
                self.samples.append(counts["ready"] + counts["claimed"])
                time.sleep(0.02)

    def __enter__(self) -> InService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_evacuate_empties_the_host_forces_claimed_clones_off_and_it_enters_maintenance(twin, si, tmp_path, capsys):
    spec = evac_spec(tmp_path, twin)
    state = tmp_path / "state.sqlite"
    assert cli("prepare", "-f", str(spec)) == 0
    assert cli("apply", "-f", str(spec)) == 0
    on_02 = sorted(n for n, v in clones_of(read_vms(si)).items() if v["host"] == "esx-02")
    assert len(on_02) == 16
    claimed = on_02[:4]
    claim(state, claimed)
    capsys.readouterr()
    assert cli("evacuate", "esx-02", "-f", str(spec), "--dry-run", "-o", "json") == 0
    plan = json.loads(capsys.readouterr().out)["plans"]["quickstart"]
    assert Counter(s["action"] for s in plan) == {"recreate": 16, "retire-source": 1}
    assert {s["target"] for s in plan if s["detail"].get("claimed_by")} == set(claimed)
    with InService(state) as sampler:
        assert cli("evacuate", "esx-02", "-f", str(spec), "--enter", "-o", "json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["empty"] and out["maintenance"] == "entered"
    assert min(sampler.samples) >= 32 - ROLLOUT["max_unavailable"], min(sampler.samples)
    host = find(si, vim.HostSystem, "esx-02")
    assert host.runtime.inMaintenanceMode is True
    assert [vm.name for vm in host.vm] == []
    vms = read_vms(si)
    clones = clones_of(vms)
    assert len(clones) == 32 and {v["host"] for v in clones.values()} == {"esx-01"}
    assert sorted(sources_of(vms)) == ["src-linux-quickstart-src-esx-01-g1"]
    with Ledger(state) as ledger:
        for name in claimed:  # forced off, re-created elsewhere and handed back to their users
            rec = ledger.by_name(name)
            assert rec is not None and (rec.state, rec.claimed_by, rec.host) == ("claimed", f"user-{name}", "esx-01")
    check_pool_consistent(si, state, count=32)


def test_kill_9_at_ten_moments_of_an_evacuation_then_rerun_loses_and_duplicates_nothing(twin, si, tmp_path):
    spec = evac_spec(tmp_path, twin, count=16)
    state = tmp_path / "state.sqlite"
    assert cli("prepare", "-f", str(spec)) == 0
    assert cli("apply", "-f", str(spec)) == 0
    claim(state, sorted(n for n, v in clones_of(read_vms(si)).items() if v["host"] == "esx-02")[:2])
    twin.admin("time_scale", value=0.05)
    kill_at_random_moments(["evacuate", "esx-02", "-f", str(spec)], state, pool="quickstart")
    twin.admin("time_scale", value=0.001)
    assert cli("evacuate", "esx-02", "-f", str(spec)) == 0
    assert _progress(state)[0] == _progress(state)[1]
    check_pool_consistent(si, state, count=16)
    vms = read_vms(si)
    assert {v["host"] for v in clones_of(vms).values()} == {"esx-01"}
    assert sorted(sources_of(vms)) == ["src-linux-quickstart-src-esx-01-g1"]
