"""The `network:` section of a pool: CIDR, range, gateway, DNS, port group."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network

from forkscale.core.errors import SpecError
from forkscale.core.identity import default_range
from forkscale.spec.fields import as_bool, as_ipv4, as_mapping, as_str, check_keys, kind_of, required, sub
from forkscale.spec.model import Network


def parse_network(raw: object, path: str) -> Network:
    data = as_mapping(raw, path, "network")
    check_keys(data, path, ("port_group", "cidr", "range", "gateway", "dns", "isolated", "disconnect"))
    port_group = as_str(required(data, "port_group", path), sub(path, "port_group"))
    cidr = parse_cidr(required(data, "cidr", path), sub(path, "cidr"))
    gateway = None
    if data.get("gateway") is not None:
        where = sub(path, "gateway")
        gateway = as_ipv4(data["gateway"], where)
        if gateway not in cidr:
            raise SpecError(where, f"{gateway} is not inside cidr {cidr}")
        if gateway in (cidr.network_address, cidr.broadcast_address):
            raise SpecError(where, f"{gateway} is the network or broadcast address of {cidr}")
    range_given = data.get("range") is not None
    if range_given:
        bounds = parse_range(data["range"], sub(path, "range"), cidr)
        if gateway is not None and bounds[0] <= gateway <= bounds[1]:
            raise SpecError(
                sub(path, "gateway"), f"{gateway} is inside network.range {bounds[0]}-{bounds[1]}"
            )
    else:
        bounds = default_range(cidr, gateway)
    dns_raw = data.get("dns", [])
    if not isinstance(dns_raw, list):
        raise SpecError(sub(path, "dns"), f"must be a list of IPv4 addresses, not {kind_of(dns_raw)}")
    dns = tuple(as_ipv4(item, f"{sub(path, 'dns')}[{i}]") for i, item in enumerate(dns_raw))
    for i, server in enumerate(dns):
        if range_given and bounds[0] <= server <= bounds[1]:
            raise SpecError(f"{sub(path, 'dns')}[{i}]", f"{server} is inside network.range {bounds[0]}-{bounds[1]}")
    return Network(
        cidr=cidr,
        range=bounds,
        gateway=gateway,
        dns=dns,
        port_group=port_group,
        isolated=as_bool(data.get("isolated", False), sub(path, "isolated")),
        disconnect=as_bool(data.get("disconnect", False), sub(path, "disconnect")),
        range_given=range_given,
    )


def parse_cidr(raw: object, path: str) -> IPv4Network:
    text = as_str(raw, path)
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


def parse_range(raw: object, path: str, cidr: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    text = as_str(raw, path)
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
