"""`WaitForUpdatesEx` answers decoded straight from the XML into the informer's plain `Change`s.

pyVmomi's deserializer builds a typed object for every element, through Python callbacks: about
0.8 ms per VM of the informer's properties, 8 s of CPU for a first read of 10,000 VMs. The
informer needs none of those objects, only plain values (`informspec.plain`), so its answers are
parsed with ElementTree's C parser and walked once. Only the value types the informer's
property paths can carry are decoded here (strings, numbers, booleans, enums, morefs and arrays
of them, `OptionValue`, `VirtualMachineFileLayoutEx`); anything else raises `Unsupported`,
and the caller decodes that answer with pyVmomi instead. A test holds both decoders equal on
the twin's answers.

`scan()` reads an answer's version and truncation flag without parsing it, so the informer can
ask for the next page of a truncated set while this one is parsed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import VmomiSupport

from forkscale.vsphere.informspec import KeyedRefused, what_of
from forkscale.vsphere.invmodel import Change
from forkscale.vsphere.keyed import EXTRA, key_of

VIM = "{urn:vim25}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_VERSION = re.compile(rb"<returnval[^>]*>\s*<version>([^<]*)</version>")
_TRUNCATED = re.compile(rb"<truncated>\s*(true|1)\s*</truncated>\s*</returnval>")
_INTS = frozenset({"int", "long", "short", "byte"})


class Unsupported(ValueError):
    """A value this decoder does not know: decode the answer with pyVmomi."""


@dataclass
class Page:
    """One decoded answer: None version means "no updates" (a wait that timed out)."""

    version: str | None
    truncated: bool
    changes: list[Change] = field(default_factory=list)


def scan(data: bytes) -> tuple[str | None, bool]:
    """(version, truncated) of an answer, from its text alone (no parse)."""
    m = _VERSION.search(data, 0, 4096)
    if m is None:
        return None, False
    return m.group(1).decode(), _TRUNCATED.search(data, max(0, len(data) - 512)) is not None


def decode(data: bytes) -> Page:
    """Every object update of a `WaitForUpdatesEx` answer, as plain changes."""
    root = ET.fromstring(data)
    ret = root.find(f".//{VIM}returnval")
    if ret is None:
        return Page(None, False)
    page = Page(ret.findtext(f"{VIM}version"), (ret.findtext(f"{VIM}truncated") or "").strip() in ("true", "1"))
    for fs in ret.iterfind(f"{VIM}filterSet"):
        for ou in fs.iterfind(f"{VIM}objectSet"):
            obj = ou.find(f"{VIM}obj")
            if obj is None:
                raise Unsupported("an object update without its object")
            what = _what(obj.get("type") or "")
            if what is None:
                continue
            for missing in ou.iterfind(f"{VIM}missingSet"):
                fault = missing.find(f"{VIM}fault/{VIM}fault")
                kind = "" if fault is None else (fault.get(XSI_TYPE) or "").rpartition(":")[2]
                if key_of(missing.findtext(f"{VIM}path") or "") and kind == "InvalidProperty":
                    raise KeyedRefused(f"{(obj.text or '').strip()}: keyed extraConfig paths refused")
            values: dict[str, Any] = {}
            for ch in ou.iterfind(f"{VIM}changeSet"):
                val = ch.find(f"{VIM}val")
                name = ch.findtext(f"{VIM}name") or ""
                gone = ch.findtext(f"{VIM}op") in ("remove", "indirectRemove")
                values[name] = None if gone or val is None else options(val) if name == EXTRA else value(val)
            page.changes.append(Change(ou.findtext(f"{VIM}kind") or "", what, (obj.text or "").strip(), values))
    return page


_WHAT: dict[str, str | None] = {}


def _what(wsdl: str) -> str | None:
    if wsdl not in _WHAT:
        try:
            kind = VmomiSupport.GetWsdlType("urn:vim25", wsdl)
        except KeyError:
            raise Unsupported(f"unknown managed object type {wsdl!r}") from None
        _WHAT[wsdl] = what_of(kind("x"))
    return _WHAT[wsdl]


def value(el: ET.Element) -> Any:
    """A `val` (or nested) element, as `informspec.plain` makes the pyVmomi value."""
    kind = (el.get(XSI_TYPE) or "").rpartition(":")[2]
    text = el.text or ""
    if kind == "string":
        return text
    if kind in _INTS:
        return int(text)
    if kind == "boolean":
        return text.strip() in ("true", "1")
    if kind == "ManagedObjectReference":
        return text.strip()
    if kind == "ArrayOfManagedObjectReference":
        return tuple((e.text or "").strip() for e in el)
    if kind == "OptionValue":
        inner = el.find(f"{VIM}value")
        return None if inner is None else str(value(inner))
    if kind == "VirtualMachineFileLayoutEx":
        return layout(el)
    if _is_enum(kind):
        return text
    raise Unsupported(f"value of type {kind!r}")



_ENUMS: dict[str, bool] = {}


def _is_enum(wsdl: str) -> bool:
    if wsdl not in _ENUMS:
        try:
            _ENUMS[wsdl] = issubclass(VmomiSupport.GetWsdlType("urn:vim25", wsdl), VmomiSupport.Enum)
        except KeyError:
            _ENUMS[wsdl] = False
    return _ENUMS[wsdl]


def options(el: ET.Element) -> dict[str, str]:
    """A whole `config.extraConfig` (ArrayOfOptionValue), as `keyed.option_values` reads it."""
    out: dict[str, str] = {}
    for opt in el:
        inner = opt.find(f"{VIM}value")
        text = "" if inner is None else str(value(inner))
        if text:
            out[opt.findtext(f"{VIM}key") or ""] = text
        else:
            out.pop(opt.findtext(f"{VIM}key") or "", None)
    return out


def layout(el: ET.Element) -> tuple[dict[int, int], int]:
    """(disk key -> chain length, unique bytes of every delta link), as `fleetread._chains` computes."""
    unique = {int(f.findtext(f"{VIM}key") or 0): int(f.findtext(f"{VIM}uniqueSize") or 0)
              for f in el.iterfind(f"{VIM}file")}
    chains: dict[int, int] = {}
    delta = 0
    for disk in el.iterfind(f"{VIM}disk"):
        links = disk.findall(f"{VIM}chain")
        chains[int(disk.findtext(f"{VIM}key") or 0)] = len(links)
        for link in links[1:]:  # the first link is the base disk, not a delta
            delta += sum(unique.get(int(k.text or 0), 0) for k in link.iterfind(f"{VIM}fileKey"))
    return chains, delta
