"""One pool: its section, checked field by field and as a whole."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from forkscale.core.errors import SpecError
from forkscale.policy.config import PolicyConfig
from forkscale.spec.day2 import check_day2, parse_notify, parse_refresh, parse_rollout, parse_user_disk
from forkscale.spec.fields import as_choice, as_int, as_mapping, as_str, check_keys, opt_str, required, sub
from forkscale.spec.model import (
    FREEZE_METHODS,
    KINDS,
    MAX_CLONES,
    ON_RELEASE,
    GuestOps,
    Network,
    Pool,
    SshConfig,
    default_name_pattern,
)
from forkscale.spec.moves import parse_kind_policy, parse_rebalance
from forkscale.spec.names import check_rendered, parse_pattern
from forkscale.spec.network import parse_network
from forkscale.spec.sections import (
    parse_budgets,
    parse_drain,
    parse_fallback,
    parse_guest_ready,
    parse_guestinfo,
    parse_guestops,
    parse_placement,
    parse_policy_section,
    parse_sources,
    parse_ssh,
)
from forkscale.spec.steps import parse_steps

_POOL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


POOL_KEYS = (
    "name", "source", "snapshot", "freeze", "ssh", "guestops", "count", "name_pattern",
    "hostname_pattern", "network", "placement", "fallback", "budgets", "guest_ready",
    "guestinfo", "policy", "on_release", "drain", "sources", "checks", "vcenter", "rollout", "refresh", "user_disk",
    "notify", "rebalance", "kind_policy",
)
#: a pool's `checks:` (run by `forkscale rehearse --pool`) time out after this by default
DEFAULT_POOL_CHECK_TIMEOUT_S = 120.0


def parse_pool(raw: object, path: str, base_dir: Path) -> Pool:
    data = as_mapping(raw, path, "a pool")
    check_keys(data, path, POOL_KEYS)
    name = _name(data, path)
    freeze = as_choice(data.get("freeze", "none"), sub(path, "freeze"), FREEZE_METHODS)
    ssh, guestops = _freeze_access(data, path, freeze, base_dir)
    if "network" not in data:
        raise SpecError(sub(path, "network"), "required (port_group, cidr)")
    network = parse_network(data["network"], sub(path, "network"))
    if freeze == "running" and not (network.isolated or network.disconnect):
        raise SpecError(
            sub(path, "network"),
            "freeze: running clones resume with the source's IP; set isolated: true or disconnect: true",
        )
    count, policy = _count_and_policy(data, path, network)
    rollout = parse_rollout(data.get("rollout"), sub(path, "rollout"))
    notify = parse_notify(data.get("notify"), sub(path, "notify"), base_dir)
    check_day2(path, rollout, notify)
    refresh, on_release = parse_refresh(data.get("refresh"), sub(path, "refresh"),
                                        as_choice(data.get("on_release", "refresh"), sub(path, "on_release"), ON_RELEASE))
    hostname_pattern = None
    if data.get("hostname_pattern") is not None:
        hostname_pattern = parse_pattern(data["hostname_pattern"], sub(path, "hostname_pattern"), name)
    pool = Pool(
        name=name,
        source=as_str(required(data, "source", path), sub(path, "source")),
        network=network,
        count=count,
        snapshot=opt_str(data.get("snapshot"), sub(path, "snapshot")),
        freeze=freeze,
        ssh=ssh,
        guestops=guestops,
        name_pattern=parse_pattern(data.get("name_pattern", default_name_pattern(name)), sub(path, "name_pattern"),
                                   name),
        hostname_pattern=hostname_pattern,
        placement=parse_placement(data.get("placement"), sub(path, "placement")),
        fallback=parse_fallback(data.get("fallback", list(KINDS)), sub(path, "fallback")),
        budgets=parse_budgets(data.get("budgets"), sub(path, "budgets")),
        guest_ready=parse_guest_ready(data.get("guest_ready"), sub(path, "guest_ready")),
        guestinfo=parse_guestinfo(data.get("guestinfo"), sub(path, "guestinfo")),
        policy=policy,
        on_release=on_release,
        drain=parse_drain(data["drain"], sub(path, "drain"), base_dir) if data.get("drain") is not None else None,
        sources=parse_sources(data.get("sources"), sub(path, "sources")),
        checks=parse_steps(data.get("checks"), sub(path, "checks"), DEFAULT_POOL_CHECK_TIMEOUT_S, base_dir),
        vcenter=as_str(data["vcenter"], sub(path, "vcenter")) if data.get("vcenter") is not None else "",
        rollout=rollout,
        refresh=refresh,
        user_disk=parse_user_disk(data.get("user_disk"), sub(path, "user_disk")),
        notify=notify,
        rebalance=parse_rebalance(data.get("rebalance"), sub(path, "rebalance")),
        kind_policy=parse_kind_policy(data.get("kind_policy"), sub(path, "kind_policy")),
    )
    check_rendered(pool, path)
    return pool


def _name(data: Mapping[str, object], path: str) -> str:
    name = as_str(required(data, "name", path), sub(path, "name"))
    if not _POOL_NAME.match(name):
        raise SpecError(
            sub(path, "name"),
            f"{name!r} must be 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
        )
    return name


def _freeze_access(data: Mapping[str, object], path: str, freeze: str,
                   base_dir: Path) -> tuple[SshConfig | None, GuestOps | None]:
    """The `ssh:` / `guestops:` block that the freeze method needs, and only that one; `guestops:` is
    also the account a pool's `checks:` run as (`forkscale rehearse --pool`)."""
    ssh = parse_ssh(data["ssh"], sub(path, "ssh"), base_dir) if data.get("ssh") is not None else None
    if freeze == "ssh" and ssh is None:
        raise SpecError(sub(path, "ssh"), "required when freeze: ssh (host, user, key_file, known_hosts)")
    if freeze != "ssh" and ssh is not None:
        raise SpecError(sub(path, "ssh"), f"only used with freeze: ssh (freeze is {freeze!r})")
    guestops = parse_guestops(data["guestops"], sub(path, "guestops"), base_dir) if data.get("guestops") is not None else None
    if freeze == "guestops" and guestops is None:
        raise SpecError(sub(path, "guestops"), "required when freeze: guestops (user, password_env or password_file)")
    if freeze != "guestops" and guestops is not None and data.get("checks") is None:
        raise SpecError(sub(path, "guestops"), f"only used with freeze: guestops or with checks: (freeze is "
                                               f"{freeze!r} and the pool has no checks)")
    return ssh, guestops


def _count_and_policy(data: Mapping[str, object], path: str, network: Network) -> tuple[int | None, PolicyConfig]:
    """`count` and `policy`, each within what the address range can hold."""
    count: int | None = None
    if "count" in data:
        count = as_int(data["count"], sub(path, "count"), minimum=0, maximum=MAX_CLONES)
    elif data.get("policy") is None:
        raise SpecError(sub(path, "count"), "required (or give a policy)")
    capacity = network.capacity()
    holder = "network.range holds" if network.range_given else f"network.cidr {network.cidr} holds"
    if count is not None and count > capacity:
        raise SpecError(sub(path, "count"), f"{count} clones need {count} addresses but {holder} {capacity}")
    policy = parse_policy_section(data.get("policy"), sub(path, "policy"), count)
    for attr, bound in (("max", policy.max), ("count", policy.count)):
        if bound is not None and bound > capacity:
            raise SpecError(
                sub(path, f"policy.{attr}"), f"{bound} clones need {bound} addresses but {holder} {capacity}"
            )
    return count, policy
