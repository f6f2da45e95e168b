"""The smaller sections of a pool: ssh, guestops, placement, fallback, budgets, guest_ready,
guestinfo, policy, drain, sources."""

from __future__ import annotations

import re
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.core.identity import IDENTITY_KEYS
from forkscale.policy.config import PolicyConfig, parse_policy
from forkscale.spec.fields import (
    as_bool,
    as_choice,
    as_int,
    as_mapping,
    as_port,
    as_positive,
    as_str,
    as_str_list,
    check_keys,
    kind_of,
    opt_path,
    opt_str,
    required,
    sub,
)
from forkscale.spec.model import (
    DEFAULT_BUDGETS,
    DEFAULT_FOLDER,
    DEFAULT_ROTATE_DEPTH,
    KINDS,
    MAX_BUDGET_DATASTORE,
    MAX_BUDGET_HOST,
    MAX_BUDGET_VCENTER,
    MAX_GUESTINFO_KEYS,
    MAX_GUESTINFO_VALUE,
    MAX_RATE_PER_S,
    MAX_ROTATE_DEPTH,
    MAX_TIMEOUT_S,
    MIN_RATE_PER_S,
    Budgets,
    Drain,
    DrainSsh,
    GuestOps,
    GuestReady,
    Placement,
    SourceSettings,
    SshConfig,
)
from forkscale.spec.paths import check_optional_read_file, check_read_file
from forkscale.spec.secrets import refuse_inline_password, secret_ref

_GUESTINFO_KEY = re.compile(r"^[a-z0-9_.-]+$")


_SECRET_WORDS = ("password", "passwd", "secret", "token", "key")


def parse_ssh(raw: object, path: str, base_dir: Path) -> SshConfig:
    data = as_mapping(raw, path, "ssh")
    check_keys(data, path, ("host", "port", "user", "key_file", "known_hosts", "insecure_host_key", "guest_script"))
    key_file = opt_path(data.get("key_file"), sub(path, "key_file"), base_dir)
    if key_file is not None:
        check_read_file(key_file, sub(path, "key_file"), "an SSH key file")
    known_hosts = opt_path(data.get("known_hosts"), sub(path, "known_hosts"), base_dir)
    check_optional_read_file(known_hosts, sub(path, "known_hosts"), "known_hosts")
    return SshConfig(
        host=as_str(required(data, "host", path), sub(path, "host")),
        port=as_port(data.get("port", 22), sub(path, "port")),
        user=as_str(data.get("user", "root"), sub(path, "user")),
        key_file=key_file,
        known_hosts=known_hosts,
        insecure_host_key=as_bool(data.get("insecure_host_key", False), sub(path, "insecure_host_key")),
        guest_script=parse_guest_script(data.get("guest_script", SshConfig.guest_script), sub(path, "guest_script")),
    )


def parse_guest_script(raw: object, path: str) -> str:
    text = as_str(raw, path)
    if not text.startswith("/"):
        raise SpecError(path, f"{text!r} must be an absolute path on the source guest")
    return text


def parse_sources(raw: object, path: str) -> SourceSettings:
    if raw is None:
        return SourceSettings()
    data = as_mapping(raw, path, "sources")
    check_keys(data, path, ("rotate_depth",))
    where = sub(path, "rotate_depth")
    depth = as_int(data.get("rotate_depth", DEFAULT_ROTATE_DEPTH), where, minimum=2)
    if depth > MAX_ROTATE_DEPTH:
        raise SpecError(where, f"{depth} is too deep: vSphere alarms above ~100 delta levels and stops at 255; "
                               f"use at most {MAX_ROTATE_DEPTH} (default {DEFAULT_ROTATE_DEPTH})")
    return SourceSettings(rotate_depth=depth)


def parse_guestops(raw: object, path: str, base_dir: Path) -> GuestOps:
    data = as_mapping(raw, path, "guestops")
    refuse_inline_password(data, path)
    check_keys(data, path, ("user", "password_env", "password_file"))
    user = as_str(required(data, "user", path), sub(path, "user"))
    return GuestOps(user=user, secret=secret_ref(data, path, base_dir))


def parse_placement(raw: object, path: str) -> Placement:
    if raw is None:
        return Placement()
    data = as_mapping(raw, path, "placement")
    check_keys(data, path, ("hosts", "datastores", "folder", "resource_pool"))
    return Placement(
        hosts=as_str_list(data.get("hosts", []), sub(path, "hosts")),
        datastores=as_str_list(data.get("datastores", []), sub(path, "datastores")),
        folder=as_str(data.get("folder", DEFAULT_FOLDER), sub(path, "folder")),
        resource_pool=opt_str(data.get("resource_pool"), sub(path, "resource_pool")),
    )


