"""The task watcher reads its answers from the XML (`forkscale.vsphere.taskxml`) exactly as it
reads what pyVmomi decodes: task states and results, guest status, power and a source's frozen
state; a task's fault goes to pyVmomi."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl

from forkscale.vsphere import taskxml, updatexml, watcher
from forkscale.vsphere.model import STATUS_KEY
from forkscale.vsphere.transport import Soap, method_info
from forkscale.vsphere.updatexml import Unsupported
from forkscale.vsphere.watcher import Watcher

PC = vmodl.query.PropertyCollector
RESULT = method_info(PC, "WaitForUpdatesEx").result


def _acts(twin: Any) -> list[Any]:
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask

    from tests.fixtures.twin import connect, find_vm
    from tests.twin_helpers import fault_of, instant_clone

    def made() -> None:  # a clone made (a task with a moref result), its guest status, a power change, a VM gone
        si = connect(twin)
        try:
            clone = instant_clone(si, "taskxml-01")
            status = vim.option.OptionValue(key=STATUS_KEY, value="ready")
            WaitForTask(clone.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=[status])), si=si)
            twin.admin("power_off", vm="src-win")
            WaitForTask(find_vm(si, "src-win").Destroy_Task(), si=si)
        finally:
            Disconnect(si)

    def refused() -> None:  # a task that ends in a fault
        si = connect(twin)
        try:
            src = find_vm(si, "src-linux")
            fault_of(si, src.InstantClone_Task(vim.vm.InstantCloneSpec(name="taskxml-01",
                                                                       location=vim.vm.RelocateSpec())))
        finally:
            Disconnect(si)

    return [made, refused]


def _source(twin: Any) -> str:
    from pyVim.connect import Disconnect

    from tests.fixtures.twin import connect, find_vm

    si = connect(twin)
    try:
        return str(find_vm(si, "src-linux")._moId)
    finally:
        Disconnect(si)


async def _answers(twin: Any) -> tuple[Soap, list[bytes]]:
    soap = Soap(twin.url, user=twin.user, password=lambda: twin.password, ca_file=twin.ca_file)
    await soap.open()
    watcher = Watcher(soap, vms=True)
    await watcher._create()
    await watcher._follow_filter(await asyncio.to_thread(_source, twin))
    out: list[bytes] = []
    version = ""
    for act in [None, *_acts(twin)]:
        if act is not None:
            await asyncio.to_thread(act)
        data = await soap.invoke(watcher.collector, "WaitForUpdatesEx", version, PC.WaitOptions(maxWaitSeconds=10),
                                 raw=True)
        out.append(data)
        version = updatexml.scan(data)[0] or version
    await soap.close()
    return soap, out


def _slow(soap: Soap, data: bytes) -> tuple[str | None, list[taskxml.Update]]:
    return taskxml.from_objects(SoapAdapter.SoapResponseDeserializer(soap.stub).Deserialize(data, RESULT))


def _norm(updates: list[taskxml.Update]) -> list[tuple[str, str, bool, dict[str, Any]]]:
    def one(v: Any) -> Any:
        if isinstance(v, VmomiSupport.ManagedObject):
            return (type(v).__name__, v._moId, v._stub is not None)
        return (type(v).__name__ if not isinstance(v, str) else "str", v)
    return [(u.kind, u.moid, u.task, {k: one(v) for k, v in u.values.items()}) for u in updates]


def test_both_decoders_agree_on_what_the_task_watcher_follows(twin):
    twin.admin("freeze", vm="src-linux")
    soap, pages = asyncio.run(_answers(twin))
    decoded = refused = 0
    results = []
    for data in pages:
        slow = _slow(soap, data)
        try:
            fast = taskxml.decode(data, soap.stub)
        except Unsupported:
            refused += 1
            assert any(u.task and u.values.get("info.error") is not None for u in slow[1])
            continue
        decoded += 1
        assert fast[0] == slow[0]
        assert _norm(fast[1]) == _norm(slow[1])
        results += [u.values["info.result"] for u in fast[1] if u.task and u.values.get("info.result") is not None]
    assert decoded >= 2 and refused == 1
    paths = {(u.kind, p) for d in pages[:2] for u in taskxml.decode(d, soap.stub)[1] for p in u.values}
    assert {("enter", "info.state"), ("enter", "info.result"), ("enter", "runtime.instantCloneFrozen"),
            ("enter", "runtime.powerState"), ("enter", watcher.STATUS_PATH)} <= paths
    assert any(u.kind == "leave" for u in taskxml.decode(pages[1], soap.stub)[1])
    assert any(isinstance(r, vim.VirtualMachine) for r in results)  # the clone the task made, as a moref


def test_an_empty_answer_is_no_update():
    empty = (b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/'
             b'soap/envelope/"><soapenv:Body><WaitForUpdatesExResponse xmlns="urn:vim25"></WaitForUpdatesExResponse>'
             b'</soapenv:Body></soapenv:Envelope>')
    assert taskxml.decode(empty, None) == (None, [])
    assert taskxml.from_objects(None) == (None, [])


def test_a_fault_is_left_to_pyvmomi():
    el = ET.fromstring('<val xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="LocalizedMethodFault"/>')
    with pytest.raises(Unsupported):
        taskxml._val("info.error", el, None)
