"""SOAP wire for the twin, built on pyVmomi's own serializer and deserializer.

Requests are parsed with `SoapDeserializer`, so argument types are checked against the real
vSphere schema; responses and faults go through `SoapSerializer`, so every answer is a valid
vim25 document. Only two wire details are patched, both for non-pyVmomi clients (govmomi):
a moref in an `anyType` slot is typed `xsi:type="ManagedObjectReference"`, and the fault detail
element carries its own `xsi:type`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from io import StringIO
from typing import Any
from xml.parsers.expat import ExpatError, ParserCreate
from xml.sax.saxutils import escape

from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl
from pyVmomi.SoapAdapter import (
    NS_SEP,
    SOAP_BODY_END,
    SOAP_BODY_START,
    SOAP_ENVELOPE_END,
    SOAP_ENVELOPE_START,
    SOAP_NSMAP,
    XML_HEADER,
    XMLNS_SOAPENV,
    SoapDeserializer,
    SoapSerializer,
)
from pyVmomi.VmomiSupport import F_OPTIONAL, ManagedObject, Object

API_VERSION = "8.0.3.0"
VERSION = VmomiSupport.GetVersionFromVersionUri(f"vim25/{API_VERSION}")
NAMESPACE = "urn:vim25"


class BadRequest(Exception):
    """The request could not be parsed: answered with a SOAP fault, never a crash."""


@dataclass
class Request:
    method: VmomiSupport.ManagedMethod
    this: ManagedObject
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.method.info.wsdlName)


class _Serializer(SoapSerializer):
    """pyVmomi's serializer, with govmomi-compatible typing of morefs in anyType slots."""

    xsiPrefix: str  # noqa: N815 - set by SoapSerializer.__init__

    def __init__(self, out: StringIO) -> None:
        nsmap = SOAP_NSMAP.copy()
        nsmap[NAMESPACE] = ""
        SoapSerializer.__init__(self, out, VERSION, nsmap)

    def _Serialize(self, val: Any, info: Any, defNS: str) -> None:  # noqa: N802, N803
        if isinstance(val, ManagedObject) and info.type is object:
            self.writer.write(
                f'<{info.name} {self.xsiPrefix}type="ManagedObjectReference" type="{VmomiSupport.GetWsdlName(type(val))}">{val._moId}</{info.name}>'
            )
            return
        if type(val) is _CHANGE:  # a property collector update has thousands: written here, not walked
            self.writer.write(f"<{info.name}><name>{escape(val.name)}</name><op>{val.op}</op>")
            if val.val is not None:
                text = _any_scalar(val.val, self.xsiPrefix)
                if text is None:
                    self._Serialize(val.val, _CHANGE_VAL, defNS)
                else:
                    self.writer.write(text)
            self.writer.write(f"</{info.name}>")
            return
        SoapSerializer._Serialize(self, val, info, defNS)


_CHANGE = vmodl.query.PropertyCollector.Change
_CHANGE_VAL = _CHANGE._GetPropertyInfo("val")


def _any_scalar(val: Any, xsi: str) -> str | None:
    """A `val` (anyType) of a common scalar type, as pyVmomi's serializer writes it; None otherwise."""
    kind = type(val)
    if kind is str:
        return f'<val {xsi}type="xsd:string">{escape(val)}</val>'
    if kind is bool:
        return f'<val {xsi}type="xsd:boolean">{"true" if val else "false"}</val>'
    if kind is VmomiSupport.long:
        return f'<val {xsi}type="xsd:long">{int(val)}</val>'
    if kind is int:
        return f'<val {xsi}type="xsd:int">{val}</val>'
    if isinstance(val, VmomiSupport.Enum):
        return f'<val {xsi}type="{VmomiSupport.GetWsdlName(kind)}">{escape(val)}</val>'
    if isinstance(val, ManagedObject):
        return (f'<val {xsi}type="ManagedObjectReference" type="{VmomiSupport.GetWsdlName(kind)}">'
                f"{escape(val._moId)}</val>")
    if kind is _OPTION and type(val.value) is str:  # an extraConfig["key"] path
        return (f'<val {xsi}type="OptionValue"><key>{escape(val.key)}</key>'
                f'<value {xsi}type="xsd:string">{escape(val.value)}</value></val>')
    if isinstance(val, VmomiSupport.Array) and issubclass(getattr(kind, "Item", object), ManagedObject):
        refs = "".join(f'<ManagedObjectReference type="{VmomiSupport.GetWsdlName(type(v))}">{escape(v._moId)}'
                       "</ManagedObjectReference>" for v in val)
        return f'<val {xsi}type="ArrayOfManagedObjectReference">{refs}</val>'
    return None


