"""The twin's guest file manager, /guestFile transfers and real guest programs, as any client sees them.

A stock pyVmomi session (fixture `si`) and plain HTTPS requests verified against the twin's CA,
exactly as the vSphere API reference describes the calls: nothing of forkscale's controller is
used. The programs run for real in each VM's sandbox, which is why these tests need bubblewrap.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from tests.fixtures.twin import find_vm
from tests.test_twin_guest import auth, instant_clone_spec, procs

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (scripts/setup-test-deps.sh installs it)")
Posix = vim.vm.guest.FileManager.PosixFileAttributes


def files(si):
    return si.content.guestOperationsManager.fileManager


def http(twin, method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """The transfer URL sent where the API reference says: '*' is the server the call went to."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname == "*" and parts.path == "/guestFile"
    target = urllib.parse.urlunsplit((parts.scheme, urllib.parse.urlsplit(twin.url).netloc, parts.path,
                                      parts.query, ""))
    req = urllib.request.Request(target, data=data, method=method)
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=twin.ca_file), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def upload(si, twin, vm, path: str, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    url = files(si).InitiateFileTransferToGuest(vm, auth(), path, Posix(permissions=mode), len(data), overwrite)
    assert http(twin, "PUT", url, data)[0] == 200


def download(si, twin, vm, path: str) -> bytes:
    info = files(si).InitiateFileTransferFromGuest(vm, auth(), path)
    status, body = http(twin, "GET", info.url)
    assert status == 200 and len(body) == info.size
    return body


def run(si, vm, command: str, *, timeout: float = 20.0, **spec) -> vim.vm.guest.ProcessManager.ProcessInfo:
    """Run `/bin/sh -c command` in the guest and wait for it to end."""
    pid = procs(si).StartProgramInGuest(vm, auth(), vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/sh", arguments=f"-c '{command}'", **spec))
    deadline = time.monotonic() + timeout
    while True:
        (info,) = procs(si).ListProcessesInGuest(vm, auth(), [pid])
        if info.endTime is not None:
            return info
        assert time.monotonic() < deadline, f"{command!r} still running"
        time.sleep(0.05)


def names(si, vm, path: str, pattern: str | None = None) -> list[str]:
    return [f.path for f in files(si).ListFilesInGuest(vm, auth(), path, None, None, pattern).files]


def test_upload_then_download_round_trips_with_size_and_permissions(si, twin):
    src = find_vm(si, "src-linux")
    data = secrets.token_bytes(300_000)
    url = files(si).InitiateFileTransferToGuest(src, auth(), "/root/blob.bin", Posix(permissions=0o640), len(data),
                                                False)
    assert url.startswith("https://*/guestFile?")
    assert http(twin, "PUT", url, data)[0] == 200
    assert http(twin, "PUT", url, data)[0] == 404  # one PUT per URL
    info = files(si).InitiateFileTransferFromGuest(src, auth(), "/root/blob.bin")
    assert info.size == len(data) and isinstance(info.attributes, Posix) and info.attributes.permissions == 0o640
    assert http(twin, "GET", info.url) == (200, data)
    assert http(twin, "GET", info.url)[0] == 404  # and one GET
    assert run(si, src, "test \"$(stat -c %s /root/blob.bin)\" = 300000").exitCode == 0  # programs see it too


def test_a_short_put_writes_nothing(si, twin):
    src = find_vm(si, "src-linux")
    url = files(si).InitiateFileTransferToGuest(src, auth(), "/tmp/short", Posix(), 10, True)
    assert http(twin, "PUT", url, b"12345")[0] == 400
    assert names(si, src, "/tmp", "^short$") == []


@pytest.mark.parametrize("path,overwrite,fault", [
    ("/tmp/exists", False, vim.fault.FileAlreadyExists),
    ("/no/such/dir/file", True, vim.fault.FileNotFound),
    ("/usr/bin/planted", True, vim.fault.GuestPermissionDenied),  # the system directories are read-only
    ("/tmp", True, vim.fault.NotAFile),
])
def test_transfer_to_guest_faults(si, twin, path, overwrite, fault):
    src = find_vm(si, "src-linux")
    upload(si, twin, src, "/tmp/exists", b"x")
    with pytest.raises(fault):
        files(si).InitiateFileTransferToGuest(src, auth(), path, Posix(), 1, overwrite)


def test_directories_temporary_files_moves_and_listing(si, twin):
    src = find_vm(si, "src-linux")
    fm = files(si)
    fm.MakeDirectoryInGuest(src, auth(), "/srv/a/b/c", True)
    with pytest.raises(vim.fault.FileAlreadyExists):
        fm.MakeDirectoryInGuest(src, auth(), "/srv/a", False)
    with pytest.raises(vim.fault.FileNotFound):
        fm.MakeDirectoryInGuest(src, auth(), "/srv/x/y", False)
    tmp = fm.CreateTemporaryDirectoryInGuest(src, auth(), "pre-", "-suf", None)
    assert tmp.startswith("/tmp/pre-") and tmp.endswith("-suf")
    tmp_file = fm.CreateTemporaryFileInGuest(src, auth(), "f-", ".txt", "/srv/a")
    assert tmp_file.startswith("/srv/a/f-")
    for i in range(7):
        upload(si, twin, src, f"/srv/a/b/file-{i}", b"%d" % i)
    fm.MoveFileInGuest(src, auth(), "/srv/a/b/file-6", "/srv/a/moved", False)
    page = fm.ListFilesInGuest(src, auth(), "/srv/a/b", 3, 3, None)  # after ".", ".." and "c"
    assert [f.path for f in page.files] == ["file-0", "file-1", "file-2"] and page.remaining == 3
    listing = {f.path: f for f in fm.ListFilesInGuest(src, auth(), "/srv/a", None, None, None).files}
    assert {".", "..", "b", "moved"} <= set(listing) and listing["b"].type == "directory"
    assert listing["moved"].type == "file" and listing["moved"].size == 1
    assert names(si, src, "/srv/a/b", "^file-[45]$") == ["file-4", "file-5"]
    with pytest.raises(vim.fault.DirectoryNotEmpty):
        fm.DeleteDirectoryInGuest(src, auth(), "/srv/a", False)
    fm.DeleteFileInGuest(src, auth(), "/srv/a/moved")
    fm.DeleteDirectoryInGuest(src, auth(), "/srv/a", True)
    assert names(si, src, "/srv", "^a$") == []


def test_programs_run_for_real_with_their_environment_directory_and_exit_code(si, twin):
    src = find_vm(si, "src-linux")
    files(si).MakeDirectoryInGuest(src, auth(), "/opt/work", True)
    info = run(si, src, "pwd > out; echo \"$GREETING $HOME\" >> out; hostname >> out; exit 4",
               workingDirectory="/opt/work", envVariables=["GREETING=hi", "HOME=/nowhere", "PATH=/usr/bin:/bin"])
    assert info.exitCode == 4 and info.owner == "root" and info.cmdLine.startswith('"/bin/sh"')
    assert download(si, twin, src, "/opt/work/out") == b"/opt/work\nhi /nowhere\nsrc-linux\n"
    with pytest.raises(vim.fault.FileNotFound):
        procs(si).StartProgramInGuest(src, auth(), vim.vm.guest.ProcessManager.ProgramSpec(programPath="/no/such"))
    with pytest.raises(vim.fault.FileNotFound):
        procs(si).StartProgramInGuest(src, auth(), vim.vm.guest.ProcessManager.ProgramSpec(
            programPath="/bin/true", workingDirectory="/no/such/dir"))


def test_a_guest_has_no_network_and_cannot_write_the_host(si, twin):
    src = find_vm(si, "src-linux")
    port = urllib.parse.urlsplit(twin.url).port
    # the twin listens on the host's loopback: a guest whose NICs are unplugged must not reach it
    assert run(si, src, f"exec 3<>/dev/tcp/127.0.0.1/{port}", envVariables=["PATH=/usr/bin:/bin"]).exitCode != 0
    assert run(si, src, "touch /usr/forkscale-planted").exitCode != 0
    assert not Path("/usr/forkscale-planted").exists()


def test_symlinks_planted_in_the_guest_never_lead_outside_it(si, twin):
    src = find_vm(si, "src-linux")
    marker = f"forkscale-escape-{secrets.token_hex(4)}"
    assert run(si, src, "ln -s ../../../../../../../.. /tmp/up && ln -s /etc/passwd /tmp/pw").exitCode == 0
    upload(si, twin, src, f"/tmp/up/{marker}", b"contained")  # '..' stops at the guest's /
    assert not Path("/", marker).exists()
    assert names(si, src, "/", f"^{marker}$") == [marker]
    assert run(si, src, f"test \"$(cat /{marker})\" = contained").exitCode == 0
    with pytest.raises(vim.fault.NotAFile):  # a transfer never follows a symlink (API reference)
        files(si).InitiateFileTransferFromGuest(src, auth(), "/tmp/pw")


def test_terminate_and_power_off_end_the_program_and_everything_it_started(si, twin):
    src = find_vm(si, "src-linux")

    def running() -> int:
        return int(twin.call(lambda t: len(t.world.sandboxes.running)))

    pid = procs(si).StartProgramInGuest(src, auth(), vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/sh", arguments="-c 'sleep 100 & sleep 100; touch /tmp/after'"))
    assert running() == 1
    procs(si).TerminateProcessInGuest(src, auth(), pid)
    (info,) = procs(si).ListProcessesInGuest(src, auth(), [pid])
    assert info.exitCode == 143 and info.endTime is not None and running() == 0
    procs(si).StartProgramInGuest(src, auth(), vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/sleep", arguments="100"))
    assert running() == 1
    WaitForTask(src.PowerOffVM_Task())
    deadline = time.monotonic() + 10
    while running():
        assert time.monotonic() < deadline, "the guest's program outlived its VM's power"
        time.sleep(0.05)


def test_an_instant_clone_starts_with_its_sources_files(si, twin):
    src = find_vm(si, "src-linux")
    files(si).MakeDirectoryInGuest(src, auth(), "/opt/app", False)
    upload(si, twin, src, "/opt/app/version", b"1.0\n")
    WaitForTask(src.InstantClone_Task(instant_clone_spec("fs-clone")))
    clone = find_vm(si, "fs-clone")
    assert download(si, twin, clone, "/opt/app/version") == b"1.0\n"
    upload(si, twin, clone, "/opt/app/version", b"2.0\n")
    assert download(si, twin, src, "/opt/app/version") == b"1.0\n"  # the source's disk is untouched
    assert download(si, twin, clone, "/etc/hostname") == b"src-linux\n"  # the source's disk, as it was


def test_windows_guests_have_no_file_system_and_bad_logins_are_refused(si, twin):
    with pytest.raises(vim.fault.OperationNotSupportedByGuest):
        files(si).ListFilesInGuest(find_vm(si, "src-win"), auth(), "C:\\", None, None, None)
    with pytest.raises(vim.fault.InvalidGuestLogin):
        files(si).ListFilesInGuest(find_vm(si, "src-linux"), auth(password="wrong"), "/", None, None, None)
    si.content.guestOperationsManager.authManager.ValidateCredentialsInGuest(find_vm(si, "src-linux"), auth())
