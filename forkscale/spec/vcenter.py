"""The `vcenter:` section: URL, user, password reference, CA file.

`https://` with verified TLS is the default; `insecure: true` turns verification off and is what
an `http://` URL needs too (the password then crosses the network in clear; `forkscale` logs a
warning on every connection). A `ca_file` is loaded when the spec is read, so a file that holds
no PEM certificate is refused with one line before anything connects.

Environment: FORKSCALE_CA_FILE, when set, replaces `vcenter.ca_file` (handy for the twin, which
writes a fresh CA each run); `~` is expanded and a relative path is relative to the working
directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from forkscale.core.errors import SpecError
from forkscale.spec.fields import (
    as_bool,
    as_env_name,
    as_mapping,
    as_path,
    as_positive,
    as_str,
    check_keys,
    required,
    sub,
)
from forkscale.spec.paths import check_ca_file
from forkscale.spec.secrets import SecretRef, refuse_inline_password, secret_ref

CA_FILE_ENV = "FORKSCALE_CA_FILE"
#: How long vCenter may stay unreachable (a restart, an upgrade) before a run gives up, by default.
OUTAGE_S = 300.0
MIN_OUTAGE_S, MAX_OUTAGE_S = 1.0, 86_400.0


@dataclass(frozen=True)
class VCenter:
    url: str
    user: str
    secret: SecretRef
    ca_file: Path | None = None
    insecure: bool = False
    outage_s: float = OUTAGE_S
    """How long vCenter may be unreachable (refused connections, failed TLS or login) mid-run before
    the run ends with exit 1 (`serve`: the round fails, the next tries again)."""

    def password(self) -> str:
        """The vCenter password, read from its env var or file at call time (never stored)."""
        return self.secret.read()


def parse_vcenter(raw: object, path: str, base_dir: Path) -> VCenter:
    data = as_mapping(raw, path, "vcenter")
    refuse_inline_password(data, path)
    check_keys(data, path, ("url", "user", "user_env", "password_env", "password_file", "ca_file", "insecure",
                            "outage_s"))
    insecure = as_bool(data.get("insecure", False), sub(path, "insecure"))
    url = parse_url(required(data, "url", path), sub(path, "url"))
    if url.startswith("http://") and not insecure:
        raise SpecError(sub(path, "url"), f"{url!r} is plain HTTP: the password would cross the network in clear; "
                                          "use https://, or set insecure: true to accept that")
    user = parse_user(data, path)
    secret = secret_ref(data, path, base_dir)
    ca_file = parse_ca_file(data, path, base_dir)
    outage = as_positive(data.get("outage_s", OUTAGE_S), sub(path, "outage_s"), minimum=MIN_OUTAGE_S,
                         maximum=MAX_OUTAGE_S)
    return VCenter(url=url, user=user, secret=secret, ca_file=ca_file, insecure=insecure, outage_s=outage)


def parse_url(raw: object, path: str) -> str:
    text = as_str(raw, path)
    parts = urlsplit(text)
    if "@" in parts.netloc:
        # not echoed: the text holds a credential
        raise SpecError(path, "must not contain a user or password; use user and password_env/password_file")
    if parts.scheme not in ("https", "http"):
        raise SpecError(path, f"{text!r} must start with https:// (or http://)")
    if not parts.hostname:
        raise SpecError(path, f"{text!r} has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SpecError(path, f"{text!r} has an invalid port") from None
    url_path = parts.path.rstrip("/")
    if url_path == "":
        url_path = "/sdk"
    elif not url_path.endswith("/sdk"):
        raise SpecError(path, f"{text!r} must end with /sdk (the vSphere SOAP endpoint)")
    return urlunsplit((parts.scheme, parts.netloc, url_path, "", ""))


def parse_user(data: Mapping[str, object], path: str) -> str:
    if "user" in data and "user_env" in data:
        raise SpecError(sub(path, "user_env"), "give either user or user_env, not both")
    if "user" in data:
        return as_str(data["user"], sub(path, "user"))
    if "user_env" in data:
        where = sub(path, "user_env")
        name = as_env_name(data["user_env"], where)
        value = os.environ.get(name)
        if not value:
            raise SpecError(where, f"environment variable {name} is not set")
        return value
    raise SpecError(sub(path, "user"), "required (or user_env)")


def parse_ca_file(data: Mapping[str, object], path: str, base_dir: Path) -> Path | None:
    where = sub(path, "ca_file")
    override = os.environ.get(CA_FILE_ENV)
    if override:
        file = Path(override).expanduser()
        origin = f"{CA_FILE_ENV}={override}: "
    elif "ca_file" in data and data["ca_file"] is not None:
        file = as_path(data["ca_file"], where, base_dir)
        origin = ""
    else:
        return None
    check_ca_file(file, where, origin)
    return file
