"""The driver writes each `InstantClone_Task` request itself (`forkscale.vsphere.clonexml`): byte
for byte what pyVmomi's serializer writes for the same spec, over names, extraConfig, NIC edits
(standard and distributed port groups, connected or not, several NICs) and locations; and the
twin makes the clone such a request asks for."""

from __future__ import annotations

import asyncio
import dataclasses

from pyVmomi import vim

from forkscale.commands.session import open_driver
from forkscale.spec import load_spec
from forkscale.vsphere import clonexml
from forkscale.vsphere.model import CloneRequest
from forkscale.vsphere.transport import method_info
from tests.spine_helpers import write_spec


def test_an_instant_clone_request_is_written_exactly_as_pyvmomi_writes_it(twin, tmp_path):
    twin.admin("freeze", vm="src-linux")
    spec = load_spec(write_spec(tmp_path, twin))

    async def go() -> tuple[list[tuple[bytes, bytes]], str]:
        async with open_driver(spec.vcenter) as driver:
            inv = await driver.inventory()
            src = inv.vm_by_name("src-linux").moref
            dvpg = next(n for n in inv.networks.values() if n[0] == "dvportgroup")
            std = inv.networks["VM Network"]
            nic = next(iter(await driver._source_nics(src)))
            base = CloneRequest(name="fan-00001", folder=inv.folders["forkscale"],
                                datastore=inv.datastores["ds-ssd"][0], host=inv.hosts["esx-01"], resource_pool=None,
                                network=std, mac="00:50:56:3f:00:01", nic_key=None,
                                extra={"guestinfo.forkscale.pool": "fan", "guestinfo.forkscale.ip": "10.0.0.1"})
            pool = next(iter(inv.pools.values()))
            variants = [
                base,
                dataclasses.replace(base, name="a <b> & 'c' \"d\" é", extra={}),
                dataclasses.replace(base, extra={"k<&>": "v <&> \"'", "guestinfo.x": "", "z": "ü" * 3}),
                dataclasses.replace(base, network=dvpg, disconnect=True, mac="00:50:56:3F:AA:BB"),
                dataclasses.replace(base, resource_pool=pool, nic_key=nic,
                                    more_nics=((nic, "00:50:56:3f:00:02", dvpg), (nic, "00:50:56:3f:00:03", std))),
                base,  # the NIC edits now come from what was written before
            ]
            info = method_info(vim.VirtualMachine, "InstantClone")
            pairs = []
            for req in variants:
                written = await driver._instant_clone_body(src, req)
                changes = await driver._nic_changes(src, req, instant=True)
                objects = clonexml.instant_clone_spec(req.name, req.folder, req.datastore, req.resource_pool,
                                                      changes, req.extra)
                pairs.append((written, driver.soap.stub.SerializeRequest(vim.VirtualMachine(src), info, (objects,))))
            made = await driver.instant_clone(src, dataclasses.replace(base, name="written-01"))
            return pairs, made

    pairs, made = asyncio.run(go())
    for written, walked in pairs:
        assert written == walked
    assert len({w for w, _ in pairs}) == len(pairs) - 1  # the variants differ (the last repeats the first)
    assert made.startswith("vm-")


def test_an_answer_naming_one_managed_object_is_read_as_pyvmomi_reads_it():
    """The transport reads the Task an InstantClone_Task answers with itself; anything else is pyVmomi's."""
    from pyVmomi import SoapAdapter

    from forkscale.vsphere.transport import moref_answer

    stub = SoapAdapter.SoapStubAdapter(host="forkscale.invalid", version="vim.version.v8_0_3_0")
    info = method_info(vim.VirtualMachine, "InstantClone")

    def answer(inner: str) -> bytes:
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/'
                'soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.'
                'org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n<soapenv:Body>'
                f'<InstantClone_TaskResponse xmlns="urn:vim25">{inner}</InstantClone_TaskResponse></soapenv:Body>\n'
                '</soapenv:Envelope>').encode()

    data = answer('<returnval type="Task">task-1234</returnval>')
    fast = moref_answer(data, info, stub)
    slow = SoapAdapter.SoapResponseDeserializer(stub).Deserialize(data, info.result)
    assert (type(fast), fast._moId, fast._stub, fast._serverGuid) == (type(slow), slow._moId, slow._stub,
                                                                      slow._serverGuid)
    assert moref_answer(answer('<returnval type="Task" serverGuid="g">task-1</returnval>'), info, stub) is None
    assert moref_answer(answer('<returnval type="Folder">group-v1</returnval>'), info, stub) is None
    assert moref_answer(data, method_info(vim.VirtualMachine, "PowerOn"), stub) is not None  # also a Task
    assert moref_answer(data, method_info(vim.view.ViewManager, "CreateContainerView"), stub) is None
