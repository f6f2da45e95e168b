"""Per-host frozen sources (issue 3): `forkscale prepare`, spreading instant clones across hosts,
re-freezing a source that lost its frozen state, delta-chain rotation, adoption after a lost ledger.

Everything runs through the CLI against the twin over real SOAP and is checked with stock pyVmomi
(what vCenter says), plus the ledger file where the claim is about the ledger.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from pyVmomi import vim

from forkscale.core.errors import SpecError
from forkscale.ledger import Ledger
from forkscale.spec import parse_spec
from tests.spine_helpers import cli, write_spec

HOSTS = ["esx-01", "esx-02", "esx-03", "esx-04"]


def guestops_spec(tmp_path: Path, twin, **pool) -> Path:
    pw = tmp_path / "guest-password"
    pw.write_text("vmfork-guest")  # the twin's guest login (world.guest: root / forkscale)
    os.chmod(pw, 0o600)
    extra = {"guestops": {"user": "root", "password_file": str(pw)}}
    extra.update(pool)
    return write_spec(tmp_path, twin, freeze="guestops", extra_pool=extra)


def read_vms(si) -> dict[str, dict]:
    """Every VM as vCenter reports it: host, frozen, power, extraConfig, deepest delta chain."""
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        out = {}
        for vm in view.view:
            extra = {o.key: o.value for o in vm.config.extraConfig}
            out[vm.name] = {"moref": vm._moId, "host": vm.runtime.host.name, "frozen": vm.runtime.instantCloneFrozen,
                            "power": vm.runtime.powerState, "extra": extra,
                            "depth": max(len(d.chain) for d in vm.layoutEx.disk)}
        return out
    finally:
        view.DestroyView()


def sources_of(vms: dict[str, dict], pool: str = "quickstart") -> dict[str, dict]:
    return {n: v for n, v in vms.items() if v["extra"].get("forkscale.pool") == pool
            and "forkscale.source" in v["extra"] and "forkscale.id" not in v["extra"]}


def clones_of(vms: dict[str, dict], pool: str = "quickstart") -> dict[str, dict]:
    return {n: v for n, v in vms.items() if v["extra"].get("forkscale.pool") == pool and "forkscale.id" in v["extra"]}


def method_count(twin, name: str) -> int:
    return twin.admin("stats")["methods"].get(name, 0)


def ledger_rows(spec: Path) -> Ledger:
    return Ledger(spec.parent / "state.sqlite")


def prepare_json(spec: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli("prepare", "-f", str(spec), "-o", "json") == 0
    return json.loads(capsys.readouterr().out)["pools"][0]


def test_prepare_makes_one_frozen_source_per_host_and_40_clones_spread_10_per_host(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    report = prepare_json(spec, capsys)
    assert sorted((s["host"], s["action"], s["frozen"]) for s in report["sources"]) == [
        (h, "created", True) for h in HOSTS]

    vms = read_vms(si)
    sources = sources_of(vms)
    assert sorted(sources) == [f"src-linux-quickstart-src-{h}-g1" for h in HOSTS]
    for name, vm in sources.items():
        assert vm["host"] == name.split("-src-")[1].rsplit("-g", 1)[0]
        assert vm["frozen"] is True
        assert vm["extra"]["forkscale.source"] == "1"
        assert vm["depth"] == 2  # a linked clone of the golden's snapshot: base + its own delta
    assert vms["src-linux"]["frozen"] is False  # the golden VM itself is left running, untouched
    with ledger_rows(spec) as ledger:
        rows = ledger.sources("quickstart")
        assert sorted((r.host, r.vm_name, r.generation, r.state, r.frozen, r.vm_moref) for r in rows) == sorted(
            (v["host"], n, 1, "ready", True, v["moref"]) for n, v in sources.items())

    # idempotent: a second run keeps all four and makes nothing
    clones_before, freezes_before = method_count(twin, "CloneVM_Task"), method_count(twin, "StartProgramInGuest")
    again = prepare_json(spec, capsys)
    assert sorted(s["action"] for s in again["sources"]) == ["kept"] * 4
    assert method_count(twin, "CloneVM_Task") == clones_before
    assert method_count(twin, "StartProgramInGuest") == freezes_before

    # the dry run already spreads across the four sources' hosts
    capsys.readouterr()
    assert cli("scale", "quickstart", "40", "-f", str(spec), "--dry-run") == 0
    plan = capsys.readouterr().out
    for host in HOSTS:
        assert f"create 10 on {host} (rung instant)" in plan

    assert cli("scale", "quickstart", "40", "-f", str(spec)) == 0
    vms = read_vms(si)
    clones = clones_of(vms)
    assert len(clones) == 40
    assert Counter(v["host"] for v in clones.values()) == {h: 10 for h in HOSTS}
    assert method_count(twin, "InstantClone_Task") == 40
    assert all("forkscale.source" not in v["extra"] for v in clones.values())  # the inherited tag is dropped
    assert sorted(sources_of(vms)) == sorted(sources)  # sources survived reconcile's orphan sweep
    with ledger_rows(spec) as ledger:
        recs = ledger.clones("quickstart", states=["ready"])
        assert len(recs) == 40 and {r.kind for r in recs} == {"instant"}
        assert all(r.fallback_reason is None for r in recs)
        # each clone came from the source on its own host, and vCenter agrees on the host
        assert all(r.source == f"src-linux-quickstart-src-{r.host}-g1" and r.source_generation == 1 for r in recs)
        assert all(clones[r.name]["host"] == r.host for r in recs)


def test_a_source_that_lost_its_frozen_state_is_frozen_again_before_cloning(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    before = read_vms(si)["src-linux-quickstart-src-esx-02-g1"]
    twin.admin("lose_frozen", vm="src-linux-quickstart-src-esx-02-g1")  # a power cycle: running again, not frozen
    assert read_vms(si)["src-linux-quickstart-src-esx-02-g1"]["frozen"] is False
    freezes = method_count(twin, "StartProgramInGuest")

    assert cli("scale", "quickstart", "8", "-f", str(spec)) == 0
    vms = read_vms(si)
    after = vms["src-linux-quickstart-src-esx-02-g1"]
    assert after["frozen"] is True and after["moref"] == before["moref"]  # the same VM, frozen again
    assert method_count(twin, "StartProgramInGuest") == freezes + 1
    assert method_count(twin, "CloneVM_Task") == 4  # nothing replaced
    clones = clones_of(vms)
    assert Counter(v["host"] for v in clones.values()) == {h: 2 for h in HOSTS}
    with ledger_rows(spec) as ledger:
        assert {r.kind for r in ledger.clones("quickstart", states=["ready"])} == {"instant"}
        assert all(r.fallback_reason is None for r in ledger.clones("quickstart"))


def test_a_powered_off_source_is_replaced_and_the_old_one_retired(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    twin.admin("power_off", vm="src-linux-quickstart-src-esx-03-g1")

    assert cli("scale", "quickstart", "4", "-f", str(spec)) == 0
    vms = read_vms(si)
    assert "src-linux-quickstart-src-esx-03-g1" not in vms  # no clone used it: destroyed at once
    new = vms["src-linux-quickstart-src-esx-03-g2"]
    assert new["frozen"] is True and new["host"] == "esx-03" and new["extra"]["forkscale.source"] == "2"
    clones = clones_of(vms)
    assert Counter(v["host"] for v in clones.values()) == {h: 1 for h in HOSTS}
    with ledger_rows(spec) as ledger:
        states = {r.vm_name: r.state for r in ledger.sources("quickstart")}
        assert states["src-linux-quickstart-src-esx-03-g1"] == "gone"
        assert states["src-linux-quickstart-src-esx-03-g2"] == "ready"
        on3 = [r for r in ledger.clones("quickstart", states=["ready"]) if r.host == "esx-03"]
        assert [(r.source, r.source_generation, r.kind) for r in on3] == [("src-linux-quickstart-src-esx-03-g2", 2, "instant")]


def test_deep_sources_are_rotated_and_retired_when_no_clone_uses_them(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin, sources={"rotate_depth": 3})
    prepare_json(spec, capsys)
    assert cli("scale", "quickstart", "8", "-f", str(spec)) == 0
    vms = read_vms(si)
    # a frozen source gets one delta of its own at its first instant clone: 2 -> 3 = rotate_depth
    assert {v["depth"] for v in sources_of(vms).values()} == {3}

    # growing the pool: every source is at rotate_depth, so each is replaced by generation 2 first
    assert cli("scale", "quickstart", "12", "-f", str(spec)) == 0
    vms = read_vms(si)
    sources = sources_of(vms)
    assert sorted(sources) == sorted([f"src-linux-quickstart-src-{h}-g1" for h in HOSTS] + [f"src-linux-quickstart-src-{h}-g2" for h in HOSTS])
    assert all(sources[f"src-linux-quickstart-src-{h}-g2"]["frozen"] and sources[f"src-linux-quickstart-src-{h}-g2"]["host"] == h
               for h in HOSTS)
    with ledger_rows(spec) as ledger:
        states = {r.vm_name: r.state for r in ledger.sources("quickstart")}
        assert {states[f"src-linux-quickstart-src-{h}-g1"] for h in HOSTS} == {"retiring"}  # 8 clones still use them
        assert {states[f"src-linux-quickstart-src-{h}-g2"] for h in HOSTS} == {"ready"}
        recs = ledger.clones("quickstart", states=["ready"])
        assert Counter(r.source_generation for r in recs) == {1: 8, 2: 4}
        assert all(r.source == f"src-linux-quickstart-src-{r.host}-g{r.source_generation}" for r in recs)
    assert Counter(v["host"] for v in clones_of(vms).values()) == {h: 3 for h in HOSTS}

    # shrinking removes the oldest generation first; then nothing uses generation 1 and it goes.
    # No rotation on a scale-down, although the generation-2 sources are at rotate_depth by now.
    clones_made = method_count(twin, "CloneVM_Task")
    assert cli("scale", "quickstart", "4", "-f", str(spec)) == 0
    vms = read_vms(si)
    assert sorted(sources_of(vms)) == [f"src-linux-quickstart-src-{h}-g2" for h in HOSTS]
    assert method_count(twin, "CloneVM_Task") == clones_made
    with ledger_rows(spec) as ledger:
        states = {r.vm_name: r.state for r in ledger.sources("quickstart")}
        assert {states[f"src-linux-quickstart-src-{h}-g1"] for h in HOSTS} == {"gone"}
        assert {r.source_generation for r in ledger.clones("quickstart", states=["ready"])} == {2}


def test_sources_survive_a_lost_ledger_and_are_adopted(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    sources = sources_of(read_vms(si))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spec.parent / 'state.sqlite'}{suffix}").unlink(missing_ok=True)

    assert cli("scale", "quickstart", "4", "-f", str(spec)) == 0
    vms = read_vms(si)
    assert {n: v["moref"] for n, v in sources_of(vms).items()} == {n: v["moref"] for n, v in sources.items()}
    assert method_count(twin, "CloneVM_Task") == 4  # nothing re-made
    assert Counter(v["host"] for v in clones_of(vms).values()) == {h: 1 for h in HOSTS}
    with ledger_rows(spec) as ledger:
        assert sorted((r.vm_name, r.generation, r.state) for r in ledger.sources("quickstart")) == sorted(
            (n, 1, "ready") for n in sources)
        assert ledger.next_generation("quickstart") == 2


def test_prepare_respects_placement_hosts_and_skips_a_host_that_is_down(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin, placement={"datastores": ["ds-ssd"], "folder": "forkscale",
                                                    "hosts": ["esx-02", "esx-03", "esx-04"]})
    twin.admin("host_down", host="esx-04")
    report = prepare_json(spec, capsys)
    assert sorted((s["host"], s["action"]) for s in report["sources"]) == [
        ("esx-02", "created"), ("esx-03", "created"), ("esx-04", "unavailable")]
    assert sorted(sources_of(read_vms(si))) == ["src-linux-quickstart-src-esx-02-g1", "src-linux-quickstart-src-esx-03-g1"]
    assert cli("scale", "quickstart", "6", "-f", str(spec)) == 0
    assert Counter(v["host"] for v in clones_of(read_vms(si)).values()) == {"esx-02": 3, "esx-03": 3}


def test_prepare_needs_a_freeze_method_and_changes_nothing_without_one(twin, si, tmp_path, capsys):
    spec = write_spec(tmp_path, twin, freeze="none")
    assert cli("prepare", "-f", str(spec)) == 2
    assert "pools[0].freeze" in capsys.readouterr().err
    assert sources_of(read_vms(si)) == {}
    assert cli("prepare", "nope", "-f", str(spec)) == 2
    assert "no pool named 'nope'" in capsys.readouterr().err


def _pool_spec(**pool) -> dict:
    base = {"name": "p", "source": "golden", "count": 1, "network": {"port_group": "pg", "cidr": "10.0.0.0/24"}}
    base.update(pool)
    return {"vcenter": {"url": "https://vc/sdk", "user": "u", "password_env": "VC_PW"}, "pools": [base]}


def test_sources_rotate_depth_is_validated(tmp_path):
    assert parse_spec(_pool_spec(), base_dir=tmp_path).pools[0].sources.rotate_depth == 32
    assert parse_spec(_pool_spec(sources={"rotate_depth": 5}), base_dir=tmp_path).pools[0].sources.rotate_depth == 5
    for bad, words in [("deep", "must be an integer"), (1, "must be >= 2"), (True, "must be an integer"),
                       (201, "vSphere alarms above ~100")]:
        with pytest.raises(SpecError) as err:
            parse_spec(_pool_spec(sources={"rotate_depth": bad}), base_dir=tmp_path)
        assert err.value.path == "pools[0].sources.rotate_depth" and words in err.value.message
    with pytest.raises(SpecError) as err:
        parse_spec(_pool_spec(sources={"rotate_dept": 5}), base_dir=tmp_path)
    assert err.value.path == "pools[0].sources.rotate_dept" and "did you mean 'rotate_depth'" in err.value.message
    with pytest.raises(SpecError) as err:
        parse_spec(_pool_spec(sources=[1]), base_dir=tmp_path)
    assert err.value.path == "pools[0].sources"


def test_ssh_guest_script_is_validated(tmp_path):
    ssh = {"host": "10.0.0.5"}
    pool = parse_spec(_pool_spec(freeze="ssh", ssh=ssh), base_dir=tmp_path).pools[0]
    assert pool.ssh is not None and pool.ssh.guest_script == "/usr/local/sbin/forkscale-guest"
    pool = parse_spec(_pool_spec(freeze="ssh", ssh={**ssh, "guest_script": "/opt/fg"}), base_dir=tmp_path).pools[0]
    assert pool.ssh is not None and pool.ssh.guest_script == "/opt/fg"
    with pytest.raises(SpecError) as err:
        parse_spec(_pool_spec(freeze="ssh", ssh={**ssh, "guest_script": "bin/fg"}), base_dir=tmp_path)
    assert err.value.path == "pools[0].ssh.guest_script" and "absolute path" in err.value.message
