"""The engine on the informer (as `forkscale serve` runs it): exact after a killed session, and acting
on changes made behind its back without reading the inventory again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pyVmomi import vim

from forkscale.commands.session import open_engine
from forkscale.fleet.plan import LIVE
from forkscale.spec import load_spec
from tests.fixtures.twin import connect, find_vm
from tests.spine_helpers import write_spec

POOL = "quickstart"


def tagged(twin: Any) -> dict[str, tuple[str, str, str]]:
    """name -> (moref, forkscale.id, power state) of every VM tagged for the pool, read in the twin."""
    def read(t: Any) -> dict[str, tuple[str, str, str]]:
        return {mo.name: (mo.moid, mo.extra.get("forkscale.id", ""), mo.power_state)
                for mo in list(t.world.objects.values())
                if getattr(mo, "extra", {}).get("forkscale.pool") == POOL and mo.alive}
    return dict(twin.call(read))


def calls(twin: Any, method: str) -> int:
    return int(twin.admin("stats")["methods"].get(method, 0))


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def exact(engine: Any, twin: Any, n: int) -> None:
    """The ledger's live clones are exactly the pool's VMs in vCenter: n of them, one each, powered on."""
    live = {r.name: r for r in engine.ledger.clones(POOL, states=list(LIVE))}
    vms = tagged(twin)
    assert len(live) == n and set(live) == set(vms)
    for name, rec in live.items():
        moref, clone_id, power = vms[name]
        assert (rec.state, rec.vm_moref, str(rec.id), power) == ("ready", moref, clone_id, "poweredOn"), name
    assert len({r.ip for r in live.values()}) == len({r.mac for r in live.values()}) == n


def test_a_session_killed_mid_fanout_resyncs_the_model_and_the_next_converge_is_exact(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    twin.admin("time_scale", value=0.3)  # three waves of 16 on one host: ~2 s, long enough to cut in
    spec = load_spec(write_spec(tmp_path, twin, count=40))

    async def go() -> None:
        async with open_engine(spec, informer=True) as engine:
            informer = engine.driver.informer
            assert informer is not None
            fanout = asyncio.create_task(engine.converge(POOL))
            deadline = time.monotonic() + 60
            while len(await asyncio.to_thread(tagged, twin)) < 8:
                assert time.monotonic() < deadline and not fanout.done()
                await asyncio.sleep(0.05)
            await asyncio.to_thread(twin.admin, "expire_sessions")  # every collector dies, waits included
            await fanout
            await until(lambda: informer.syncs >= 2)
            # and while the controller is idle, one clone is powered off by someone else
            victim = sorted(await asyncio.to_thread(tagged, twin))[0]
            victim_moref = tagged(twin)[victim][0]
            await asyncio.to_thread(twin.admin, "power_off", vm=victim)
            # behind its back: the controller learns it from the model, within change-to-model latency
            await until(lambda: informer.model is not None and informer.model.vms[victim_moref].power == "poweredOff")
            twin.admin("time_scale", value=0.01)
            result = await engine.converge(POOL)
            assert result.ready == 40, result.errors
            exact(engine, twin, 40)
            assert victim_moref not in {moref for moref, _, _ in tagged(twin).values()}  # replaced, not kept off

    asyncio.run(go())


def _behind_the_back(twin: Any, destroy: str, untag: str) -> None:
    """Another client (a pyVmomi session of its own) destroys one clone and strips another's tags."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask

    si = connect(twin)
    try:
        vm = find_vm(si, destroy)
        WaitForTask(vm.PowerOffVM_Task(), si=si)
        WaitForTask(vm.Destroy_Task(), si=si)
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="forkscale.pool", value=""),
                                              vim.option.OptionValue(key="forkscale.id", value="")])
        WaitForTask(find_vm(si, untag).ReconfigVM_Task(spec), si=si)
    finally:
        Disconnect(si)


def test_changes_behind_the_controllers_back_are_acted_on_without_reading_the_inventory_again(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = load_spec(write_spec(tmp_path, twin, count=6))

    async def go() -> None:
        async with open_engine(spec, informer=True) as engine:
            informer = engine.driver.informer
            assert informer is not None
            assert (await engine.converge(POOL)).ready == 6
            destroyed, stripped, switched_off = sorted(tagged(twin))[:3]
            morefs = {name: tagged(twin)[name][0] for name in (destroyed, stripped, switched_off)}
            rows = {name: engine.ledger.by_name(name) for name in morefs}
            await asyncio.to_thread(_behind_the_back, twin, destroyed, stripped)
            await asyncio.to_thread(twin.admin, "power_off", vm=switched_off)
            model = informer.model

            def seen() -> bool:
                vms = informer.model.vms if informer.model is not None else {}
                return (morefs[destroyed] not in vms and vms[morefs[stripped]].pool is None
                        and vms[morefs[switched_off]].power == "poweredOff")

            await until(seen)
            used: list[Any] = []
            read = engine.driver.inventory

            async def inventory() -> Any:
                used.append(await read())
                return used[-1]

            engine.driver.inventory = inventory  # type: ignore[method-assign]
            views, reads = calls(twin, "CreateContainerView"), calls(twin, "RetrievePropertiesEx")
            result = await engine.converge(POOL)
            # no inventory read: every full read goes through a view, and the model was never rebuilt
            assert calls(twin, "CreateContainerView") == views and informer.syncs == 1 and informer.model is model
            # property reads, if any, are of single VMs: a replacement that takes the stripped VM's
            # (still used) name meets DuplicateName and looks up that one VM's tags, once per rung
            assert calls(twin, "RetrievePropertiesEx") - reads <= 3
            # the round decided on the changed VMs ...
            assert used and used[0].vms[morefs[stripped]].pool is None
            assert morefs[destroyed] not in used[0].vms and used[0].vms[morefs[switched_off]].power == "poweredOff"
            # ... and acted: the destroyed clone's row is closed, the switched-off one is replaced
            assert engine.ledger.get(rows[destroyed].id).state == "gone"
            assert engine.ledger.get(rows[switched_off].id).state == "gone"
            assert morefs[switched_off] not in {moref for moref, _, _ in tagged(twin).values()}
            assert result.created >= 2

    asyncio.run(go())
