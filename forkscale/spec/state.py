"""The `state:` section: where the ledger lives (a SQLite file, or a PostgreSQL database) and `ha:`.

    state: .forkscale/state.sqlite                        # a file, relative to the spec (the default)
    state: postgresql://forkscale@db.example.com/forkscale  # a database; TLS verify-full, libpq passfile
    state:
      url: postgresql://forkscale@db.example.com:5432/forkscale
      password_env: FORKSCALE_DB_PASSWORD                 # or password_file (0600), or none: libpq's passfile
      ca_file: /etc/forkscale/db-ca.pem                   # the CA that signed the server's certificate
    ha:
      failover_s: 15                                      # how soon another controller takes a dead one's pools

The password is only ever given by reference: a password in the URL (`user:pw@`, `password=`) is
refused. TLS is verified by default: `sslmode` is `verify-full` unless the URL says otherwise, and
anything weaker (`require`, `prefer`, `disable`, ...) needs `insecure: true`. Over a unix socket
(`host=/run/postgresql`) there is no TLS to verify.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from forkscale.core.errors import SpecError
from forkscale.spec.fields import as_bool, as_mapping, as_path, as_positive, as_str, check_keys, sub
from forkscale.spec.secrets import SecretRef, check_secret_file, refuse_inline_password, secret_ref

SCHEMES = ("postgresql", "postgres")
VERIFIED = ("verify-full", "verify-ca")
SSLMODES = ("disable", "allow", "prefer", "require", *VERIFIED)
#: libpq parameters a state URL may carry (a password is never one of them)
URL_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "passfile", "connect_timeout",
              "application_name", "target_session_attrs", "host", "port", "channel_binding")
DEFAULT_FAILOVER_S = 15.0
MIN_FAILOVER_S, MAX_FAILOVER_S = 2.0, 600.0


@dataclass(frozen=True)
class PostgresState:
    """A PostgreSQL ledger: `url` without any password, TLS settings made explicit."""

    url: str
    display: str  # scheme://user@host:port/db, for messages
    secret: SecretRef | None = None

    def password(self) -> str:
        """The password, read from its reference at call time (only when there is one)."""
        assert self.secret is not None
        return self.secret.read()


@dataclass(frozen=True)
class HA:
    """More than one controller on one ledger: a dead holder's pools are taken over within failover_s."""

    failover_s: float = DEFAULT_FAILOVER_S


def is_url(text: str) -> bool:
    return urlsplit(text).scheme in SCHEMES and "://" in text


def parse_state(raw: object, path: str, base_dir: Path) -> Path | PostgresState:
    if isinstance(raw, dict):
        return parse_postgres_mapping(raw, path, base_dir)
    text = as_str(raw, path)
    if is_url(text):
        return parse_postgres_url(text, path, base_dir, ca_file=None, secret=None, insecure=False)
    if "://" in text:
        raise SpecError(path, f"{text.split('://', 1)[0]}:// is not a ledger; use a file path or postgresql://")
    return as_path(text, path, base_dir)


def parse_postgres_mapping(raw: object, path: str, base_dir: Path) -> PostgresState:
    data = as_mapping(raw, path, "state")
    refuse_inline_password(data, path)
    check_keys(data, path, ("url", "password_env", "password_file", "ca_file", "insecure"))
    if "url" not in data:
        raise SpecError(sub(path, "url"), "required: postgresql://USER@HOST[:PORT]/DATABASE")
    url = as_str(data["url"], sub(path, "url"))
    if not is_url(url):
        raise SpecError(sub(path, "url"), "must start with postgresql:// (a SQLite ledger is given as a plain path)")
    secret = secret_ref(data, path, base_dir) if ("password_env" in data or "password_file" in data) else None
    ca_file = None
    if data.get("ca_file") is not None:
        ca_file = as_path(data["ca_file"], sub(path, "ca_file"), base_dir)
        if not ca_file.is_file():
            raise SpecError(sub(path, "ca_file"), f"{ca_file}: no such file")
    insecure = as_bool(data.get("insecure", False), sub(path, "insecure"))
    return parse_postgres_url(url, sub(path, "url"), base_dir, ca_file=ca_file, secret=secret, insecure=insecure)


