"""Secrets by reference only: an environment variable name or a 0600 file, read at call time."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.fields import as_env_name, as_path, sub


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
            return value
        if self.file is None:
            raise SpecError(self.path, "no password_env or password_file")
        where = sub(self.path, "password_file")
        check_secret_file(self.file, where)
        value = self.file.read_text(encoding="utf-8").rstrip("\r\n")
        if not value:
            raise SpecError(where, f"{self.file} is empty")
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


def check_secret_file(file: Path, path: str) -> None:
    """Refuse a missing, non-regular or group/world-accessible secret file (like ssh does)."""
    try:
        info = file.stat()
    except FileNotFoundError:
        raise SpecError(path, f"{file}: no such file") from None
    except OSError as exc:
        raise SpecError(path, f"{file}: cannot stat: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(path, f"{file} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise SpecError(
            path,
            f"{file} has mode {mode:04o}; a password file must not be readable by group or others "
            f"(chmod 600 {file})",
        )
