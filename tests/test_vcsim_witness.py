"""govmomi's vcsim, the independent witness: it starts, speaks to stock pyVmomi over verified TLS,
clones, and goes away cleanly.

These tests exercise the witness itself (tests/fixtures/vcsim.py, tests/vcsim/main.go). Where
forkscale and vcsim disagree today is written up outside the suite (phase 1 of issue 12).
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
from pyVmomi import vim, vmodl

from tests.fixtures.vcsim import VcsimHandle, connect, running_vcsim


def _view(si, kind):
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.DestroyView()


def _find(si, kind, name: str):
    return next(o for o in _view(si, kind) if o.name == name)


def _wait(task, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while task.info.state in ("queued", "running"):
        assert time.monotonic() < deadline, f"task {task._moId} still {task.info.state}"
        time.sleep(0.05)
    if task.info.state == "error":
        raise task.info.error
    return task.info.result


def _prop(si, obj, path: str):
    """One property through RetrievePropertiesEx (vcsim 0.24's `Fetch`, which pyVmomi uses for `vm.snapshot`,
    drops the connection when the property is unset: simulator/property_collector.go Fetch)."""
    PC = vmodl.query.PropertyCollector
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=obj)], propSet=[PC.PropertySpec(type=type(obj), pathSet=[path])]
    )
    res = si.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    return next((p.val for p in res.objects[0].propSet or [] if p.name == path), None)


def _nic(vm):
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))


def _disk_files(vm) -> list[str]:
    return [d.backing.fileName for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def test_vcsim_speaks_to_pyvmomi_over_verified_tls_only(vcsim: VcsimHandle):
    si = connect(vcsim)
    about = si.content.about
    assert (about.apiType, about.apiVersion) == ("VirtualCenter", "6.5")
    assert vcsim.url == f"https://127.0.0.1:{vcsim.port}/sdk"
    from pyVim.connect import Disconnect, SmartConnect

    Disconnect(si)
    with pytest.raises(ssl.SSLCertVerificationError):  # the system store does not know vcsim's certificate
        SmartConnect(
            host="127.0.0.1",
            port=vcsim.port,
            user=vcsim.user,
            pwd=vcsim.password,
            sslContext=ssl.create_default_context(),
        )
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(
            host="127.0.0.1",
            port=vcsim.port,
            user=vcsim.user,
            pwd="wrong",
            sslContext=ssl.create_default_context(cafile=vcsim.ca_file),
        )


def test_default_inventory_has_the_cluster_datastores_port_groups_and_e1000_golden(
    vcsim: VcsimHandle, vcsim_si
):
    cluster = _find(vcsim_si, vim.ClusterComputeResource, "DC0_C0")
    assert sorted(h.name for h in cluster.host) == [f"DC0_C0_H{i}" for i in range(4)]
    datastores = {d.name: d for d in _view(vcsim_si, vim.Datastore)}
    assert sorted(datastores) == ["LocalDS_0", "ds-ssd"]
    for host in cluster.host:  # (vcsim's Datastore.host lists only the last host it was mounted on)
        assert {d.name for d in host.datastore} == {"LocalDS_0", "ds-ssd"}
    networks = {n.name: n for n in _view(vcsim_si, vim.Network)}
    assert not isinstance(networks["VM Network"], vim.dvs.DistributedVirtualPortgroup)
    assert isinstance(networks["DC0_DVPG0"], vim.dvs.DistributedVirtualPortgroup)
    golden = _find(vcsim_si, vim.VirtualMachine, "golden")
    assert golden._moId == vcsim.golden["moref"]
    assert golden.runtime.powerState == "poweredOn"
    nic = _nic(golden)
    assert (type(nic), nic.key, nic.backing.deviceName) == (vim.vm.device.VirtualE1000, 4000, "VM Network")
    assert golden.snapshot.rootSnapshotList[0].name == "base"
    assert golden.snapshot.currentSnapshot._moId == vcsim.golden["snapshot"]


def test_a_linked_clone_made_with_pyvmomi_appears_in_the_inventory(vcsim_si):
    golden = _find(vcsim_si, vim.VirtualMachine, "golden")
    folder = vcsim_si.content.rootFolder.childEntity[0].vmFolder
    ds = _find(vcsim_si, vim.Datastore, "ds-ssd")
    edit = vim.vm.device.VirtualDeviceSpec(
        operation="edit",
        device=vim.vm.device.VirtualE1000(
            key=4000,
            addressType="manual",
            macAddress="00:50:56:00:12:34",
            deviceInfo=vim.Description(label="Network adapter 1", summary="VM Network"),
            backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"),
        ),
    )
    spec = vim.vm.CloneSpec(
        snapshot=golden.snapshot.currentSnapshot,
        powerOn=False,
        template=False,
        location=vim.vm.RelocateSpec(datastore=ds, diskMoveType="createNewChildDiskBacking"),
        config=vim.vm.ConfigSpec(
            extraConfig=[vim.option.OptionValue(key="witness.id", value="7")], deviceChange=[edit]
        ),
    )
    clone = _wait(golden.CloneVM_Task(folder=folder, name="witness-1", spec=spec))

    found = _find(vcsim_si, vim.VirtualMachine, "witness-1")
    assert found._moId == clone._moId and found.parent == folder
    assert [d.name for d in found.datastore] == ["ds-ssd"]
    nic = _nic(found)
    assert (type(nic), nic.addressType, nic.macAddress) == (
        vim.vm.device.VirtualE1000,
        "manual",
        "00:50:56:00:12:34",
    )
    assert {o.key: o.value for o in found.config.extraConfig}.get("witness.id") == "7"


def test_golden_and_extra_vm_flags_shape_the_inventory(vcsim_factory):
    handle = vcsim_factory(
        "-golden",
        "base-vm",
        "-golden-nic",
        "vmxnet3",
        "-golden-power",
        "off",
        "-snapshot",
        "",
        "-vm",
        "p-001:off",
        "-vm",
        "other",
    )
    si = connect(handle)
    vms = {v.name: v for v in _view(si, vim.VirtualMachine)}
    assert sorted(vms) == ["base-vm", "other", "p-001"]
    assert vms["base-vm"].runtime.powerState == "poweredOff"
    assert _prop(si, vms["base-vm"], "snapshot") is None
    assert isinstance(_nic(vms["base-vm"]), vim.vm.device.VirtualVmxnet3)
    assert (vms["p-001"].runtime.powerState, vms["other"].runtime.powerState) == ("poweredOff", "poweredOn")


def test_fill_device_info_and_isolate_flags_let_an_edit_without_device_info_clone_and_spare_the_golden(
    vcsim_factory,
):
    """The two opt-in work-arounds for vcsim 0.24 bugs do what tests/vcsim/main.go says they do."""
    handle = vcsim_factory("-fill-device-info", "-isolate-clone-devices")
    si = connect(handle)
    golden = _find(si, vim.VirtualMachine, "golden")
    before = _disk_files(golden)
    pg = _find(si, vim.dvs.DistributedVirtualPortgroup, "DC0_DVPG0")
    backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
        port=vim.dvs.PortConnection(switchUuid=pg.config.distributedVirtualSwitch.uuid, portgroupKey=pg.key)
    )
    edit = vim.vm.device.VirtualDeviceSpec(
        operation="edit",
        device=vim.vm.device.VirtualE1000(
            key=4000, addressType="manual", macAddress="00:50:56:00:12:35", backing=backing
        ),
    )  # no deviceInfo
    spec = vim.vm.CloneSpec(
        powerOn=False,
        template=False,
        location=vim.vm.RelocateSpec(datastore=_find(si, vim.Datastore, "ds-ssd")),
        config=vim.vm.ConfigSpec(deviceChange=[edit]),
    )
    clone = _wait(golden.CloneVM_Task(folder=golden.parent, name="witness-2", spec=spec))
    assert _nic(clone).macAddress == "00:50:56:00:12:35"
    assert _disk_files(golden) == before == ["[LocalDS_0] golden/golden.vmdk"]
    assert _disk_files(clone) == ["[ds-ssd] witness-2/witness-2.vmdk"]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_fixture_stops_its_vcsim_and_removes_what_it_wrote(vcsim_binary: Path, tmp_path: Path):
    """`running_vcsim` is what the vcsim fixtures stand on: the process must not outlive the test."""
    workdir = tmp_path / "run"
    with running_vcsim(vcsim_binary, workdir) as handle:
        proc = handle.process
        assert proc.poll() is None and _port_open(handle.port)
        written = sorted(p.name for p in workdir.iterdir())
        assert "ca.pem" in written and "datastore-ds-ssd" in written
        assert any(name.startswith("govcsim-DC0-LocalDS_0-") for name in written)
    assert proc.returncode == 0  # stopped by SIGTERM and exited on its own, not killed
    assert not _port_open(handle.port)
    assert sorted(p.name for p in workdir.iterdir()) == ["vcsim.log"]


def test_a_vcsim_that_cannot_start_is_reported_with_its_log(vcsim_binary: Path, tmp_path: Path):
    with pytest.raises(AssertionError, match="did not start") as info:
        with running_vcsim(vcsim_binary, tmp_path / "bad", "-golden-nic", "token-ring"):
            pass
    assert 'unknown NIC class "token-ring"' in str(info.value)