def parse_postgres_url(text: str, path: str, base_dir: Path, *, ca_file: Path | None, secret: SecretRef | None,
                       insecure: bool) -> PostgresState:
    parts = urlsplit(text)
    if parts.password is not None:
        # not echoed: the text holds a credential
        raise SpecError(path, "must not contain a password; use password_env / password_file or a libpq passfile")
    try:
        port = parts.port
    except ValueError:
        raise SpecError(path, "has an invalid port") from None
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise SpecError(path, "must name one database: postgresql://USER@HOST[:PORT]/DATABASE")
    params = _query(parts.query, path)
    socket = params.get("host", parts.hostname or "").startswith("/")
    if not socket and not (parts.hostname or params.get("host")):
        raise SpecError(path, "has no host")
    _check_tls(params, path, base_dir, ca_file=ca_file, socket=socket, insecure=insecure)
    if "passfile" in params:
        passfile = as_path(params["passfile"], sub(path, "passfile"), base_dir)
        check_secret_file(passfile, sub(path, "passfile"))
        params["passfile"] = str(passfile)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))
    user = f"{parts.username}@" if parts.username else ""
    where = parts.hostname or params.get("host", "")
    display = f"postgresql://{user}{where}{f':{port}' if port else ''}/{database}"
    return PostgresState(url=url, display=display, secret=secret)


def _query(query: str, path: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key == "password":
            raise SpecError(path, "must not contain a password; use password_env / password_file or a libpq passfile")
        if key not in URL_PARAMS:
            raise SpecError(path, f"unknown parameter {key!r} (allowed: {', '.join(URL_PARAMS)})")
        params[key] = value
    return params


def _check_tls(params: dict[str, str], path: str, base_dir: Path, *, ca_file: Path | None, socket: bool,
               insecure: bool) -> None:
    """verify-full unless said otherwise; a weaker mode only with insecure: true; a CA to verify with."""
    if socket:
        return  # libpq does not use TLS over a unix socket
    mode = params.setdefault("sslmode", "verify-full")
    if mode not in SSLMODES:
        raise SpecError(path, f"sslmode={mode!r} is not one of: {', '.join(SSLMODES)}")
    if mode not in VERIFIED:
        if not insecure:
            raise SpecError(path, f"sslmode={mode} does not verify the database server; use verify-full with a "
                            "ca_file (or set insecure: true in a state: mapping, loudly)")
        return
    if ca_file is not None:
        params["sslrootcert"] = str(ca_file)
    elif "sslrootcert" in params and params["sslrootcert"] != "system":
        root = as_path(params["sslrootcert"], sub(path, "sslrootcert"), base_dir)
        if not root.is_file():
            raise SpecError(sub(path, "sslrootcert"), f"{root}: no such file")
        params["sslrootcert"] = str(root)
    elif "sslrootcert" not in params and not _default_root_cert().is_file():
        raise SpecError(path, "cannot verify the database server: give ca_file (state: mapping) or "
                        "sslrootcert=FILE (or sslrootcert=system for the system's CAs)")


def _default_root_cert() -> Path:
    """Where libpq looks for a CA when none is named."""
    return Path(os.environ.get("PGSSLROOTCERT", "~/.postgresql/root.crt")).expanduser()


def parse_ha(raw: object, path: str) -> HA:
    data: Mapping[str, object] = as_mapping(raw, path, "ha")
    check_keys(data, path, ("failover_s",))
    failover = as_positive(data.get("failover_s", DEFAULT_FAILOVER_S), sub(path, "failover_s"))
    if not MIN_FAILOVER_S <= failover <= MAX_FAILOVER_S:
        raise SpecError(sub(path, "failover_s"), f"must be between {MIN_FAILOVER_S:g} and {MAX_FAILOVER_S:g} "
                        f"seconds, not {failover:g}")
    return HA(failover_s=failover)
