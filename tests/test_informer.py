"""The inventory informer against the twin over real SOAP: one full read, then deltas only.

Each test compares the model with what a direct, batched read of vCenter returns at the same
moment, and counts the twin's CreateContainerView calls (every inventory read makes a view) to
show the model was not re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from forkscale.vsphere import reads
from forkscale.vsphere.driver import Driver
from forkscale.vsphere.informer import NEVER, Informer
from forkscale.vsphere.model import CloneRequest, Inventory
from forkscale.vsphere.transport import Soap


@contextlib.asynccontextmanager
async def informed(twin: Any, **options: Any) -> AsyncIterator[tuple[Driver, Informer]]:
    soap = Soap(twin.url, user=twin.user, password=lambda: twin.password, ca_file=twin.ca_file)
    informer = Informer(soap, **options)
    driver = Driver(soap, informer=informer)
    await driver.open()
    try:
        await informer.barrier(NEVER, timeout=30)
        yield driver, informer
    finally:
        await driver.close()


def full_reads(twin: Any) -> int:
    """Inventory reads: each goes through a ContainerView (the driver's one-VM reads do not)."""
    return int(twin.admin("stats")["methods"].get("CreateContainerView", 0))


def comparable(inv: Inventory) -> dict[str, Any]:
    out = dataclasses.asdict(inv)
    out.pop("taken_at")
    out["datastores"] = sorted(out["datastores"])  # free space drifts in the twin between two reads
    return out


async def direct(driver: Driver) -> Inventory:
    return await reads.read_inventory(driver.soap)


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the model did not show the change in time"
        await asyncio.sleep(0.01)


def test_the_model_is_what_a_direct_read_returns(twin):
    async def go() -> None:
        async with informed(twin) as (driver, _):
            inv = await driver.inventory()
            assert "dvpg-vdi" in inv.networks and inv.networks["dvpg-vdi"][0] == "dvportgroup"
            assert {"src-linux", "src-win"} <= {v.name for v in inv.vms.values()}
            assert comparable(inv) == comparable(await direct(driver))

    asyncio.run(go())


def request(inv: Inventory, name: str, mac: str) -> CloneRequest:
    return CloneRequest(name=name, folder=inv.folders["forkscale"], datastore=inv.datastores["ds-ssd"][0],
                        host=inv.hosts["esx-01"], resource_pool=None, network=inv.networks["VM Network"], mac=mac,
                        nic_key=4000, extra={"forkscale.pool": "p", "forkscale.id": "1",
                                             "guestinfo.forkscale.mac": mac})


def test_a_clone_just_made_or_destroyed_is_in_the_next_answer_without_a_read(twin):
    twin.admin("freeze", vm="src-linux")

    async def go() -> None:
        async with informed(twin) as (driver, _):
            inv = await driver.inventory()
            src = inv.vm_by_name("src-linux")
            assert src is not None
            before = full_reads(twin)
            moref = await driver.instant_clone(src.moref, request(inv, "ryw-1", "00:50:56:00:01:01"))
            after = await driver.inventory()  # read-your-writes: no wait, no poll
            assert after.vms[moref].name == "ryw-1" and after.vms[moref].pool == "p"
            assert "00:50:56:00:01:01" in after.macs
            await driver.destroy(moref)
            assert moref not in (await driver.inventory()).vms
            assert full_reads(twin) == before
            assert comparable(await driver.inventory()) == comparable(await direct(driver))

    asyncio.run(go())


def test_a_change_behind_the_controllers_back_reaches_the_model_without_a_read(twin):
    async def go() -> None:
        async with informed(twin) as (driver, informer):
            inv = await driver.inventory()
            win = inv.vm_by_name("src-win")
            assert win is not None and win.power == "poweredOn"
            before = full_reads(twin)
            await asyncio.to_thread(twin.admin, "power_off", vm="src-win")
            assert informer.model is not None
            await until(lambda: informer.model is not None and informer.model.vms[win.moref].power == "poweredOff")
            assert full_reads(twin) == before
            assert informer.syncs == 1

    asyncio.run(go())


def test_an_expired_session_mid_stream_resyncs_and_misses_nothing(twin):
    async def go() -> None:
        async with informed(twin) as (driver, informer):
            win = (await driver.inventory()).vm_by_name("src-win")
            assert win is not None
            await asyncio.to_thread(twin.admin, "expire_sessions")  # the collector and its wait die with it
            await asyncio.to_thread(twin.admin, "power_off", vm="src-win")  # while nobody is listening
            await until(lambda: informer.syncs >= 2)
            assert informer.errors >= 1
            inv = await driver.inventory()
            assert inv.vms[win.moref].power == "poweredOff"
            assert comparable(inv) == comparable(await direct(driver))

    asyncio.run(go())


def test_truncated_update_sets_are_resumed_page_by_page(twin):
    twin.admin("freeze", vm="src-linux")

    async def go() -> None:
        async with informed(twin, page=3) as (driver, informer):  # ~25 objects: 9 pages to the first full read
            inv = await driver.inventory()
            assert comparable(inv) == comparable(await direct(driver))
            src = inv.vm_by_name("src-linux")
            assert src is not None
            made = [await driver.instant_clone(src.moref, request(inv, f"page-{i}", f"00:50:56:00:02:{i:02x}"))
                    for i in range(5)]
            after = await driver.inventory()
            assert {after.vms[m].name for m in made} == {f"page-{i}" for i in range(5)}
            assert comparable(after) == comparable(await direct(driver))
            assert informer.syncs == 1

    asyncio.run(go())


def test_the_safety_net_resync_swaps_in_an_equal_model(twin):
    async def go() -> None:
        async with informed(twin, resync_s=0.2) as (driver, informer):
            await until(lambda: informer.syncs >= 3)
            assert comparable(await driver.inventory()) == comparable(await direct(driver))
            assert informer.errors == 0

    asyncio.run(go())


def test_a_refused_collector_version_starts_over(twin):
    async def go() -> None:
        async with informed(twin) as (driver, informer):
            real = informer._wait
            armed = [True]

            async def wait(version: str, max_wait: int) -> Any:  # as after a vCenter restart: version unknown
                if version and armed[0]:
                    armed[0] = False
                    version = "not-a-version"
                return await real(version, max_wait)

            informer._wait = wait  # type: ignore[method-assign]
            await asyncio.to_thread(twin.admin, "power_off", vm="src-win")
            await until(lambda: informer.syncs >= 2)
            win = (await driver.inventory()).vm_by_name("src-win")
            assert win is not None and win.power == "poweredOff"
            assert not armed[0]

    asyncio.run(go())


def test_against_vcsim_which_refuses_keyed_paths_the_model_still_has_the_tags(vcsim):
    """govmomi's simulator answers keyed extraConfig paths with InvalidProperty: the informer then
    asks for extraConfig whole, and a tagged VM is never taken for an untagged one."""
    import ssl
    from urllib.parse import urlsplit

    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    parts = urlsplit(vcsim.url)
    si = SmartConnect(host=parts.hostname, port=parts.port, user=vcsim.user, pwd=vcsim.password,
                      sslContext=ssl.create_default_context(cafile=vcsim.ca_file))
    try:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
        golden = next(vm for vm in view.view if vm.name == "golden")
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="forkscale.pool", value="p"),
                                              vim.option.OptionValue(key="forkscale.id", value="7")])
        WaitForTask(golden.ReconfigVM_Task(spec), si=si)
        moref = golden._moId
    finally:
        Disconnect(si)

    async def go() -> None:
        async with informed(vcsim) as (driver, informer):
            vm = (await driver.inventory()).vms[moref]
            assert (vm.pool, vm.clone_id) == ("p", "7")
            assert driver.soap.keyed_paths_refused

    asyncio.run(go())


