"""The informer's model: object updates in, the same Inventory / FleetRead a direct read builds out."""

from __future__ import annotations

from forkscale.vsphere.invmodel import (
    DATASTORE,
    FOLDER,
    HOST,
    LAYOUT_PATH,
    MAC_PATH,
    NETWORK,
    POOL,
    POOL_PATH,
    PORTGROUP,
    STATUS_PATH,
    SWITCH,
    VM,
    Change,
    InventoryModel,
)


def world() -> InventoryModel:
    m = InventoryModel()
    m.apply([
        Change("enter", HOST, "host-1", {"name": "esx-01", "runtime.connectionState": "connected", "parent": "c-1"}),
        Change("enter", HOST, "host-2", {"name": "esx-02", "runtime.connectionState": "disconnected"}),
        Change("enter", DATASTORE, "ds-1", {"name": "ds-ssd", "summary.freeSpace": 100}),
        Change("enter", NETWORK, "net-1", {"name": "VM Network"}),
        Change("enter", PORTGROUP, "pg-1", {"name": "dvpg-vdi", "config.distributedVirtualSwitch": "dvs-1"}),
        Change("enter", SWITCH, "dvs-1", {"uuid": "50 1a"}),
        Change("enter", FOLDER, "f-1", {"name": "forkscale"}),
        Change("enter", FOLDER, "f-2", {"name": "forkscale"}),  # the first of a name wins, as in a direct read
        Change("enter", POOL, "rp-1", {"name": "Resources"}),
        Change("enter", VM, "vm-1", {"name": "a", "runtime.host": "host-1", "runtime.powerState": "poweredOn",
                                     "datastore": ("ds-1",), POOL_PATH: "p", MAC_PATH: "00:50:56:00:00:AA",
                                     LAYOUT_PATH: ({2000: 3}, 4096)}),
    ])
    return m


def test_a_snapshot_holds_what_a_direct_read_would():
    inv = world().inventory(taken_at=1.0)
    assert inv.hosts == {"esx-01": "host-1", "esx-02": "host-2"}
    assert inv.host_connected == {"host-1": True, "host-2": False} and inv.host_parent == {"host-1": "c-1"}
    assert inv.datastores == {"ds-ssd": ("ds-1", 100)}
    assert inv.networks == {"VM Network": ("network", "net-1", None), "dvpg-vdi": ("dvportgroup", "pg-1", "50 1a")}
    assert inv.folders == {"forkscale": "f-1"} and inv.pools == {"Resources": "rp-1"}
    vm = inv.vms["vm-1"]
    assert (vm.name, vm.host, vm.power, vm.pool, vm.datastores) == ("a", "host-1", "poweredOn", "p", ["ds-1"])
    assert inv.macs == {"00:50:56:00:00:aa"}


def test_modify_changes_only_what_it_names_and_leaves_earlier_snapshots_alone():
    m = world()
    before = m.inventory()
    m.apply([Change("modify", VM, "vm-1", {"runtime.powerState": "poweredOff", STATUS_PATH: "ready"}),
             Change("modify", DATASTORE, "ds-1", {"summary.freeSpace": 50})])
    after = m.inventory()
    assert (after.vms["vm-1"].power, after.vms["vm-1"].status, after.vms["vm-1"].pool) == ("poweredOff", "ready", "p")
    assert after.datastores["ds-ssd"] == ("ds-1", 50)
    assert before.vms["vm-1"].power == "poweredOn" and before.datastores["ds-ssd"] == ("ds-1", 100)


def test_an_unset_property_and_a_leave_drop_what_they_carried():
    m = world()
    m.apply([Change("modify", VM, "vm-1", {POOL_PATH: None, MAC_PATH: None})])
    inv = m.inventory()
    assert inv.vms["vm-1"].pool is None and inv.macs == set()
    m.apply([Change("leave", VM, "vm-1"), Change("leave", SWITCH, "dvs-1"), Change("leave", FOLDER, "f-1")])
    inv = m.inventory()
    assert inv.vms == {} and m.fleet().vms == []
    assert "dvpg-vdi" not in inv.networks  # a distributed port group without its switch is unusable
    assert inv.folders == {"forkscale": "f-2"}


def test_a_mac_shared_by_two_vms_stays_taken_until_both_are_gone():
    m = world()
    m.apply([Change("enter", VM, "vm-2", {"name": "b", MAC_PATH: "00:50:56:00:00:aa"})])
    m.apply([Change("leave", VM, "vm-1")])
    assert m.inventory().macs == {"00:50:56:00:00:aa"}
    m.apply([Change("modify", VM, "vm-2", {MAC_PATH: "00:50:56:00:00:bb"})])
    assert m.inventory().macs == {"00:50:56:00:00:bb"}


def test_fleet_rows_carry_the_exporters_fields():
    read = world().fleet(taken_at=2.0)
    (row,) = read.vms
    assert (row.name, row.host, row.pool_tag, row.chains, row.delta_bytes) == ("a", "host-1", "p", {2000: 3}, 4096)
    assert [(h.name, h.connected) for h in read.hosts] == [("esx-01", True), ("esx-02", False)]
    assert read.taken_at == 2.0


def test_a_modify_for_an_object_never_entered_is_taken_as_its_first_report():
    m = InventoryModel()
    m.apply([Change("modify", VM, "vm-9", {"name": "late", "runtime.powerState": "poweredOn"})])
    assert m.inventory().vms["vm-9"].name == "late"
