"""An asyncio SOAP transport over pyVmomi's own serializer and deserializer.

pyVmomi's stub is synchronous and serialises behind one lock (pyvmomi #1084); here requests are
serialized with `SoapStubAdapter.SerializeRequest`, sent with aiohttp, and parsed with
`SoapResponseDeserializer`, so hundreds of calls can be in flight on one event loop while
every value is still type-checked against the real schema. Sessions are kept by cookie and
re-established transparently on `NotAuthenticated`; each login starts a new `epoch`, and the
`on_relogin` hooks (the task watcher, the inventory informer) drop what the old session held.
Calls are retried as `forkscale.vsphere.retry` says, and never wait past its budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl

from forkscale.core.errors import PermanentError, TemporaryError
from forkscale.vsphere.faults import is_temporary
from forkscale.vsphere.ports import VCenterUnavailable
from forkscale.vsphere.retry import READS, Retry, Unreachable

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


_MOREF_ANSWER = re.compile(rb'<returnval type="([A-Za-z]+)">([^<&"]+)</returnval>')


def moref_answer(data: bytes, info: Any, stub: Any) -> Any:
    """The managed object a short answer of a method returning one names, as pyVmomi's
    deserializer makes it; None when the answer is anything else (pyVmomi decodes it then)."""
    kind = info.result
    if len(data) > 2048 or not (isinstance(kind, type) and issubclass(kind, VmomiSupport.ManagedObject)):
        return None
    found = _MOREF_ANSWER.findall(data)
    if len(found) != 1:
        return None
    try:
        typ = VmomiSupport.GetWsdlType(VmomiSupport.GetWsdlNamespace(stub.version), found[0][0].decode())
    except KeyError:
        return None
    if not issubclass(typ, kind):
        return None
    return typ(found[0][1].decode(), stub, None)


class Soap:
    """One vCenter endpoint: invoke any vim method asynchronously, with login and re-login."""

    def __init__(self, url: str, *, user: str, password: Callable[[], str], ca_file: str | None = None,
                 insecure: bool = False, connections: int = 64, timeout_s: float = 120.0,
                 retry: Retry | None = None) -> None:
        self.url = url
        self.retry = retry or Retry()
        self._rng = random.Random()
        self._opened = False  # before the first login, trouble is reported at once (ConnectionFailed)
        self.down_since: float | None = None
        """`time.monotonic()` when vCenter stopped answering (None while it answers)."""
        self._give_up = asyncio.Event()
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
        self.observed_at = 0.0
        """`time.monotonic()` when the latest answer that told the controller something arrived (any
        response but an empty `WaitForUpdatesEx` and requests made with `observe=False`). The
        inventory informer (`forkscale.vsphere.informer`) is never older than this when it answers."""
        #: This server answered a keyed extraConfig property path with InvalidProperty (forkscale.vsphere.keyed).
        self.keyed_paths_refused = False

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl, keepalive_timeout=60)
        self.http = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        await self._negotiate_version()
        si = vim.ServiceInstance("ServiceInstance", self.stub)
        self.content = await self.invoke(si, "RetrieveServiceContent", anonymous=True)
        await self.login()
        self._opened = True

    @property
    def epoch(self) -> int:
        """Which login this is: a new epoch (a restarted vCenter, an expired session) forgets the
        old session's collectors, views and paging tokens, and perhaps its tasks."""
        return self._login_gen

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
            attempt = 0
            while True:
                try:
                    await self.invoke(self.content.sessionManager, "Login", self.user, self._password(), None,
                                      anonymous=True)
                    break
                except vim.fault.InvalidLogin:
                    if not self._opened:
                        raise
                    # a vCenter coming back may refuse logins until its SSO is up: part of the outage
                    attempt += 1
                    await self._outage(Unreachable(f"vCenter refused the login for {self.user!r} after "
                                                   "reconnecting"), attempt)
            self._login_gen += 1
        if gen > 0:
            log.info("logged in to vCenter again (session %d): what the old session held is dropped",
                     self._login_gen)
            for hook in list(self.on_relogin):
                try:
                    await hook()
                except Exception as exc:  # a hook's own failure must not fail the call that logged in
                    log.warning("re-login hook %s failed: %s", getattr(hook, "__qualname__", hook), exc)

    async def invoke(self, mo: Any, method: str, *args: Any, anonymous: bool = False,
                     timeout: float | None = None, observe: bool = True, raw: bool = False,
                     body: bytes | None = None) -> Any:
        """Call `method` (pyVmomi's Python name, e.g. "InstantClone") on `mo`; raise its fault.

        Retried as `forkscale.vsphere.retry` says: through an outage of vCenter (any call), and on a
        transient fault or a lost answer (reads only); `VCenterUnavailable` past the outage budget.
        `observe=False`: the answer does not move `observed_at` on (the informer's own reads, perf
        queries). `raw`: a successful answer is returned as its XML bytes, undecoded (faults are
        still raised as pyVmomi faults). `body`: the request already written (as
        `stub.SerializeRequest` would write it for `mo`, `method` and the arguments; `clonexml`).
        """
        info = method_info(type(mo), method)
        read = info.wsdlName in READS
        relogged = False
        attempt = faults = 0
        started = time.monotonic()
        while True:
            attempt += 1
            gen = self._login_gen
            try:
                try:
                    result = await self._post(mo, info, args, timeout, observe, raw, body)
                except vmodl.fault.ManagedObjectNotFound as exc:
                    if self._session_gone(mo, exc):
                        raise vim.fault.NotAuthenticated(msg=str(getattr(exc, "msg", ""))) from exc
                    raise
            except vim.fault.NotAuthenticated:
                if anonymous or relogged:
                    raise
                relogged = True
                log.info("vCenter session expired; logging in again")
                if gen == self._login_gen:
                    await self.login()
                continue
            except Unreachable as exc:  # never reached vCenter: safe to send again, whatever it does
                await self._outage(exc, attempt)
                continue
            except TemporaryError as exc:  # the answer was lost: a read is sent again, a change is not
                if not read or exc.fault != "ConnectionError":
                    raise
                await self._outage(Unreachable(str(exc)), attempt)
                continue
            except vmodl.MethodFault as exc:
                faults += 1
                if not (read and is_temporary(exc)) or faults >= self.retry.read_attempts:
                    raise
                wait = self.retry.backoff(faults, self._rng)
                if time.monotonic() + wait - started > self.retry.read_s:
                    raise
                log.info("%s: %s; retry %d/%d in %.1fs", info.wsdlName, type(exc).__name__, faults,
                         self.retry.read_attempts - 1, wait)
                await asyncio.sleep(wait)
                continue
            self._answered()
            return result

    def _session_gone(self, mo: Any, exc: Any) -> bool:
        """The session's default property collector is not found: the session is gone (vcsim and the
        twin answer an anonymous RetrievePropertiesEx so, where vCenter says NotAuthenticated)."""
        pc = getattr(self.content, "propertyCollector", None)
        obj = getattr(exc, "obj", None)
        return (pc is not None and getattr(mo, "_moId", None) == pc._moId
                and getattr(obj, "_moId", None) in (None, pc._moId))

    async def _outage(self, exc: Unreachable, attempt: int) -> None:
        """vCenter did not answer: wait a little (and return, to try again), or raise once it has
        been unreachable for longer than the outage budget (at once before the first login)."""
        if not self._opened:
            raise exc
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning("vCenter %s does not answer (%s); retrying for up to %gs", self.url, exc,
                        self.retry.outage_s)
        left = self.down_since + self.retry.outage_s - now
        if left <= 0 or self._give_up.is_set():
            why = "stopping" if left > 0 else f"outage_s {self.retry.outage_s:g}"
            raise VCenterUnavailable(f"vCenter {self.url} unreachable for {now - self.down_since:.0f}s "
                                     f"({why}): {exc}") from None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._give_up.wait(), min(left, max(0.2, self.retry.backoff(attempt, self._rng))))

    def stop_waiting(self) -> None:
        """The program is stopping: calls waiting for vCenter to come back give up now (VCenterUnavailable)."""
        self._give_up.set()

    def _answered(self) -> None:
        if self.down_since is not None:
            log.warning("vCenter %s answers again after %.1fs", self.url, time.monotonic() - self.down_since)
            self.down_since = None

    async def _post(self, mo: Any, info: Any, args: tuple[Any, ...], timeout: float | None,
                    observe: bool = True, raw: bool = False, body: bytes | None = None) -> Any:
        assert self.http is not None, "Soap.open() first"
        if body is None:
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
            received = time.monotonic()
        except aiohttp.ClientConnectorCertificateError as exc:
            why = f"TLS verification of {self.url} failed: {exc.certificate_error}"
            if not self._opened:
                raise PermanentError(why, "SSLError") from exc
            raise Unreachable(why) from exc  # mid-run: a restarting vCenter, or a new certificate (persists: exit 1)
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(f"{info.wsdlName}: cannot connect to vCenter ({exc.os_error or exc})") from exc
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            raise TemporaryError(f"{info.wsdlName}: vCenter did not answer ({type(exc).__name__}: {exc})",
                                 "ConnectionError", delay=2.0) from exc
        if status == 503:  # its reverse proxy is up, vCenter behind it is not (yet)
            raise Unreachable(f"{info.wsdlName}: HTTP 503 from vCenter")
        if status in (502, 504):  # a gateway lost it: the call may or may not have reached vCenter
            raise TemporaryError(f"{info.wsdlName}: HTTP {status} from vCenter", "ConnectionError", delay=2.0)
        if status not in (200, 500):
            raise TemporaryError(f"{info.wsdlName}: HTTP {status} from vCenter", f"HTTP{status}", delay=2.0)
        parse = SoapAdapter.SoapResponseDeserializer(self.stub).Deserialize
        moref = moref_answer(data, info, self.stub) if status == 200 and not raw else None
        if raw and status == 200:
            result: Any = data
        elif moref is not None:  # e.g. the Task of each InstantClone_Task: no parser for one moref
            result = moref
        elif len(data) > OFFLOAD_BYTES:  # e.g. a page of 1,000 VMs: ~1 s of parsing that must not stall the loop
            result = await asyncio.to_thread(parse, data, info.result)
        else:
            result = parse(data, info.result)
        empty = result is None or (raw and status == 200 and b"<returnval" not in data)
        if observe and not (empty and info.wsdlName == "WaitForUpdatesEx"):
            self.observed_at = max(self.observed_at, received)
        if status == 500:
            if isinstance(result, BaseException):
                raise result
            raise TemporaryError(f"{info.wsdlName}: malformed fault from vCenter", "SystemError")
        return result
