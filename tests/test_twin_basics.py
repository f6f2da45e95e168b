"""The twin through stock pyVmomi: connect, browse, clone, and the physics users rely on."""

import ssl
from urllib.parse import urlsplit

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.fixtures.twin import connect, find_vm


def chain_depth(vm):
    return [len(d.chain) for d in vm.layoutEx.disk]


def test_smartconnect_verifies_tls_and_reports_vcenter_8(si):
    about = si.content.about
    assert about.apiType == "VirtualCenter"
    assert about.apiVersion.startswith("8.0")


def test_tls_fails_without_the_twin_ca(twin):
    from pyVim.connect import SmartConnect

    parts = urlsplit(twin.url)
    with pytest.raises(ssl.SSLError):
        SmartConnect(host=parts.hostname, port=parts.port, user=twin.user, pwd=twin.password,
                     sslContext=ssl.create_default_context())


def test_wrong_password_is_invalid_login(twin):
    twin.password = "not-the-password"
    with pytest.raises(vim.fault.InvalidLogin):
        connect(twin)


def test_default_world_inventory(si):
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.HostSystem], True)
    assert sorted(h.name for h in view.view) == ["esx-01", "esx-02", "esx-03", "esx-04"]
    assert all(h.hardware.memorySize == 128 * 1024**3 for h in view.view)
    src = find_vm(si, "src-linux")
    assert src.runtime.powerState == "poweredOn"
    assert src.guest.toolsRunningStatus == "guestToolsRunning"
    assert src.snapshot.rootSnapshotList[0].name == "base"
    assert src.runtime.host.name == "esx-01"


def test_instant_clone_of_running_source_adds_a_delta_to_source_and_clone(si):
    src = find_vm(si, "src-linux")
    before = chain_depth(src)
    spec = vim.vm.InstantCloneSpec(name="live-1", location=vim.vm.RelocateSpec(),
                                   config=[vim.option.OptionValue(key="guestinfo.forkscale.ip", value="10.0.0.5")])
    task = src.InstantClone_Task(spec)
    WaitForTask(task, si=si)
    clone = task.info.result
    assert clone.name == "live-1"
    assert clone.runtime.host == src.runtime.host
    assert clone.runtime.powerState == "poweredOn"
    assert chain_depth(src) == [before[0] + 1]
    assert chain_depth(clone) == [before[0] + 1]
    extra = {o.key: o.value for o in clone.config.extraConfig}
    assert extra["guestinfo.forkscale.ip"] == "10.0.0.5"
    # the clone shares the parent's pages at fork (P-Share)
    assert clone.summary.quickStats.sharedMemory > 0


def test_instant_clone_of_powered_off_source_fails_invalid_state(si):
    src = find_vm(si, "src-linux")
    WaitForTask(src.PowerOffVM_Task(), si=si)
    task = src.InstantClone_Task(vim.vm.InstantCloneSpec(name="x", location=vim.vm.RelocateSpec()))
    with pytest.raises(vim.fault.InvalidState):
        WaitForTask(task, si=si)


def test_unknown_method_is_method_not_found_and_twin_keeps_serving(si):
    src = find_vm(si, "src-linux")
    with pytest.raises(vmodl.fault.MethodNotFound):
        src.UpgradeTools_Task()
    assert src.name == "src-linux"
