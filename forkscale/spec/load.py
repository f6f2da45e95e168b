"""The pool spec: YAML in, frozen dataclasses out, every mistake named by its field path.

Why so strict: a spec drives the creation of hundreds of VMs, so a typo must stop the run before
anything is sent to vCenter. Unknown keys are errors (with a "did you mean"), numbers are not
booleans, address plans are checked for fit and overlap, and secrets are accepted only by
reference (an env var or a 0600 file) and read at call time, so they never sit in a dataclass
that might be logged.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.fields import as_mapping, as_positive, check_keys, kind_of, opt_path, sub
from forkscale.spec.model import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_STATE,
    DEFAULT_VCENTER,
    MAX_POOLS,
    MAX_RETENTION_DAYS,
    LedgerSettings,
    Pool,
    Spec,
)
from forkscale.spec.names import check_across_pools
from forkscale.spec.paths import check_state_path, check_writable_file
from forkscale.spec.pool import parse_pool
from forkscale.spec.state import HA, parse_ha, parse_state
from forkscale.spec.vcenter import VCenter, parse_vcenter
from forkscale.spec.yamlfile import read_yaml_file

_VCENTER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a spec file; relative paths inside it are relative to its directory."""
    raw, base_dir = read_yaml_file(path)
    return parse_spec(raw, base_dir=base_dir)


def parse_spec(raw: object, *, base_dir: Path) -> Spec:
    """Validate already-parsed YAML data; the first problem found is raised as SpecError."""
    if raw is None:
        raise SpecError("", "the spec is empty; it needs vcenter and pools")
    top = as_mapping(raw, "", "the spec")
    check_keys(top, "", ("vcenter", "vcenters", "state", "ha", "ledger", "pools"))
    vcenters = parse_vcenters(top, base_dir)
    state = parse_state(top.get("state", DEFAULT_STATE), "state", base_dir)
    if isinstance(state, Path):
        check_state_path(state, "state")
    ha = parse_ha(top["ha"], "ha") if top.get("ha") is not None else HA()
    ledger = parse_ledger(top.get("ledger"), "ledger", base_dir)
    if "pools" not in top:
        raise SpecError("pools", "required: a list of pools")
    pools_raw = top["pools"]
    if not isinstance(pools_raw, list):
        raise SpecError("pools", f"must be a list of pools, not {kind_of(pools_raw)}")
    if not pools_raw:
        raise SpecError("pools", "is empty; define at least one pool")
    if len(pools_raw) > MAX_POOLS:
        raise SpecError("pools", f"has {len(pools_raw)} pools; one spec holds at most {MAX_POOLS}")
    pools = tuple(parse_pool(item, f"pools[{i}]", base_dir) for i, item in enumerate(pools_raw))
    pools = tuple(_with_vcenter(pool, f"pools[{i}]", vcenters) for i, pool in enumerate(pools))
    check_across_pools(pools)
    default = vcenters.get(DEFAULT_VCENTER) or next(iter(vcenters.values()))
    return Spec(vcenter=default, state=state, pools=pools, base_dir=base_dir, ha=ha, vcenters=vcenters,
                ledger=ledger)


def parse_vcenters(top: dict[str, object], base_dir: Path) -> dict[str, VCenter]:
    """`vcenter:` (named "default") and/or `vcenters:` (name -> the same block): at least one."""
    out: dict[str, VCenter] = {}
    if top.get("vcenter") is not None:
        out[DEFAULT_VCENTER] = parse_vcenter(top["vcenter"], "vcenter", base_dir)
    if top.get("vcenters") is not None:
        named = as_mapping(top["vcenters"], "vcenters", "vcenters")
        if not named:
            raise SpecError("vcenters", "is empty; name at least one vCenter")
        for name, raw in named.items():
            if not _VCENTER_NAME.match(name):
                raise SpecError(f"vcenters.{name}", "a vCenter's name is 1-63 lowercase letters, digits and '-'")
            if name in out:
                raise SpecError(f"vcenters.{name}", f"{name!r} is the name of `vcenter:`; choose another")
            out[name] = parse_vcenter(raw, f"vcenters.{name}", base_dir)
    if not out:
        raise SpecError("vcenter", "required (url, user, password_env or password_file), or vcenters: by name")
    return out


def _with_vcenter(pool: Pool, path: str, vcenters: dict[str, VCenter]) -> Pool:
    if not pool.vcenter:
        if len(vcenters) > 1 and DEFAULT_VCENTER not in vcenters:
            raise SpecError(f"{path}.vcenter", f"required: the spec has several vCenters ({', '.join(vcenters)})")
        name = DEFAULT_VCENTER if DEFAULT_VCENTER in vcenters else next(iter(vcenters))
        return dataclasses.replace(pool, vcenter=name)
    if pool.vcenter not in vcenters:
        raise SpecError(f"{path}.vcenter", f"no vCenter named {pool.vcenter!r} (vcenters: {', '.join(vcenters)})")
    return pool


def parse_ledger(raw: object, path: str, base_dir: Path) -> LedgerSettings:
    """`ledger: {retention_days: 30, archive: FILE}` -- how long history stays in the ledger."""
    if raw is None:
        return LedgerSettings()
    data = as_mapping(raw, path, "ledger")
    check_keys(data, path, ("retention_days", "archive"))
    days = as_positive(data.get("retention_days", DEFAULT_RETENTION_DAYS), sub(path, "retention_days"),
                       minimum=1 / 24, maximum=MAX_RETENTION_DAYS)
    archive = opt_path(data.get("archive"), sub(path, "archive"), base_dir)
    if archive is not None:
        check_writable_file(archive, sub(path, "archive"), "the ledger archive")
    return LedgerSettings(retention_days=days, archive=archive)
