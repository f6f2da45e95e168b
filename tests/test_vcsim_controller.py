"""forkscale end to end against govmomi's vcsim, a vCenter stand-in nobody here wrote (issue 12).

Everything runs through the CLI against vcsim over verified TLS, and is checked against what vcsim's
own inventory holds afterwards, read with stock pyVmomi.

What vcsim 0.24 does differently from our twin (and how forkscale copes, the way it would have to
with a real vCenter that behaved so — never by recognising the simulator):

* keyed property paths (`config.extraConfig["forkscale.pool"]`) are refused with `InvalidProperty`
  in `missingSet` (and silently ignored by `WaitForUpdatesEx`): forkscale reads the VMs concerned
  again with the whole `config.extraConfig` and, once the refusal is proven, asks for that
  directly; guest status is then polled rather than watched. The twin answers keyed paths.
* `CloneVM_Task` ignores `spec.powerOn` (clones come up powered off), `location.host` (every clone
  lands on the source's host), `diskMoveType` and `spec.snapshot` (a linked clone gets a flat disk
  of its own, no parent): forkscale powers on a clone that came up off before calling it ready; the
  tests assert the disk is the clone's own file on the datastore asked for, not a delta. The twin
  honours all four (a delta on the source's disk, on the host asked for, powered on).
* no `DuplicateName` for VMs (two VMs may share a name); the twin raises it.
* a clone does not inherit the source's extraConfig (the twin's clones do, as vCenter's do), and
  extraConfig writes append (a key set twice is listed twice; an empty value is a third entry):
  forkscale reads extraConfig as vCenter defines it (last value wins, an empty value removes).
* a device edit without `deviceInfo` or a standard backing without `deviceName` crashes vcsim
  (connection dropped); forkscale sends both, as the schema asks (`deviceName` is required). The
  twin accepts either.
* an edit of a NIC with another class replaces the device (E1000 → vmxnet3); the twin keeps its own
  class. forkscale edits a NIC with its own class, key, slot and label, read from the source.
* API 6.5 (no `InstantClone_Task`, no `CheckInstantClone_Task`; `-api-version 6.7` makes them
  `MethodNotFound` from the server); the twin speaks 8.0.3 and has both. forkscale skips the
  instant rung once, with one reason, on API < 6.7 or when the pre-flight says MethodNotFound.
* clone tasks are named `VirtualMachine.cloneVm` (vCenter and the twin: `VirtualMachine.clone`) and
  run inside the request; `-delay` sleeps before a call is dispatched, so a delayed clone is no
  task yet — a killed run's clones can land while its successor runs (see the crash test).
* `-isolate-clone-devices` works around vcsim sharing the golden's device objects with its clones
  (which renames the golden's disk and aliases MACs); it changes nothing forkscale sends.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter

import pytest

from tests.fixtures.vcsim import connect
from tests.spine_helpers import cli, cli_process
from tests.vcsim_helpers import clones, inventory, vcsim_spec

GOLDEN_DISK = "[LocalDS_0] golden/golden.vmdk"
DELAY_S = 1.5


def run_json(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    rc = cli(*args, "-o", "json")
    out = capsys.readouterr().out
    return rc, json.loads(out)


def ledger_rows(spec) -> list[sqlite3.Row]:
    conn = sqlite3.connect(spec.parent / "state.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT * FROM clones ORDER BY id"))
    finally:
        conn.close()


def assert_clone_is_right(vm: dict, row: sqlite3.Row) -> None:
    """vcsim's view of one clone matches what forkscale recorded and asked for."""
    assert vm["power"] == "poweredOn", vm
    assert vm["nics"] == [("vim.vm.device.VirtualE1000", 4000, row["mac"], "VM Network")], vm  # class kept
    # its own disk, on the datastore asked; like vCenter, vcsim names the folder "NAME (1)" when a
    # folder of that name is still there (a late clone of a killed run, removed since)
    (disk,) = vm["disks"]
    folder, _, file = disk.removeprefix("[ds-ssd] ").partition("/")
    assert disk.startswith("[ds-ssd] ") and file == f"{row['name']}.vmdk", vm
    assert folder == row["name"] or re.fullmatch(re.escape(row["name"]) + r" \(\d+\)", folder), vm
    assert vm["extra"]["guestinfo.forkscale.mac"] == row["mac"]
    assert vm["extra"]["guestinfo.forkscale.ip"] == row["ip"]
    assert vm["moref"] == row["vm_moref"]


