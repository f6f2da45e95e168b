"""The pool spec: YAML in, frozen dataclasses out, every mistake named by its field path.

Why so strict: a spec drives the creation of hundreds of VMs, so a typo must stop the run before
anything is sent to vCenter. Unknown keys are errors (with a "did you mean"), numbers are not
booleans, address plans are checked for fit and overlap, and secrets are accepted only by
reference (an env var or a 0600 file) and read at call time, so they never sit in a dataclass
that might be logged.

Environment: FORKSCALE_CA_FILE, when set, replaces `vcenter.ca_file` (handy for the twin, which
writes a fresh CA each run); `~` is expanded and a relative path is relative to the working
directory.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from forkscale.errors import SpecError
from forkscale.identity import (
    FIRST_INDEX,
    IDENTITY_KEYS,
    NetworkAlloc,
    default_range,
    render_name,
)

FREEZE_METHODS = ("none", "ssh", "guestops", "running")
KINDS = ("instant", "linked", "full")
ON_RELEASE = ("refresh", "keep")
DEFAULT_STATE = ".forkscale/state.sqlite"
DEFAULT_FOLDER = "forkscale"
CA_FILE_ENV = "FORKSCALE_CA_FILE"
MAX_VM_NAME = 80
#: Rendering every possible name is how cross-pool name collisions are found; beyond this many
#: indices the check samples only the first ones (a /16 pool is already 65k names).
_MAX_RENDER_CHECK = 100_000

_POOL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GUESTINFO_KEY = re.compile(r"^[a-z0-9_.-]+$")
_SECRET_WORDS = ("password", "passwd", "secret", "token", "key")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_BAD_VM_NAME_CHARS = set("/\\%") | {chr(c) for c in range(32)}


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
                raise SpecError(_sub(self.path, "password_env"), f"environment variable {self.env} is not set")
            return value
        if self.file is None:
            raise SpecError(self.path, "no password_env or password_file")
        where = _sub(self.path, "password_file")
        check_secret_file(self.file, where)
        value = self.file.read_text(encoding="utf-8").rstrip("\r\n")
        if not value:
            raise SpecError(where, f"{self.file} is empty")
        return value


@dataclass(frozen=True)
class VCenter:
    url: str
    user: str
    secret: SecretRef
    ca_file: Path | None = None
    insecure: bool = False

    def password(self) -> str:
        """The vCenter password, read from its env var or file at call time (never stored)."""
        return self.secret.read()


@dataclass(frozen=True)
class SshConfig:
    """How to reach a source guest over SSH to freeze it."""

    host: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path | None = None
    insecure_host_key: bool = False
    guest_script: str = "/usr/local/sbin/forkscale-guest"  # run as `<script> prepare && <script> freeze`


@dataclass(frozen=True)
class GuestOps:
    """Guest-operations credentials (VMware Tools StartProgramInGuest) for the freeze."""

    user: str
    secret: SecretRef

    def password(self) -> str:
        return self.secret.read()


@dataclass(frozen=True, kw_only=True)
class Network(NetworkAlloc):
    """A pool's network: the address plan (NetworkAlloc) plus where and how NICs connect."""

    port_group: str
    isolated: bool = False
    disconnect: bool = False
    range_given: bool = False  # whether `range` came from the spec (only changes messages)


@dataclass(frozen=True)
class Placement:
    hosts: tuple[str, ...] = ()  # empty: every host that has a source of this pool
    datastores: tuple[str, ...] = ()  # empty: the source's datastore
    folder: str = DEFAULT_FOLDER
    resource_pool: str | None = None


@dataclass(frozen=True)
class Budgets:
    """Concurrency and rate limits; defaults are well under vCenter's and ESXi's own limits."""

    vcenter: int = 32
    per_host: int = 8
    per_datastore: int = 16
    rate_per_s: float = 20.0


DEFAULT_BUDGETS = Budgets()


#: Delta-chain depth at which a per-host source is rotated; vSphere alarms above ~100 (KB 67186)
#: and refuses a 256th level, so the default leaves a wide margin.
DEFAULT_ROTATE_DEPTH = 32
MAX_ROTATE_DEPTH = 200


@dataclass(frozen=True)
class SourceSettings:
    """Per-host frozen sources (`forkscale prepare`): when to replace one with a fresh replica."""

    rotate_depth: int = DEFAULT_ROTATE_DEPTH