_OPTION = vim.option.OptionValue


def _serialize(val: Any, info: Any) -> str:
    out = StringIO()
    SoapSerializer.Serialize(_Serializer(out), val, info)
    return out.getvalue()


class _RequestParser:
    """Expat handlers that find Envelope/Body/<Method> and hand each parameter to pyVmomi."""

    def __init__(self) -> None:
        self.parser = ParserCreate(namespace_separator=NS_SEP)
        self.parser.buffer_text = True
        self.depth = 0
        self.method: VmomiSupport.ManagedMethod | _UnknownMethod | None = None
        self.params: dict[str, Any] = {}
        self.args: dict[str, Any] = {}
        self._current: tuple[str, Any, bool] | None = None
        self.nsmap: dict[str | None, list[str]] = {}
        self._install()

    def _install(self) -> None:
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.StartNamespaceDeclHandler = self.ns_start
        self.parser.EndNamespaceDeclHandler = self.ns_end
        self.parser.CharacterDataHandler = None

    def ns_start(self, prefix: str | None, uri: str) -> None:
        self.nsmap.setdefault(prefix, []).append(uri)

    def ns_end(self, prefix: str | None) -> None:
        self.nsmap[prefix].pop()

    def parse(self, body: bytes) -> Request:
        try:
            self.parser.Parse(body, True)
        except ExpatError as exc:
            raise BadRequest(f"malformed XML: {exc}") from exc
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise BadRequest(f"invalid argument: {exc}") from exc
        if self.method is None:
            raise BadRequest("no method element in the SOAP body")
        if isinstance(self.method, _UnknownMethod):
            name = self.method.name
            raise vmodl.fault.MethodNotFound(msg=f"Unknown method {name}", method=name, receiver=_receiver(body))
        this = self.args.pop("_this", None)
        if this is None:
            raise BadRequest(f"{self.method.info.wsdlName}: missing _this")
        for name, info in self.params.items():
            if name != "_this" and name not in self.args:
                if issubclass(info.type, list):
                    self.args[name] = info.type()
                elif not info.flags & F_OPTIONAL:
                    raise BadRequest(f"{self.method.info.wsdlName}: missing required argument '{name}'")
                else:
                    self.args[name] = None
        return Request(self.method, this, self.args)

    def start(self, tag: str, attr: dict[str, str]) -> None:
        self.depth += 1
        ns, _, name = tag.rpartition(NS_SEP)
        if self.depth == 1:
            if ns != XMLNS_SOAPENV or name != "Envelope":
                raise BadRequest("not a SOAP envelope")
        elif self.depth == 2:
            return
        elif self.depth == 3 and self.method is None:
            try:
                method = VmomiSupport.GetWsdlMethod(ns or NAMESPACE, name)
            except KeyError:
                self.method = _UnknownMethod(name)
                return
            self.method = method
            self.params = {p.name: p for p in method.info.params}
            self.params["_this"] = Object(name="_this", type=ManagedObject, version=VERSION, flags=0)
        elif self.depth == 4 and isinstance(self.method, VmomiSupport.ManagedMethod):
            info = self.params.get(name)
            if info is None:
                raise BadRequest(f"{self.method.info.wsdlName}: unexpected argument '{name}'")
            is_list = issubclass(info.type, list)
            self._current = (name, info, is_list)
            deser = SoapDeserializer(None, VERSION)
            deser.Deserialize(self.parser, info.type.Item if is_list else info.type, False, self.nsmap)
            deser.StartElementHandler(tag, attr)
            self.parser.EndElementHandler = self._param_end(deser)

    def _param_end(self, deser: SoapDeserializer) -> Any:
        def end(tag: str) -> None:
            deser.EndElementHandler(tag)
            if not hasattr(deser, "stack"):  # pyVmomi deletes it when the element closes
                self._finish_param(deser)

        return end

    def _finish_param(self, deser: SoapDeserializer) -> None:
        assert self._current is not None
        name, info, is_list = self._current
        value = deser.GetResult()
        if is_list:
            self.args.setdefault(name, info.type()).append(value)
        else:
            self.args[name] = value
        self._current = None
        self.depth -= 1
        self._install()

    def end(self, tag: str) -> None:
        self.depth -= 1