def test_scale_to_10_status_scale_to_3_and_destroy_leave_vcsim_as_it_was(vcsim_factory, tmp_path, capsys):
    """The done-when of issue 12: an E1000 golden, fallback [linked, full], freeze none on a running
    golden (no instant rung, so nothing needs to be frozen), guest readiness not required."""
    handle = vcsim_factory("-isolate-clone-devices")
    si = connect(handle)
    golden_before = inventory(si)["golden"]
    spec = vcsim_spec(tmp_path, handle)

    rc, out = run_json(capsys, "scale", "p", "10", "-f", str(spec))
    result = out["pools"][0]
    assert rc == 0, result
    assert (result["ready"], result["created"], result["failed"], result["fallbacks"]) == (10, 10, 0, {})
    rows = {r["name"]: r for r in ledger_rows(spec)}
    made = clones(inventory(si))
    assert sorted(v["name"] for v in made) == [f"p-{i:03d}" for i in range(1, 11)]
    for vm in made:
        assert_clone_is_right(vm, rows[vm["name"]])
    assert len({v["nics"][0][2] for v in made}) == 10

    rc, status = run_json(capsys, "status", "-f", str(spec))
    shown = status["pools"][0]["clones"]
    assert rc == 0 and status["pools"][0]["counts"] == {"ready": 10}
    assert [(c["name"], c["in_vcenter"], c["power"]) for c in shown] == [
        (f"p-{i:03d}", True, "poweredOn") for i in range(1, 11)]
    assert {c["vm"] for c in shown} == {v["moref"] for v in made}

    rc, out = run_json(capsys, "scale", "p", "10", "-f", str(spec))  # idempotent: nothing made, nothing lost
    assert rc == 0 and (out["pools"][0]["created"], out["pools"][0]["destroyed"]) == (0, 0)
    assert len(clones(inventory(si))) == 10

    rc, out = run_json(capsys, "scale", "p", "3", "-f", str(spec))
    assert rc == 0 and (out["pools"][0]["ready"], out["pools"][0]["destroyed"]) == (3, 7)
    assert sorted(v["name"] for v in clones(inventory(si))) == ["p-001", "p-002", "p-003"]

    capsys.readouterr()
    assert cli("destroy", "p", "-f", str(spec), "--yes") == 0
    assert "p: destroyed 3, failed 0" in capsys.readouterr().out
    after = inventory(si)
    assert sorted(after) == ["golden"]  # nothing left behind
    assert after["golden"] == golden_before  # the golden VM untouched: E1000, its MAC, its disk
    assert golden_before[0]["disks"] == [GOLDEN_DISK]


#: Flags that make vcsim take forkscale's clones even before its fixes: a powered-off golden (so
#: `freeze: none` passes on main too), and vcsim's own deviceInfo crash worked around.
LENIENT = ("-golden-power", "off", "-fill-device-info", "-isolate-clone-devices")
DVPG = {"port_group": "DC0_DVPG0", "cidr": "10.20.0.0/22"}


@pytest.mark.parametrize(("nic", "key", "cls"), [("e1000", "4000", "VirtualE1000"),
                                                  ("e1000e", "4001", "VirtualE1000e")])
def test_the_nic_edit_keeps_the_source_nics_class_and_key(vcsim_factory, tmp_path, capsys, nic, key, cls):
    """An E1000 stays an E1000, and an E1000e with key 4001 an E1000e with key 4001 (vcsim replaces
    the device with whatever class an edit carries; forkscale sent a VirtualVmxnet3 with key 4000)."""
    handle = vcsim_factory(*LENIENT, "-golden-nic", nic, "-golden-nic-key", key)
    spec = vcsim_spec(tmp_path, handle, network=DVPG)
    rc, out = run_json(capsys, "scale", "p", "2", "-f", str(spec))
    assert rc == 0 and out["pools"][0]["ready"] == 2, out
    macs = {r["name"]: r["mac"] for r in ledger_rows(spec)}
    made = clones(inventory(connect(handle)))
    assert sorted((v["name"], v["nics"][0][:3]) for v in made) == [
        (n, (f"vim.vm.device.{cls}", int(key), macs[n])) for n in ("p-001", "p-002")]


