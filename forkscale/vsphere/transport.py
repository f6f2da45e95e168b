"""An asyncio SOAP transport over pyVmomi's own serializer and deserializer.

pyVmomi's stub is synchronous and serialises behind one lock (pyvmomi #1084); here requests are
serialized with `SoapStubAdapter.SerializeRequest`, sent with aiohttp, and parsed with
`SoapResponseDeserializer`, so hundreds of calls can be in flight on one event loop while
every value is still type-checked against the real schema. Sessions are kept by cookie and
re-established transparently on `NotAuthenticated`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from pyVmomi import SoapAdapter, VmomiSupport, vim

from forkscale.core.errors import PermanentError, TemporaryError

log = logging.getLogger("forkscale.vsphere")
COOKIE = "vmware_soap_session"
DEFAULT_VERSION = "vim.version.v8_0_3_0"
OFFLOAD_BYTES = 256 * 1024
"""Responses larger than this are deserialized on a worker thread, so the event loop (scrapes,
task tracking) keeps running while a big inventory page is parsed."""


def ssl_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext | bool:
    """Verified TLS by default (CA file or the system store); `insecure` is loud."""
    if insecure:
        log.warning("TLS verification is DISABLED for vCenter (insecure: true): the connection can be intercepted")
        return False
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    return ctx


_INFO: dict[tuple[type, str], Any] = {}


def method_info(kind: type, name: str) -> Any:
    """Method info by pyVmomi name ("InstantClone") or wsdl name ("InstantClone_Task")."""
    key = (kind, name)
    info = _INFO.get(key)
    if info is None:
        try:
            info = kind._GetMethodInfo(name)  # type: ignore[attr-defined]
        except AttributeError:
            info = next((m for m in kind._GetMethodList() if m.wsdlName == name), None)  # type: ignore[attr-defined]
            if info is None:
                raise AttributeError(f"{kind.__name__} has no method {name}") from None
        _INFO[key] = info
    return info


class Soap:
    """One vCenter endpoint: invoke any vim method asynchronously, with login and re-login."""

    def __init__(self, url: str, *, user: str, password: Callable[[], str], ca_file: str | None = None,
                 insecure: bool = False, connections: int = 64, timeout_s: float = 120.0) -> None:
        self.url = url
        self.user = user
        self._password = password
        self._ssl = ssl_context(ca_file, insecure)
        self._limit = connections
        self._timeout = timeout_s
        self.http: aiohttp.ClientSession | None = None
        self.stub = SoapAdapter.SoapStubAdapter(host="forkscale.invalid", version=DEFAULT_VERSION)
        self.cookie: str | None = None
        self.requests = 0
        self._login_lock = asyncio.Lock()
        self._login_gen = 0
        self.on_relogin: list[Callable[[], Awaitable[None]]] = []
        self.content: Any = None
        #: This server answered a keyed extraConfig property path with InvalidProperty (forkscale.vsphere.keyed).
        self.keyed_paths_refused = False

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl, keepalive_timeout=60)
        self.http = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        await self._negotiate_version()
        si = vim.ServiceInstance("ServiceInstance", self.stub)
        self.content = await self.invoke(si, "RetrieveServiceContent", anonymous=True)
        await self.login()

    async def close(self) -> None:
        if self.http is None:
            return
        try:
            if self.cookie and self.content is not None:
                await asyncio.wait_for(self.invoke(self.content.sessionManager, "Logout", anonymous=True), 5)
        except Exception:  # best effort: the session expires on its own
            pass
        await self.http.close()
        self.http = None

    async def _negotiate_version(self) -> None:
        """Use the newest API version both pyVmomi and the server speak (vimServiceVersions.xml)."""
        assert self.http is not None
        base = self.url.rsplit("/sdk", 1)[0]
        try:
            async with self.http.get(f"{base}/sdk/vimServiceVersions.xml",
                                     timeout=aiohttp.ClientTimeout(total=30)) as resp:
                text = await resp.text() if resp.status == 200 else ""
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PermanentError(f"TLS verification of {self.url} failed: {exc.certificate_error}; give the "
                                 "vCenter CA with `ca_file:` (or FORKSCALE_CA_FILE)", "SSLError") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TemporaryError(f"cannot reach {self.url}: {exc}", "ConnectionError") from exc
        versions = []
        if text:
            root = ET.fromstring(text)
            for ns in root.iter("namespace"):
                if (ns.findtext("name") or "") == "urn:vim25":
                    versions = [ns.findtext("version") or ""] + [v.text or "" for v in ns.iter("version")]
        for v in versions:
            try:
                version = VmomiSupport.GetVersionFromVersionUri(f"vim25/{v}")
            except KeyError:
                continue
            self.stub = SoapAdapter.SoapStubAdapter(host="forkscale.invalid", version=version)
            return

    async def login(self) -> None:
        gen = self._login_gen
        async with self._login_lock:
            if gen != self._login_gen and self.cookie:
                return  # someone else logged in while we waited
            self.cookie = None
            await self.invoke(self.content.sessionManager, "Login", self.user, self._password(), None,
                              anonymous=True)
            self._login_gen += 1
        for hook in self.on_relogin if gen > 0 else []:
            await hook()

    async def invoke(self, mo: Any, method: str, *args: Any, anonymous: bool = False,
                     timeout: float | None = None) -> Any:
        """Call `method` (pyVmomi's Python name, e.g. "InstantClone") on `mo`; raise its fault."""
        info = method_info(type(mo), method)
        for attempt in (1, 2):
            gen = self._login_gen
            try:
                return await self._post(mo, info, args, timeout)
            except vim.fault.NotAuthenticated:
                if anonymous or attempt == 2:
                    raise
                log.info("vCenter session expired; logging in again")
                if gen == self._login_gen:
                    await self.login()
        raise AssertionError("unreachable")

    async def _post(self, mo: Any, info: Any, args: tuple[Any, ...], timeout: float | None) -> Any:
        assert self.http is not None, "Soap.open() first"
        body = self.stub.SerializeRequest(mo, info, args)
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": self.stub.versionId}
        if self.cookie:
            headers["Cookie"] = f'{COOKIE}="{self.cookie}"'
        self.requests += 1
        try:
            async with self.http.post(self.url, data=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=timeout or self._timeout)) as resp:
                data = await resp.read()
                cookie = resp.cookies.get(COOKIE)
                if cookie is not None:
                    self.cookie = cookie.value.strip('"')
                status = resp.status
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PermanentError(f"TLS verification of {self.url} failed: {exc.certificate_error}",
                                 "SSLError") from exc
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            raise TemporaryError(f"{info.wsdlName}: vCenter did not answer ({type(exc).__name__}: {exc})",
                                 "ConnectionError", delay=2.0) from exc
        if status not in (200, 500):
            raise TemporaryError(f"{info.wsdlName}: HTTP {status} from vCenter", f"HTTP{status}", delay=2.0)
        parse = SoapAdapter.SoapResponseDeserializer(self.stub).Deserialize
        if len(data) > OFFLOAD_BYTES:  # e.g. a page of 1,000 VMs: ~1 s of parsing that must not stall the loop
            result = await asyncio.to_thread(parse, data, info.result)
        else:
            result = parse(data, info.result)
        if status == 500:
            if isinstance(result, BaseException):
                raise result
            raise TemporaryError(f"{info.wsdlName}: malformed fault from vCenter", "SystemError")
        return result
