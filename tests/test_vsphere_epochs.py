"""A re-login is a new epoch for what the driver knows of vCenter. A session that merely expired
keeps its tasks: a clone in flight ends normally. A read that used an object of the old session (a
view) is made again whole. A restarted vCenter forgets its tasks: the wait ends at once with
TaskLost (not at the task timeout), and the clone it was making is found, or made again."""

from __future__ import annotations

import asyncio
import time

from pyVmomi import vim, vmodl

from forkscale.commands.session import open_driver
from forkscale.spec import load_spec
from forkscale.vsphere.model import CloneRequest
from forkscale.vsphere.ports import TaskLost
from forkscale.vsphere.reads import again_if_renewed
from tests.fixtures.twin import RestartableTwin
from tests.spine_helpers import write_spec

PC = vmodl.query.PropertyCollector


def request(inv, name: str) -> CloneRequest:
    return CloneRequest(name=name, folder=inv.folders["forkscale"], datastore=inv.datastores["ds-ssd"][0],
                        host=inv.hosts["esx-01"], resource_pool=None, network=inv.networks["VM Network"],
                        mac="00:50:56:3f:00:01", nic_key=None, extra={"forkscale.pool": "quickstart",
                                                                       "forkscale.id": "1"})


def test_an_expired_session_keeps_the_clone_in_flight(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = load_spec(write_spec(tmp_path, twin))
    twin.admin("slow", op="instant", factor=2000)  # ~2 s: long enough to expire the session under it

    async def go() -> tuple[str, int, int]:
        async with open_driver(spec.vcenter) as driver:
            inv = await driver.inventory()
            src = inv.vm_by_name("src-linux").moref
            clone = asyncio.ensure_future(driver.instant_clone(src, request(inv, "quickstart-001")))
            while not driver.watcher.tasks:  # the task was accepted and is awaited
                await asyncio.sleep(0.01)
            epoch = driver.epoch
            await asyncio.to_thread(twin.admin, "expire_sessions")
            moref = await asyncio.wait_for(clone, 60)
            return moref, driver.epoch - epoch, driver.watcher.lost

    moref, epochs, lost = asyncio.run(go())
    assert moref.startswith("vm-")
    assert epochs == 1 and lost == 0  # a new session, and the task was still vCenter's


def test_a_read_whose_session_changed_under_it_is_made_again(twin, tmp_path):
    spec = load_spec(write_spec(tmp_path, twin))

    async def go() -> tuple[int, int]:
        async with open_driver(spec.vcenter) as driver:
            soap = driver.soap
            attempts = 0

            async def read() -> int:
                nonlocal attempts
                attempts += 1
                c = soap.content
                view = await soap.invoke(c.viewManager, "CreateContainerView", c.rootFolder, [vim.HostSystem], True)
                if attempts == 1:  # the session ends between the view and its read
                    await asyncio.to_thread(twin.admin, "expire_sessions")
                fs = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                    PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
                    propSet=[PC.PropertySpec(type=vim.HostSystem, pathSet=["name"])])
                res = await soap.invoke(c.propertyCollector, "RetrievePropertiesEx", [fs], PC.RetrieveOptions())
                return len(res.objects)

            return await again_if_renewed(soap, read), attempts

    hosts, attempts = asyncio.run(go())
    assert hosts == 4 and attempts == 2


def test_a_restarted_vcenter_ends_the_wait_of_a_task_it_forgot_at_once(tmp_path):
    twin = RestartableTwin(tmp_path / "sim")
    try:
        twin.admin("freeze", vm="src-linux")
        twin.handle.wait_saved()  # the golden frozen before the run is part of the world a restart keeps
        spec = load_spec(write_spec(tmp_path, twin))
        twin.admin("slow", op="instant", factor=20000)  # ~20 s: the restart comes first

        async def go() -> tuple[BaseException | str, float]:
            async with open_driver(spec.vcenter) as driver:
                inv = await driver.inventory()
                src = inv.vm_by_name("src-linux").moref
                clone = asyncio.ensure_future(driver.instant_clone(src, request(inv, "quickstart-001")))
                while not driver.watcher.tasks:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(twin.handle.wait_saved)
                await asyncio.to_thread(twin.restart)
                started = time.monotonic()
                try:
                    outcome: BaseException | str = await asyncio.wait_for(clone, 60)
                except TaskLost as exc:
                    outcome = exc
                return outcome, time.monotonic() - started

        outcome, waited = asyncio.run(go())
        assert isinstance(outcome, TaskLost), outcome
        assert "unknown to vCenter" in str(outcome) and outcome.fault == "TaskLost"
        assert waited < 30  # not the 900 s task timeout
    finally:
        twin.stop()