def test_a_standard_port_group_backing_carries_its_device_name(vcsim_factory, tmp_path, capsys):
    """`deviceName` is required in a standard backing: without it vcsim crashes on the edit (the
    connection drops) and forkscale retried the clone into duplicates."""
    handle = vcsim_factory(*LENIENT)
    spec = vcsim_spec(tmp_path, handle)
    rc, out = run_json(capsys, "scale", "p", "2", "-f", str(spec))
    assert rc == 0 and (out["pools"][0]["ready"], out["pools"][0]["failed"]) == (2, 0), out
    made = clones(inventory(connect(handle)))
    assert sorted((v["name"], v["nics"][0][3]) for v in made) == [("p-001", "VM Network"), ("p-002", "VM Network")]
    assert "panic" not in handle.log.read_text()


def test_a_clone_that_came_up_powered_off_is_powered_on_before_it_counts_as_ready(vcsim_factory, tmp_path, capsys):
    """vcsim ignores `powerOn` in a clone spec (a vCenter may also leave a clone off)."""
    handle = vcsim_factory(*LENIENT)
    spec = vcsim_spec(tmp_path, handle, network=DVPG)
    rc, out = run_json(capsys, "scale", "p", "3", "-f", str(spec))
    assert rc == 0 and out["pools"][0]["ready"] == 3, out
    assert [v["power"] for v in clones(inventory(connect(handle)))] == ["poweredOn"] * 3
    rc, status = run_json(capsys, "status", "-f", str(spec))
    assert [c["power"] for c in status["pools"][0]["clones"]] == ["poweredOn"] * 3


def test_status_rerun_and_destroy_find_every_clone_when_keyed_paths_are_refused(vcsim_factory, tmp_path, capsys):
    """vcsim answers `config.extraConfig["forkscale.pool"]` with InvalidProperty: that is not "untagged"."""
    handle = vcsim_factory(*LENIENT)
    si = connect(handle)
    spec = vcsim_spec(tmp_path, handle, network=DVPG)
    assert run_json(capsys, "scale", "p", "3", "-f", str(spec))[0] == 0
    rc, status = run_json(capsys, "status", "-f", str(spec))
    assert [c["in_vcenter"] for c in status["pools"][0]["clones"]] == [True] * 3
    rc, out = run_json(capsys, "scale", "p", "3", "-f", str(spec))
    assert rc == 0 and (out["pools"][0]["created"], out["pools"][0]["ready"]) == (0, 3), out
    assert len(clones(inventory(si))) == 3  # not a second fleet next to the first
    capsys.readouterr()
    assert cli("destroy", "p", "-f", str(spec), "--yes") == 0
    assert "p: destroyed 3, failed 0" in capsys.readouterr().out
    assert sorted(inventory(si)) == ["golden"]


def test_freeze_none_with_an_instant_rung_on_a_running_golden_is_exit_2_and_creates_nothing(
        vcsim_factory, tmp_path, capsys):
    handle = vcsim_factory("-api-version", "6.7")
    spec = vcsim_spec(tmp_path, handle, fallback=["instant", "linked"])
    capsys.readouterr()
    assert cli("scale", "p", "2", "-f", str(spec)) == 2
    assert "pools[0].freeze" in capsys.readouterr().err
    si = connect(handle)
    folders = si.content.rootFolder.childEntity[0].vmFolder.childEntity
    assert [f.name for f in folders if f.name == "forkscale"] == []  # not even the folder
    assert sorted(inventory(si)) == ["golden"]
    assert ledger_rows(spec) == []
    conn = sqlite3.connect(spec.parent / "state.sqlite")
    try:
        assert list(conn.execute("SELECT * FROM pools")) == []  # no desired count recorded either
    finally:
        conn.close()