def parse_fallback(raw: object, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list such as [instant, linked, full], not {kind_of(raw)}")
    if not raw:
        raise SpecError(path, "must name at least one clone kind (instant, linked, full)")
    kinds = [as_choice(item, f"{path}[{i}]", KINDS) for i, item in enumerate(raw)]
    for i, kind in enumerate(kinds):
        if kind in kinds[:i]:
            raise SpecError(f"{path}[{i}]", f"{kind!r} is listed twice")
    if kinds != sorted(kinds, key=KINDS.index):
        raise SpecError(path, f"{kinds} must keep the order instant, linked, full (fastest first)")
    return tuple(kinds)


def parse_budgets(raw: object, path: str) -> Budgets:
    if raw is None:
        return DEFAULT_BUDGETS
    data = as_mapping(raw, path, "budgets")
    check_keys(data, path, ("vcenter", "per_host", "per_datastore", "rate_per_s"))
    d = DEFAULT_BUDGETS
    return Budgets(
        vcenter=as_int(data.get("vcenter", d.vcenter), sub(path, "vcenter"), minimum=1, maximum=MAX_BUDGET_VCENTER),
        per_host=as_int(data.get("per_host", d.per_host), sub(path, "per_host"), minimum=1, maximum=MAX_BUDGET_HOST),
        per_datastore=as_int(data.get("per_datastore", d.per_datastore), sub(path, "per_datastore"), minimum=1,
                             maximum=MAX_BUDGET_DATASTORE),
        rate_per_s=as_positive(data.get("rate_per_s", d.rate_per_s), sub(path, "rate_per_s"),
                               minimum=MIN_RATE_PER_S, maximum=MAX_RATE_PER_S),
    )


def parse_guest_ready(raw: object, path: str) -> GuestReady:
    if raw is None:
        return GuestReady()
    data = as_mapping(raw, path, "guest_ready")
    check_keys(data, path, ("timeout_s", "required"))
    return GuestReady(
        timeout_s=as_positive(data.get("timeout_s", 300.0), sub(path, "timeout_s"), maximum=MAX_TIMEOUT_S),
        required=as_bool(data.get("required", True), sub(path, "required")),
    )


def parse_guestinfo(raw: object, path: str) -> dict[str, str]:
    if raw is None:
        return {}
    data = as_mapping(raw, path, "guestinfo")
    if len(data) > MAX_GUESTINFO_KEYS:
        raise SpecError(path, f"has {len(data)} keys; at most {MAX_GUESTINFO_KEYS} (each is written to every clone)")
    out: dict[str, str] = {}
    for key, value in data.items():
        where = sub(path, key)
        if not _GUESTINFO_KEY.match(key):
            raise SpecError(where, "keys may contain only a-z, 0-9, '_', '.' and '-'")
        if key in IDENTITY_KEYS:
            raise SpecError(where, f"{key!r} is set per clone by forkscale; choose another key")
        if any(word in key for word in _SECRET_WORDS):
            raise SpecError(
                where,
                "looks like a secret; guestinfo is readable by anyone with read access to the VM in vCenter, "
                "so do not put secrets there",
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SpecError(where, f"must be a string, not {kind_of(value)}")
        out[key] = str(value)
        if len(out[key]) > MAX_GUESTINFO_VALUE:
            raise SpecError(where, f"is {len(out[key])} characters; a guestinfo value holds at most {MAX_GUESTINFO_VALUE}")
    return out


def parse_policy_section(raw: object, path: str, count: int | None) -> PolicyConfig:
    """A pool's `policy:` (forkscale.policy.config); a pool without one gets `fixed` at its `count`."""
    data = None if raw is None else as_mapping(raw, path, "policy")
    return parse_policy(None if data is None else dict(data), path, count=count)


def parse_drain(raw: object, path: str, base_dir: Path) -> Drain:
    data = as_mapping(raw, path, "drain")
    check_keys(data, path, ("command", "timeout_s", "ssh"))
    ssh = None
    if data.get("ssh") is not None:
        where = sub(path, "ssh")
        sdata = as_mapping(data["ssh"], where, "ssh")
        check_keys(sdata, where, ("user", "key_file", "known_hosts", "port", "host", "insecure_host_key"))
        key_file = opt_path(sdata.get("key_file"), sub(where, "key_file"), base_dir)
        if key_file is not None:
            check_read_file(key_file, sub(where, "key_file"), "an SSH key file")
        known_hosts = opt_path(sdata.get("known_hosts"), sub(where, "known_hosts"), base_dir)
        check_optional_read_file(known_hosts, sub(where, "known_hosts"), "known_hosts")
        ssh = DrainSsh(
            user=as_str(sdata.get("user", "root"), sub(where, "user")),
            key_file=key_file,
            known_hosts=known_hosts,
            port=as_port(sdata.get("port", 22), sub(where, "port")),
            host=opt_str(sdata.get("host"), sub(where, "host")),
            insecure_host_key=as_bool(sdata.get("insecure_host_key", False), sub(where, "insecure_host_key")),
        )
    return Drain(
        command=as_str(required(data, "command", path), sub(path, "command")),
        timeout_s=as_positive(data.get("timeout_s", 300.0), sub(path, "timeout_s"), maximum=MAX_TIMEOUT_S),
        ssh=ssh,
    )
