"""The rehearsal spec: what `forkscale rehearse` clones, where the clone's NICs go, what runs in it.

Validated like the pool spec (and with its helpers): every mistake is a `SpecError` naming the
field path, unknown keys are errors with a "did you mean", the `vcenter:` block is parsed by the
very same code as the pool spec's (so passwords are accepted by reference only), and the `ssh:`
block has the keys of a pool's `ssh:` block. Nothing here talks to vCenter; the checks that need
the inventory (does the source exist, is the port group not the source's own) run in
`forkscale.workloads.rehearsal` before anything is created, and name the same field paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.fields import (
    as_bool,
    as_mapping,
    as_positive,
    as_str,
    check_keys,
    kind_of,
    opt_path,
    opt_str,
    required,
    sub,
)
from forkscale.spec.model import MAX_TIMEOUT_S, MAX_VM_NAME, SshConfig
from forkscale.spec.names import check_vm_name
from forkscale.spec.paths import check_writable_file
from forkscale.spec.sections import parse_ssh
from forkscale.spec.vcenter import VCenter, parse_vcenter
from forkscale.spec.yamlfile import read_yaml_file

DEFAULT_WAIT_S = 300.0
DEFAULT_STEP_TIMEOUT_S = 600.0
DEFAULT_CHECK_TIMEOUT_S = 120.0
TOP_KEYS = ("vcenter", "source", "clone_name", "network", "folder", "ssh", "wait", "steps", "checks", "report")


@dataclass(frozen=True)
class RehearsalNetwork:
    """Where the clone's NICs go: an isolated port group, and/or disconnected (migrateConnect)."""

    port_group: str | None = None
    disconnect: bool = False

    @property
    def mode(self) -> str:
        if self.port_group and self.disconnect:
            return "isolated+disconnected"
        return "isolated" if self.port_group else "disconnected"


@dataclass(frozen=True)
class Step:
    name: str
    run: str  # the command, run by the guest's login shell; never logged or put in the report
    timeout_s: float


@dataclass(frozen=True)
class RehearsalSpec:
    vcenter: VCenter
    source: str
    network: RehearsalNetwork
    ssh: SshConfig
    steps: tuple[Step, ...]
    checks: tuple[Step, ...]
    clone_name: str | None = None  # None: `<source>-rehearsal-<timestamp>`, see `clone_name_at`
    folder: str | None = None  # None: the source's folder
    wait_timeout_s: float = DEFAULT_WAIT_S
    report: Path | None = None
    base_dir: Path = Path(".")

    def clone_name_at(self, when: datetime) -> str:
        if self.clone_name is not None:
            return self.clone_name
        suffix = f"-rehearsal-{when:%Y%m%d-%H%M%S}"
        return self.source[: MAX_VM_NAME - len(suffix)] + suffix


def load_rehearsal(path: str | os.PathLike[str]) -> RehearsalSpec:
    """Read and validate a rehearsal spec; relative paths inside it are relative to its directory."""
    raw, base_dir = read_yaml_file(path)
    return parse_rehearsal(raw, base_dir=base_dir)


def parse_rehearsal(raw: object, *, base_dir: Path) -> RehearsalSpec:
    """Validate already-parsed YAML; the first problem found is raised as SpecError."""
    if raw is None:
        raise SpecError("", "the rehearsal spec is empty; it needs vcenter, source, network, ssh and steps")
    top = as_mapping(raw, "", "the rehearsal spec")
    check_keys(top, "", TOP_KEYS)
    if "vcenter" not in top:
        raise SpecError("vcenter", "required (url, user, password_env or password_file)")
    vcenter = parse_vcenter(top["vcenter"], "vcenter", base_dir)
    source = as_str(required(top, "source", ""), "source")
    clone_name = opt_str(top.get("clone_name"), "clone_name")
    if clone_name is not None:
        check_vm_name(clone_name, "clone_name")
        if clone_name == source:
            raise SpecError("clone_name", f"{clone_name!r} is the source's own name")
    network = parse_rehearsal_network(required(top, "network", ""), "network")
    folder = opt_str(top.get("folder"), "folder")
    if "ssh" not in top or top["ssh"] is None:
        raise SpecError("ssh", "required: how to reach the clone's guest (host, user, key_file, known_hosts)")
    ssh = parse_ssh(top["ssh"], "ssh", base_dir)
    wait = _wait(top.get("wait"), "wait")
    steps = _steps(top.get("steps", []), "steps", DEFAULT_STEP_TIMEOUT_S)
    checks = _steps(top.get("checks", []), "checks", DEFAULT_CHECK_TIMEOUT_S)
    if not steps and not checks:
        raise SpecError("steps", "give at least one upgrade step (steps) or check (checks)")
    return RehearsalSpec(
        vcenter=vcenter, source=source, network=network, ssh=ssh, steps=steps, checks=checks,
        clone_name=clone_name, folder=folder, wait_timeout_s=wait,
        report=_report(top.get("report"), base_dir), base_dir=base_dir,
    )


def _report(raw: object, base_dir: Path) -> Path | None:
    """Where the report is written: checked now, like every path, before anything connects."""
    report = opt_path(raw, "report", base_dir)
    if report is not None:
        check_writable_file(report, "report", "the report")
    return report


def parse_rehearsal_network(raw: object, path: str) -> RehearsalNetwork:
    data = as_mapping(raw, path, "network")
    check_keys(data, path, ("port_group", "disconnect"))
    port_group = opt_str(data.get("port_group"), sub(path, "port_group"))
    disconnect = as_bool(data.get("disconnect", False), sub(path, "disconnect"))
    if port_group is None and not disconnect:
        raise SpecError(
            path,
            "a live clone keeps the source's IP and MAC identity; give port_group: <an isolated port group> "
            "or disconnect: true (or both), else it would duplicate the source on its network",
        )
    return RehearsalNetwork(port_group=port_group, disconnect=disconnect)


def _wait(raw: object, path: str) -> float:
    if raw is None:
        return DEFAULT_WAIT_S
    data = as_mapping(raw, path, "wait")
    check_keys(data, path, ("timeout_s",))
    return as_positive(data.get("timeout_s", DEFAULT_WAIT_S), sub(path, "timeout_s"), maximum=MAX_TIMEOUT_S)


def _steps(raw: object, path: str, default_timeout: float) -> tuple[Step, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list of {{name, run, timeout_s}}, not {kind_of(raw)}")
    out: list[Step] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        data = as_mapping(item, where, "a step")
        check_keys(data, where, ("name", "run", "timeout_s"))
        name = as_str(required(data, "name", where), sub(where, "name"))
        if name in seen:
            raise SpecError(sub(where, "name"), f"{name!r} is already the name of {path}[{seen[name]}]")
        seen[name] = i
        out.append(Step(
            name=name,
            run=as_str(required(data, "run", where), sub(where, "run")),
            timeout_s=as_positive(data.get("timeout_s", default_timeout), sub(where, "timeout_s"),
                                  maximum=MAX_TIMEOUT_S),
        ))
    return tuple(out)
