"""The informer's fast decoder reads the twin's WaitForUpdatesEx answers exactly as pyVmomi does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pyVmomi import SoapAdapter, vim, vmodl

from forkscale.vsphere import informspec, updatexml
from forkscale.vsphere.informer import Informer
from forkscale.vsphere.transport import Soap, method_info

PC = vmodl.query.PropertyCollector
RESULT = method_info(PC, "WaitForUpdatesEx").result


async def answers(twin: Any, spec_of: Any, act: Any = None, page: int | None = None) -> tuple[Soap, list[bytes]]:
    """Raw answers of one collector: the first full report (paged), then one after `act(si-less twin)`."""
    soap = Soap(twin.url, user=twin.user, password=lambda: twin.password, ca_file=twin.ca_file)
    await soap.open()
    c = soap.content
    pc = await soap.invoke(c.propertyCollector, "CreatePropertyCollector")
    view = await soap.invoke(c.viewManager, "CreateContainerView", c.rootFolder, informspec.VIEW_TYPES, True)
    await soap.invoke(pc, "CreateFilter", spec_of(view), True)
    out: list[bytes] = []
    version = ""
    while True:
        data = await soap.invoke(pc, "WaitForUpdatesEx", version, PC.WaitOptions(maxWaitSeconds=0,
                                                                                  maxObjectUpdates=page), raw=True)
        out.append(data)
        version, truncated = updatexml.scan(data)
        if not truncated:
            break
    if act is not None:
        await asyncio.to_thread(act)
        out.append(await soap.invoke(pc, "WaitForUpdatesEx", version, PC.WaitOptions(maxWaitSeconds=10), raw=True))
    await soap.close()
    return soap, out


def slow(soap: Soap, data: bytes) -> tuple[str | None, bool, list[Any]]:
    update = SoapAdapter.SoapResponseDeserializer(soap.stub).Deserialize(data, RESULT)
    if update is None:
        return None, False, []
    return str(update.version), bool(update.truncated), informspec.changes(update)


def test_both_decoders_agree_on_every_kind_and_every_path_the_informer_follows(twin):
    twin.admin("freeze", vm="src-linux")

    def act() -> None:  # modify (power, tags set and unset), leave (a VM gone)
        twin.admin("power_off", vm="src-win")
        twin.admin("freeze", vm="src-linux")
        _strip_and_destroy(twin)

    soap, pages = asyncio.run(answers(twin, lambda view: informspec.filter_spec(view, fleet=True), act, page=7))
    assert len(pages) >= 4
    kinds = set()
    for data in pages:
        fast = updatexml.decode(data)
        assert (fast.version, fast.truncated, fast.changes) == slow(soap, data)
        assert updatexml.scan(data) == (fast.version, fast.truncated)
        kinds |= {(c.kind, c.what) for c in fast.changes}
    assert {("enter", "vm"), ("enter", "portgroup"), ("enter", "switch"), ("enter", "host"), ("enter", "datastore"),
            ("enter", "folder"), ("enter", "pool"), ("enter", "network"), ("modify", "vm"), ("leave", "vm")} <= kinds
    layouts = [c.values["layoutEx"] for d in pages for c in updatexml.decode(d).changes if "layoutEx" in c.values]
    assert any(chains for chains, _ in layouts)


def _strip_and_destroy(twin: Any) -> None:
    """Through the API, as any client: a tag set and one unset on src-linux, src-win destroyed."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask

    from tests.fixtures.twin import connect, find_vm

    si = connect(twin)
    try:
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="forkscale.pool", value="p"),
                                              vim.option.OptionValue(key="guestinfo.forkscale.status", value="")])
        WaitForTask(find_vm(si, "src-linux").ReconfigVM_Task(spec), si=si)
        WaitForTask(find_vm(si, "src-win").Destroy_Task(), si=si)
    finally:
        Disconnect(si)


def test_a_value_the_fast_decoder_does_not_know_is_decoded_by_pyvmomi(twin):
    def spec(view: Any) -> Any:
        return PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
            PC.TraversalSpec(type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name", "summary.config"])])

    soap, (data,) = asyncio.run(answers(twin, spec))
    with pytest.raises(updatexml.Unsupported):
        updatexml.decode(data)
    page = Informer(soap)._decode_now(data)
    assert page.changes == slow(soap, data)[2]
    assert {c.values["name"] for c in page.changes} >= {"src-linux", "src-win"}


def test_an_empty_answer_is_no_update():
    empty = (b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/'
             b'soap/envelope/"><soapenv:Body><WaitForUpdatesExResponse xmlns="urn:vim25"></WaitForUpdatesExResponse>'
             b'</soapenv:Body></soapenv:Envelope>')
    assert updatexml.scan(empty) == (None, False)
    assert updatexml.decode(empty) == updatexml.Page(None, False, [])
