"""`status` lists each pool's per-host sources; `destroy` keeps them unless `--sources` (gaps after issue 3).

Through the CLI against the twin over real SOAP, checked with stock pyVmomi and the ledger file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.spine_helpers import cli, pool_vms
from tests.test_prepare import (
    HOSTS,
    clones_of,
    guestops_spec,
    ledger_rows,
    method_count,
    prepare_json,
    read_vms,
    sources_of,
)

SOURCES = [f"src-linux-quickstart-src-{h}-g1" for h in HOSTS]


def status_json(spec, capsys) -> dict:
    capsys.readouterr()
    assert cli("status", "quickstart", "-f", str(spec), "-o", "json") == 0
    return json.loads(capsys.readouterr().out)["pools"][0]


def property_reads(twin) -> int:
    return method_count(twin, "RetrievePropertiesEx") + method_count(twin, "RetrieveProperties")


def test_status_lists_sources_frozen_with_depth_and_clone_counts(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    before = property_reads(twin)
    assert status_json(spec, capsys)["sources"] == []
    baseline = property_reads(twin) - before  # status of a pool without sources
    prepare_json(spec, capsys)
    assert cli("scale", "quickstart", "8", "-f", str(spec)) == 0
    vms = read_vms(si)

    before = property_reads(twin)
    status = status_json(spec, capsys)
    # frozen comes from the same inventory read; depths from one batched layoutEx read for all four
    assert property_reads(twin) - before == baseline + 1

    assert sorted(s["name"] for s in status["sources"]) == SOURCES
    for s in status["sources"]:
        assert (s["host"], s["generation"], s["state"], s["frozen"], s["in_vcenter"]) == (
            vms[s["name"]]["host"], 1, "ready", True, True)
        assert s["depth"] == vms[s["name"]]["depth"] == 3  # base + own delta + the delta of its first fork
        assert s["clones"] == 2
    assert status["rotate_depth"] == 32
    # the clone counts agree with what vCenter says about where the clones run
    assert Counter(v["host"] for v in clones_of(vms).values()) == {h: 2 for h in HOSTS}
    assert status["counts"] == {"ready": 8}

    capsys.readouterr()
    assert cli("status", "-f", str(spec)) == 0
    text = capsys.readouterr().out
    assert "sources (4; rotated at delta-chain depth 32):" in text
    for name in SOURCES:
        line = next(ln for ln in text.splitlines() if name in ln)
        assert "ready" in line and " frozen " in line and "depth 3" in line and "clones 2" in line


def test_status_shows_a_thawed_source_as_not_frozen(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    twin.admin("lose_frozen", vm="src-linux-quickstart-src-esx-02-g1")
    status = status_json(spec, capsys)
    frozen = {s["name"]: s["frozen"] for s in status["sources"]}
    assert frozen == {n: n != "src-linux-quickstart-src-esx-02-g1" for n in SOURCES}
    assert all(s["clones"] == 0 for s in status["sources"])


def test_destroy_without_sources_keeps_them_and_says_so(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    assert cli("scale", "quickstart", "8", "-f", str(spec)) == 0
    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes") == 0
    out = capsys.readouterr().out
    assert "destroyed 8, failed 0" in out
    assert "4 source(s) remain (destroy --sources removes them)" in out
    vms = read_vms(si)
    assert clones_of(vms) == {}
    assert sorted(sources_of(vms)) == SOURCES and all(v["frozen"] for v in sources_of(vms).values())
    with ledger_rows(spec) as ledger:
        assert {r.state for r in ledger.sources("quickstart")} == {"ready"}
    status = status_json(spec, capsys)
    assert [s["clones"] for s in status["sources"]] == [0] * 4

    # JSON says the same
    assert cli("scale", "quickstart", "4", "-f", str(spec)) == 0
    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes", "-o", "json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["destroyed"] == 4
    assert result["sources"] == {"removed": [], "remaining": SOURCES}


def test_destroy_with_sources_removes_clones_and_sources_but_never_the_golden(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    assert cli("scale", "quickstart", "8", "-f", str(spec)) == 0
    golden_before = read_vms(si)["src-linux"]
    destroys = method_count(twin, "Destroy_Task")

    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes", "--sources", "-o", "json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["destroyed"] == 8 and result["failed"] == 0
    assert sorted(result["sources"]["removed"]) == SOURCES and result["sources"]["remaining"] == []
    assert method_count(twin, "Destroy_Task") == destroys + 12

    assert pool_vms(si) == []  # nothing tagged forkscale.pool is left: no clones, no sources
    vms = read_vms(si)
    assert vms["src-linux"] == golden_before  # the golden VM: same moref, host, power, frozen state, extraConfig
    with ledger_rows(spec) as ledger:
        assert {r.vm_name: r.state for r in ledger.sources("quickstart")} == {n: "gone" for n in SOURCES}
        assert ledger.clones("quickstart", states=["ready", "claimed", "cloning", "customizing"]) == []
    assert status_json(spec, capsys)["sources"] == []

    # nothing left to do: a second run succeeds and changes nothing
    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes", "--sources") == 0
    assert "destroyed 0, failed 0" in capsys.readouterr().out
    assert method_count(twin, "Destroy_Task") == destroys + 12
    # and prepare starts over with a fresh generation
    report = prepare_json(spec, capsys)
    assert sorted((s["name"], s["action"]) for s in report["sources"]) == [
        (f"src-linux-quickstart-src-{h}-g2", "created") for h in HOSTS]


def test_destroy_sources_removes_sources_the_ledger_lost(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spec.parent / 'state.sqlite'}{suffix}").unlink(missing_ok=True)
    status = status_json(spec, capsys)
    assert sorted((s["name"], s["state"], s["frozen"]) for s in status["sources"]) == [
        (n, "untracked", True) for n in SOURCES]
    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes", "--sources") == 0
    assert "removed 4 source(s)" in capsys.readouterr().out
    assert pool_vms(si) == []
    assert "src-linux" in read_vms(si)


def test_destroy_sources_of_an_unknown_pool_is_exit_2(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    assert cli("destroy", "nope", "-f", str(spec), "--yes", "--sources") == 2
    assert "no pool named 'nope'" in capsys.readouterr().err
    assert sorted(sources_of(read_vms(si))) == SOURCES


def test_destroy_sources_keeps_the_source_of_a_clone_it_could_not_destroy_and_exits_1(twin, si, tmp_path, capsys):
    spec = guestops_spec(tmp_path, twin)
    prepare_json(spec, capsys)
    assert cli("scale", "quickstart", "4", "-f", str(spec)) == 0
    twin.admin("fail_next", method="Destroy_Task", fault="InvalidState")
    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes", "--sources") == 1
    cap = capsys.readouterr()
    assert "destroyed 3, failed 1" in cap.out and "removed 3 source(s)" in cap.out
    assert "1 source(s) could not be removed" in cap.err
    vms = read_vms(si)
    left = clones_of(vms)
    assert len(left) == 1
    (clone,) = left.values()
    assert sorted(sources_of(vms)) == [f"src-linux-quickstart-src-{clone['host']}-g1"]  # its source stays while it exists
    # a second run finishes the job
    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes", "--sources") == 0
    assert pool_vms(si) == []
    assert "src-linux" in read_vms(si)
