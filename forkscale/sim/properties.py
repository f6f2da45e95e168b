"""Reading managed object properties by path, as the property collector and `Fetch` do.

Property paths are checked against the real type (an unknown first segment is `InvalidProperty`),
`key["..."]` selects from keyed lists, unset values are left out, and values in anyType slots
are given their declared type so they serialize like vCenter's.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pyVmomi import VmomiSupport, vim, vmodl

from .mo import MO
from .vm import VM

PC = vmodl.query.PropertyCollector
_SEGMENT = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)(?:\["((?:[^"\\]|\\.)*)"\])?')



@functools.lru_cache(maxsize=4096)
def split_path(path: str) -> list[tuple[str, str | None]]:
    """`config.extraConfig["guestinfo.x"]` → [('config', None), ('extraConfig', 'guestinfo.x')]."""
    out: list[tuple[str, str | None]] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if not m:
            raise vmodl.query.InvalidProperty(name=path, msg=f"invalid property path '{path}'")
        out.append((m.group(1), m.group(2)))
        pos = m.end()
        if pos < len(path):
            if path[pos] != ".":
                raise vmodl.query.InvalidProperty(name=path, msg=f"invalid property path '{path}'")
            pos += 1
    return out


def prop_type(typ: Any, name: str) -> Any:
    try:
        return typ._GetPropertyInfo(name).type
    except (AttributeError, KeyError):
        return None


def read_path(mo: MO, path: str) -> tuple[Any, Any]:
    """(value, declared type) of a property path; InvalidProperty if the path is not in the schema."""
    segments = split_path(path)
    first, key = segments[0]
    typ = prop_type(type(mo.ref), first)
    if typ is None:
        raise vmodl.query.InvalidProperty(name=path, msg=f"'{first}' is not a property of {type(mo.ref).__name__}")
    if first == "config" and len(segments) == 2 and isinstance(mo, VM):
        # A VM's config.extraConfig["key"] or config.template: read directly instead of rendering
        # its whole ConfigInfo (the task watcher reads guestinfo.forkscale.status of every changed
        # VM; inventory reads both for every VM).
        name, key = segments[1]
        if name == "extraConfig" and key is not None:
            value = mo.extra.get(key)
            item = vim.option.OptionValue
            return (vim.option.OptionValue(key=key, value=value) if value is not None else None), item
        if name == "template" and key is None:
            return bool(mo.template), bool
        if name == "instanceUuid" and key is None:
            return mo.instance_uuid, str
    start = 0
    if len(segments) > 1 and key is None:
        # An object may render one sub-property cheaply (`p_summary_quickStats`) instead of the
        # whole property (a VM's summary is rebuilt on every read: its quickStats move with time).
        fast = getattr(mo, f"p_{first}_{segments[1][0]}", None)
        sub_typ = prop_type(typ, segments[1][0]) if fast is not None else None
        if fast is not None and sub_typ is not None:
            typ, start = sub_typ, 1
            val = fast()
    if start == 0:
        val = mo.get(first)
    for i, (name, idx) in enumerate(segments):
        if i > start:
            if val is None:
                return None, typ
            ntyp = prop_type(type(val), name)
            if ntyp is None:
                raise vmodl.query.InvalidProperty(name=path, msg=f"invalid property path '{path}'")
            typ = ntyp
            val = getattr(val, name, None)
        if idx is not None:
            if not isinstance(val, list):
                raise vmodl.query.InvalidProperty(name=path, msg=f"'{name}' is not a keyed list")
            typ = typ.Item
            val = next((v for v in val if str(getattr(v, "key", None)) == idx), None)
    return val, typ


_SCALARS = (VmomiSupport.long, VmomiSupport.short, VmomiSupport.byte, VmomiSupport.double, VmomiSupport.URI,
            VmomiSupport.PropertyPath, VmomiSupport.Enum)


def typed(val: Any, typ: Any) -> Any:
    """Give values in an anyType slot their declared type: bare lists their vmodl array type, and
    enums, longs, doubles... theirs, so the wire says `xsi:type="VirtualMachinePowerState"` (or
    `xsd:long`) as vCenter does, not `xsd:string`/`xsd:int` (govmomi decodes by that type)."""
    if typ is None:
        return val
    if isinstance(val, list):
        if not isinstance(val, VmomiSupport.Array):
            return typ(val) if issubclass(typ, list) else val
        return val
    if _is_scalar(typ) and not isinstance(val, (typ, bool)) and isinstance(val, (str, int, float)):
        try:
            return typ(val)
        except (TypeError, ValueError):
            return val
    return val


def _is_scalar(typ: Any) -> bool:
    return isinstance(typ, type) and issubclass(typ, _SCALARS)



def read_props(mo: MO, paths: list[str], strict: bool = True) -> tuple[dict[str, Any], list[Any]]:
    values: dict[str, Any] = {}
    missing: list[Any] = []
    for path in paths:
        try:
            val, typ = read_path(mo, path)
        except vmodl.query.InvalidProperty:
            if strict:
                raise
            continue
        except vmodl.MethodFault as fault:
            missing.append(PC.MissingProperty(path=path, fault=fault))
            continue
        if val is None or (isinstance(val, list) and not val and not isinstance(val, VmomiSupport.Array)
                           and typ is None):
            continue
        values[path] = typed(val, typ)
    return values, missing


def content(mo: MO, paths: list[str]) -> Any:
    values, missing = read_props(mo, paths)
    return PC.ObjectContent(obj=mo.ref, propSet=[vmodl.DynamicProperty(name=k, val=v) for k, v in values.items()],
                            missingSet=missing)
