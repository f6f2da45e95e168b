"""Paths named in a spec, checked before anything connects or creates a file.

The ledger (`state:`) must be an SQLite file or a file that does not exist yet, in a directory on
a real filesystem (not `/proc`, `/sys`, `/dev`); files forkscale reads (CA bundle, SSH keys,
known_hosts) must be regular files when they exist. Every refusal is a `SpecError` naming the
field, so `forkscale` exits 2 with one line and nothing was created.
"""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.yamlfile import file_kind, one_line, read_bounded

#: Pseudo filesystems: nothing forkscale writes belongs there (and sqlite fails in odd ways).
PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
SQLITE_MAGIC = b"SQLite format 3\x00"
CA_MAX_BYTES = 4 << 20


def resolved(file: Path, where: str) -> Path:
    """`file` with symlinks followed (a loop is a SpecError)."""
    try:
        return file.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise SpecError(where, f"{file}: cannot resolve: {one_line(str(exc))}") from None


def _stat(file: Path, where: str) -> os.stat_result | None:
    try:
        return os.stat(file)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SpecError(where, f"{file}: cannot stat: {exc.strerror or exc}") from None


def check_writable_file(file: Path, where: str, what: str) -> Path:
    """A file forkscale will create or rewrite: regular if it exists, in a writable directory, not
    under a pseudo filesystem. Returns the path with symlinks followed."""
    real = resolved(file, where)
    for root in PSEUDO_ROOTS:
        if real == root or root in real.parents:
            raise SpecError(where, f"{file} is under {root}; {what} must be a file on a real filesystem")
    info = _stat(real, where)
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(where, f"{file} is {file_kind(info.st_mode)}; {what} must be a regular file")
        return real
    parent = real.parent
    while (found := _stat(parent, where)) is None and parent != parent.parent:
        parent = parent.parent
    if found is None or not stat.S_ISDIR(found.st_mode):
        raise SpecError(where, f"{file}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(where, f"{file}: cannot create it in {parent} (permission denied)")
    return real


def check_state_path(file: Path, where: str = "state") -> Path:
    """The ledger file: an SQLite file, or a new file forkscale may create (with its directory)."""
    real = check_writable_file(file, where, "the ledger (state)")
    info = _stat(real, where)
    if info is not None and info.st_size > 0:
        try:
            with open(real, "rb") as handle:
                head = handle.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise SpecError(where, f"{file}: cannot read: {exc.strerror or exc}") from None
        if head != SQLITE_MAGIC:
            raise SpecError(where, f"{file} is not a ledger (not an SQLite file); "
                                   "point state at a new file or at an existing ledger")
    return real


def check_read_file(file: Path, where: str, what: str) -> None:
    """A file forkscale will read (SSH key, known_hosts): it exists and is a regular file."""
    info = _stat(file, where)
    if info is None:
        raise SpecError(where, f"{file}: no such file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(where, f"{file} is {file_kind(info.st_mode)}; {what} must be a regular file")


def check_optional_read_file(file: Path | None, where: str, what: str) -> None:
    """Like check_read_file, but a missing file is left to its user (known_hosts may not exist yet)."""
    if file is None:
        return
    info = _stat(file, where)
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise SpecError(where, f"{file} is {file_kind(info.st_mode)}; {what} must be a regular file")


def check_ca_file(file: Path, where: str, origin: str = "") -> None:
    """A CA bundle that TLS can load: a regular file of PEM certificates (at most 4 MiB)."""
    try:
        read_bounded(file, where, limit=CA_MAX_BYTES, what="a CA file")
    except SpecError as exc:
        raise SpecError(where, origin + exc.message) from None
    try:
        ssl.create_default_context(cafile=str(file))
    except (ssl.SSLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or "not valid PEM"
        raise SpecError(where, f"{origin}{file}: no CA certificate could be loaded from it ({reason}); "
                               "expected PEM certificates") from None
