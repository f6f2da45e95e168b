"""A broken image on the twin: a file written in a golden VM before a snapshot makes the simulated
guest of every clone of that snapshot report `error:<step>:<reason>`, as guest/linux/forkscale-guest
reports a failed step; clones of the golden's earlier snapshot still come up ready."""

from __future__ import annotations

from pyVmomi import vim

from tests.fixtures.twin import find_vm
from tests.twin_helpers import run, wait_for


def clone_of(si, name: str, snapshot) -> object:
    src = find_vm(si, "src-linux")
    spec = vim.vm.CloneSpec(
        location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"), snapshot=snapshot, powerOn=True,
        config=vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="guestinfo.forkscale.id", value=name)]))
    return run(si, src.CloneVM_Task(folder=src.parent, name=name, spec=spec))


def status(vm) -> str | None:
    return next((o.value for o in vm.config.extraConfig if o.key == "guestinfo.forkscale.status"), None)


def test_clones_of_a_snapshot_taken_with_the_error_file_report_error(twin, si):
    golden = find_vm(si, "src-linux")
    base = golden.snapshot.rootSnapshotList[0].snapshot
    twin.admin("disk_write", vm="src-linux", path="/etc/forkscale/guest-error", data="network:no carrier on eth0\n")
    run(si, golden.CreateSnapshot_Task("broken", "an image whose network never comes up", False, False))
    broken = golden.snapshot.currentSnapshot
    bad, good = clone_of(si, "bad-1", broken), clone_of(si, "good-1", base)
    assert wait_for(lambda: status(bad), lambda s: s is not None) == "error:network:no carrier on eth0"
    assert wait_for(lambda: status(good), lambda s: s is not None) == "ready"
    assert twin.admin("disk_read", vm="bad-1", path="/etc/forkscale/guest-error")["data"].startswith("network:")
