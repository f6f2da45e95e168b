"""`InstantClone_Task` requests written straight to their SOAP body, byte for byte pyVmomi's.

A fan-out sends one `InstantClone_Task` per clone; building the `InstantCloneSpec` as pyVmomi
objects and walking it with pyVmomi's serializer cost ~1.5 ms of controller CPU per clone
(bench/README.md, issue 17). Only a few values change from one clone to the next (its name, MAC
addresses, extraConfig, folder, datastore, pool), so the body is written from those, and the
parts that do not change are written by pyVmomi itself, once: the envelope and `_this` (per
API version and source) and each NIC edit (per source NIC, network and connection, with its MAC
substituted). A test holds the result equal to `SoapStubAdapter.SerializeRequest` over varied
specs; `instant_clone_spec` builds the same request as pyVmomi objects (for that test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyVmomi import SoapAdapter, VmomiSupport, vim

from forkscale.vsphere.transport import method_info

MAC_MARK = "forkscale-mac-placeholder"
"""Written where a NIC edit's MAC goes, in the fragment kept per source NIC."""
_esc = SoapAdapter.XmlEscape
_DEVICE_CHANGE = next(p for p in vim.vm.RelocateSpec._GetPropertyList() if p.name == "deviceChange")


@dataclass(frozen=True)
class Location:
    """Where the clone goes (a `RelocateSpec` with folder, datastore, perhaps pool, and NIC edits)."""

    folder: str
    datastore: str
    pool: str | None
    nics: Sequence[str]
    """Each NIC edit's `<deviceChange>`, as `device_change` wrote it (MAC filled in)."""


def instant_clone_spec(name: str, folder: str, datastore: str, pool: str | None, changes: list[Any],
                       extra: dict[str, str]) -> Any:
    """The same request as pyVmomi objects."""
    loc = vim.vm.RelocateSpec(folder=vim.Folder(folder), datastore=vim.Datastore(datastore), deviceChange=changes)
    if pool:
        loc.pool = vim.ResourcePool(pool)
    config = [vim.option.OptionValue(key=k, value=v) for k, v in extra.items()]
    return vim.vm.InstantCloneSpec(name=name, location=loc, config=config)


def _nsmap(version: Any) -> dict[str, str]:
    ns = dict(SoapAdapter.SOAP_NSMAP)
    ns[VmomiSupport.GetWsdlNamespace(version)] = ""
    return ns


def device_change(version: Any, change: Any) -> str:
    """One `VirtualDeviceSpec` as pyVmomi writes it inside a `RelocateSpec` (no outermost attributes)."""
    out = StringIO()
    writer = SoapAdapter.SoapSerializer(out, version, _nsmap(version))
    writer.outermostAttrs = ""
    info = VmomiSupport.Object(name="deviceChange", type=_DEVICE_CHANGE.type.Item, version=_DEVICE_CHANGE.version,
                               flags=_DEVICE_CHANGE.flags)
    writer.Serialize(change, info)
    return out.getvalue()


def with_mac(fragment: str, mac: str) -> str:
    """A NIC edit written with `MAC_MARK` as its MAC, with `mac` instead."""
    return fragment.replace(MAC_MARK, _esc(mac))


class Writer:
    """Writes `InstantClone_Task` bodies for one stub (its API version)."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self._heads: dict[str, tuple[str, str]] = {}
        self._spec_open: str | None = None
        self._string = ""

    def _head(self, source: str) -> tuple[str, str]:
        """(everything before the spec, everything after it) for a clone of `source`, from pyVmomi."""
        head = self._heads.get(source)
        if head is None:
            info = method_info(vim.VirtualMachine, "InstantClone")
            whole = self.stub.SerializeRequest(vim.VirtualMachine(source), info, ()).decode()
            cut = whole.index(f"</{info.wsdlName}>")
            head = self._heads[source] = (whole[:cut], whole[cut:])
        return head

    def _open(self) -> str:
        if self._spec_open is None:
            info = method_info(vim.VirtualMachine, "InstantClone")
            sample = instant_clone_spec("x", "f", "d", None, [], {"k": "v"})
            text = SoapAdapter._SerializeToStr(sample, info.params[0], self.stub.version, _nsmap(self.stub.version))
            self._spec_open = text[:text.index("<name>")]
            # how a string in an anyType is written (its xsi:type prefix)
            self._string = text[text.index("<value ") + len("<value "):text.index(">v</value>")]
        return self._spec_open

    def instant_clone(self, source: str, name: str, loc: Location, extra: dict[str, str]) -> bytes:
        """The whole request body, as `stub.SerializeRequest(VirtualMachine(source), InstantClone, spec)`."""
        before, after = self._head(source)
        parts = [before, self._open(), "<name>", _esc(name), "</name><location>",
                 f'<folder type="Folder">{loc.folder}</folder><datastore type="Datastore">{loc.datastore}</datastore>']
        if loc.pool:
            parts.append(f'<pool type="ResourcePool">{loc.pool}</pool>')
        parts.extend(loc.nics)
        parts.append("</location>")
        for key, value in extra.items():
            parts.append(f"<config><key>{_esc(key)}</key><value {self._string}>{_esc(value)}</value></config>")
        parts.append("</spec>")
        parts.append(after)
        return "".join(parts).encode(SoapAdapter.XML_ENCODING)
