"""Users' persistent disks (issue 14): made with the clone, moved to its replacement across a refresh
and a push, deleted when the clone leaves the pool for good -- checked in the twin's disk model,
where what the guest wrote travels with the file."""

from __future__ import annotations

import json

from pyVim.task import WaitForTask
from pyVmomi import vim

from forkscale.ledger import Ledger
from tests.day2_helpers import guest_password_file, take_snapshot, vms_of
from tests.fixtures.twin import find
from tests.serve_helpers import base_pool, write_pool_spec
from tests.spine_helpers import cli

DISK_DIR = "[ds-hdd] forkscale-userdisks/desk"


def desk_pool(tmp_path, **extra) -> dict:
    return base_pool("desk", count=3, freeze="guestops", fallback=["instant"], cidr="10.50.0.0/24",
                     guestops={"user": "root", "password_file": str(guest_password_file(tmp_path))},
                     user_disk={"size_gb": 10, "datastore": "ds-hdd"},
                     rollout={"max_unavailable": 1, "keep_previous_s": 0}, **extra)


def disk_files(si) -> list[str]:
    """The user-disk files on ds-hdd, as the datastore browser lists them."""
    ds = find(si, vim.Datastore, "ds-hdd")
    spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*.vmdk"])
    task = ds.browser.SearchDatastoreSubFolders_Task(DISK_DIR, spec)
    try:
        WaitForTask(task, si=si)
    except vim.fault.FileNotFound:
        return []
    return sorted(f"{r.folderPath}{f.path}" for r in task.info.result or [] for f in r.file or [])


def test_a_user_disk_survives_refresh_and_push_and_goes_with_destroy(twin, si, tmp_path, capsys):
    spec = write_pool_spec(tmp_path, twin, desk_pool(tmp_path))
    assert cli("prepare", "-f", str(spec)) == 0
    assert cli("apply", "-f", str(spec)) == 0
    vms = vms_of(si, "desk")
    disk = f"{DISK_DIR}/desk-001.vmdk"
    assert disk in vms["desk-001"]["disks"]
    assert len(disk_files(si)) == 3
    twin.admin("disk_write", vm="desk-001", disk="Hard disk 2", path="/home/ann/thesis.tex", data="chapter 1")
    first = vms["desk-001"]["moref"]

    assert cli("refresh", "desk", "desk-001", "-f", str(spec)) == 0
    vms = vms_of(si, "desk")
    assert vms["desk-001"]["moref"] != first and disk in vms["desk-001"]["disks"]  # a new VM, the same disk
    assert twin.admin("disk_read", vm="desk-001", disk="Hard disk 2", path="/home/ann/thesis.tex")["data"] == \
        "chapter 1"
    twin.admin("disk_write", vm="desk-001", disk="Hard disk 2", path="/home/ann/thesis.tex", data="chapter 2")
    refreshed = vms["desk-001"]["moref"]

    take_snapshot(si, "src-linux", "patch-07")
    capsys.readouterr()
    assert cli("push-image", "desk", "--snapshot", "patch-07", "-f", str(spec), "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["clones_per_image"] == {"2": 3}
    vms = vms_of(si, "desk")
    assert vms["desk-001"]["moref"] not in (first, refreshed) and disk in vms["desk-001"]["disks"]
    assert twin.admin("disk_read", vm="desk-001", disk="Hard disk 2", path="/home/ann/thesis.tex")["data"] == \
        "chapter 2"
    assert len(disk_files(si)) == 3  # never a second disk for an identity
    with Ledger(tmp_path / "state.sqlite") as ledger:
        rows = ledger.user_disks.all("desk")
        assert [(d.identity, d.state) for d in rows] == [(f"desk-00{i}", "attached") for i in (1, 2, 3)]
        assert ledger.user_disks.of("desk", "desk-001").clone_id == ledger.by_name("desk-001").id

    assert cli("scale", "desk", "2", "-f", str(spec)) == 0  # one leaves the pool for good: its disk too
    assert len(disk_files(si)) == 2
    assert cli("destroy", "desk", "-f", str(spec), "--yes") == 0
    assert disk_files(si) == []
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert {d.state for d in ledger.user_disks.all("desk")} == {"deleted"}


def test_user_disk_keep_leaves_the_file_when_the_clone_leaves(twin, si, tmp_path):
    pool = desk_pool(tmp_path)
    pool["user_disk"]["keep"] = True
    spec = write_pool_spec(tmp_path, twin, pool)
    assert cli("apply", "-f", str(spec)) == 0
    assert cli("destroy", "desk", "-f", str(spec), "--yes") == 0
    assert len(disk_files(si)) == 3
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert {d.state for d in ledger.user_disks.all("desk")} == {"kept"}
