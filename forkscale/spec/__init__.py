"""Specs: the pool spec (`load_spec`) and the rehearsal spec (`forkscale.spec.rehearsal`).

Read in sections, one module each (`vcenter`, `network`, `sections`, `names`, `pool`), on shared
field checks (`fields`) and a strict YAML reader (`yamlfile`); `model` holds the frozen result.
"""

from forkscale.spec.load import load_spec, parse_spec
from forkscale.spec.model import (
    DEFAULT_BUDGETS,
    DEFAULT_FOLDER,
    DEFAULT_STATE,
    FREEZE_METHODS,
    KINDS,
    MAX_VM_NAME,
    Budgets,
    Drain,
    DrainSsh,
    GuestOps,
    GuestReady,
    Network,
    Placement,
    Pool,
    Refresh,
    Rollout,
    Share,
    SourceSettings,
    Spec,
    SshConfig,
    UserDiskSpec,
)
from forkscale.spec.secrets import SecretRef, check_secret_file
from forkscale.spec.state import HA, PostgresState
from forkscale.spec.vcenter import CA_FILE_ENV, VCenter
from forkscale.spec.yamlfile import parse_yaml, read_yaml_file

__all__ = [
    "CA_FILE_ENV", "DEFAULT_BUDGETS", "DEFAULT_FOLDER", "DEFAULT_STATE", "FREEZE_METHODS", "KINDS", "MAX_VM_NAME",
    "HA", "Budgets", "Drain", "DrainSsh", "GuestOps", "GuestReady", "Network", "Placement", "Pool", "PostgresState",
    "Refresh", "Rollout", "SecretRef", "Share", "SourceSettings", "Spec", "SshConfig", "UserDiskSpec", "VCenter",
    "check_secret_file", "load_spec", "parse_spec", "parse_yaml",
    "read_yaml_file",
]
