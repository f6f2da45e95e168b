"""The pool spec: every bad spec is refused with the field path that is wrong."""

from __future__ import annotations

import copy
import functools
import os
import sys
import tempfile
import textwrap
import types
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml

from forkscale.core.errors import SpecError
from forkscale.policy.config import PolicyConfig
from forkscale.spec import DEFAULT_BUDGETS, Budgets, Pool, Spec, load_spec, parse_spec

PW_ENV = "FORKSCALE_TEST_SPEC_PASSWORD"
SECRET = "s3cr3t-Hunter2-never-print-me"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("FORKSCALE_CA_FILE", raising=False)
    monkeypatch.delenv(PW_ENV, raising=False)


def base() -> dict:
    return {
        "vcenter": {
            "url": "https://127.0.0.1:8989/sdk",
            "user": "administrator@vsphere.local",
            "password_env": PW_ENV,
        },
        "pools": [
            {
                "name": "web",
                "source": "src-linux",
                "count": 3,
                "network": {"port_group": "VM Network", "cidr": "10.20.0.0/24", "gateway": "10.20.0.1"},
            }
        ],
    }


def put(doc: dict, dotted: str, value: object) -> dict:
    """Set (or, with value DELETE, remove) a dotted path such as 'pools.0.network.cidr'."""
    *parents, last = dotted.split(".")
    node: object = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]  # type: ignore[arg-type]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]
    return doc


DELETE = object()


def second_pool(doc: dict, **changes: object) -> dict:
    pool = copy.deepcopy(doc["pools"][0])
    pool.update(name="api", network={"port_group": "VM Network", "cidr": "10.30.0.0/24"})
    pool.update(changes)
    doc["pools"].append(pool)
    return doc


Mutate = Callable[[dict], object]

