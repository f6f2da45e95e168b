"""Datastore files over HTTP, as vCenter serves them: `/folder[/path]?dcPath=DC&dsName=DS`.

| request | answer |
|---|---|
| `GET /folder` | HTML listing of the datacenters |
| `GET /folder?dcPath=dc1` | HTML listing of its datastores |
| `GET /folder/<dir>?dcPath=dc1&dsName=ds` | HTML listing of a directory (`<dir>` empty: the root) |
| `GET`/`HEAD /folder/<file>?...` | the file: a `.vmx`, disk descriptor or log rendered from the VM; an extent or memory image as zeros of its size; what was uploaded |
| `PUT /folder/<file>?...` | stores the body (parent directories implied); a VM's or disk's own file cannot be overwritten (409) |
| `DELETE /folder/<path>?...` | as DeleteDatastoreFile_Task (404 not found, 409 in use) |

Authenticated like vCenter: the SOAP session cookie (`vmware_soap_session`) of a logged-in
session, or HTTP basic auth with the twin's user and password; anything else is 401.
"""

from __future__ import annotations

import base64
import html
import posixpath
import secrets
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web
from pyVmomi import vim

from .filemgr import delete_path
from .inventory import Datacenter, Datastore
from .namespace import children, directories, entries

if TYPE_CHECKING:
    from .service import Twin

CHUNK = 1024 * 1024
_ZEROS = bytes(CHUNK)


class FolderRoutes:
    def __init__(self, twin: Twin, session_cookie: object) -> None:
        self.twin = twin
        self.cookie_of = session_cookie  # request -> session key (the server's cookie parser)

    def add_to(self, app: web.Application) -> None:
        for path in ("/folder", "/folder/", "/folder/{path:.*}"):
            app.router.add_get(path, self.get)  # and HEAD
            app.router.add_route("PUT", path, self.put)
            app.router.add_route("DELETE", path, self.delete)

    # auth -------------------------------------------------------------------------------------
    def _allowed(self, request: web.Request) -> bool:
        assert callable(self.cookie_of)
        key = self.cookie_of(request)
        if key and self.twin.session_for(key) is not None:
            return True
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.twin.user}:{self.twin.password}".encode()).decode()
        return bool(auth) and secrets.compare_digest(auth, expected)

    def _target(self, request: web.Request) -> tuple[Datacenter | None, Datastore | None, str]:
        if not self._allowed(request):
            raise web.HTTPUnauthorized(text="a vCenter session (cookie) or basic auth is required\n",
                                       headers={"WWW-Authenticate": 'Basic realm="VMware HTTP server"'})
        world = self.twin.world
        dc_path = request.query.get("dcPath")
        rel = posixpath.normpath(request.match_info.get("path", "").strip("/")) if request.match_info.get(
            "path", "").strip("/") else ""
        if rel.startswith(".."):
            raise web.HTTPBadRequest(text="invalid path\n")
        if dc_path is None:
            return None, None, rel
        dc = next((d for d in world.instances(Datacenter) if d.path() == dc_path.strip("/")), None)
        if dc is None:
            raise web.HTTPNotFound(text=f"no datacenter {dc_path}\n")
        ds_name = request.query.get("dsName")
        if ds_name is None:
            return dc, None, rel
        ds = next((d for d in dc.datastore_folder.entries if isinstance(d, Datastore) and d.name == ds_name), None)
        if ds is None:
            raise web.HTTPNotFound(text=f"no datastore {ds_name} in {dc_path}\n")
        return dc, ds, rel

    # methods ----------------------------------------------------------------------------------
    async def get(self, request: web.Request) -> web.StreamResponse:
        dc, ds, rel = self._target(request)
        world = self.twin.world
        if dc is None:
            names = [d.path() for d in world.instances(Datacenter)]
            return _listing("Datacenters", [(n, f"/folder?dcPath={quote(n)}") for n in names])
        if ds is None:
            return _listing(f"Datastores in {dc.name}",
                            [(d.name, f"/folder?dcPath={quote(dc.path())}&dsName={quote(d.name)}")
                             for d in dc.datastore_folder.entries if isinstance(d, Datastore)])
        files = entries(world, ds)
        dirs = directories(world, ds, files)
        if rel in dirs:
            subdirs, here = children(files, dirs, rel)
            query = f"?dcPath={quote(dc.path())}&dsName={quote(ds.name)}"
            base = "/folder/" + (quote(rel) + "/" if rel else "")
            items = [(d + "/", base + quote(d) + query) for d in subdirs]
            items += [(posixpath.basename(e.path), base + quote(posixpath.basename(e.path)) + query) for e in here]
            return _listing(f"[{ds.name}] {rel}", items)
        entry = files.get(rel)
        if entry is None:
            raise web.HTTPNotFound(text=f"[{ds.name}] {rel} was not found\n")
        headers = {"Content-Type": "application/octet-stream"}
        if entry.read is not None:
            return web.Response(body=entry.read(), headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = entry.size
        await resp.prepare(request)
        if request.method != "HEAD":
            left = entry.size
            while left > 0:
                n = min(left, CHUNK)
                await resp.write(_ZEROS[:n])
                left -= n
        await resp.write_eof()
        return resp

    async def put(self, request: web.Request) -> web.Response:
        dc, ds, rel = self._target(request)
        if ds is None or not rel:
            raise web.HTTPBadRequest(text="PUT needs a file path, dcPath and dsName\n")
        world = self.twin.world
        files = entries(world, ds)
        if rel in directories(world, ds, files):
            raise web.HTTPConflict(text=f"[{ds.name}] {rel} is a directory\n")
        existing = files.get(rel)
        if existing is not None and existing.kind != "file":
            raise web.HTTPConflict(text=f"[{ds.name}] {rel} is in use by a virtual machine or a disk\n")
        data = await request.read()
        world.files.put(ds.moid, rel, data)
        world.touch(ds)
        return web.Response(status=200 if existing is not None else 201)

    async def delete(self, request: web.Request) -> web.Response:
        dc, ds, rel = self._target(request)
        if ds is None:
            raise web.HTTPBadRequest(text="DELETE needs dcPath and dsName\n")
        try:
            delete_path(self.twin.world, ds, rel)
        except vim.fault.FileNotFound as exc:
            raise web.HTTPNotFound(text=f"{_msg(exc)}\n") from None
        except (vim.fault.FileLocked, vim.fault.InvalidDatastorePath) as exc:
            raise web.HTTPConflict(text=f"{_msg(exc)}\n") from None
        return web.Response(status=204)


def _msg(fault: Exception) -> str:
    return str(getattr(fault, "msg", "") or type(fault).__name__)


def _listing(title: str, items: list[tuple[str, str]]) -> web.Response:
    rows = "".join(f'<tr><td><a href="{html.escape(href)}">{html.escape(name)}</a></td></tr>\n'
                   for name, href in items)
    body = (f"<html><head><title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<table>\n{rows}</table></body></html>\n")
    return web.Response(text=body, content_type="text/html")
