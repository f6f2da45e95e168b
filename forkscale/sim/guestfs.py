"""A twin guest's filesystem, as guest operations see it: a sandbox directory as `/`, with the host's
system directories (`/usr`, `/etc`, ...) mounted read-only — the same view its programs get.

Paths are resolved the way the guest's kernel would resolve them inside its root (symlinks
followed relative to the guest's `/`, `..` never above it), one component at a time through
directory file descriptors opened with O_NOFOLLOW, so neither a symlink a guest program planted
nor a race with one can make the twin (which may run as root) touch a file outside the sandbox.
Writes under a read-only system directory fail like they do in the guest (EROFS).

Errors are `GuestFsError(kind, path, message)`; the SOAP layer turns each kind into its vSphere fault
(`FileNotFound`, `FileAlreadyExists`, `NotAFile`, `NotADirectory`, `DirectoryNotEmpty`,
`GuestPermissionDenied`).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MAX_SYMLINKS = 40
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class GuestFsError(Exception):
    def __init__(self, kind: str, path: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.path = kind, path


@dataclass(frozen=True)
class Entry:
    """What ListFilesInGuest / InitiateFileTransferFromGuest report of one file."""

    name: str
    kind: str  # file | directory | symlink
    size: int
    mtime: float
    atime: float
    mode: int
    uid: int
    gid: int
    target: str | None = None


def _entry(name: str, st: os.stat_result, target: str | None = None) -> Entry:
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
    return Entry(name=name, kind=kind, size=st.st_size, mtime=st.st_mtime, atime=st.st_atime,
                 mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, target=target)


def _oserror(exc: OSError, path: str) -> GuestFsError:
    kinds = {errno.ENOENT: "FileNotFound", errno.EEXIST: "FileAlreadyExists", errno.ENOTDIR: "NotADirectory",
             errno.EISDIR: "NotAFile", errno.ENOTEMPTY: "DirectoryNotEmpty", errno.EACCES: "GuestPermissionDenied",
             errno.EPERM: "GuestPermissionDenied", errno.EROFS: "GuestPermissionDenied", errno.ELOOP: "FileNotFound"}
    return GuestFsError(kinds.get(exc.errno or 0, "CannotAccessFile"), path, f"{path}: {exc.strerror}")


class GuestFS:
    """The guest root `root` plus read-only host directories `system` (top-level names such as "usr")."""

    def __init__(self, root: Path, system: tuple[str, ...]) -> None:
        self.root = root
        self.system = system

    # resolution -------------------------------------------------------------------------------
    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str, bool]]:
        """(fd of the directory holding `path`'s last component, that component, read-only?)."""
        if not path.startswith("/"):
            raise GuestFsError("InvalidArgument", path, f"{path!r} is not an absolute path")
        head, _, name = path.rstrip("/").rpartition("/")
        if not name or name in (".", ".."):
            raise GuestFsError("InvalidArgument", path, f"{path!r} names no file")
        fds, ro = self._walk(head or "/")
        if len(fds) == 1 and name in self.system:  # /usr itself: the host's, read-only
            fds.append(os.open("/", _DIR))
            ro = True
        try:
            yield fds[-1], name, ro
        finally:
            for fd in fds:
                os.close(fd)

    @contextmanager
    def directory(self, path: str) -> Iterator[tuple[int, bool]]:
        """(O_PATH fd of the directory `path`, read-only?), symlinks followed."""
        fds, ro = self._walk(path)
        try:
            yield fds[-1], ro
        finally:
            for fd in fds:
                os.close(fd)

    def _walk(self, path: str) -> tuple[list[int], bool]:
        """Open every directory along `path` inside the guest root; returns the fd stack (caller closes)."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        stack = [os.open(self.root, _DIR)]
        ro = [False]
        hops = 0
        try:
            while parts:
                name = parts.pop(0)
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        ro.pop()
                    continue
                if len(stack) == 1 and name in self.system:
                    stack.append(os.open(f"/{name}", _DIR))
                    ro.append(True)
                    continue
                st = os.lstat(name, dir_fd=stack[-1])
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, "Too many levels of symbolic links")
                    target = os.readlink(name, dir_fd=stack[-1])
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                            ro.pop()
                    parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
                    continue
                stack.append(os.open(name, _DIR, dir_fd=stack[-1]))
                ro.append(ro[-1])
        except OSError as exc:
            for fd in stack:
                os.close(fd)
            raise _oserror(exc, path) from None
        return stack, ro[-1]

    def _writable(self, ro: bool, path: str) -> None:
        if ro:
            raise GuestFsError("GuestPermissionDenied", path, f"{path}: Read-only file system")

    # operations -------------------------------------------------------------------------------
    def stat(self, path: str) -> Entry:
        """The file `path` itself (a symlink is reported as one)."""
        with self.parent(path) as (fd, name, _ro):
            try:
                st = os.lstat(name, dir_fd=fd)
                target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
            except OSError as exc:
                raise _oserror(exc, path) from None
        return _entry(name, st, target)

    def open_read(self, path: str) -> int:
        """A read fd on the regular file `path` (not a directory, not a symlink)."""
        with self.parent(path) as (fd, name, _ro):
            try:
                out = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise GuestFsError("NotAFile", path, f"{path} is a symbolic link") from None
                raise _oserror(exc, path) from None
        if not stat.S_ISREG(os.fstat(out).st_mode):
            os.close(out)
            raise GuestFsError("NotAFile", path, f"{path} is not a regular file")
        return out

    def check_writable(self, path: str, *, overwrite: bool) -> None:
        """Whether a transfer to `path` can succeed (its directory exists and is writable)."""
        with self.parent(path) as (fd, name, ro):
            self._writable(ro, path)
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise _oserror(exc, path) from None
            if not stat.S_ISREG(st.st_mode):
                raise GuestFsError("NotAFile", path, f"{path} exists and is not a regular file")
            if not overwrite:
                raise GuestFsError("FileAlreadyExists", path, f"{path} already exists")

    def begin_write(self, path: str, mode: int) -> tuple[int, str]:
        """A write fd on a new temporary file beside `path`, and its name (see `finish_write`)."""
        with self.parent(path) as (fd, name, ro):
            self._writable(ro, path)
            for _ in range(100):
                tmp = f".{name}.{secrets.token_hex(4)}.part"
                try:
                    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  0o600, dir_fd=fd)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise _oserror(exc, path) from None
                return out, tmp
        raise GuestFsError("CannotAccessFile", path, f"cannot write beside {path}")

    def finish_write(self, path: str, tmp: str, mode: int, *, ok: bool) -> None:
        """Give the written file its mode and move it over `path` (ok), or remove it."""
        with self.parent(path) as (fd, name, _ro):
            try:
                if not ok:
                    os.unlink(tmp, dir_fd=fd)
                    return
                out = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.fchmod(out, mode & 0o7777)
                finally:
                    os.close(out)
                os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except OSError as exc:
                raise _oserror(exc, path) from None

    def move(self, src: str, dst: str, *, overwrite: bool, directory: bool) -> None:
        with self.parent(src) as (sfd, sname, sro), self.parent(dst) as (dfd, dname, dro):
            self._writable(sro or dro, dst)
            try:
                st = os.lstat(sname, dir_fd=sfd)
                if stat.S_ISDIR(st.st_mode) != directory:
                    kind = "NotADirectory" if directory else "NotAFile"
                    raise GuestFsError(kind, src, f"{src} is {'not ' if directory else ''}a directory")
                if not overwrite:
                    try:
                        os.lstat(dname, dir_fd=dfd)
                        raise GuestFsError("FileAlreadyExists", dst, f"{dst} already exists")
                    except FileNotFoundError:
                        pass
                os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as exc:
                raise _oserror(exc, src) from None

    def temp_file(self, directory: str, prefix: str, suffix: str) -> str:
        for _ in range(100):
            path = f"{directory.rstrip('/')}/{prefix}{secrets.token_hex(4)}{suffix}"
            with self.parent(path) as (fd, name, ro):
                self._writable(ro, path)
                try:
                    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o600, dir_fd=fd))
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise _oserror(exc, path) from None
            return path
        raise GuestFsError("CannotAccessFile", directory, f"cannot make a temporary file in {directory}")

    def change(self, path: str, *, mode: int | None, times: tuple[float, float] | None) -> None:
        """chmod / utime of the file `path` itself (never through a symlink)."""
        with self.parent(path) as (fd, name, ro):
            self._writable(ro, path)
            try:
                if mode is not None:
                    if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
                        raise GuestFsError("NotAFile", path, f"{path} is a symbolic link")
                    target = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    try:
                        os.chmod(f"/proc/self/fd/{target}", mode & 0o7777)
                    finally:
                        os.close(target)
                if times is not None:
                    os.utime(name, times, dir_fd=fd, follow_symlinks=False)
            except OSError as exc:
                raise _oserror(exc, path) from None

    def make_dir(self, path: str, *, parents: bool, mode: int = 0o755) -> None:
        if parents:
            parts = [p for p in path.split("/") if p]
            for i in range(1, len(parts) + 1):
                sub = "/" + "/".join(parts[:i])
                try:
                    self.make_dir(sub, parents=False)
                except GuestFsError as exc:
                    if exc.kind != "FileAlreadyExists" or self.stat(sub).kind == "file":
                        raise
            return
        with self.parent(path) as (fd, name, ro):
            self._writable(ro, path)
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except OSError as exc:
                raise _oserror(exc, path) from None

    def temp_dir(self, directory: str, prefix: str, suffix: str) -> str:
        for _ in range(100):
            path = f"{directory.rstrip('/')}/{prefix}{secrets.token_hex(4)}{suffix}"
            try:
                self.make_dir(path, parents=False, mode=0o700)
            except GuestFsError as exc:
                if exc.kind == "FileAlreadyExists":
                    continue
                raise
            return path
        raise GuestFsError("CannotAccessFile", directory, f"cannot make a temporary directory in {directory}")

    def remove_dir(self, path: str, *, recursive: bool) -> None:
        with self.parent(path) as (fd, name, ro):
            self._writable(ro, path)
            try:
                st = os.lstat(name, dir_fd=fd)
                if not stat.S_ISDIR(st.st_mode):
                    raise GuestFsError("NotADirectory", path, f"{path} is not a directory")
                if recursive:
                    shutil.rmtree(name, dir_fd=fd)  # symlink-attack resistant on Linux
                else:
                    os.rmdir(name, dir_fd=fd)
            except OSError as exc:
                raise _oserror(exc, path) from None

    def remove_file(self, path: str) -> None:
        with self.parent(path) as (fd, name, ro):
            self._writable(ro, path)
            try:
                if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                    raise GuestFsError("NotAFile", path, f"{path} is a directory")
                os.unlink(name, dir_fd=fd)
            except OSError as exc:
                raise _oserror(exc, path) from None

    def list(self, path: str, pattern: str | None) -> list[Entry]:
        """The entries of directory `path` (or `path` itself when it is a file) matching `pattern`
        (a regular expression searched in each name), sorted by name, `.` and `..` first."""
        entry = self.stat(path) if path.rstrip("/") else None
        if entry is not None and entry.kind == "file":
            found = [entry]
        else:
            with self.directory(path) as (fd, _ro):
                try:
                    dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    raise _oserror(exc, path) from None
                try:
                    found = [_entry(".", os.fstat(dfd)), _entry("..", os.stat("..", dir_fd=dfd))]
                    for name in sorted(os.listdir(dfd)):
                        with _suppress_vanished():
                            st = os.lstat(name, dir_fd=dfd)
                            target = os.readlink(name, dir_fd=dfd) if stat.S_ISLNK(st.st_mode) else None
                            found.append(_entry(name, st, target))
                finally:
                    os.close(dfd)
        if not pattern:
            return found
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise GuestFsError("InvalidArgument", pattern, f"matchPattern {pattern!r}: {exc}") from None
        return [e for e in found if rx.search(e.name)]


@contextmanager
def _suppress_vanished() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:  # removed between listdir and lstat
        pass