BAD: list[tuple[str, Mutate, str, str]] = [
    # top level
    ("top-level list", lambda d: [d], "", "must be a mapping"),
    ("top-level scalar", lambda d: "pools", "", "must be a mapping"),
    ("empty document", lambda d: None, "", "empty"),
    ("unknown top key", lambda d: put(d, "pool", []), "pool", "did you mean 'pools'"),
    ("missing vcenter", lambda d: put(d, "vcenter", DELETE), "vcenter", "required"),
    ("missing pools", lambda d: put(d, "pools", DELETE), "pools", "required"),
    ("empty pools", lambda d: put(d, "pools", []), "pools", "empty"),
    ("pools not a list", lambda d: put(d, "pools", {"web": {}}), "pools", "must be a list"),
    ("pool not a mapping", lambda d: put(d, "pools.0", "web"), "pools[0]", "must be a mapping"),
    ("state not a string", lambda d: put(d, "state", 5), "state", "must be a string"),
    # vcenter
    ("vcenter not a mapping", lambda d: put(d, "vcenter", "https://x/sdk"), "vcenter", "must be a mapping"),
    ("inline password", lambda d: put(d, "vcenter.password", "hunter2"), "vcenter.password", "inline passwords"),
    ("both password refs", lambda d: put(d, "vcenter.password_file", "/pw"), "vcenter.password_file", "exactly one"),
    ("no password ref", lambda d: put(d, "vcenter.password_env", DELETE), "vcenter.password_env", "required"),
    ("password_env is a value", lambda d: put(d, "vcenter.password_env", "hunter 2"), "vcenter.password_env",
     "not the value itself"),
    ("credentials in url", lambda d: put(d, "vcenter.url", "https://root:pw@vc/sdk"), "vcenter.url",
     "must not contain a user or password"),
    ("missing url", lambda d: put(d, "vcenter.url", DELETE), "vcenter.url", "required"),
    ("url scheme", lambda d: put(d, "vcenter.url", "ftp://vc/sdk"), "vcenter.url", "https://"),
    ("url path", lambda d: put(d, "vcenter.url", "https://vc/api"), "vcenter.url", "must end with /sdk"),
    ("url no host", lambda d: put(d, "vcenter.url", "https:///sdk"), "vcenter.url", "no host"),
    ("missing user", lambda d: put(d, "vcenter.user", DELETE), "vcenter.user", "required"),
    ("user and user_env", lambda d: put(d, "vcenter.user_env", "X"), "vcenter.user_env", "not both"),
    ("user_env unset", lambda d: put(put(d, "vcenter.user", DELETE), "vcenter.user_env", "FORKSCALE_NO_SUCH_VAR"),
     "vcenter.user_env", "FORKSCALE_NO_SUCH_VAR is not set"),
    ("insecure as string", lambda d: put(d, "vcenter.insecure", "yes"), "vcenter.insecure", "true or false"),
    ("ca_file missing", lambda d: put(d, "vcenter.ca_file", "/nonexistent/ca.pem"), "vcenter.ca_file", "no such file"),
    ("password_file missing", lambda d: put(put(d, "vcenter.password_env", DELETE), "vcenter.password_file", "nope"),
     "vcenter.password_file", "no such file"),
    ("vcenter typo", lambda d: put(d, "vcenter.usr", "x"), "vcenter.usr", "did you mean 'user'"),
    # pool basics
    ("pool key typo", lambda d: put(d, "pools.0.netwrok", {}), "pools[0].netwrok", "did you mean 'network'"),
    ("pool name uppercase", lambda d: put(d, "pools.0.name", "Web_1"), "pools[0].name", "lowercase"),
    ("pool name missing", lambda d: put(d, "pools.0.name", DELETE), "pools[0].name", "required"),
    ("source missing", lambda d: put(d, "pools.0.source", DELETE), "pools[0].source", "required"),
    ("source empty", lambda d: put(d, "pools.0.source", " "), "pools[0].source", "must not be empty"),
    ("duplicate pool names", lambda d: second_pool(d, name="web"), "pools[1].name", "already used by pools[0]"),
    # count
    ("negative count", lambda d: put(d, "pools.0.count", -1), "pools[0].count", ">= 0"),
    ("count not int", lambda d: put(d, "pools.0.count", "ten"), "pools[0].count", "must be an integer"),
    ("count float", lambda d: put(d, "pools.0.count", 2.5), "pools[0].count", "must be an integer"),
    ("count boolean", lambda d: put(d, "pools.0.count", True), "pools[0].count", "a boolean"),
    ("count missing", lambda d: put(d, "pools.0.count", DELETE), "pools[0].count", "required (or give a policy)"),
    ("count beyond range",
     lambda d: put(put(d, "pools.0.count", 300), "pools.0.network.range", "10.20.0.10-10.20.0.250"),
     "pools[0].count", "300 clones need 300 addresses but network.range holds 241"),
    ("count beyond cidr", lambda d: put(d, "pools.0.count", 254), "pools[0].count",
     "254 clones need 254 addresses but network.cidr 10.20.0.0/24 holds 253"),
    # patterns
    ("name_pattern without index", lambda d: put(d, "pools.0.name_pattern", "web"), "pools[0].name_pattern",
     "must contain {index}"),
    ("name_pattern unknown field", lambda d: put(d, "pools.0.name_pattern", "web-{idx}"), "pools[0].name_pattern",
     "only {index} and {pool}"),
    ("name_pattern unbalanced", lambda d: put(d, "pools.0.name_pattern", "web-{index"), "pools[0].name_pattern",
     "not a valid pattern"),
    ("name_pattern bad format", lambda d: put(d, "pools.0.name_pattern", "web-{index:q}"), "pools[0].name_pattern",
     "cannot be rendered"),
    ("name too long", lambda d: put(d, "pools.0.name_pattern", "w" * 78 + "{index:03d}"), "pools[0].name_pattern",
     "at most 80"),
    ("name with slash", lambda d: put(d, "pools.0.name_pattern", "web/{index}"), "pools[0].name_pattern", "'/'"),
    ("name is not a hostname", lambda d: put(d, "pools.0.name_pattern", "web_{index}"), "pools[0].name_pattern",
     "set hostname_pattern"),
    ("bad hostname_pattern", lambda d: put(d, "pools.0.hostname_pattern", "h-{index}-"), "pools[0].hostname_pattern",
     "RFC 1123"),
    ("name_pattern not injective", lambda d: put(d, "pools.0.name_pattern", "web{index!s:.1}"),
     "pools[0].name_pattern", "index 1 of this pool"),
    ("names collide across pools", lambda d: second_pool(d, name_pattern="web-{index:03d}"), "pools[1].name_pattern",
     "as does pools[0]"),
    # freeze
    ("unknown freeze", lambda d: put(d, "pools.0.freeze", "snapshot"), "pools[0].freeze", "not one of"),
    ("freeze yaml boolean", lambda d: put(d, "pools.0.freeze", False), "pools[0].freeze", "not one of"),
    ("freeze ssh without ssh", lambda d: put(d, "pools.0.freeze", "ssh"), "pools[0].ssh", "required when freeze: ssh"),
    ("ssh without freeze ssh", lambda d: put(d, "pools.0.ssh", {"host": "h"}), "pools[0].ssh", "only used with"),
    ("ssh without host", lambda d: put(put(d, "pools.0.freeze", "ssh"), "pools.0.ssh", {"user": "root"}),
     "pools[0].ssh.host", "required"),
    ("ssh bad port", lambda d: put(put(d, "pools.0.freeze", "ssh"), "pools.0.ssh", {"host": "h", "port": 70000}),
     "pools[0].ssh.port", "not a TCP port"),
    ("ssh missing key file",
     lambda d: put(put(d, "pools.0.freeze", "ssh"), "pools.0.ssh", {"host": "h", "key_file": "/no/key"}),
     "pools[0].ssh.key_file", "no such file"),
    ("guestops missing", lambda d: put(d, "pools.0.freeze", "guestops"), "pools[0].guestops", "required when"),
    ("guestops inline password",
     lambda d: put(put(d, "pools.0.freeze", "guestops"), "pools.0.guestops", {"user": "root", "password": "x"}),
     "pools[0].guestops.password", "inline passwords"),
    ("running source not isolated", lambda d: put(d, "pools.0.freeze", "running"), "pools[0].network", "isolated"),
    # network
    ("network missing", lambda d: put(d, "pools.0.network", DELETE), "pools[0].network", "required"),
    ("port_group missing", lambda d: put(d, "pools.0.network.port_group", DELETE), "pools[0].network.port_group",
     "required"),
    ("bad cidr", lambda d: put(d, "pools.0.network.cidr", "10.20.0.0/33"), "pools[0].network.cidr", "not a CIDR"),
    ("cidr garbage", lambda d: put(d, "pools.0.network.cidr", "lan"), "pools[0].network.cidr", "not a CIDR"),
    ("cidr host bits", lambda d: put(d, "pools.0.network.cidr", "10.20.0.5/24"), "pools[0].network.cidr",
     "did you mean 10.20.0.0/24"),
    ("cidr ipv6", lambda d: put(d, "pools.0.network.cidr", "fd00::/64"), "pools[0].network.cidr", "IPv6"),
    ("cidr no prefix", lambda d: put(d, "pools.0.network.cidr", "10.20.0.0"), "pools[0].network.cidr",
     "prefix length"),
    ("cidr too small", lambda d: put(d, "pools.0.network.cidr", "10.20.0.0/31"), "pools[0].network.cidr",
     "too small"),
    ("range outside cidr", lambda d: put(d, "pools.0.network.range", "10.20.0.10-10.20.1.10"),
     "pools[0].network.range", "not inside cidr 10.20.0.0/24"),
    ("range start after end", lambda d: put(d, "pools.0.network.range", "10.20.0.90-10.20.0.10"),
     "pools[0].network.range", "start 10.20.0.90 is after end 10.20.0.10"),
    ("range malformed", lambda d: put(d, "pools.0.network.range", "10.20.0.10"), "pools[0].network.range",
     "must look like"),
    ("range bad address", lambda d: put(d, "pools.0.network.range", "10.20.0.10-10.20.0.300"),
     "pools[0].network.range", "two IPv4 addresses"),
    ("gateway inside range", lambda d: put(d, "pools.0.network.range", "10.20.0.1-10.20.0.50"),
     "pools[0].network.gateway", "inside network.range"),
    ("gateway outside cidr", lambda d: put(d, "pools.0.network.gateway", "10.99.0.1"), "pools[0].network.gateway",
     "not inside cidr"),
    ("gateway is broadcast", lambda d: put(d, "pools.0.network.gateway", "10.20.0.255"), "pools[0].network.gateway",
     "broadcast"),
    ("dns not a list", lambda d: put(d, "pools.0.network.dns", "10.20.0.2"), "pools[0].network.dns", "must be a list"),
    ("dns bad address", lambda d: put(d, "pools.0.network.dns", ["dns.local"]), "pools[0].network.dns[0]",
     "not an IPv4 address"),
    ("dns inside range", lambda d: put(put(d, "pools.0.network.range", "10.20.0.10-10.20.0.20"),
                                       "pools.0.network.dns", ["10.20.0.15"]),
     "pools[0].network.dns[0]", "inside network.range"),
    ("isolated not bool", lambda d: put(d, "pools.0.network.isolated", 1), "pools[0].network.isolated",
     "true or false"),
    ("overlapping pool ranges", lambda d: second_pool(d, network={"port_group": "pg2", "cidr": "10.20.0.0/25"}),
     "pools[1].network.range", "overlaps pools[0] (web)"),
    # placement
    ("placement typo", lambda d: put(d, "pools.0.placement", {"datastore": ["ds"]}), "pools[0].placement.datastore",
     "did you mean 'datastores'"),
    ("placement hosts twice", lambda d: put(d, "pools.0.placement", {"hosts": ["esx-01", "esx-01"]}),
     "pools[0].placement.hosts[1]", "listed twice"),
    ("placement hosts string", lambda d: put(d, "pools.0.placement", {"hosts": "esx-01"}),
     "pools[0].placement.hosts", "must be a list"),
    # fallback
    ("fallback empty", lambda d: put(d, "pools.0.fallback", []), "pools[0].fallback", "at least one"),
    ("fallback not a list", lambda d: put(d, "pools.0.fallback", "instant"), "pools[0].fallback", "must be a list"),
    ("fallback duplicate", lambda d: put(d, "pools.0.fallback", ["instant", "instant"]), "pools[0].fallback[1]",
     "listed twice"),
    ("fallback order", lambda d: put(d, "pools.0.fallback", ["full", "instant"]), "pools[0].fallback", "order"),
    ("fallback unknown kind", lambda d: put(d, "pools.0.fallback", ["instnat"]), "pools[0].fallback[0]",
     "did you mean 'instant'"),
    # budgets, guest_ready
    ("budget zero", lambda d: put(d, "pools.0.budgets", {"per_host": 0}), "pools[0].budgets.per_host", ">= 1"),
    ("budget typo", lambda d: put(d, "pools.0.budgets", {"per_hosts": 4}), "pools[0].budgets.per_hosts",
     "did you mean 'per_host'"),
    ("budget boolean", lambda d: put(d, "pools.0.budgets", {"vcenter": True}), "pools[0].budgets.vcenter",
     "a boolean"),
    ("budget negative rate", lambda d: put(d, "pools.0.budgets", {"rate_per_s": -1}),
     "pools[0].budgets.rate_per_s", "positive"),
    ("budgets not a mapping", lambda d: put(d, "pools.0.budgets", 8), "pools[0].budgets", "must be a mapping"),
    ("guest_ready timeout string", lambda d: put(d, "pools.0.guest_ready", {"timeout_s": "5m"}),
     "pools[0].guest_ready.timeout_s", "must be a number"),
    # guestinfo, on_release, drain, policy
    ("guestinfo secret", lambda d: put(d, "pools.0.guestinfo", {"api_token": "x"}), "pools[0].guestinfo.api_token",
     "looks like a secret"),
    ("guestinfo password", lambda d: put(d, "pools.0.guestinfo", {"db.password": "x"}),
     "pools[0].guestinfo.db.password", "looks like a secret"),
    ("guestinfo bad key", lambda d: put(d, "pools.0.guestinfo", {"Role": "x"}), "pools[0].guestinfo.Role", "a-z"),
    ("guestinfo identity key", lambda d: put(d, "pools.0.guestinfo", {"ip": "1.2.3.4"}), "pools[0].guestinfo.ip",
     "set per clone"),
    ("guestinfo nested value", lambda d: put(d, "pools.0.guestinfo", {"role": {"a": 1}}), "pools[0].guestinfo.role",
     "must be a string"),
    ("on_release unknown", lambda d: put(d, "pools.0.on_release", "delete"), "pools[0].on_release", "not one of"),
    ("drain without command", lambda d: put(d, "pools.0.drain", {"timeout_s": 5}), "pools[0].drain.command",
     "required"),
    ("drain ssh typo", lambda d: put(d, "pools.0.drain", {"command": "x", "ssh": {"usr": "a"}}),
     "pools[0].drain.ssh.usr", "did you mean 'user'"),
    ("policy not a mapping", lambda d: put(d, "pools.0.policy", "headroom"), "pools[0].policy", "must be a mapping"),
]