class _UnknownMethod:
    def __init__(self, name: str) -> None:
        self.name = name


_THIS = re.compile(rb'<(?:[\w.-]+:)?_this\b[^>]*?\btype="([^"]+)"[^>]*>\s*([^<\s]+)\s*<')


def _receiver(body: bytes) -> Any:
    """The `_this` of a request whose method is unknown (MethodNotFound.receiver is required)."""
    m = _THIS.search(body)
    if m:
        try:
            return VmomiSupport.GetWsdlType(NAMESPACE, m.group(1).decode())(m.group(2).decode())
        except (KeyError, UnicodeDecodeError, TypeError, AttributeError):
            pass
    return vim.ServiceInstance("ServiceInstance")


def parse_request(body: bytes) -> Request:
    """Parse one SOAP request; raises BadRequest, or MethodNotFound for an unknown method."""
    return _RequestParser().parse(body)


def serialize_response(method: VmomiSupport.ManagedMethod, result: Any) -> bytes:
    info = method.info
    parts = [
        XML_HEADER,
        "\n",
        SOAP_ENVELOPE_START,
        SOAP_BODY_START,
        f'<{info.wsdlName}Response xmlns="{NAMESPACE}">',
    ]
    if result is not None and info.result is not type(None) and not (isinstance(result, list) and not result):
        ret = Object(name="returnval", type=info.result, version=VERSION, flags=info.resultFlags)
        parts.append(_serialize(result, ret))
    parts += [f"</{info.wsdlName}Response>", SOAP_BODY_END, SOAP_ENVELOPE_END]
    return "".join(parts).encode("utf-8")


def serialize_fetch(val: Any, typ: Any) -> bytes:
    """The answer to pyVmomi's `Fetch(prop)` (not in the WSDL): the value, as its declared type."""
    info = Object(name="returnval", type=typ or object, version=VERSION, flags=F_OPTIONAL)
    inner = "" if val is None else _serialize(val, info)
    return (f'{XML_HEADER}\n{SOAP_ENVELOPE_START}{SOAP_BODY_START}<FetchResponse xmlns="{NAMESPACE}">{inner}'
            f'</FetchResponse>{SOAP_BODY_END}{SOAP_ENVELOPE_END}').encode()


def serialize_fault(fault: vmodl.MethodFault, message: str | None = None) -> bytes:
    """A SOAP fault with the vim25 detail, as vCenter sends it; a fault that cannot be serialized
    (a required field unset) becomes a SystemError naming it, never a broken response."""
    try:
        return _fault_xml(fault, message)
    except Exception as exc:
        name = type(fault).__name__
        return _fault_xml(vmodl.fault.SystemError(msg=f"twin internal error serializing {name}: {exc}",
                                                  reason=repr(exc)), None)


def _fault_xml(fault: vmodl.MethodFault, message: str | None) -> bytes:
    # pyVmomi's stubs leave out MethodFault.msg (a real property): [attr-defined] here and below
    msg = message or fault.msg or type(fault).__name__  # type: ignore[attr-defined]
    fault.msg = None
    detail = StringIO()
    wsdl = VmomiSupport.GetWsdlName(type(fault))
    info = Object(name=f"{wsdl}Fault", type=type(fault), version=VERSION, flags=0)
    SoapSerializer._SerializeDataObject(_Serializer(detail), fault, info, f' xmlns="{NAMESPACE}" xsi:type="{wsdl}"',
                                        NAMESPACE)
    fault.msg = msg
    code = "ServerFaultCode"
    return (
        f"{XML_HEADER}\n{SOAP_ENVELOPE_START}{SOAP_BODY_START}<soapenv:Fault>"
        f"<faultcode>{code}</faultcode><faultstring>{SoapAdapter.XmlEscape(msg)}</faultstring>"
        f"<detail>{detail.getvalue()}</detail></soapenv:Fault>{SOAP_BODY_END}{SOAP_ENVELOPE_END}"
    ).encode()