def test_the_instant_rung_is_skipped_once_on_api_6_5_and_after_method_not_found(vcsim_factory, tmp_path, capsys):
    for flags, why in ((("-isolate-clone-devices",), "API 6.5"),
                       (("-isolate-clone-devices", "-api-version", "6.7"), "MethodNotFound")):
        handle = vcsim_factory(*flags)
        run_dir = tmp_path / flags[-1]
        run_dir.mkdir()
        spec = vcsim_spec(run_dir, handle, freeze="running",
                          network={"port_group": "VM Network", "cidr": "10.20.0.0/22", "disconnect": True},
                          fallback=["instant", "linked"])
        rc, out = run_json(capsys, "scale", "p", "4", "-f", str(spec))
        result = out["pools"][0]
        assert rc == 0 and result["ready"] == 4, result
        assert result["fallbacks"] == {}  # not one fallback per clone
        assert list(result["skipped_rungs"]) == ["instant"] and why in result["skipped_rungs"]["instant"]
        assert "\n" not in result["skipped_rungs"]["instant"]
        assert {r["kind"] for r in ledger_rows(spec)} == {"linked"}
        assert "does not implement: InstantClone_Task" not in handle.log.read_text()


def test_kill_9_mid_scale_then_rerun_ends_with_exactly_10_on_vcsim(vcsim_factory, tmp_path, capsys):
    """vcsim has no DuplicateName and shows a delayed clone as no task at all, so a killed run's
    clones can land while the next run works: that run must find them by their tags (read whole on
    vcsim) and remove the ones the ledger rolled back, never counting a VM twice."""
    handle = vcsim_factory("-isolate-clone-devices", "-delay", f"CloneVM_Task={int(DELAY_S * 1000)}")
    si = connect(handle)
    spec = vcsim_spec(tmp_path, handle, budgets={"vcenter": 4, "per_host": 4, "per_datastore": 4,
                                                 "rate_per_s": 1000})
    proc = cli_process("scale", "p", "10", "-f", str(spec))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(clones(inventory(si))) < 4:
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    killed_at = time.monotonic()
    assert 0 < len(clones(inventory(si))) < 10, "the kill should land mid-way"
    capsys.readouterr()
    assert cli("scale", "p", "10", "-f", str(spec)) == 0
    # vcsim serves each of the dead run's calls DELAY_S after it came in, all before the kill
    while time.monotonic() < killed_at + DELAY_S + 1.0:
        time.sleep(0.1)
    assert cli("scale", "p", "10", "-f", str(spec)) == 0  # its late clones are orphans now: removed
    made = clones(inventory(si))
    assert Counter(v["name"] for v in made) == {f"p-{i:03d}": 1 for i in range(1, 11)}
    rows = [r for r in ledger_rows(spec) if r["state"] != "gone"]
    assert sorted(r["vm_moref"] for r in rows) == sorted(v["moref"] for v in made)
    by_name = {r["name"]: r for r in rows}
    for vm in made:
        assert_clone_is_right(vm, by_name[vm["name"]])
    capsys.readouterr()
    assert cli("destroy", "p", "-f", str(spec), "--yes") == 0
    assert sorted(inventory(si)) == ["golden"]


def test_destroy_removes_clones_whose_tags_were_dropped_on_vcsim(vcsim_factory, tmp_path, capsys):
    """The tags go (an empty value removes an extraConfig key; vcsim appends it, forkscale reads it as
    vCenter defines it), the clones stay ours: found by the moref and instance UUID the ledger holds."""
    from pyVmomi import vim

    handle = vcsim_factory("-isolate-clone-devices")
    si = connect(handle)
    spec = vcsim_spec(tmp_path, handle)
    assert run_json(capsys, "scale", "p", "3", "-f", str(spec))[0] == 0
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    blank = [vim.option.OptionValue(key=k, value="") for k in ("forkscale.pool", "forkscale.id")]
    for vm in [v for v in view.view if v.name.startswith("p-")]:
        task = vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=blank))
        while task.info.state in ("queued", "running"):
            time.sleep(0.05)
    assert clones(inventory(si)) == []
    rc, status = run_json(capsys, "status", "-f", str(spec))
    assert [(c["in_vcenter"], c["power"]) for c in status["pools"][0]["clones"]] == [(True, "poweredOn")] * 3
    rc, result = run_json(capsys, "destroy", "p", "-f", str(spec), "--yes")
    assert rc == 0 and (result["destroyed"], result["failed"]) == (3, 0), result
    assert sorted(inventory(si)) == ["golden"]


