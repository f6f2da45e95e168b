"""Issue 2's spine end to end: the CLI against the twin over real SOAP, checked with pyVmomi."""

import json
import time

from tests.spine_helpers import cli, cli_process, pool_vms, write_spec


def count_tagged(twin, pool="quickstart"):
    """Cheap progress probe (in-process), so the kill lands while clones are still being made."""
    return twin.call(lambda t: sum(1 for mo in list(t.world.objects.values())
                                   if getattr(mo, "extra", {}).get("forkscale.pool") == pool))


def test_scale_creates_exactly_n_distinct_clones_and_rerun_changes_nothing(twin, si, tmp_path, capsys, ledger_state):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin, state=ledger_state)
    assert cli("scale", "quickstart", "50", "-f", str(spec)) == 0
    vms = pool_vms(si)
    assert len(vms) == 50
    assert len({v["name"] for v in vms}) == 50
    assert len({v["nic_mac"] for v in vms}) == 50
    assert all(v["nic_mac"] == v["guestinfo.forkscale.mac"] for v in vms)
    assert len({v["guestinfo.forkscale.ip"] for v in vms}) == 50
    assert all(v["guestinfo.forkscale.status"] == "ready" for v in vms)
    clones_before = twin.admin("stats")["methods"]["InstantClone_Task"]
    assert cli("scale", "quickstart", "50", "-f", str(spec)) == 0
    assert twin.admin("stats")["methods"]["InstantClone_Task"] == clones_before
    assert len(pool_vms(si)) == 50
    capsys.readouterr()
    assert cli("status", "-f", str(spec), "-o", "json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["pools"][0]["counts"] == {"ready": 50}
    assert (status["pools"][0]["desired"], status["pools"][0]["desired_set_by"]) == (50, "scale")
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes") == 0
    assert pool_vms(si) == []


def test_scale_down_keeps_the_oldest(twin, si, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin)
    assert cli("scale", "quickstart", "8", "-f", str(spec)) == 0
    assert cli("scale", "quickstart", "3", "-f", str(spec)) == 0
    assert sorted(v["name"] for v in pool_vms(si)) == ["quickstart-001", "quickstart-002", "quickstart-003"]


def test_powered_off_source_falls_back_to_linked_clones_and_says_why(twin, si, tmp_path, capsys):
    twin.admin("power_off", vm="src-linux")
    spec = write_spec(tmp_path, twin)
    assert cli("scale", "quickstart", "3", "-f", str(spec)) == 0
    out = capsys.readouterr().out
    assert "instant->linked:InvalidState" in out
    assert len(pool_vms(si)) == 3
    assert cli("status", "-f", str(spec), "-o", "json") == 0
    status = json.loads(capsys.readouterr().out)["pools"][0]
    assert {c["kind"] for c in status["clones"]} == {"linked"}
    assert any("InvalidState" in reason for reason in status["fallbacks"])


def test_unfrozen_source_with_freeze_none_is_a_spec_error_and_creates_nothing(twin, si, tmp_path, capsys):
    spec = write_spec(tmp_path, twin)
    assert cli("scale", "quickstart", "3", "-f", str(spec)) == 2
    assert "pools[0].freeze" in capsys.readouterr().err
    assert pool_vms(si) == []


def test_unknown_source_and_port_group_exit_2_naming_the_field(twin, si, tmp_path, capsys):
    spec = write_spec(tmp_path, twin, extra_pool={"source": "no-such-vm"})
    assert cli("apply", "-f", str(spec)) == 2
    assert "pools[0].source" in capsys.readouterr().err
    spec = write_spec(tmp_path, twin, extra_pool={"network": {"port_group": "nope", "cidr": "10.0.0.0/24"}})
    assert cli("apply", "-f", str(spec)) == 2
    assert "pools[0].network.port_group" in capsys.readouterr().err
    assert pool_vms(si) == []


def test_kill_9_midway_then_rerun_ends_with_exactly_n_and_no_duplicates(twin, si, tmp_path, ledger_state):
    twin.admin("freeze", vm="src-linux")
    twin.admin("time_scale", value=0.2)
    spec = write_spec(tmp_path, twin, state=ledger_state)
    proc = cli_process("scale", "quickstart", "150", "-f", str(spec))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and count_tagged(twin) < 20:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert 0 < len(pool_vms(si)) < 150, "the kill should land mid-way"
    twin.admin("time_scale", value=0.001)
    assert cli("scale", "quickstart", "150", "-f", str(spec)) == 0
    vms = pool_vms(si)
    assert len(vms) == 150
    for key in ("name", "nic_mac", "guestinfo.forkscale.ip", "forkscale.id"):
        assert len({v[key] for v in vms}) == 150, key


def test_wrong_vcenter_password_is_a_clear_error_not_a_traceback(twin, tmp_path, capsys):
    spec = write_spec(tmp_path, twin)
    (tmp_path / "vc-password").write_text("not-the-password")
    assert cli("status", "-f", str(spec)) == 2
    err = capsys.readouterr().err
    assert "vcenter.password" in err and "refused the login" in err
    assert "Traceback" not in err and "not-the-password" not in err


def _clone_into_forkscale_folder(si, name, tags):
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    from tests.fixtures.twin import find, find_vm

    folder = find(si, vim.Folder, "forkscale")
    spec = vim.vm.InstantCloneSpec(name=name, location=vim.vm.RelocateSpec(folder=folder),
                                   config=[vim.option.OptionValue(key=k, value=v) for k, v in tags.items()])
    task = find_vm(si, "src-linux").InstantClone_Task(spec)
    WaitForTask(task, si=si)
    return task.info.result


def test_tagged_child_reads_one_vms_tags_by_name(twin, si, tmp_path):
    import asyncio

    from forkscale.commands.session import open_driver
    from forkscale.spec import load_spec

    twin.admin("freeze", vm="src-linux")
    vm = _clone_into_forkscale_folder(si, "quickstart-007", {"forkscale.pool": "quickstart", "forkscale.id": "7"})
    spec = load_spec(write_spec(tmp_path, twin))

    async def look():
        async with open_driver(spec.vcenter) as driver:
            folder = (await driver.inventory()).folders["forkscale"]
            return await driver.tagged_child(folder, "quickstart-007"), await driver.tagged_child(folder, "nope")

    assert asyncio.run(look()) == ((vm._moId, "quickstart", "7"), None)


def test_a_foreign_vm_holding_a_clone_name_is_left_alone_and_reported(twin, si, tmp_path, capsys):
    twin.admin("freeze", vm="src-linux")
    foreign = _clone_into_forkscale_folder(si, "quickstart-001", {})
    spec = write_spec(tmp_path, twin, fallback=("instant",))
    assert cli("scale", "quickstart", "2", "-f", str(spec)) == 1
    assert "'quickstart-001' already exists" in capsys.readouterr().err
    assert foreign.name == "quickstart-001" and foreign.runtime.powerState == "poweredOn"
    assert sorted(v["name"] for v in pool_vms(si)) == ["quickstart-002"]
