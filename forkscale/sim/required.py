"""Arguments missing what the schema requires are refused before any method runs.

vCenter's SOAP deserializer answers a data object that lacks a required property with
`InvalidRequest` ("Required property X is missing from data object of type Y", the message clients
report, e.g. CenturyLinkCloud/chef-provisioning-vsphere#64) and the method never runs. pyVmomi's deserializer fills a missing required string, number or boolean with its
default, so what can be told apart here is a missing object, moref, enum or date — the specs'
semantic checks (forkscale.sim.ops.validate) catch an empty required string such as a network
backing's `deviceName`. Required arrays are not checked: an empty one is how clients send "none".
"""

from __future__ import annotations

from typing import Any

from pyVmomi import VmomiSupport, vmodl

from .soap import VERSION

_REQUIRED: dict[type, tuple[tuple[str, bool], ...]] = {}  # type -> ((field, required scalar/object?), ...)


def _fields(typ: type) -> tuple[tuple[str, bool], ...]:
    cached = _REQUIRED.get(typ)
    if cached is None:
        cached = tuple((p.name, not p.flags & VmomiSupport.F_OPTIONAL and not issubclass(p.type, list))
                       for p in typ._GetPropertyList()  # type: ignore[attr-defined]
                       if VmomiSupport.IsChildVersion(VERSION, p.version))
        _REQUIRED[typ] = cached
    return cached


def check(value: Any, path: str) -> None:
    """InvalidRequest naming the first required property missing anywhere inside `value`."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            check(item, f"{path}[{i}]")
        return
    if not isinstance(value, VmomiSupport.DataObject) or isinstance(value, vmodl.MethodFault):
        return
    for name, required in _fields(type(value)):
        field = getattr(value, name, None)
        if field is None:
            if required:
                wsdl = VmomiSupport.GetWsdlName(type(value))
                raise vmodl.fault.InvalidRequest(
                    msg=f"Required property {name} is missing from data object of type {wsdl} ({path}.{name})")
        elif isinstance(field, (list, VmomiSupport.DataObject)):
            check(field, f"{path}.{name}")


def check_arguments(args: dict[str, Any]) -> None:
    for name, value in args.items():
        check(value, name)
