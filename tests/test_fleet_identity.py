"""Issue 12 on the twin: identity (tags dropped, DuplicateName, timed-out tasks), budgets per pool,
two pools on one golden VM, sources removed then scaled again, and linked/full clones spread over
the hosts that are up.

Through the CLI (or the engine, where a test needs a short task deadline) over real SOAP, checked
with stock pyVmomi and the twin's own task records.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import yaml
from pyVim.task import WaitForTask
from pyVmomi import vim

from forkscale.commands.session import open_engine
from forkscale.ledger import Ledger
from forkscale.spec import load_spec
from forkscale.vsphere.faults import TaskFailed, map_fault
from tests.fixtures.twin import find, find_vm
from tests.spine_helpers import cli, pool_vms, write_spec
from tests.test_prepare import method_count, read_vms

HOSTS = ["esx-01", "esx-02", "esx-03", "esx-04"]


def two_pools(tmp_path: Path, twin, first: dict, second: dict, **common) -> Path:
    """A spec with pools `first` and `second` (overrides of the spine pool), both on src-linux, on one
    port group with address ranges of their own."""
    spec = yaml.safe_load(write_spec(tmp_path, twin, **common).read_text())
    base = spec["pools"][0]
    nets = [{**base["network"], "range": r} for r in ("10.20.0.10-10.20.1.250", "10.20.2.10-10.20.3.250")]
    spec["pools"] = [{**base, "network": nets[0], **first}, {**base, "network": nets[1], **second}]
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def guestops(tmp_path: Path) -> dict:
    pw = tmp_path / "guest-password"
    pw.write_text("vmfork-guest")
    os.chmod(pw, 0o600)
    return {"freeze": "guestops", "guestops": {"user": "root", "password_file": str(pw)}}


def json_out(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    rc = cli(*args, "-o", "json")
    return rc, json.loads(capsys.readouterr().out)


def clone_tasks(twin) -> list[tuple[str, float, float]]:
    """(clone name, queued, completed) of every clone task the twin ran, from its task records."""
    def read(t):
        out = []
        for task in t.world.tasks.recent:
            info = task.info
            if info.descriptionId in ("VirtualMachine.clone", "VirtualMachine.instantClone") and info.completeTime:
                vm = t.world.objects.get(info.result._moId) if info.result is not None else None
                if vm is not None:
                    out.append((vm.name, info.queueTime.timestamp(), info.completeTime.timestamp()))
        return out
    return twin.call(read)


def peak(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    now = top = 0
    for _, step in events:
        now += step
        top = max(top, now)
    return top


def test_destroy_removes_every_clone_even_when_their_tags_were_removed_behind_its_back(twin, si, tmp_path, capsys):
    twin.admin("freeze", vm="src-linux")
    spec = write_spec(tmp_path, twin)
    assert cli("scale", "quickstart", "4", "-f", str(spec)) == 0
    names = sorted(v["name"] for v in pool_vms(si))
    for name in names:  # an operator (or a template tool) drops forkscale's tags
        blank = [vim.option.OptionValue(key=k, value="") for k in ("forkscale.pool", "forkscale.id")]
        WaitForTask(find_vm(si, name).ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=blank)), si=si)
    assert pool_vms(si) == []
    rc, status = json_out(capsys, "status", "-f", str(spec))
    assert [(c["name"], c["in_vcenter"]) for c in status["pools"][0]["clones"]] == [(n, True) for n in names]
    rc, result = json_out(capsys, "destroy", "quickstart", "-f", str(spec), "--yes")
    assert rc == 0 and (result["destroyed"], result["failed"]) == (4, 0), result
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    assert not [vm.name for vm in view.view if vm.name.startswith("quickstart-")]


def test_a_foreign_vm_holding_a_name_stops_that_clone_with_one_error_and_no_fallback(twin, si, tmp_path, capsys):
    twin.admin("freeze", vm="src-linux")
    folder = find(si, vim.Folder, "forkscale")
    task = find_vm(si, "src-linux").InstantClone_Task(vim.vm.InstantCloneSpec(
        name="quickstart-002", location=vim.vm.RelocateSpec(folder=folder)))
    WaitForTask(task, si=si)
    foreign = task.info.result
    spec = write_spec(tmp_path, twin)  # fallback: [instant, linked, full]
    rc, out = json_out(capsys, "scale", "quickstart", "3", "-f", str(spec))
    result = out["pools"][0]
    assert rc == 1 and (result["ready"], result["failed"]) == (2, 1), result
    assert result["fallbacks"] == {}  # a name clash is not a rung problem: no linked, no full attempt
    assert method_count(twin, "CloneVM_Task") == 0
    mentions = [e for e in result["errors"] if "quickstart-002" in e]
    assert len(mentions) == 1 and foreign._moId in mentions[0] and "\n" not in mentions[0]
    assert sorted(v["name"] for v in pool_vms(si)) == ["quickstart-001", "quickstart-003"]
    assert foreign.name == "quickstart-002" and foreign.runtime.powerState == "poweredOn"  # left alone


def test_two_pools_with_different_budgets_are_each_held_to_their_own(twin, si, tmp_path, capsys):
    twin.admin("time_scale", value=0.04)  # a linked clone takes ~0.2 s: long enough to overlap
    twin.admin("freeze", vm="src-linux")  # (not needed for linked clones; keeps this test about budgets)
    budget = {"per_host": 16, "per_datastore": 16, "rate_per_s": 1000}
    spec = two_pools(tmp_path, twin, {"name": "a", "name_pattern": "a-{index:03d}", "budgets": {**budget, "vcenter": 2}},
                     {"name": "b", "name_pattern": "b-{index:03d}", "budgets": {**budget, "vcenter": 6}},
                     count=8, fallback=("linked",), extra_pool={"guest_ready": {"required": False}})
    assert cli("apply", "-f", str(spec)) == 0  # a first, then b, in one controller
    tasks = clone_tasks(twin)
    per_pool = {p: [(q, c) for name, q, c in tasks if name.startswith(f"{p}-")] for p in ("a", "b")}
    assert {p: len(v) for p, v in per_pool.items()} == {"a": 8, "b": 8}
    assert peak(per_pool["a"]) <= 2
    assert 2 < peak(per_pool["b"]) <= 6  # not held to the budget of the pool that happened to run first


def converge(spec: Path, pool: str, count: int, *, task_timeout_s: float) -> dict:
    """One converge in-process, with the vCenter task deadline shortened."""
    async def run():
        async with open_engine(load_spec(spec)) as engine:
            engine.driver.task_timeout_s = task_timeout_s
            return (await engine.converge(pool, count)).as_dict()
    return asyncio.run(run())


def test_a_clone_whose_task_timed_out_keeps_its_ip_until_the_task_ended_and_its_vm_is_gone(twin, si, tmp_path):
    """A timed-out task is still running in vCenter: its clone may land late, with the IP it was given."""
    spec = write_spec(tmp_path, twin, fallback=("linked", "full"), extra_pool={"guest_ready": {"required": False}})
    twin.admin("freeze", vm="src-linux")  # (not needed for linked clones; keeps this test about identity)
    twin.admin("slow", op="linked", factor=500)  # ~2.5 s per linked clone, against a 0.5 s deadline
    result = converge(spec, "quickstart", 1, task_timeout_s=0.5)
    assert (result["ready"], result["failed"]) == (0, 1), result
    # the replica linked clones fork from (made first), then the clone: no retry, no second rung racing it
    assert method_count(twin, "CloneVM_Task") == 2
    with Ledger(tmp_path / "state.sqlite") as ledger:
        late_ip = ledger.clones("quickstart")[0].ip
    twin.admin("slow", op="linked", factor=1)

    assert cli("scale", "quickstart", "1", "-f", str(spec)) == 0  # while the first task still runs
    first = pool_vms(si)
    assert len(first) == 1 and first[0]["guestinfo.forkscale.ip"] != late_ip  # its identity was not handed out
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(pool_vms(si)) < 2:
        time.sleep(0.1)
    ips = [v["guestinfo.forkscale.ip"] for v in pool_vms(si)]
    assert sorted(ips) == sorted([late_ip, first[0]["guestinfo.forkscale.ip"]])  # it landed, late, on its own IP

    assert cli("scale", "quickstart", "1", "-f", str(spec)) == 0  # the task ended: its late clone goes
    assert [v["name"] for v in pool_vms(si)] == [first[0]["name"]]
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert [r.state for r in ledger.clones("quickstart")] == ["gone", "ready"]


def test_two_pools_on_one_golden_vm_both_prepare_and_scale_with_sources_of_their_own(twin, si, tmp_path, capsys):
    """The shipped quickstart.yaml and workers.yaml both clone src-linux."""
    g = guestops(tmp_path)
    spec = two_pools(tmp_path, twin, {"name": "quickstart", **g},
                     {"name": "workers", "name_pattern": "worker-{index:03d}", **g})
    rc, out = json_out(capsys, "prepare", "-f", str(spec))
    assert rc == 0 and [p["ok"] for p in out["pools"]] == [True, True], out
    vms = read_vms(si)
    for pool in ("quickstart", "workers"):
        mine = sorted(n for n, v in vms.items() if v["extra"].get("forkscale.pool") == pool)
        assert mine == [f"src-linux-{pool}-src-{h}-g1" for h in HOSTS]
        assert cli("scale", pool, "4", "-f", str(spec)) == 0
    assert method_count(twin, "InstantClone_Task") == 8
    for pool, prefix in (("quickstart", "quickstart-"), ("workers", "worker-")):
        clones = [v for v in pool_vms(si, pool) if "forkscale.id" in v]
        assert len(clones) == 4 and all(v["name"].startswith(prefix) for v in clones)
    assert cli("destroy", "workers", "-f", str(spec), "--yes", "--sources") == 0
    left = read_vms(si)  # the other pool's sources and clones are untouched
    assert sorted(n for n, v in left.items() if v["extra"].get("forkscale.pool") == "quickstart"
                  and "forkscale.source" in v["extra"]) == [f"src-linux-quickstart-src-{h}-g1" for h in HOSTS]
    assert not [n for n, v in left.items() if v["extra"].get("forkscale.pool") == "workers"]


def test_destroy_sources_then_scale_makes_instant_clones_again(twin, si, tmp_path, capsys):
    spec = write_spec(tmp_path, twin, **{}, extra_pool=guestops(tmp_path), freeze="guestops")
    assert cli("prepare", "-f", str(spec)) == 0
    assert cli("scale", "quickstart", "4", "-f", str(spec)) == 0
    assert cli("destroy", "quickstart", "-f", str(spec), "--yes", "--sources") == 0
    before = method_count(twin, "InstantClone_Task")
    rc, out = json_out(capsys, "scale", "quickstart", "4", "-f", str(spec))
    result = out["pools"][0]
    assert rc == 0 and result["ready"] == 4 and result["fallbacks"] == {}, result
    assert method_count(twin, "InstantClone_Task") == before + 4
    assert method_count(twin, "CloneVM_Task") == 4  # the four sources prepare made, nothing since


def test_linked_clones_spread_over_the_hosts_that_are_up(twin, si, tmp_path, capsys):
    twin.admin("host_down", host="esx-02")
    spec = write_spec(tmp_path, twin, fallback=("linked", "full"), extra_pool={"guest_ready": {"required": False}})
    rc, out = json_out(capsys, "scale", "quickstart", "6", "-f", str(spec))
    assert rc == 0 and out["pools"][0]["ready"] == 6, out
    vms = read_vms(si)
    hosts = Counter(vms[v["name"]]["host"] for v in pool_vms(si))
    assert hosts == {"esx-01": 2, "esx-03": 2, "esx-04": 2}  # not all on the golden's host, none on the down one


def test_a_linked_clone_a_full_host_cannot_take_goes_to_another_host(tmp_path, capsys):
    """The golden's host has room for one more clone: the rest go elsewhere instead of failing there."""
    from forkscale.sim import start_in_thread
    from tests.fixtures.twin import connect

    world = tmp_path / "world.yaml"  # esx-01 runs src-linux and src-win (~7.2 GiB touched) in 10 GiB
    world.write_text(yaml.safe_dump({"hosts": [{"name": h, "memory_gib": 10 if h == "esx-01" else 128,
                                                "cpu_cores": 32} for h in HOSTS]}))
    twin = start_in_thread(world=str(world), time_scale=0.001, state_dir=str(tmp_path / "sim"))
    try:
        si = connect(twin)
        twin.admin("freeze", vm="src-linux")  # (not needed for linked clones; keeps this test about hosts)
        spec = write_spec(tmp_path, twin, fallback=("linked", "full"), extra_pool={"guest_ready": {"required": False}})
        rc, out = json_out(capsys, "scale", "quickstart", "12", "-f", str(spec))
        result = out["pools"][0]
        assert rc == 0 and (result["ready"], result["failed"], result["fallbacks"]) == (12, 0, {}), json.dumps(result)
        vms = read_vms(si)
        hosts = Counter(vms[v["name"]]["host"] for v in pool_vms(si))
        assert hosts["esx-01"] == 1 and sum(hosts.values()) == 12, hosts
        with Ledger(tmp_path / "state.sqlite") as ledger:
            assert all(vms[r.name]["host"] == r.host for r in ledger.clones("quickstart"))
    finally:
        twin.stop()


