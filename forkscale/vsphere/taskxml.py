"""The task watcher's `WaitForUpdatesEx` answers, decoded straight from the XML.

In a fan-out the watcher hears every task enter `recentTask`, run and end: pyVmomi's deserializer
spent ~18 % of the controller's CPU building those updates (bench/README.md, issue 17). The
watcher needs a few values of each: a task's `info.state` and its result (a moref, for the tasks
that make something), a VM's guest status, power state and `runtime.instantCloneFrozen`. Those
are read with `updatexml`'s decoder; anything else (a fault, a result that is not a moref)
raises `updatexml.Unsupported`, and the caller decodes that answer with pyVmomi (`from_objects`
puts its objects in the same form). A test holds both decoders equal on the twin's answers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from pyVmomi import VmomiSupport, vim

from forkscale.vsphere.updatexml import VIM, XSI_TYPE, Unsupported, value

TASK_PATHS = ("info.state", "info.error", "info.result")


@dataclass
class Update:
    """One object's update: `values` path -> value (None: unset or removed)."""

    kind: str
    moid: str
    task: bool
    values: dict[str, Any]


def _mo(kind: str, moid: str, stub: Any, server: str | None) -> Any:
    try:
        cls = VmomiSupport.GetWsdlType("urn:vim25", kind)
    except KeyError:
        raise Unsupported(f"unknown managed object type {kind!r}") from None
    return cls(moid, stub, serverGuid=server)


def _val(name: str, el: ET.Element | None, stub: Any) -> Any:
    if el is None:
        return None
    if name == "info.result":
        if (el.get(XSI_TYPE) or "").rpartition(":")[2] != "ManagedObjectReference":
            raise Unsupported("a task result that is not a moref")
        return _mo(el.get("type") or "", (el.text or "").strip(), stub, el.get("serverGuid"))
    if name == "info.error":
        raise Unsupported("a task's fault")
    return value(el)


def decode(data: bytes, stub: Any) -> tuple[str | None, list[Update]]:
    """(version, updates) of one answer; (None, []) when it carries no updates."""
    root = ET.fromstring(data)
    ret = root.find(f".//{VIM}returnval")
    if ret is None:
        return None, []
    out: list[Update] = []
    for fs in ret.iterfind(f"{VIM}filterSet"):
        for ou in fs.iterfind(f"{VIM}objectSet"):
            obj = ou.find(f"{VIM}obj")
            if obj is None:
                raise Unsupported("an object update without its object")
            values: dict[str, Any] = {}
            for ch in ou.iterfind(f"{VIM}changeSet"):
                name = ch.findtext(f"{VIM}name") or ""
                gone = ch.findtext(f"{VIM}op") in ("remove", "indirectRemove")
                values[name] = None if gone else _val(name, ch.find(f"{VIM}val"), stub)
            out.append(Update(ou.findtext(f"{VIM}kind") or "", (obj.text or "").strip(), obj.get("type") == "Task",
                              values))
    return ret.findtext(f"{VIM}version"), out


def plain(name: str, val: Any) -> Any:
    """A value pyVmomi decoded, as `decode` gives it (an extraConfig entry: its value)."""
    if val is None or name in TASK_PATHS:
        return val
    if isinstance(val, vim.option.OptionValue):
        return None if val.value is None else str(val.value)
    if isinstance(val, VmomiSupport.Enum):
        return str(val)
    return val


def from_objects(update: Any) -> tuple[str | None, list[Update]]:
    """The same from an `UpdateSet` pyVmomi decoded (None: no updates)."""
    if update is None:
        return None, []
    out = [Update(str(obj.kind), str(obj.obj._moId), isinstance(obj.obj, vim.Task),
                  {c.name: None if c.op in ("remove", "indirectRemove") else plain(c.name, c.val)
                   for c in obj.changeSet or []})
           for fs in update.filterSet or [] for obj in fs.objectSet or []]
    return str(update.version), out
