"""Secrets by reference only: an environment variable name or a 0600 file, read at call time.

A password file may be a symlink (Kubernetes and Vault agents mount secrets that way): the link
is followed and its *target* is checked -- a regular file, at most 64 KiB, not readable or
writable by group or others -- and read through the same open descriptor that was checked. A
link to a 0644 file is refused like the 0644 file itself, naming both. Every value read is
registered with the log redactor (`forkscale.core.logs.register_secret`) before it is returned.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.core.logs import register_secret
from forkscale.spec.fields import as_env_name, as_path, sub
from forkscale.spec.yamlfile import file_kind, open_nonblocking, read_fd

SECRET_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class SecretRef:
    """Where a password lives -- an env var name or a file path, never the password itself."""

    env: str | None = None
    file: Path | None = None
    path: str = ""  # field path of the owning block, for error messages

    def read(self) -> str:
        """Read the secret now; raises SpecError naming the field if it is unavailable."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise SpecError(sub(self.path, "password_env"), f"environment variable {self.env} is not set")
            register_secret(value)
            return value
        if self.file is None:
            raise SpecError(self.path, "no password_env or password_file")
        where = sub(self.path, "password_file")
        data = read_secret_file(self.file, where)
        try:
            value = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise SpecError(where, f"{self.file} is not UTF-8 text") from None
        if not value:
            raise SpecError(where, f"{self.file} is empty")
        register_secret(value)
        return value


def refuse_inline_password(data: Mapping[str, object], path: str) -> None:
    if "password" in data:
        raise SpecError(
            sub(path, "password"),
            "inline passwords are not accepted: spec files end up in git, backups and bug reports; "
            "use password_env (an environment variable name) or password_file (a file with mode 0600)",
        )


def secret_ref(data: Mapping[str, object], path: str, base_dir: Path) -> SecretRef:
    has_env, has_file = "password_env" in data, "password_file" in data
    if has_env and has_file:
        raise SpecError(sub(path, "password_file"), "give exactly one of password_env and password_file")
    if has_env:
        return SecretRef(env=as_env_name(data["password_env"], sub(path, "password_env")), path=path)
    if has_file:
        where = sub(path, "password_file")
        file = as_path(data["password_file"], where, base_dir)
        check_secret_file(file, where)
        return SecretRef(file=file, path=path)
    raise SpecError(sub(path, "password_env"), "required: give password_env or password_file")


def _shown(file: Path) -> str:
    """`file`, or `file -> target` when it is a symlink (so a refusal names what was checked)."""
    try:
        if file.is_symlink():
            return f"{file} -> {file.resolve()}"
    except (OSError, RuntimeError):
        pass
    return str(file)


def _check_info(file: Path, info: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(path, f"{_shown(file)} is {file_kind(info.st_mode)}; a password file must be a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise SpecError(
            path,
            f"{_shown(file)} has mode {mode:04o}; a password file must not be readable by group or others "
            f"(chmod 600 {file})",
        )
    if info.st_size > SECRET_MAX_BYTES:
        raise SpecError(path, f"{_shown(file)} is {info.st_size} bytes; a password file holds at most "
                              f"{SECRET_MAX_BYTES}")


def check_secret_file(file: Path, path: str) -> None:
    """Refuse a missing, non-regular, oversized or group/world-accessible secret file (like ssh does).

    Symlinks are followed: the target is what is checked (and named in the message)."""
    try:
        info = file.stat()
    except FileNotFoundError:
        raise SpecError(path, f"{_shown(file)}: no such file") from None
    except OSError as exc:
        raise SpecError(path, f"{file}: cannot stat: {exc.strerror or exc}") from None
    _check_info(file, info, path)


def read_secret_file(file: Path, path: str) -> bytes:
    """The file's bytes, checked on the descriptor they are read from (no FIFO can hang the read)."""
    fd = open_nonblocking(file, path, shown=_shown(file))
    try:
        _check_info(file, os.fstat(fd), path)
        return read_fd(fd, SECRET_MAX_BYTES)
    finally:
        os.close(fd)