def test_vms_in_a_vapp_are_read_alike_directly_and_through_the_model(twin, si):
    """A VM in a vApp has no folder (`parent` unset, `parentVApp` set) and a vApp for its pool:
    the controller reads it (folder None, the vApp among the pools by name), and a VM moved into a
    vApp behind its back reaches the model the same way."""
    from pyVmomi import vim

    from tests.fixtures.twin import find, find_vm
    from tests.twin_helpers import run

    root = find(si, vim.ClusterComputeResource, "cluster1").resourcePool
    alloc = vim.ResourceAllocationInfo(reservation=0, limit=-1, expandableReservation=True,
                                       shares=vim.SharesInfo(level="normal", shares=0))
    vapp = root.CreateVApp("ctl-vapp", vim.ResourceConfigSpec(cpuAllocation=alloc, memoryAllocation=alloc),
                           vim.vApp.VAppConfigSpec())
    src = find_vm(si, "src-linux")
    inside = run(si, src.CloneVM_Task(folder=src.parent, name="in-vapp",
                                      spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=vapp))))

    async def go() -> None:
        async with informed(twin) as (driver, informer):
            inv = await driver.inventory()
            assert inv.vms[inside._moId].folder is None and inv.pools["ctl-vapp"] == vapp._moId
            assert comparable(inv) == comparable(await direct(driver))
            win = inv.vm_by_name("src-win")
            assert win is not None and win.folder is not None
            await asyncio.to_thread(vapp.MoveIntoResourcePool, [find_vm(si, "src-win")])
            await until(lambda: informer.model is not None and informer.model.vms[win.moref].folder is None)
            assert comparable(await driver.inventory()) == comparable(await direct(driver))

    asyncio.run(go())