def test_prepare_on_a_vcenter_without_instant_clones_is_exit_2_and_makes_nothing(vcsim_factory, tmp_path, capsys):
    handle = vcsim_factory()
    pw = tmp_path / "guest-password"
    pw.write_text("x")
    pw.chmod(0o600)
    spec = vcsim_spec(tmp_path, handle, freeze="guestops", fallback=["instant", "linked"],
                      guestops={"user": "root", "password_file": str(pw)})
    capsys.readouterr()
    assert cli("prepare", "-f", str(spec)) == 2
    err = capsys.readouterr().err
    assert "pools[0].fallback" in err and "API 6.5" in err
    assert sorted(inventory(connect(handle))) == ["golden"]


def test_a_clone_call_whose_answer_was_lost_is_never_sent_twice(vcsim_factory, tmp_path, capsys):
    """vcsim has no DuplicateName: a clone call resent after a dropped connection makes a second VM.
    forkscale adopts the clone if it is there, else quarantines its identity instead of resending."""
    import asyncio

    from forkscale.commands.session import open_engine
    from forkscale.spec import load_spec

    handle = vcsim_factory(*LENIENT, "-delay", f"CloneVM_Task={int(DELAY_S * 1000)}")
    si = connect(handle)
    spec = vcsim_spec(tmp_path, handle, network=DVPG)

    async def scale_with_a_short_http_deadline() -> dict:
        async with open_engine(load_spec(spec)) as engine:
            engine.driver.soap._timeout = DELAY_S / 3  # every clone call times out before vcsim answers
            return (await engine.converge("p", 2)).as_dict()

    result = asyncio.run(scale_with_a_short_http_deadline())
    assert (result["ready"], result["failed"], result["fallbacks"]) == (0, 2, {}), result
    assert all("quarantined" in e and "\n" not in e for e in result["errors"]), result["errors"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(clones(inventory(si))) < 2:
        time.sleep(0.1)
    assert sorted(v["name"] for v in clones(inventory(si))) == ["p-001", "p-002"]  # each sent once, landed once
    assert cli("scale", "p", "2", "-f", str(spec)) == 0  # the quarantined ones go, two fresh ones come
    made = clones(inventory(si))
    assert Counter(v["name"] for v in made) == {"p-001": 1, "p-002": 1}
    rows = [r for r in ledger_rows(spec) if r["state"] != "gone"]
    assert sorted(r["vm_moref"] for r in rows) == sorted(v["moref"] for v in made)


def test_guest_readiness_is_polled_when_the_status_path_cannot_be_watched(vcsim_factory, tmp_path, capsys):
    """vcsim's WaitForUpdatesEx ignores keyed paths, so the watcher never hears a guest's status:
    forkscale polls it instead. Here the test plays the guest, writing the status as vmware-rpctool would."""
    from pyVmomi import vim

    handle = vcsim_factory("-isolate-clone-devices")
    si = connect(handle)
    spec = vcsim_spec(tmp_path, handle, guest_ready={"timeout_s": 60, "required": True})
    proc = cli_process("scale", "p", "2", "-f", str(spec), "-o", "json")
    answered: set[str] = set()
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
        for vm in view.view:
            if vm.name.startswith("p-") and vm._moId not in answered:
                ready = [vim.option.OptionValue(key="guestinfo.forkscale.status", value="ready")]
                vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=ready))
                answered.add(vm._moId)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["pools"][0]["ready"] == 2
    assert len(answered) == 2


def test_a_folder_that_exists_is_found_by_name_not_taken_from_the_fault(vcsim_factory, tmp_path):
    """CreateFolder twice: vcsim's DuplicateName names the parent folder as `object`, not the folder."""
    import asyncio

    from forkscale.commands.session import open_driver
    from forkscale.spec import load_spec

    handle = vcsim_factory()
    spec = load_spec(vcsim_spec(tmp_path, handle))

    async def twice() -> tuple[str, str, str]:
        async with open_driver(spec.vcenter) as driver:
            parent = await driver.vm_folder()
            return parent, await driver.create_folder(parent, "forkscale"), await driver.create_folder(parent, "forkscale")

    parent, first, second = asyncio.run(twice())
    assert first == second != parent
