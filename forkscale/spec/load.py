"""The pool spec: YAML in, frozen dataclasses out, every mistake named by its field path.

Why so strict: a spec drives the creation of hundreds of VMs, so a typo must stop the run before
anything is sent to vCenter. Unknown keys are errors (with a "did you mean"), numbers are not
booleans, address plans are checked for fit and overlap, and secrets are accepted only by
reference (an env var or a 0600 file) and read at call time, so they never sit in a dataclass
that might be logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.fields import as_mapping, as_path, as_positive, check_keys, kind_of, opt_path, sub
from forkscale.spec.model import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_STATE,
    MAX_POOLS,
    MAX_RETENTION_DAYS,
    LedgerSettings,
    Spec,
)
from forkscale.spec.names import check_across_pools
from forkscale.spec.paths import check_state_path, check_writable_file
from forkscale.spec.pool import parse_pool
from forkscale.spec.vcenter import parse_vcenter
from forkscale.spec.yamlfile import read_yaml_file


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a spec file; relative paths inside it are relative to its directory."""
    raw, base_dir = read_yaml_file(path)
    return parse_spec(raw, base_dir=base_dir)


def parse_spec(raw: object, *, base_dir: Path) -> Spec:
    """Validate already-parsed YAML data; the first problem found is raised as SpecError."""
    if raw is None:
        raise SpecError("", "the spec is empty; it needs vcenter and pools")
    top = as_mapping(raw, "", "the spec")
    check_keys(top, "", ("vcenter", "state", "ledger", "pools"))
    if "vcenter" not in top:
        raise SpecError("vcenter", "required (url, user, password_env or password_file)")
    vcenter = parse_vcenter(top["vcenter"], "vcenter", base_dir)
    state = as_path(top.get("state", DEFAULT_STATE), "state", base_dir)
    check_state_path(state, "state")
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
    check_across_pools(pools)
    return Spec(vcenter=vcenter, state=state, pools=pools, base_dir=base_dir, ledger=ledger)


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
