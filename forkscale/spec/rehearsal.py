"""The rehearsal spec: what `forkscale rehearse` clones, where the clone's NICs go, what runs in it.

Validated like the pool spec (and with its helpers): every mistake is a `SpecError` naming the
field path, unknown keys are errors with a "did you mean", the `vcenter:` block is parsed by the
very same code as the pool spec's (so passwords are accepted by reference only), and the
`guestops:` and `ssh:` blocks have the keys of a pool's. Nothing here talks to vCenter; the checks
that need the inventory (does the source exist, is the port group not the source's own) run in
`forkscale.workloads.rehearsal` before anything is created, and name the same field paths.

How the steps reach the guest (`transport`): `guestops` runs them through VMware Tools guest
operations (no network between forkscale and the clone, so it works for a clone whose NICs are
disconnected or on a port group nobody can reach), `ssh` over SSH. The default is `guestops`,
unless the spec gives only an `ssh:` block. `rehearsal_for_pool` makes the spec of
`forkscale rehearse --pool POOL --snapshot NEW` from a pool's own section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.spec.fields import (
    as_bool,
    as_choice,
    as_mapping,
    as_positive,
    as_str,
    check_keys,
    opt_path,
    opt_str,
    required,
    sub,
)
from forkscale.spec.model import MAX_TIMEOUT_S, MAX_VM_NAME, GuestOps, Spec, SshConfig, Step
from forkscale.spec.names import check_vm_name
from forkscale.spec.paths import check_writable_file
from forkscale.spec.sections import parse_guestops, parse_ssh
from forkscale.spec.steps import parse_steps
from forkscale.spec.vcenter import VCenter, parse_vcenter
from forkscale.spec.yamlfile import read_yaml_file

DEFAULT_WAIT_S = 300.0
DEFAULT_STEP_TIMEOUT_S = 600.0
DEFAULT_CHECK_TIMEOUT_S = 120.0
TRANSPORTS = ("guestops", "ssh")
TOP_KEYS = ("vcenter", "source", "clone_name", "network", "folder", "transport", "guestops", "ssh", "wait",
            "steps", "checks", "report")


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
class RehearsalSpec:
    """What one rehearsal does. `snapshot` set: a pool's new image, cloned (linked) from that snapshot
    of the golden VM `source` rather than instant-cloned from a running VM."""

    vcenter: VCenter
    source: str
    network: RehearsalNetwork
    steps: tuple[Step, ...]
    checks: tuple[Step, ...]
    transport: str = "guestops"  # guestops | ssh
    guestops: GuestOps | None = None
    ssh: SshConfig | None = None
    clone_name: str | None = None  # None: `<source>-rehearsal-<timestamp>`, see `clone_name_at`
    folder: str | None = None  # None: the source's folder
    wait_timeout_s: float = DEFAULT_WAIT_S
    report: Path | None = None
    base_dir: Path = Path(".")
    pool: str | None = None  # `forkscale rehearse --pool`: the pool whose new image this is
    snapshot: str | None = None

    def clone_name_at(self, when: datetime) -> str:
        if self.clone_name is not None:
            return self.clone_name
        suffix = f"-rehearsal-{when:%Y%m%d-%H%M%S}"
        stem = self.pool or self.source
        return stem[: MAX_VM_NAME - len(suffix)] + suffix


def load_rehearsal(path: str | os.PathLike[str]) -> RehearsalSpec:
    """Read and validate a rehearsal spec; relative paths inside it are relative to its directory."""
    raw, base_dir = read_yaml_file(path)
    return parse_rehearsal(raw, base_dir=base_dir)


def parse_rehearsal(raw: object, *, base_dir: Path) -> RehearsalSpec:
    """Validate already-parsed YAML; the first problem found is raised as SpecError."""
    if raw is None:
        raise SpecError("", "the rehearsal spec is empty; it needs vcenter, source, network, guestops (or ssh) and steps")
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
    transport, guestops, ssh = _guest_access(top, network, base_dir)
    wait = _wait(top.get("wait"), "wait")
    steps = parse_steps(top.get("steps", []), "steps", DEFAULT_STEP_TIMEOUT_S, base_dir)
    checks = parse_steps(top.get("checks", []), "checks", DEFAULT_CHECK_TIMEOUT_S, base_dir)
    if not steps and not checks:
        raise SpecError("steps", "give at least one upgrade step (steps) or check (checks)")
    return RehearsalSpec(
        vcenter=vcenter, source=source, network=network, steps=steps, checks=checks, transport=transport,
        guestops=guestops, ssh=ssh, clone_name=clone_name, folder=folder, wait_timeout_s=wait,
        report=_report(top.get("report"), base_dir), base_dir=base_dir,
    )


def _report(raw: object, base_dir: Path) -> Path | None:
    """Where the report is written: checked now, like every path, before anything connects."""
    report = opt_path(raw, "report", base_dir)
    if report is not None:
        check_writable_file(report, "report", "the report")
    return report


def default_transport(network: RehearsalNetwork, *, has_ssh: bool, has_guestops: bool) -> str:
    """guestops for a clone whose NICs are isolated or disconnected (SSH would need a leg on that
    network), unless only an `ssh:` block says how to reach it; ssh for a connected clone."""
    if has_ssh != has_guestops:
        return "ssh" if has_ssh else "guestops"
    return "guestops" if network.disconnect or network.port_group else "ssh"


def _guest_access(top: dict[str, object], network: RehearsalNetwork,
                  base_dir: Path) -> tuple[str, GuestOps | None, SshConfig | None]:
    """The transport and the one block it needs (`guestops:` credentials or `ssh:`)."""
    has_ssh, has_guestops = top.get("ssh") is not None, top.get("guestops") is not None
    if top.get("transport") is not None:
        transport = as_choice(top["transport"], "transport", TRANSPORTS)
    else:
        transport = default_transport(network, has_ssh=has_ssh, has_guestops=has_guestops)
    guestops = parse_guestops(top["guestops"], "guestops", base_dir) if has_guestops else None
    ssh = parse_ssh(top["ssh"], "ssh", base_dir) if has_ssh else None
    if transport == "guestops" and guestops is None:
        raise SpecError("guestops", "required: the guest account the steps run as through VMware Tools guest "
                                    "operations (user, password_env or password_file); or give transport: ssh "
                                    "and an ssh: block")
    if transport == "ssh" and ssh is None:
        raise SpecError("ssh", "required with transport: ssh (host, user, key_file, known_hosts)")
    return transport, guestops, ssh


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


def rehearsal_for_pool(spec: Spec, pool_name: str, snapshot: str) -> RehearsalSpec:
    """The rehearsal of a pool's new image: a linked clone of snapshot `snapshot` of the pool's golden
    VM, NICs disconnected on the pool's port group, running the pool's `checks:` through guest
    operations with the pool's `guestops:` account, waiting at most `guest_ready.timeout_s`."""
    pool = spec.pool(pool_name)
    where = f"pools[{spec.pools.index(pool)}]"
    snapshot = as_str(snapshot, "--snapshot")
    if not pool.checks:
        raise SpecError(sub(where, "checks"), f"required to rehearse a new image of pool {pool.name!r}: the "
                                              "commands that tell a good image (name, run, timeout_s)")
    if pool.guestops is None:
        raise SpecError(sub(where, "guestops"), f"required to rehearse a new image of pool {pool.name!r}: the "
                                                "clone's NICs are disconnected, so its checks run through guest "
                                                "operations as this account (user, password_env or password_file)")
    return RehearsalSpec(
        vcenter=spec.vcenter_of(pool), source=pool.source, pool=pool.name, snapshot=snapshot,
        network=RehearsalNetwork(port_group=pool.network.port_group, disconnect=True),
        steps=(), checks=pool.checks, transport="guestops", guestops=pool.guestops,
        wait_timeout_s=pool.guest_ready.timeout_s, base_dir=spec.base_dir,
    )