@dataclass(frozen=True)
class GuestReady:
    timeout_s: float = 300.0
    required: bool = True


@dataclass(frozen=True)
class DrainSsh:
    """SSH into the clone itself (at its allocated IP) to run the drain command.

    `host` replaces the clone's IP (a bastion that drains by name, or a test's loopback sshd);
    `insecure_host_key` is for clones of one source, which share its host key while their IPs
    are reused across generations (forkscale.ssh logs a warning on every such connection).
    """

    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path | None = None
    port: int = 22
    host: str | None = None
    insecure_host_key: bool = False


@dataclass(frozen=True)
class Drain:
    command: str
    timeout_s: float = 300.0
    ssh: DrainSsh | None = None


def default_name_pattern(pool: str) -> str:
    return f"{pool}-{{index:03d}}"


@dataclass(frozen=True)
class Pool:
    name: str
    source: str
    network: Network
    count: int | None = None
    snapshot: str | None = None
    freeze: str = "none"
    ssh: SshConfig | None = None
    guestops: GuestOps | None = None
    name_pattern: str = ""
    hostname_pattern: str | None = None
    placement: Placement = field(default_factory=Placement)
    fallback: tuple[str, ...] = KINDS
    budgets: Budgets = DEFAULT_BUDGETS
    guest_ready: GuestReady = field(default_factory=GuestReady)
    guestinfo: dict[str, str] = field(default_factory=dict)
    policy: object = None  # forkscale.policy.config.PolicyConfig; the raw dict if that module is absent
    on_release: str = "refresh"
    drain: Drain | None = None
    sources: SourceSettings = field(default_factory=SourceSettings)

    def __post_init__(self) -> None:
        if not self.name_pattern:
            object.__setattr__(self, "name_pattern", default_name_pattern(self.name))

    def rendered_name(self, index: int) -> str:
        return render_name(self.name_pattern, index, pool=self.name)

    def rendered_hostname(self, index: int) -> str:
        if self.hostname_pattern is None:
            return self.rendered_name(index)
        return render_name(self.hostname_pattern, index, pool=self.name)

    def capacity(self) -> int:
        return self.network.capacity()


@dataclass(frozen=True)
class Spec:
    vcenter: VCenter
    state: Path
    pools: tuple[Pool, ...]
    base_dir: Path

    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        known = ", ".join(p.name for p in self.pools)
        raise SpecError("pools", f"no pool named {name!r} (pools: {known})")


# --------------------------------------------------------------------------------------------
# loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise SpecError(
                    "", f"line {line}: duplicate key {key_node.value!r} (first at line {seen[key_node.value]})"
                )
            seen[key_node.value] = line
    loader.flatten_mapping(node)
    try:
        return dict(loader.construct_pairs(node))
    except TypeError:
        raise SpecError("", f"line {node.start_mark.line + 1}: a mapping key must be a plain value") from None


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_file(path: str | os.PathLike[str]) -> tuple[object, Path]:
    """(parsed YAML, the file's directory) — a missing or unreadable file is a SpecError."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("", f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("", f"{file}: cannot read: {exc}") from None
    return parse_yaml(text, name=str(file)), file.resolve().parent


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a spec file; relative paths inside it are relative to its directory."""
    raw, base_dir = read_yaml_file(path)
    return parse_spec(raw, base_dir=base_dir)


