"""Datastore files on the twin: the datastore browser (SearchDatastore_Task and its sub-folder
variant), `/folder` over HTTPS (GET, HEAD, PUT, DELETE with the SOAP session's cookie), and the
file manager — three views of one namespace, each checked against the others."""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit

import pytest
from pyVmomi import vim

from tests.fixtures.twin import find_vm
from tests.twin_helpers import ds, fault_of, free, linked_clone, run

B = vim.host.DatastoreBrowser
DETAILS = B.FileInfo.Details(fileType=True, fileSize=True, modification=True, fileOwner=False)


class Folder:
    """`/folder` requests as a client makes them, with the session cookie of a pyVmomi connection."""

    def __init__(self, twin, si) -> None:
        url = urlsplit(twin.url)
        self.base = f"{url.scheme}://{url.netloc}/folder"
        self.ctx = ssl.create_default_context(cafile=twin.ca_file)
        self.cookie = si._stub.cookie.split(";")[0]
        self.twin = twin

    def request(self, method, path="", data=None, *, ds_name="ds-ssd", cookie=True, basic=False):
        query = "?dcPath=dc1" + (f"&dsName={quote(ds_name)}" if ds_name else "")
        req = urllib.request.Request(f"{self.base}/{quote(path)}{query}", data=data, method=method)
        if cookie:
            req.add_header("Cookie", self.cookie)
        if basic:
            token = base64.b64encode(f"{self.twin.user}:{self.twin.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)


def search(si, path, *patterns, query=None, sub=False, details=DETAILS):
    browser = ds(si, path.split("]")[0][1:]).browser
    spec = B.SearchSpec(matchPattern=list(patterns), query=query or [], details=details)
    task = (browser.SearchDatastoreSubFolders_Task if sub else browser.SearchDatastore_Task)(path, spec)
    return run(si, task)


def test_browser_lists_what_the_vm_keeps_and_hides_extents(si):
    res = search(si, "[ds-ssd] src-linux")
    assert res.folderPath == "[ds-ssd] src-linux" and res.datastore == ds(si, "ds-ssd")
    names = {f.path: f for f in res.file}
    assert set(names) == {"src-linux.vmx", "src-linux.nvram", "src-linux.vmsd", "vmware.log", "src-linux.vmdk",
                          "src-linux-000001.vmdk"}  # no -flat / -delta extents
    assert isinstance(names["src-linux.vmx"], B.VmConfigInfo) and names["src-linux.vmx"].fileSize > 0
    base = names["src-linux.vmdk"]
    assert isinstance(base, B.VmDiskInfo) and base.fileSize > 10 * 1024**3  # counts its extent
    vmx = search(si, "[ds-ssd] src-linux", "*.vmx", query=[B.VmConfigQuery()])
    assert [f.path for f in vmx.file] == ["src-linux.vmx"]
    disks = search(si, "[ds-ssd] src-linux", query=[B.VmDiskQuery(details=B.VmDiskQuery.Details(
        diskType=True, capacityKb=True, hardwareVersion=True, thin=True))])
    assert {f.path: f.capacityKb for f in disks.file} == {"src-linux.vmdk": 40 * 1024**2,
                                                          "src-linux-000001.vmdk": 40 * 1024**2}


def test_sub_folder_search_follows_clones_and_faults(si):
    linked_clone(si, "br-1")
    results = search(si, "[ds-ssd]", "*.vmdk", query=[B.VmDiskQuery()], sub=True)
    by_folder = {r.folderPath: sorted(f.path for f in r.file) for r in results}
    assert by_folder["[ds-ssd] br-1"] == ["br-1-000001.vmdk"]
    assert "src-linux.vmdk" in by_folder["[ds-ssd] src-linux"]
    root = search(si, "[ds-ssd]", query=[B.FolderQuery()])
    assert {"br-1", "src-linux", "src-win"} <= {f.path for f in root.file}
    assert all(isinstance(f, B.FolderInfo) for f in root.file)
    browser = ds(si, "ds-ssd").browser
    assert isinstance(fault_of(si, browser.SearchDatastore_Task("[ds-ssd] nowhere", None)), vim.fault.FileNotFound)
    assert isinstance(fault_of(si, browser.SearchDatastore_Task("[ds-hdd]", None)), vim.fault.InvalidDatastore)
    with pytest.raises(vim.fault.InvalidDatastorePath):
        browser.SearchDatastore_Task("no brackets", None)


def test_folder_serves_the_vmx_the_descriptors_and_listings(twin, si):
    http = Folder(twin, si)
    status, body, _ = http.request("GET", "src-linux/src-linux.vmx")
    assert status == 200 and b'displayName = "src-linux"' in body
    assert b'scsi0:0.fileName = "src-linux-000001.vmdk"' in body
    vm = find_vm(si, "src-linux")
    size = next(f.size for f in vm.layoutEx.file if f.type == "config")
    assert len(body) == size  # the API and the file agree
    status, body, _ = http.request("GET", "src-linux/src-linux-000001.vmdk")
    assert status == 200 and b'parentFileNameHint="src-linux.vmdk"' in body and b"VMFSSPARSE" in body
    status, _, headers = http.request("HEAD", "src-linux/src-linux-flat.vmdk")
    assert status == 200 and int(headers["Content-Length"]) == 10 * 1024**3
    status, body, _ = http.request("GET", "src-linux")
    assert status == 200 and b"src-linux.vmx" in body and b"src-linux-flat.vmdk" in body
    status, body, _ = http.request("GET", "", ds_name=None)
    assert status == 200 and b"ds-ssd" in body and b"ds-hdd" in body
    assert http.request("GET", "src-linux/nope.txt")[0] == 404
    assert http.request("GET", "src-linux/src-linux.vmx", cookie=False)[0] == 401
    assert http.request("GET", "src-linux/src-linux.vmx", cookie=False, basic=True)[0] == 200


def test_folder_put_then_search_get_and_delete(twin, si):
    http = Folder(twin, si)
    before = free(si, "ds-hdd")
    assert http.request("PUT", "isos/tools.iso", b"x" * 4096, ds_name="ds-hdd")[0] == 201
    assert free(si, "ds-hdd") == before - 4096
    found = search(si, "[ds-hdd] isos", query=[B.IsoImageQuery()])
    assert [(f.path, f.fileSize, type(f)) for f in found.file] == [("tools.iso", 4096, B.IsoImageInfo)]
    status, body, _ = http.request("GET", "isos/tools.iso", ds_name="ds-hdd")
    assert status == 200 and body == b"x" * 4096
    assert http.request("PUT", "src-linux/src-linux.vmx", b"evil")[0] == 409  # a VM's own file
    assert http.request("DELETE", "src-linux/src-linux.vmx")[0] == 409
    assert http.request("DELETE", "isos", ds_name="ds-hdd")[0] == 204
    assert http.request("GET", "isos/tools.iso", ds_name="ds-hdd")[0] == 404
    assert free(si, "ds-hdd") == before


def test_file_manager_makes_and_deletes(twin, si):
    fm = si.content.fileManager
    dc = si.content.rootFolder.childEntity[0]
    fm.MakeDirectory("[ds-hdd] a/b", dc, createParentDirectories=True)
    assert [f.path for f in search(si, "[ds-hdd] a").file] == ["b"]
    with pytest.raises(vim.fault.FileAlreadyExists):
        fm.MakeDirectory("[ds-hdd] a/b", dc)
    with pytest.raises(vim.fault.CannotCreateFile):
        fm.MakeDirectory("[ds-hdd] x/y", dc, createParentDirectories=False)
    run(si, fm.DeleteDatastoreFile_Task("[ds-hdd] a", dc))
    assert isinstance(fault_of(si, browser_search(si, "[ds-hdd] a")), vim.fault.FileNotFound)
    locked = fault_of(si, fm.DeleteDatastoreFile_Task("[ds-ssd] src-linux/src-linux.vmdk", dc))
    assert isinstance(locked, vim.fault.FileLocked)
    gone = fault_of(si, si.content.virtualDiskManager.DeleteVirtualDisk_Task("[ds-ssd] nope.vmdk", dc))
    assert isinstance(gone, vim.fault.FileNotFound)


def browser_search(si, path):
    return ds(si, path.split("]")[0][1:]).browser.SearchDatastore_Task(path, None)
