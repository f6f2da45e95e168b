"""The twin's SOAP wire, byte for byte: raw HTTP POSTs (no pyVmomi on the request side).

Bad requests — malformed XML, unknown morefs, wrong types, missing arguments, unknown methods —
get the proper SOAP fault with a typed vim25 detail, and the twin keeps serving. Wire details
other clients (govmomi) rely on: morefs in anyType slots typed `ManagedObjectReference`, enum
fields never empty, unset properties absent.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests
from pyVmomi import VmomiSupport

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
VIM = "urn:vim25"
HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "urn:vim25/8.0.3.0"}


def envelope(body: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAPENV}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            f'xmlns:xsi="{XSI}"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>')


def call(method: str, this: tuple[str, str], args: str = "") -> str:
    kind, moid = this
    return envelope(f'<{method} xmlns="urn:vim25"><_this type="{kind}">{moid}</_this>{args}</{method}>')


class Wire:
    def __init__(self, twin: Any) -> None:
        self.url = twin.url
        self.http = requests.Session()
        self.ca_file = twin.ca_file  # passed per request: REQUESTS_CA_BUNDLE would override a session setting
        self.user, self.password = twin.user, twin.password

    def post(self, body: str | bytes) -> requests.Response:
        return self.http.post(self.url, data=body if isinstance(body, bytes) else body.encode(), headers=HEADERS,
                              timeout=10, verify=self.ca_file)

    def login(self) -> None:
        resp = self.post(call("Login", ("SessionManager", "SessionManager"),
                              f"<userName>{self.user}</userName><password>{self.password}</password>"))
        assert resp.status_code == 200, resp.text
        assert "vmware_soap_session" in resp.headers["Set-Cookie"]

    def ok(self, body: str) -> ET.Element:
        resp = self.post(body)
        assert resp.status_code == 200, resp.text
        return ET.fromstring(resp.content)

    def fault(self, body: str | bytes) -> tuple[str, str, ET.Element]:
        """(fault type from the detail's xsi:type, faultstring, the detail's element)."""
        resp = self.post(body)
        assert resp.status_code == 500, resp.text
        assert resp.headers["Content-Type"].startswith("text/xml")
        root = ET.fromstring(resp.content)
        fault = root.find(f"{{{SOAPENV}}}Body/{{{SOAPENV}}}Fault")
        assert fault is not None, resp.text
        assert fault.findtext("faultcode") == "ServerFaultCode"
        detail = fault.find("detail")
        assert detail is not None and len(detail) == 1
        element = detail[0]
        kind = element.get(f"{{{XSI}}}type")
        assert element.tag == f"{{{VIM}}}{kind}Fault"
        return kind, fault.findtext("faultstring") or "", element

    def serving(self) -> None:
        root = self.ok(call("RetrieveServiceContent", ("ServiceInstance", "ServiceInstance")))
        assert root.find(f".//{{{VIM}}}rootFolder").text == "group-d1"
        src = retrieve(self, "VirtualMachine", "vm-1", ["name"])
        assert src["name"].text == "src-linux"


def retrieve(wire: Wire, kind: str, moid: str, paths: list[str]) -> dict[str, ET.Element]:
    path_xml = "".join(f"<pathSet>{p}</pathSet>" for p in paths)
    body = call("RetrievePropertiesEx", ("PropertyCollector", "propertyCollector"),
                f'<specSet><propSet><type>{kind}</type>{path_xml}</propSet>'
                f'<objectSet><obj type="{kind}">{moid}</obj></objectSet></specSet><options/>')
    root = wire.ok(body)
    out = {}
    for prop in root.iter(f"{{{VIM}}}propSet"):
        out[prop.findtext(f"{{{VIM}}}name")] = prop.find(f"{{{VIM}}}val")
    return out


@pytest.fixture
def wire(twin):
    w = Wire(twin)
    w.login()
    return w


# bad requests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    b"<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'><soapenv:Body><Login",
    b"this is not xml at all",
    b"",
    b"\x00\xff\xfe garbage \x89PNG",
    b'<?xml version="1.0"?><notsoap/>',
    envelope("").encode(),
    envelope('<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>'
             "<userName>a</userName><password>b</password></Logout>").encode(),
])
def test_malformed_requests_get_invalid_request_and_the_twin_keeps_serving(wire, body):
    kind, message, _ = wire.fault(body)
    assert kind == "InvalidRequest" and message
    wire.serving()


def test_unknown_moref_is_managed_object_not_found(wire):
    kind, message, detail = wire.fault(call("PowerOnVM_Task", ("VirtualMachine", "vm-999")))
    assert kind == "ManagedObjectNotFound" and "vm-999" in message
    obj = detail.find(f"{{{VIM}}}obj")
    assert (obj.get("type"), obj.text) == ("VirtualMachine", "vm-999")
    # a moref whose type does not match the object is unknown too
    kind, _, _ = wire.fault(call("PowerOnVM_Task", ("HostSystem", "vm-1")))
    assert kind == "ManagedObjectNotFound"
    # ...and so is one inside the arguments
    kind, _, _ = wire.fault(call("CreateContainerView", ("ViewManager", "ViewManager"),
                                 '<container type="Folder">group-d999</container><type>VirtualMachine</type>'
                                 "<recursive>true</recursive>"))
    assert kind == "ManagedObjectNotFound"
    wire.serving()


@pytest.mark.parametrize("args", [
    '<container type="Folder">group-d1</container><type>VirtualMachine</type><recursive>perhaps</recursive>',
    '<container type="Folder">group-d1</container><type>NoSuchType</type><recursive>true</recursive>',
    '<container type="Folder">group-d1</container><type>VirtualMachine</type><recursive>true</recursive>'
    "<unexpected>1</unexpected>",
    '<container type="NoSuchKind">group-d1</container><type>VirtualMachine</type><recursive>true</recursive>',
])
def test_wrong_argument_types_are_invalid_request(wire, args):
    kind, message, _ = wire.fault(call("CreateContainerView", ("ViewManager", "ViewManager"), args))
    assert kind == "InvalidRequest" and message
    wire.serving()


def test_wrong_typed_data_object_is_a_fault(wire):
    body = call("RetrievePropertiesEx", ("PropertyCollector", "propertyCollector"),
                '<specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet></propSet>'
                '<objectSet><obj type="VirtualMachine">vm-1</obj></objectSet></specSet>'
                "<options><maxObjects>lots</maxObjects></options>")
    kind, _, _ = wire.fault(body)
    assert kind == "InvalidRequest"
    wire.serving()


def test_missing_required_argument_is_invalid_request(wire):
    kind, message, _ = wire.fault(call("Login", ("SessionManager", "SessionManager"), "<userName>x</userName>"))
    assert kind == "InvalidRequest" and "password" in message
    kind, message, _ = wire.fault(envelope('<PowerOnVM_Task xmlns="urn:vim25"></PowerOnVM_Task>'))
    assert kind == "InvalidRequest" and "_this" in message
    kind, message, _ = wire.fault(call("InstantClone_Task", ("VirtualMachine", "vm-1")))
    assert kind == "InvalidRequest" and "spec" in message
    wire.serving()


def test_unknown_method_is_method_not_found(wire):
    kind, message, detail = wire.fault(call("FrobnicateVM_Task", ("VirtualMachine", "vm-1")))
    assert kind == "MethodNotFound" and "FrobnicateVM_Task" in message
    # a real vSphere method the twin does not implement: also MethodNotFound, with the receiver
    kind, _, detail = wire.fault(call("UpgradeTools_Task", ("VirtualMachine", "vm-1")))
    assert kind == "MethodNotFound"
    assert detail.findtext(f"{{{VIM}}}method") == "UpgradeTools_Task"
    wire.serving()


def test_unauthenticated_calls_are_not_authenticated(twin):
    anonymous = Wire(twin)
    kind, _, _ = anonymous.fault(call("PowerOnVM_Task", ("VirtualMachine", "vm-1")))
    assert kind == "NotAuthenticated"
    kind, _, _ = anonymous.fault(call("Login", ("SessionManager", "SessionManager"),
                                      "<userName>root</userName><password>nope</password>"))
    assert kind == "InvalidLogin"


# wire details -------------------------------------------------------------------------------------
def test_morefs_in_anytype_slots_are_typed_managed_object_reference(wire):
    props = retrieve(wire, "VirtualMachine", "vm-1", ["runtime.host", "datastore", "parent", "resourcePool"])
    for name in ("runtime.host", "parent", "resourcePool"):
        val = props[name]
        assert val.get(f"{{{XSI}}}type") == "ManagedObjectReference", name
        assert val.get("type") in ("HostSystem", "Folder", "ResourcePool")
    host = props["runtime.host"]
    assert (host.get("type"), host.text) == ("HostSystem", "host-1")
    stores = props["datastore"]
    assert stores.get(f"{{{XSI}}}type") == "ArrayOfManagedObjectReference"
    items = list(stores)
    assert items and all(i.tag == f"{{{VIM}}}ManagedObjectReference" and i.get("type") == "Datastore" for i in items)
    # a task's result moref (what govmomi's task.WaitForResult decodes)
    resp = wire.ok(call("InstantClone_Task", ("VirtualMachine", "vm-1"),
                        "<spec><name>wire-1</name><location/></spec>"))
    task = resp.find(f".//{{{VIM}}}returnval").text
    for _ in range(200):
        info = retrieve(wire, "Task", task, ["info.state", "info.result"])
        if info["info.state"].text == "success":
            break
    result = info["info.result"]
    assert result.get(f"{{{XSI}}}type") == "ManagedObjectReference"
    assert result.get("type") == "VirtualMachine" and result.text.startswith("vm-")


def test_scalars_in_anytype_slots_carry_their_declared_type(wire):
    vm = retrieve(wire, "VirtualMachine", "vm-1", ["runtime.powerState", "summary.quickStats.sharedMemory", "name"])
    assert vm["runtime.powerState"].get(f"{{{XSI}}}type") == "VirtualMachinePowerState"  # not xsd:string
    assert vm["runtime.powerState"].text == "poweredOn"
    assert vm["summary.quickStats.sharedMemory"].get(f"{{{XSI}}}type") == "xsd:int"
    assert vm["name"].get(f"{{{XSI}}}type") == "xsd:string"
    host = retrieve(wire, "HostSystem", "host-1", ["hardware.memorySize", "runtime.connectionState"])
    assert host["hardware.memorySize"].get(f"{{{XSI}}}type") == "xsd:long"  # not xsd:int
    assert host["runtime.connectionState"].get(f"{{{XSI}}}type") == "HostSystemConnectionState"


def _enum_props() -> dict[str, set[str]]:
    """Property names whose declared type is an enum, for every vim data type pyVmomi knows."""
    out: dict[str, set[str]] = {}
    for name in ("VirtualMachineConfigInfo", "VirtualMachineRuntimeInfo", "GuestInfo", "VirtualMachineSummary",
                 "HostRuntimeInfo", "HostListSummary", "DatastoreSummary", "TaskInfo", "VirtualMachineFileLayoutEx",
                 "VirtualMachineSnapshotInfo", "VirtualMachineQuickStats", "HostHardwareInfo",
                 "DVPortgroupConfigInfo", "UserSession", "ClusterComputeResourceSummary"):
        _walk(VmomiSupport.GetWsdlType(VIM, name), out, set())
    return out


def _walk(typ: Any, out: dict[str, set[str]], seen: set[Any]) -> None:
    if typ in seen:
        return
    seen.add(typ)
    for prop in typ._GetPropertyList():
        ptype = prop.type.Item if issubclass(prop.type, list) and hasattr(prop.type, "Item") else prop.type
        if issubclass(ptype, VmomiSupport.Enum):
            out.setdefault(prop.name, set()).add(typ.__name__)
        elif issubclass(ptype, VmomiSupport.DataObject):
            _walk(ptype, out, seen)
            for sub in _subtypes(ptype):
                _walk(sub, out, seen)


def _subtypes(typ: Any) -> list[Any]:
    found = []
    for name in ("VirtualDisk", "VirtualVmxnet3", "ParaVirtualSCSIController", "VirtualPCIController",
                 "VirtualDiskFlatVer2BackingInfo", "VirtualEthernetCardNetworkBackingInfo",
                 "VirtualEthernetCardDistributedVirtualPortBackingInfo"):
        sub = VmomiSupport.GetWsdlType(VIM, name)
        if issubclass(sub, typ) and sub is not typ:
            found.append(sub)
    return found


def test_enum_fields_are_never_empty(wire):
    enum_names = _enum_props()
    assert {"powerState", "connectionState", "toolsStatus", "state", "guestHeartbeatStatus"} <= set(enum_names)
    # create some variety: a task, a clone, a powered-off VM
    wire.ok(call("InstantClone_Task", ("VirtualMachine", "vm-1"), "<spec><name>enum-1</name><location/></spec>"))
    wire.ok(call("PowerOffVM_Task", ("VirtualMachine", "vm-2")))
    specs = "".join(
        f"<specSet><propSet><type>{kind}</type><all>true</all></propSet>"
        f'<objectSet><obj type="ContainerView">{view}</obj><skip>true</skip>'
        f"<selectSet xsi:type=\"TraversalSpec\"><type>ContainerView</type><path>view</path><skip>false</skip>"
        f"</selectSet></objectSet></specSet>"
        for kind, view in [(k, _view(wire, k)) for k in ("VirtualMachine", "HostSystem", "Datastore",
                                                          "ClusterComputeResource", "Network")])
    resp = wire.post(call("RetrievePropertiesEx", ("PropertyCollector", "propertyCollector"), specs + "<options/>"))
    assert resp.status_code == 200, resp.text[:2000]
    text = resp.text
    assert "<powerState>" in text and "<connectionState>" in text
    empties = set(re.findall(r"<(\w+)(?:\s[^>]*)?(?:/>|></\1>)", text))
    bad = {e for e in empties if e in enum_names}
    assert not bad, f"enum fields sent empty: {sorted(bad)}"
    tasks = wire.ok(call("RetrievePropertiesEx", ("PropertyCollector", "propertyCollector"),
                         "<specSet><propSet><type>TaskManager</type><pathSet>recentTask</pathSet></propSet>"
                         '<objectSet><obj type="TaskManager">TaskManager</obj></objectSet></specSet><options/>'))
    for ref in tasks.iter(f"{{{VIM}}}ManagedObjectReference"):
        raw = wire.post(call("RetrievePropertiesEx", ("PropertyCollector", "propertyCollector"),
                             f"<specSet><propSet><type>Task</type><pathSet>info</pathSet></propSet>"
                             f'<objectSet><obj type="Task">{ref.text}</obj></objectSet></specSet><options/>')).text
        empties = set(re.findall(r"<(\w+)(?:\s[^>]*)?(?:/>|></\1>)", raw))
        assert not (empties & set(enum_names)), raw


def _view(wire: Wire, kind: str) -> str:
    root = wire.ok(call("CreateContainerView", ("ViewManager", "ViewManager"),
                        f'<container type="Folder">group-d1</container><type>{kind}</type>'
                        "<recursive>true</recursive>"))
    return root.find(f".//{{{VIM}}}returnval").text


def test_unset_properties_are_absent_not_empty(wire):
    props = retrieve(wire, "VirtualMachine", "vm-1", ["name", "parentVApp", "rootSnapshot", "snapshot"])
    assert "parentVApp" not in props  # unset: absent from propSet
    assert set(props) >= {"name", "snapshot"}
    clone = wire.ok(call("InstantClone_Task", ("VirtualMachine", "vm-1"),
                         "<spec><name>nosnap</name><location/></spec>"))
    assert clone is not None
    view = _view(wire, "VirtualMachine")
    root = wire.ok(call("RetrievePropertiesEx", ("PropertyCollector", "propertyCollector"),
                        "<specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet>"
                        "<pathSet>snapshot</pathSet></propSet>"
                        f'<objectSet><obj type="ContainerView">{view}</obj><skip>true</skip>'
                        '<selectSet xsi:type="TraversalSpec"><type>ContainerView</type><path>view</path>'
                        "</selectSet></objectSet></specSet><options/>"))
    for oc in root.iter(f"{{{VIM}}}objects"):
        names = [p.findtext(f"{{{VIM}}}name") for p in oc.findall(f"{{{VIM}}}propSet")]
        vm_name = next(p.find(f"{{{VIM}}}val").text for p in oc.findall(f"{{{VIM}}}propSet")
                       if p.findtext(f"{{{VIM}}}name") == "name")
        if vm_name == "nosnap":
            assert names == ["name"]  # no snapshot: the property is left out, not sent empty