def parse_yaml(text: str, *, name: str = "<spec>") -> object:
    """YAML text to plain data; syntax errors become SpecError("") with the line number."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError("", f"{name}: YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError("", f"{name}: YAML error: {exc}") from None


def parse_spec(raw: object, *, base_dir: Path) -> Spec:
    """Validate already-parsed YAML data; the first problem found is raised as SpecError."""
    if raw is None:
        raise SpecError("", "the spec is empty; it needs vcenter and pools")
    top = _mapping(raw, "", "the spec")
    _check_keys(top, "", ("vcenter", "state", "pools"))
    if "vcenter" not in top:
        raise SpecError("vcenter", "required (url, user, password_env or password_file)")
    vcenter = _vcenter(top["vcenter"], "vcenter", base_dir)
    state = _path(top.get("state", DEFAULT_STATE), "state", base_dir)
    if "pools" not in top:
        raise SpecError("pools", "required: a list of pools")
    pools_raw = top["pools"]
    if not isinstance(pools_raw, list):
        raise SpecError("pools", f"must be a list of pools, not {_kind(pools_raw)}")
    if not pools_raw:
        raise SpecError("pools", "is empty; define at least one pool")
    pools = tuple(_pool(item, f"pools[{i}]", base_dir) for i, item in enumerate(pools_raw))
    _check_across_pools(pools)
    return Spec(vcenter=vcenter, state=state, pools=pools, base_dir=base_dir)


# --------------------------------------------------------------------------------------------
# sections


def _vcenter(raw: object, path: str, base_dir: Path) -> VCenter:
    data = _mapping(raw, path, "vcenter")
    _refuse_inline_password(data, path)
    _check_keys(data, path, ("url", "user", "user_env", "password_env", "password_file", "ca_file", "insecure"))
    url = _url(_required(data, "url", path), _sub(path, "url"))
    user = _user(data, path)
    secret = _secret_ref(data, path, base_dir)
    insecure = _bool(data.get("insecure", False), _sub(path, "insecure"))
    ca_file = _ca_file(data, path, base_dir)
    return VCenter(url=url, user=user, secret=secret, ca_file=ca_file, insecure=insecure)


def _url(raw: object, path: str) -> str:
    text = _str(raw, path)
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


def _user(data: Mapping[str, object], path: str) -> str:
    if "user" in data and "user_env" in data:
        raise SpecError(_sub(path, "user_env"), "give either user or user_env, not both")
    if "user" in data:
        return _str(data["user"], _sub(path, "user"))
    if "user_env" in data:
        where = _sub(path, "user_env")
        name = _env_name(data["user_env"], where)
        value = os.environ.get(name)
        if not value:
            raise SpecError(where, f"environment variable {name} is not set")
        return value
    raise SpecError(_sub(path, "user"), "required (or user_env)")


def _refuse_inline_password(data: Mapping[str, object], path: str) -> None:
    if "password" in data:
        raise SpecError(
            _sub(path, "password"),
            "inline passwords are not accepted: spec files end up in git, backups and bug reports; "
            "use password_env (an environment variable name) or password_file (a file with mode 0600)",
        )


def _secret_ref(data: Mapping[str, object], path: str, base_dir: Path) -> SecretRef:
    has_env, has_file = "password_env" in data, "password_file" in data
    if has_env and has_file:
        raise SpecError(_sub(path, "password_file"), "give exactly one of password_env and password_file")
    if has_env:
        return SecretRef(env=_env_name(data["password_env"], _sub(path, "password_env")), path=path)
    if has_file:
        where = _sub(path, "password_file")
        file = _path(data["password_file"], where, base_dir)
        check_secret_file(file, where)
        return SecretRef(file=file, path=path)
    raise SpecError(_sub(path, "password_env"), "required: give password_env or password_file")


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


def _ca_file(data: Mapping[str, object], path: str, base_dir: Path) -> Path | None:
    where = _sub(path, "ca_file")
    override = os.environ.get(CA_FILE_ENV)
    if override:
        file = Path(override).expanduser()
        origin = f"{CA_FILE_ENV}={override}: "
    elif "ca_file" in data and data["ca_file"] is not None:
        file = _path(data["ca_file"], where, base_dir)
        origin = ""
    else:
        return None
    if not file.is_file():
        raise SpecError(where, f"{origin}{file}: no such file")
    return file


def _pool(raw: object, path: str, base_dir: Path) -> Pool:
    data = _mapping(raw, path, "a pool")
    _check_keys(
        data,
        path,
        (
            "name", "source", "snapshot", "freeze", "ssh", "guestops", "count", "name_pattern",
            "hostname_pattern", "network", "placement", "fallback", "budgets", "guest_ready",
            "guestinfo", "policy", "on_release", "drain", "sources",
        ),
    )
    name = _str(_required(data, "name", path), _sub(path, "name"))
    if not _POOL_NAME.match(name):
        raise SpecError(
            _sub(path, "name"),
            f"{name!r} must be 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
        )
    source = _str(_required(data, "source", path), _sub(path, "source"))
    snapshot = _opt_str(data.get("snapshot"), _sub(path, "snapshot"))
    freeze = _choice(data.get("freeze", "none"), _sub(path, "freeze"), FREEZE_METHODS)

    ssh = _ssh(data["ssh"], _sub(path, "ssh"), base_dir) if data.get("ssh") is not None else None
    if freeze == "ssh" and ssh is None:
        raise SpecError(_sub(path, "ssh"), "required when freeze: ssh (host, user, key_file, known_hosts)")
    if freeze != "ssh" and ssh is not None:
        raise SpecError(_sub(path, "ssh"), f"only used with freeze: ssh (freeze is {freeze!r})")
    guestops = _guestops(data["guestops"], _sub(path, "guestops"), base_dir) if data.get("guestops") is not None else None
    if freeze == "guestops" and guestops is None:
        raise SpecError(_sub(path, "guestops"), "required when freeze: guestops (user, password_env or password_file)")
    if freeze != "guestops" and guestops is not None:
        raise SpecError(_sub(path, "guestops"), f"only used with freeze: guestops (freeze is {freeze!r})")

    if "network" not in data:
        raise SpecError(_sub(path, "network"), "required (port_group, cidr)")
    network = _network(data["network"], _sub(path, "network"))
    if freeze == "running" and not (network.isolated or network.disconnect):
        raise SpecError(
            _sub(path, "network"),
            "freeze: running clones resume with the source's IP; set isolated: true or disconnect: true",
        )

    count: int | None = None
    if "count" in data:
        count = _int(data["count"], _sub(path, "count"), minimum=0)
    elif data.get("policy") is None:
        raise SpecError(_sub(path, "count"), "required (or give a policy)")
    capacity = network.capacity()
    holder = "network.range holds" if network.range_given else f"network.cidr {network.cidr} holds"
    if count is not None and count > capacity:
        raise SpecError(_sub(path, "count"), f"{count} clones need {count} addresses but {holder} {capacity}")
    policy = _policy(data.get("policy"), _sub(path, "policy"), count)
    for attr in ("max", "count"):
        bound = getattr(policy, attr, None)
        if isinstance(bound, int) and bound > capacity:
            raise SpecError(
                _sub(path, f"policy.{attr}"), f"{bound} clones need {bound} addresses but {holder} {capacity}"
            )

    name_pattern = _pattern(data.get("name_pattern", default_name_pattern(name)), _sub(path, "name_pattern"), name)
    hostname_pattern = None
    if data.get("hostname_pattern") is not None:
        hostname_pattern = _pattern(data["hostname_pattern"], _sub(path, "hostname_pattern"), name)

    pool = Pool(
        name=name,
        source=source,
        network=network,
        count=count,
        snapshot=snapshot,
        freeze=freeze,
        ssh=ssh,
        guestops=guestops,
        name_pattern=name_pattern,
        hostname_pattern=hostname_pattern,
        placement=_placement(data.get("placement"), _sub(path, "placement")),
        fallback=_fallback(data.get("fallback", list(KINDS)), _sub(path, "fallback")),
        budgets=_budgets(data.get("budgets"), _sub(path, "budgets")),
        guest_ready=_guest_ready(data.get("guest_ready"), _sub(path, "guest_ready")),
        guestinfo=_guestinfo(data.get("guestinfo"), _sub(path, "guestinfo")),
        policy=policy,
        on_release=_choice(data.get("on_release", "refresh"), _sub(path, "on_release"), ON_RELEASE),
        drain=_drain(data["drain"], _sub(path, "drain"), base_dir) if data.get("drain") is not None else None,
        sources=_sources(data.get("sources"), _sub(path, "sources")),
    )
    _check_rendered(pool, path)
    return pool


def _ssh(raw: object, path: str, base_dir: Path) -> SshConfig:
    data = _mapping(raw, path, "ssh")
    _check_keys(data, path, ("host", "port", "user", "key_file", "known_hosts", "insecure_host_key", "guest_script"))
    key_file = _opt_path(data.get("key_file"), _sub(path, "key_file"), base_dir)
    if key_file is not None and not key_file.is_file():
        raise SpecError(_sub(path, "key_file"), f"{key_file}: no such file")
    return SshConfig(
        host=_str(_required(data, "host", path), _sub(path, "host")),
        port=_port(data.get("port", 22), _sub(path, "port")),
        user=_str(data.get("user", "root"), _sub(path, "user")),
        key_file=key_file,
        known_hosts=_opt_path(data.get("known_hosts"), _sub(path, "known_hosts"), base_dir),
        insecure_host_key=_bool(data.get("insecure_host_key", False), _sub(path, "insecure_host_key")),
        guest_script=_guest_script(data.get("guest_script", SshConfig.guest_script), _sub(path, "guest_script")),
    )


def _guest_script(raw: object, path: str) -> str:
    text = _str(raw, path)
    if not text.startswith("/"):
        raise SpecError(path, f"{text!r} must be an absolute path on the source guest")
    return text


def _sources(raw: object, path: str) -> SourceSettings:
    if raw is None:
        return SourceSettings()
    data = _mapping(raw, path, "sources")
    _check_keys(data, path, ("rotate_depth",))
    where = _sub(path, "rotate_depth")
    depth = _int(data.get("rotate_depth", DEFAULT_ROTATE_DEPTH), where, minimum=2)
    if depth > MAX_ROTATE_DEPTH:
        raise SpecError(where, f"{depth} is too deep: vSphere alarms above ~100 delta levels and stops at 255; "
                               f"use at most {MAX_ROTATE_DEPTH} (default {DEFAULT_ROTATE_DEPTH})")
    return SourceSettings(rotate_depth=depth)


def _guestops(raw: object, path: str, base_dir: Path) -> GuestOps:
    data = _mapping(raw, path, "guestops")
    _refuse_inline_password(data, path)
    _check_keys(data, path, ("user", "password_env", "password_file"))
    user = _str(_required(data, "user", path), _sub(path, "user"))
    return GuestOps(user=user, secret=_secret_ref(data, path, base_dir))


def _network(raw: object, path: str) -> Network:
    data = _mapping(raw, path, "network")
    _check_keys(data, path, ("port_group", "cidr", "range", "gateway", "dns", "isolated", "disconnect"))
    port_group = _str(_required(data, "port_group", path), _sub(path, "port_group"))
    cidr = _cidr(_required(data, "cidr", path), _sub(path, "cidr"))
    gateway = None
    if data.get("gateway") is not None:
        where = _sub(path, "gateway")
        gateway = _ipv4(data["gateway"], where)
        if gateway not in cidr:
            raise SpecError(where, f"{gateway} is not inside cidr {cidr}")
        if gateway in (cidr.network_address, cidr.broadcast_address):
            raise SpecError(where, f"{gateway} is the network or broadcast address of {cidr}")
    range_given = data.get("range") is not None
    if range_given:
        bounds = _range(data["range"], _sub(path, "range"), cidr)
        if gateway is not None and bounds[0] <= gateway <= bounds[1]:
            raise SpecError(
                _sub(path, "gateway"), f"{gateway} is inside network.range {bounds[0]}-{bounds[1]}"
            )
    else:
        bounds = default_range(cidr, gateway)
    dns_raw = data.get("dns", [])
    if not isinstance(dns_raw, list):
        raise SpecError(_sub(path, "dns"), f"must be a list of IPv4 addresses, not {_kind(dns_raw)}")
    dns = tuple(_ipv4(item, f"{_sub(path, 'dns')}[{i}]") for i, item in enumerate(dns_raw))
    for i, server in enumerate(dns):
        if range_given and bounds[0] <= server <= bounds[1]:
            raise SpecError(f"{_sub(path, 'dns')}[{i}]", f"{server} is inside network.range {bounds[0]}-{bounds[1]}")
    return Network(
        cidr=cidr,
        range=bounds,
        gateway=gateway,
        dns=dns,
        port_group=port_group,
        isolated=_bool(data.get("isolated", False), _sub(path, "isolated")),
        disconnect=_bool(data.get("disconnect", False), _sub(path, "disconnect")),
        range_given=range_given,
    )


def _cidr(raw: object, path: str) -> IPv4Network:
    text = _str(raw, path)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SpecError(path, f"{text!r} is not a CIDR like 10.20.0.0/24") from None
    if not isinstance(net, IPv4Network):
        raise SpecError(path, f"{text!r} is IPv6; only IPv4 networks are supported")
    if "/" not in text:
        raise SpecError(path, f"{text!r} needs a prefix length, like {text}/24")
    if str(net.network_address) != text.split("/")[0].strip():
        raise SpecError(path, f"{text!r} has host bits set; did you mean {net}?")
    if net.prefixlen > 30:
        raise SpecError(path, f"{text!r} is too small: use a prefix of /30 or shorter")
    return net


def _range(raw: object, path: str, cidr: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    text = _str(raw, path)
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise SpecError(path, f"{text!r} must look like 10.20.0.10-10.20.0.250")
    try:
        start, end = IPv4Address(start_text.strip()), IPv4Address(end_text.strip())
    except ValueError:
        raise SpecError(path, f"{text!r} must look like 10.20.0.10-10.20.0.250 (two IPv4 addresses)") from None
    if start > end:
        raise SpecError(path, f"start {start} is after end {end}")
    hosts_first, hosts_last = cidr.network_address + 1, cidr.broadcast_address - 1
    if start < hosts_first or end > hosts_last:
        raise SpecError(path, f"{start}-{end} is not inside cidr {cidr} (hosts {hosts_first}-{hosts_last})")
    return start, end


def _placement(raw: object, path: str) -> Placement:
    if raw is None:
        return Placement()
    data = _mapping(raw, path, "placement")
    _check_keys(data, path, ("hosts", "datastores", "folder", "resource_pool"))
    return Placement(
        hosts=_str_list(data.get("hosts", []), _sub(path, "hosts")),
        datastores=_str_list(data.get("datastores", []), _sub(path, "datastores")),
        folder=_str(data.get("folder", DEFAULT_FOLDER), _sub(path, "folder")),
        resource_pool=_opt_str(data.get("resource_pool"), _sub(path, "resource_pool")),
    )


def _fallback(raw: object, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list such as [instant, linked, full], not {_kind(raw)}")
    if not raw:
        raise SpecError(path, "must name at least one clone kind (instant, linked, full)")
    kinds = [_choice(item, f"{path}[{i}]", KINDS) for i, item in enumerate(raw)]
    for i, kind in enumerate(kinds):
        if kind in kinds[:i]:
            raise SpecError(f"{path}[{i}]", f"{kind!r} is listed twice")
    if kinds != sorted(kinds, key=KINDS.index):
        raise SpecError(path, f"{kinds} must keep the order instant, linked, full (fastest first)")
    return tuple(kinds)


def _budgets(raw: object, path: str) -> Budgets:
    if raw is None:
        return DEFAULT_BUDGETS
    data = _mapping(raw, path, "budgets")
    _check_keys(data, path, ("vcenter", "per_host", "per_datastore", "rate_per_s"))
    d = DEFAULT_BUDGETS
    return Budgets(
        vcenter=_int(data.get("vcenter", d.vcenter), _sub(path, "vcenter"), minimum=1),
        per_host=_int(data.get("per_host", d.per_host), _sub(path, "per_host"), minimum=1),
        per_datastore=_int(data.get("per_datastore", d.per_datastore), _sub(path, "per_datastore"), minimum=1),
        rate_per_s=_positive(data.get("rate_per_s", d.rate_per_s), _sub(path, "rate_per_s")),
    )


def _guest_ready(raw: object, path: str) -> GuestReady:
    if raw is None:
        return GuestReady()
    data = _mapping(raw, path, "guest_ready")
    _check_keys(data, path, ("timeout_s", "required"))
    return GuestReady(
        timeout_s=_positive(data.get("timeout_s", 300.0), _sub(path, "timeout_s")),
        required=_bool(data.get("required", True), _sub(path, "required")),
    )


def _guestinfo(raw: object, path: str) -> dict[str, str]:
    if raw is None:
        return {}
    data = _mapping(raw, path, "guestinfo")
    out: dict[str, str] = {}
    for key, value in data.items():
        where = _sub(path, key)
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
            raise SpecError(where, f"must be a string, not {_kind(value)}")
        out[key] = str(value)
    return out


def _policy(raw: object, path: str, count: int | None) -> object:
    """Delegate to forkscale.policy.config.parse_policy (imported lazily: it may not exist yet).

    A pool without `policy` still gets one (fixed at `count`) when the policy module exists, so
    the controller always has a PolicyConfig; without the module the raw dict (or None) is kept.
    """
    data = None if raw is None else _mapping(raw, path, "policy")
    try:
        from forkscale.policy.config import parse_policy
    except ModuleNotFoundError as exc:
        if exc.name not in ("forkscale.policy", "forkscale.policy.config"):
            raise
        return None if data is None else dict(data)
    return parse_policy(None if data is None else dict(data), path, count=count)


def _drain(raw: object, path: str, base_dir: Path) -> Drain:
    data = _mapping(raw, path, "drain")
    _check_keys(data, path, ("command", "timeout_s", "ssh"))
    ssh = None
    if data.get("ssh") is not None:
        where = _sub(path, "ssh")
        sdata = _mapping(data["ssh"], where, "ssh")
        _check_keys(sdata, where, ("user", "key_file", "known_hosts", "port", "host", "insecure_host_key"))
        key_file = _opt_path(sdata.get("key_file"), _sub(where, "key_file"), base_dir)
        if key_file is not None and not key_file.is_file():
            raise SpecError(_sub(where, "key_file"), f"{key_file}: no such file")
        ssh = DrainSsh(
            user=_str(sdata.get("user", "root"), _sub(where, "user")),
            key_file=key_file,
            known_hosts=_opt_path(sdata.get("known_hosts"), _sub(where, "known_hosts"), base_dir),
            port=_port(sdata.get("port", 22), _sub(where, "port")),
            host=_opt_str(sdata.get("host"), _sub(where, "host")),
            insecure_host_key=_bool(sdata.get("insecure_host_key", False), _sub(where, "insecure_host_key")),
        )
    return Drain(
        command=_str(_required(data, "command", path), _sub(path, "command")),
        timeout_s=_positive(data.get("timeout_s", 300.0), _sub(path, "timeout_s")),
        ssh=ssh,
    )


# --------------------------------------------------------------------------------------------
# names and cross-pool checks


def _pattern(raw: object, path: str, pool: str) -> str:
    text = _str(raw, path)
    try:
        fields = {fname for _, fname, _, _ in string.Formatter().parse(text) if fname is not None}
    except ValueError as exc:
        raise SpecError(path, f"{text!r} is not a valid pattern: {exc}") from None
    unknown = sorted(fields - {"index", "pool"})
    if unknown:
        raise SpecError(path, f"{text!r} uses {{{unknown[0]}}}; only {{index}} and {{pool}} are available")
    if "index" not in fields:
        raise SpecError(path, f"{text!r} must contain {{index}} so that every clone gets its own name")
    try:
        render_name(text, FIRST_INDEX, pool=pool)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise SpecError(path, f"{text!r} cannot be rendered: {exc}") from None
    return text


def _check_rendered(pool: Pool, path: str) -> None:
    """Every name the pool can ever hold must be a valid VM name and hostname, and distinct."""
    last = FIRST_INDEX + max(pool.capacity(), 1) - 1
    for index in sorted({FIRST_INDEX, last}):
        name = pool.rendered_name(index)
        _check_vm_name(name, _sub(path, "name_pattern"))
        hostname_path = _sub(path, "hostname_pattern" if pool.hostname_pattern is not None else "name_pattern")
        hostname = pool.rendered_hostname(index)
        if not _valid_hostname(hostname):
            hint = "" if pool.hostname_pattern is not None else "; set hostname_pattern"
            raise SpecError(hostname_path, f"renders {hostname!r}, which is not a valid RFC 1123 hostname{hint}")


def _check_vm_name(name: str, path: str) -> None:
    if not name.strip():
        raise SpecError(path, "renders an empty VM name")
    if len(name) > MAX_VM_NAME:
        raise SpecError(path, f"renders {name!r} ({len(name)} characters); VM names are at most {MAX_VM_NAME}")
    bad = sorted(set(name) & _BAD_VM_NAME_CHARS)
    if bad:
        raise SpecError(path, f"renders {name!r}, which contains {bad[0]!r}; avoid '/', '\\' and '%' in VM names")


def _valid_hostname(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    return all(_HOST_LABEL.match(label) for label in name.split("."))


def _check_across_pools(pools: tuple[Pool, ...]) -> None:
    """Pool names unique, address ranges disjoint, and no name rendered by two pools."""
    seen_names: dict[str, int] = {}
    rendered: dict[str, tuple[int, int]] = {}
    for i, pool in enumerate(pools):
        path = f"pools[{i}]"
        if pool.name in seen_names:
            raise SpecError(_sub(path, "name"), f"{pool.name!r} is already used by pools[{seen_names[pool.name]}]")
        seen_names[pool.name] = i
        for j, other in enumerate(pools[:i]):
            a, b = pool.network.range, other.network.range
            if a[0] <= b[1] and b[0] <= a[1]:
                raise SpecError(
                    _sub(path, "network.range"),
                    f"{a[0]}-{a[1]} overlaps pools[{j}] ({other.name}) range {b[0]}-{b[1]}; "
                    "give each pool its own network.range",
                )
        limit = min(pool.capacity(), _MAX_RENDER_CHECK)
        for index in range(FIRST_INDEX, FIRST_INDEX + limit):
            name = pool.rendered_name(index)
            owner = rendered.get(name)
            if owner is not None:
                where = f"pools[{owner[0]}]" if owner[0] != i else f"index {owner[1]} of this pool"
                raise SpecError(_sub(path, "name_pattern"), f"renders {name!r} for index {index}, as does {where}")
            rendered[name] = (i, index)


# --------------------------------------------------------------------------------------------
# scalar helpers


def _sub(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return type(value).__name__


def _mapping(raw: object, path: str, what: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise SpecError(path, f"{what} must be a mapping, not {_kind(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(path, f"key {key!r} must be a string")
    return raw


def _check_keys(data: Mapping[str, object], path: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(allowed)})"
            raise SpecError(_sub(path, key), f"unknown key{hint}")


def _required(data: Mapping[str, object], key: str, path: str) -> object:
    if key not in data or data[key] is None:
        raise SpecError(_sub(path, key), "required")
    return data[key]


def _str(raw: object, path: str) -> str:
    if not isinstance(raw, str):
        raise SpecError(path, f"must be a string, not {_kind(raw)}")
    if not raw.strip():
        raise SpecError(path, "must not be empty")
    return raw


def _opt_str(raw: object, path: str) -> str | None:
    return None if raw is None else _str(raw, path)


def _str_list(raw: object, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list of names, not {_kind(raw)}")
    items = tuple(_str(item, f"{path}[{i}]") for i, item in enumerate(raw))
    for i, item in enumerate(items):
        if item in items[:i]:
            raise SpecError(f"{path}[{i}]", f"{item!r} is listed twice")
    return items


def _choice(raw: object, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw not in choices:
        shown = _kind(raw) if not isinstance(raw, str) else repr(raw)
        close = difflib.get_close_matches(raw, choices, n=1) if isinstance(raw, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(path, f"{shown} is not one of: {', '.join(choices)}{hint}")
    return raw


def _bool(raw: object, path: str) -> bool:
    if not isinstance(raw, bool):
        raise SpecError(path, f"must be true or false, not {_kind(raw)}")
    return raw


def _int(raw: object, path: str, *, minimum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(path, f"must be an integer, not {_kind(raw)}")
    if raw < minimum:
        raise SpecError(path, f"must be >= {minimum}, not {raw}")
    return raw


def _positive(raw: object, path: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise SpecError(path, f"must be a number, not {_kind(raw)}")
    if not raw > 0 or raw != raw or raw == float("inf"):
        raise SpecError(path, f"must be a positive number, not {raw}")
    return float(raw)


def _port(raw: object, path: str) -> int:
    port = _int(raw, path, minimum=1)
    if port > 65535:
        raise SpecError(path, f"{port} is not a TCP port (1-65535)")
    return port


def _env_name(raw: object, path: str) -> str:
    name = _str(raw, path)
    if not _ENV_NAME.match(name):
        # not echoed: people do paste the password itself here
        raise SpecError(
            path, "must be the name of an environment variable (letters, digits, '_'), not the value itself"
        )
    return name


def _ipv4(raw: object, path: str) -> IPv4Address:
    text = _str(raw, path)
    try:
        return IPv4Address(text.strip())
    except ValueError:
        raise SpecError(path, f"{text!r} is not an IPv4 address") from None


def _path(raw: object, path: str, base_dir: Path) -> Path:
    file = Path(_str(raw, path)).expanduser()
    return file if file.is_absolute() else base_dir / file


def _opt_path(raw: object, path: str, base_dir: Path) -> Path | None:
    return None if raw is None else _path(raw, path, base_dir)
