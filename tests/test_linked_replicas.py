"""Replicas for linked clones (issue 15): one full copy of the pool's image per datastore, linked
clones forking from the one on their own datastore, counted by the ledger, removed with their
last dependant. Through the CLI against the twin, checked with stock pyVmomi (what vCenter says).
"""

from __future__ import annotations

import json
from collections import Counter

from pyVmomi import vim

from tests.spine_helpers import cli, write_spec


def disks_of(si) -> dict[str, dict]:
    """Every VM: its datastore, tags and the chain of its first disk (file names, base first)."""
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        out = {}
        for vm in view.view:
            extra = {o.key: o.value for o in vm.config.extraConfig}
            disk = vm.layoutEx.disk[0]
            files = {f.key: f.name for f in vm.layoutEx.file}
            chain = [files[c.fileKey[0]] for c in disk.chain]
            out[vm.name] = {"datastore": vm.datastore[0].name, "extra": extra, "chain": chain,
                            "power": vm.runtime.powerState}
        return out
    finally:
        view.DestroyView()


def status(spec, capsys) -> dict:
    capsys.readouterr()
    assert cli("status", "-f", str(spec), "-o", "json") == 0
    return json.loads(capsys.readouterr().out)["pools"][0]


def linked_spec(tmp_path, twin, count=8, **pool):
    extra = {"placement": {"datastores": ["ds-ssd", "ds-hdd"], "folder": "forkscale"}}
    extra.update(pool)
    return write_spec(tmp_path, twin, count=count, fallback=("linked",), extra_pool=extra)


def test_linked_clones_fork_from_the_replica_on_their_own_datastore(twin, si, tmp_path, capsys):
    spec = linked_spec(tmp_path, twin)
    assert cli("apply", "-f", str(spec)) == 0
    vms = disks_of(si)
    replicas = {n: v for n, v in vms.items() if "forkscale.replica" in v["extra"]}
    clones = {n: v for n, v in vms.items() if v["extra"].get("forkscale.pool") == "quickstart"}
    assert len(clones) == 8
    by_ds = {v["datastore"]: n for n, v in replicas.items()}
    assert sorted(by_ds) == ["ds-hdd", "ds-ssd"], "one replica on each datastore holding linked clones"
    for rep in replicas.values():
        assert rep["power"] == "poweredOff"
        assert "forkscale.pool" not in rep["extra"]
        assert rep["chain"][0].startswith(f"[{rep['datastore']}] "), "a replica is a full copy on its datastore"
    for name, clone in clones.items():
        replica = replicas[by_ds[clone["datastore"]]]
        assert "forkscale.replica" not in clone["extra"]
        # the clone's delta sits on the replica's snapshot, on the same datastore: no read crosses datastores
        assert clone["chain"][:len(replica["chain"]) - 1] == replica["chain"][:-1], name
        assert all(f.startswith(f"[{clone['datastore']}] ") for f in clone["chain"]), name
    doc = status(spec, capsys)
    refs = {r["datastore"]: r["clones"] for r in doc["replicas"]}
    assert refs == dict(Counter(c["vcenter_datastore"] for c in doc["clones"]))
    assert {r["state"] for r in doc["replicas"]} == {"ready"}


def test_a_replica_goes_with_its_last_dependant_and_is_made_again_when_needed(twin, si, tmp_path, capsys):
    spec = linked_spec(tmp_path, twin, count=6)
    assert cli("apply", "-f", str(spec)) == 0
    assert len(status(spec, capsys)["replicas"]) == 2
    clones_before = twin.admin("stats")["methods"]["CloneVM_Task"]
    assert cli("scale", "quickstart", "2", "-f", str(spec)) == 0
    doc = status(spec, capsys)
    on = Counter(c["vcenter_datastore"] for c in doc["clones"])
    assert {r["datastore"]: r["clones"] for r in doc["replicas"]} == dict(on)
    assert cli("scale", "quickstart", "0", "-f", str(spec)) == 0
    assert status(spec, capsys)["replicas"] == []
    assert not [n for n, v in disks_of(si).items() if "forkscale.replica" in v["extra"]]
    assert cli("scale", "quickstart", "6", "-f", str(spec)) == 0
    assert len(status(spec, capsys)["replicas"]) == 2
    # 2 replicas + 6 clones: a replica is made once, not once per clone
    assert twin.admin("stats")["methods"]["CloneVM_Task"] - clones_before == 8


def test_destroy_removes_the_clones_then_their_replicas(twin, si, tmp_path, capsys):
    spec = linked_spec(tmp_path, twin, count=6)
    assert cli("apply", "-f", str(spec)) == 0
    capsys.readouterr()
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes") == 0
    assert "removed 2 replica(s)" in capsys.readouterr().out
    left = disks_of(si)
    assert sorted(left) == ["src-linux", "src-win"]