@pytest.mark.parametrize(("mutate", "path", "phrase"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_spec_names_the_field(mutate: Mutate, path: str, phrase: str, tmp_path: Path):
    raw = mutate(base())  # every mutation returns the document to parse
    with pytest.raises(SpecError) as info:
        parse_spec(raw, base_dir=tmp_path)
    assert info.value.path == path, str(info.value)
    assert phrase in info.value.message
    assert str(info.value) == (f"{path}: {info.value.message}" if path else info.value.message)


@pytest.mark.parametrize(
    ("key", "value"), [("password_env", SECRET), ("url", f"https://root:{SECRET}@vc/sdk")]
)
def test_errors_do_not_echo_a_misplaced_password(tmp_path: Path, key: str, value: str):
    with pytest.raises(SpecError) as info:
        parse_spec(put(base(), f"vcenter.{key}", value), base_dir=tmp_path)
    assert SECRET not in str(info.value)


def test_there_are_at_least_thirty_kinds_of_bad_spec():
    assert len({c[2] for c in BAD}) >= 30
    assert len(BAD) >= 60


def test_base_spec_is_valid(tmp_path: Path):
    spec = parse_spec(base(), base_dir=tmp_path)
    pool = spec.pools[0]
    assert pool.count == 3
    assert pool.name_pattern == "web-{index:03d}"
    assert pool.network.range == (IPv4Address("10.20.0.2"), IPv4Address("10.20.0.254"))
    assert pool.capacity() == 253
    assert pool.budgets == DEFAULT_BUDGETS
    assert pool.fallback == ("instant", "linked", "full")
    assert spec.state == tmp_path / ".forkscale/state.sqlite"


FULL = """
vcenter:
  url: http://vc.example.test:8443
  user_env: FORKSCALE_TEST_SPEC_USER
  password_file: secrets/pw
  ca_file: ca.pem
  insecure: true
state: ledger/state.sqlite
pools:
  - name: vdi
    source: /dc1/vm/gold/win11
    snapshot: base
    freeze: ssh
    ssh: {host: 10.0.0.5, port: 2222, user: admin, key_file: id_ed25519, known_hosts: kh, insecure_host_key: false}
    count: 0
    name_pattern: "desk-{index:04d}"
    hostname_pattern: "d{index}.{pool}"
    network:
      port_group: VDI
      cidr: 10.20.0.0/24
      range: 10.20.0.10-10.20.0.250
      gateway: 10.20.0.1
      dns: [10.20.0.2, 1.1.1.1]
      isolated: false
      disconnect: true
    placement: {hosts: [esx-01, esx-02], datastores: [ds-ssd], folder: vdi, resource_pool: rp1}
    fallback: [instant, full]
    budgets: {vcenter: 64, per_host: 4, per_datastore: 8, rate_per_s: 2.5}
    guest_ready: {timeout_s: 120, required: false}
    guestinfo: {role: desktop, site: ams}
    policy: {strategy: headroom, headroom: 5, max: 50}
    on_release: keep
    drain: {command: "systemctl stop worker", timeout_s: 60, ssh: {user: ops, key_file: id_ed25519, port: 22}}
  - name: ci
    source: src-linux
    freeze: running
    count: 5
    network: {port_group: Isolated, cidr: 10.30.0.0/28, isolated: true}
"""


@functools.cache
def ca_pem() -> str:
    """A real CA certificate (PEM): a `ca_file` is loaded when the spec is read."""
    from forkscale.sim.server import make_certificates

    with tempfile.TemporaryDirectory() as d:
        return make_certificates(Path(d))[0].read_text()


def _write(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    file = tmp_path / name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    os.chmod(file, mode)
    return file


def _full_files(tmp_path: Path) -> Path:
    _write(tmp_path, "secrets/pw", SECRET + "\n")
    _write(tmp_path, "ca.pem", ca_pem())
    _write(tmp_path, "id_ed25519", "key")
    return _write(tmp_path, "pool.yaml", FULL, 0o644)


def test_full_spec_loads_every_field(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FORKSCALE_TEST_SPEC_USER", "ops@vsphere.local")
    spec = load_spec(_full_files(tmp_path))

    vc = spec.vcenter
    assert vc.url == "http://vc.example.test:8443/sdk"
    assert vc.user == "ops@vsphere.local"
    assert vc.ca_file == tmp_path / "ca.pem"
    assert vc.insecure is True
    assert vc.password() == SECRET
    assert spec.state == tmp_path / "ledger/state.sqlite"

    vdi = spec.pool("vdi")
    assert vdi.source == "/dc1/vm/gold/win11" and vdi.snapshot == "base"
    assert vdi.ssh is not None and vdi.ssh.port == 2222 and vdi.ssh.key_file == tmp_path / "id_ed25519"
    assert vdi.ssh.known_hosts == tmp_path / "kh"
    assert vdi.count == 0
    assert vdi.rendered_name(7) == "desk-0007"
    assert vdi.rendered_hostname(7) == "d7.vdi"
    assert vdi.network.range == (IPv4Address("10.20.0.10"), IPv4Address("10.20.0.250"))
    assert vdi.network.dns == (IPv4Address("10.20.0.2"), IPv4Address("1.1.1.1"))
    assert vdi.network.disconnect and not vdi.network.isolated
    assert vdi.network.port_group == "VDI"
    assert vdi.placement.hosts == ("esx-01", "esx-02") and vdi.placement.resource_pool == "rp1"
    assert vdi.fallback == ("instant", "full")
    assert vdi.budgets == Budgets(vcenter=64, per_host=4, per_datastore=8, rate_per_s=2.5)
    assert (vdi.guest_ready.timeout_s, vdi.guest_ready.required) == (120.0, False)
    assert vdi.guestinfo == {"role": "desktop", "site": "ams"}
    assert (vdi.policy.strategy, vdi.policy.headroom, vdi.policy.max) == ("headroom", 5, 50)
    assert vdi.on_release == "keep"
    assert vdi.drain is not None and vdi.drain.command == "systemctl stop worker"
    assert vdi.drain.ssh is not None and vdi.drain.ssh.user == "ops"

    ci = spec.pool("ci")
    assert ci.freeze == "running" and ci.network.isolated
    assert ci.capacity() == 14
    assert ci.rendered_hostname(2) == ci.rendered_name(2) == "ci-002"
    assert (ci.policy.strategy, ci.policy.count) == ("fixed", 5)  # no policy block: fixed at count

    # the same data through parse_spec gives an equal Spec (frozen dataclasses compare by value)
    again = parse_spec(yaml.safe_load(FULL), base_dir=tmp_path)
    assert again == spec
    with pytest.raises(SpecError, match="no pool named 'nope'"):
        spec.pool("nope")


def test_policy_with_the_real_policy_module(tmp_path: Path):
    doc = put(base(), "pools.0.count", DELETE)
    doc["pools"][0]["policy"] = {"strategy": "headroom", "headroom": 5, "max": 40}
    pool = parse_spec(doc, base_dir=tmp_path).pools[0]
    assert isinstance(pool.policy, PolicyConfig)
    assert (pool.policy.strategy, pool.policy.headroom, pool.policy.max) == ("headroom", 5, 40)
    fixed = parse_spec(base(), base_dir=tmp_path).pools[0].policy
    assert isinstance(fixed, PolicyConfig) and (fixed.strategy, fixed.count) == ("fixed", 3)
    doc["pools"][0]["policy"]["max"] = 1000
    with pytest.raises(SpecError) as info:
        parse_spec(doc, base_dir=tmp_path)
    assert info.value.path == "pools[0].policy.max"
    assert "1000 clones need 1000 addresses" in info.value.message


def test_policy_errors_propagate(tmp_path: Path, monkeypatch):
    def parse_policy(raw: dict, path: str, count: int | None = None) -> object:
        raise SpecError(f"{path}.spares", "must be >= 0")

    fake = types.ModuleType("forkscale.policy.config")
    fake.parse_policy = parse_policy  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "forkscale.policy.config", fake)
    doc = base()
    doc["pools"][0]["policy"] = {"spares": -1}
    with pytest.raises(SpecError) as info:
        parse_spec(doc, base_dir=tmp_path)
    assert info.value.path == "pools[0].policy.spares"


def test_url_gets_sdk_added(tmp_path: Path):
    doc = put(base(), "vcenter.url", "https://vc.example.test/")
    assert parse_spec(doc, base_dir=tmp_path).vcenter.url == "https://vc.example.test/sdk"
    doc = put(base(), "vcenter.url", "https://vc.example.test:8989/sdk/")
    assert parse_spec(doc, base_dir=tmp_path).vcenter.url == "https://vc.example.test:8989/sdk"


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o620, 0o602])
def test_password_file_with_open_mode_is_refused(tmp_path: Path, mode: int):
    _write(tmp_path, "pw", SECRET, mode)
    doc = put(put(base(), "vcenter.password_env", DELETE), "vcenter.password_file", "pw")
    with pytest.raises(SpecError) as info:
        parse_spec(doc, base_dir=tmp_path)
    assert info.value.path == "vcenter.password_file"
    assert f"mode {mode:04o}" in info.value.message
    assert "chmod 600" in info.value.message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_password_file_private_mode_is_read_at_call_time(tmp_path: Path, mode: int):
    file = _write(tmp_path, "pw", SECRET + "\n", mode)
    doc = put(put(base(), "vcenter.password_env", DELETE), "vcenter.password_file", "pw")
    spec = parse_spec(doc, base_dir=tmp_path)
    assert spec.vcenter.password() == SECRET
    os.chmod(file, 0o600)
    file.write_text("rotated\n")
    assert spec.vcenter.password() == "rotated"
    # a file loosened after load is refused when it is read, not silently used
    os.chmod(file, 0o644)
    with pytest.raises(SpecError, match="mode 0644"):
        spec.vcenter.password()


def test_password_file_must_be_regular(tmp_path: Path):
    (tmp_path / "pwdir").mkdir(mode=0o700)
    doc = put(put(base(), "vcenter.password_env", DELETE), "vcenter.password_file", "pwdir")
    with pytest.raises(SpecError, match="is a directory; a password file must be a regular file") as info:
        parse_spec(doc, base_dir=tmp_path)
    assert info.value.path == "vcenter.password_file"


def test_password_env_read_at_call_time(tmp_path: Path, monkeypatch):
    spec = parse_spec(base(), base_dir=tmp_path)
    with pytest.raises(SpecError) as info:
        spec.vcenter.password()
    assert info.value.path == "vcenter.password_env"
    assert f"{PW_ENV} is not set" in info.value.message
    monkeypatch.setenv(PW_ENV, SECRET)
    assert spec.vcenter.password() == SECRET


def test_secret_never_in_repr_or_str(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(PW_ENV, SECRET)
    monkeypatch.setenv("FORKSCALE_TEST_SPEC_USER", "ops")
    env_spec = parse_spec(base(), base_dir=tmp_path)
    assert env_spec.vcenter.password() == SECRET
    file_spec = load_spec(_full_files(tmp_path))
    assert file_spec.vcenter.password() == SECRET
    doc = put(base(), "pools.0.freeze", "guestops")
    doc["pools"][0]["guestops"] = {"user": "root", "password_env": PW_ENV}
    ops_spec = parse_spec(doc, base_dir=tmp_path)
    assert ops_spec.pools[0].guestops is not None and ops_spec.pools[0].guestops.password() == SECRET
    for spec in (env_spec, file_spec, ops_spec):
        for text in (repr(spec), str(spec), repr(spec.vcenter), str(spec.pools), repr(spec.vcenter.secret)):
            assert SECRET not in text
            assert "Hunter2" not in text


def test_ca_file_env_override(tmp_path: Path, monkeypatch):
    ca = _write(tmp_path, "other-ca.pem", ca_pem(), 0o644)
    monkeypatch.setenv("FORKSCALE_CA_FILE", str(ca))
    doc = put(base(), "vcenter.ca_file", "/nonexistent/ca.pem")
    assert parse_spec(doc, base_dir=tmp_path).vcenter.ca_file == ca
    assert parse_spec(base(), base_dir=tmp_path).vcenter.ca_file == ca
    monkeypatch.setenv("FORKSCALE_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(SpecError, match="FORKSCALE_CA_FILE=") as info:
        parse_spec(base(), base_dir=tmp_path)
    assert info.value.path == "vcenter.ca_file"


def test_ca_file_tilde_expands(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path, ".forkscale/sim/ca.pem", ca_pem(), 0o644)
    doc = put(base(), "vcenter.ca_file", "~/.forkscale/sim/ca.pem")
    assert parse_spec(doc, base_dir=Path("/")).vcenter.ca_file == tmp_path / ".forkscale/sim/ca.pem"


def test_quickstart_example_loads(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path, ".forkscale/sim/ca.pem", ca_pem(), 0o644)
    example = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"
    spec = load_spec(example)
    assert spec.vcenter.url == "https://127.0.0.1:8989/sdk"
    assert spec.vcenter.user == "administrator@vsphere.local"
    assert spec.vcenter.secret.env == "FORKSCALE_PASSWORD"
    assert spec.vcenter.ca_file == tmp_path / ".forkscale/sim/ca.pem"
    pool = spec.pool("quickstart")
    assert (pool.source, pool.freeze, pool.count) == ("src-linux", "guestops", 10)
    assert pool.guestops is not None and pool.guestops.secret.env == "FORKSCALE_GUEST_PASSWORD"
    assert pool.capacity() >= 150
    assert pool.network.gateway == IPv4Address("10.20.0.1")
    assert pool.placement.datastores == ("ds-ssd",) and pool.placement.folder == "forkscale"
    assert pool.rendered_name(1) == "quickstart-001"
    assert spec.state == example.parent / ".forkscale/state.sqlite"


def test_yaml_syntax_error_has_line_number(tmp_path: Path):
    file = _write(tmp_path, "bad.yaml", "vcenter:\n  url: x\n pools: [\n", 0o644)
    with pytest.raises(SpecError) as info:
        load_spec(file)
    assert info.value.path == ""
    assert "YAML syntax error at line 3" in info.value.message


def test_yaml_duplicate_key_is_an_error(tmp_path: Path):
    text = textwrap.dedent(
        """\
        vcenter: {url: https://vc/sdk, user: u, password_env: P}
        pools:
          - name: a
            count: 1
            count: 2
        """
    )
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, "dup.yaml", text, 0o644))
    assert info.value.path == ""
    assert "line 5: duplicate key 'count' (first at line 4)" in info.value.message


def test_missing_spec_file(tmp_path: Path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "none.yaml")


def test_pool_dataclass_defaults_render():
    spec_pool = parse_spec(base(), base_dir=Path("/")).pools[0]
    pool = Pool(name="w", source="s", network=spec_pool.network)
    assert pool.rendered_name(12) == "w-012"
    assert isinstance(parse_spec(base(), base_dir=Path("/")), Spec)