def test_linked_clones_after_a_failed_instant_preflight_spread_over_the_hosts(twin, si, tmp_path, capsys):
    twin.admin("power_off", vm="src-linux")  # the instant rung fails its pre-flight: InvalidState
    spec = write_spec(tmp_path, twin, extra_pool={"guest_ready": {"required": False}})
    rc, out = json_out(capsys, "scale", "quickstart", "8", "-f", str(spec))
    assert rc == 0 and out["pools"][0]["fallbacks"] == {"instant->linked:InvalidState": 8}, out
    vms = read_vms(si)
    assert Counter(vms[v["name"]]["host"] for v in pool_vms(si)) == {h: 2 for h in HOSTS}


def test_an_instant_clone_that_fails_moves_its_linked_fallback_to_the_least_loaded_host(twin, si, tmp_path, capsys):
    twin.admin("freeze", vm="src-linux")
    twin.admin("fail_next", method="InstantClone_Task", fault="InvalidState", count=8)  # each instant clone fails
    spec = write_spec(tmp_path, twin, extra_pool={"guest_ready": {"required": False}})
    rc, out = json_out(capsys, "scale", "quickstart", "8", "-f", str(spec))
    assert rc == 0 and out["pools"][0]["fallbacks"] == {"instant->linked:InvalidState": 8}, out
    vms = read_vms(si)
    assert Counter(vms[v["name"]]["host"] for v in pool_vms(si)) == {h: 2 for h in HOSTS}  # not all on esx-01
    with Ledger(tmp_path / "state.sqlite") as ledger:
        assert all(vms[r.name]["host"] == r.host for r in ledger.clones("quickstart"))  # the ledger knows where


def test_a_fault_is_one_line_with_its_type_message_and_object():
    """pyVmomi prints a fault without `msg` as a 9-line dump; forkscale's errors are one line each."""
    from pyVmomi import vmodl

    fault = vmodl.fault.MethodNotFound(receiver=vim.VirtualMachine("vm-58"), method="InstantClone")
    err = str(map_fault(fault, "instant clone p-001 of vm-58"))
    assert "\n" not in err
    assert err.startswith("instant clone p-001 of vm-58: MethodNotFound")
    assert "receiver vm-58" in err and "method InstantClone" in err
    dup = vim.fault.DuplicateName(msg="The name 'p-003'\n already exists.", name="p-003", object=vim.VirtualMachine("vm-9"))
    err = str(map_fault(TaskFailed(dup), "linked clone p-003 of vm-58"))
    assert err == "linked clone p-003 of vm-58: DuplicateName: The name 'p-003' already exists. [object vm-9]"
