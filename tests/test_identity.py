"""Identity allocation: names, addresses and MACs, without a database."""

from __future__ import annotations

import random
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest

from forkscale.core import identity
from forkscale.core.identity import ExhaustedError, NetworkAlloc


def test_name_is_lowest_free_index():
    assert identity.next_name("web-{index:03d}", set()) == (1, "web-001")
    assert identity.next_name("web-{index:03d}", {"web-001", "web-002", "web-004"}) == (3, "web-003")
    # names of other patterns do not block this one
    assert identity.next_name("{pool}-{index}", {"a-1", "b-2"}, pool="b") == (1, "b-1")


def test_name_pattern_that_is_not_injective_is_exhausted_not_endless():
    with pytest.raises(ExhaustedError, match="renders only names already in use"):
        identity.next_name("fixed{index!s:.0}", {"fixed"})


def test_default_range_trims_gateway_at_either_end():
    net = IPv4Network("10.0.0.0/24")
    assert identity.default_range(net, IPv4Address("10.0.0.1")) == (IPv4Address("10.0.0.2"), IPv4Address("10.0.0.254"))
    assert identity.default_range(net, IPv4Address("10.0.0.254")) == (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.253"))
    assert identity.default_range(net, None) == (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.254"))


def test_addresses_skip_network_broadcast_gateway_and_dns():
    net = NetworkAlloc(
        cidr=IPv4Network("10.0.0.0/29"),
        range=(IPv4Address("10.0.0.0"), IPv4Address("10.0.0.7")),
        gateway=IPv4Address("10.0.0.3"),
        dns=(IPv4Address("10.0.0.5"), IPv4Address("8.8.8.8")),
    )
    assert [str(a) for a in net.addresses()] == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.6"]
    assert net.capacity() == 4


def test_capacity_matches_explicit_range():
    net = NetworkAlloc.parse("10.20.0.0/24", "10.20.0.10-10.20.0.250", gateway="10.20.0.1")
    assert net.capacity() == 241
    assert net.capacity() == len(list(net.addresses()))


def test_next_ip_lowest_free_and_exhaustion_message():
    net = NetworkAlloc.parse("192.168.5.0/24", "192.168.5.10-192.168.5.12", gateway="192.168.5.1")
    assert str(identity.next_ip(net, [])) == "192.168.5.10"
    assert str(identity.next_ip(net, ["192.168.5.10", IPv4Address("192.168.5.12")])) == "192.168.5.11"
    with pytest.raises(ExhaustedError) as info:
        identity.next_ip(net, ["192.168.5.10", "192.168.5.11", "192.168.5.12"])
    assert str(info.value) == (
        "no free address in 192.168.5.10-192.168.5.12 (192.168.5.0/24): all 3 assignable addresses are in use"
    )


def test_network_alloc_rejects_bad_ranges():
    with pytest.raises(ValueError, match="after its end"):
        NetworkAlloc.parse("10.0.0.0/24", "10.0.0.9-10.0.0.3")
    with pytest.raises(ValueError, match="not inside"):
        NetworkAlloc.parse("10.0.0.0/24", "10.0.0.9-10.0.1.3")


def test_netmask_and_prefix():
    assert identity.netmask_of("10.20.0.0/22") == "255.255.252.0"
    assert identity.prefix_of("10.20.0.0/22") == 22
    net = NetworkAlloc.parse("172.16.0.0/12")
    assert (net.prefix, net.netmask) == (12, "255.240.0.0")


def test_mac_range_bounds():
    assert identity.format_mac(identity.MAC_MIN) == "00:50:56:00:00:00"
    assert identity.format_mac(identity.MAC_MAX) == "00:50:56:3f:ff:ff"
    assert identity.is_manual_vmware_mac("00:50:56:3F:FF:FF")
    assert not identity.is_manual_vmware_mac("00:50:56:40:00:00")
    assert not identity.is_manual_vmware_mac("00:0c:29:00:00:01")


class _Edges(random.Random):
    """Returns the range's extremes in turn, to prove both bounds are reachable and respected."""

    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    def randint(self, a: int, b: int) -> int:
        self.calls += 1
        return a if self.calls % 2 else b


def test_random_mac_uses_whole_range_and_skips_taken():
    rng = _Edges()
    assert identity.random_mac(set(), rng) == "00:50:56:00:00:00"
    assert identity.random_mac(set(), rng) == "00:50:56:3f:ff:ff"
    # taken MACs are compared case-insensitively and retried
    rng = _Edges()
    assert identity.random_mac({"00:50:56:00:00:00"}, rng) == "00:50:56:3f:ff:ff"
    assert rng.calls == 2
    # an upper-case taken MAC blocks its lower-case twin
    rng = _Edges()
    rng.calls = 1  # draw the upper bound first
    assert identity.random_mac({"00:50:56:3F:FF:FF"}, rng) == "00:50:56:00:00:00"
    assert rng.calls == 3


def test_random_mac_many_are_in_range_and_distinct():
    rng = random.Random(42)
    taken: set[str] = set()
    for _ in range(2000):
        mac = identity.random_mac(taken, rng)
        assert identity.is_manual_vmware_mac(mac)
        assert mac not in taken
        taken.add(mac)


def test_random_mac_gives_up_when_everything_it_draws_is_taken():
    class Stuck(random.Random):
        def randint(self, a: int, b: int) -> int:
            return a

    with pytest.raises(ExhaustedError, match="after 5 attempts"):
        identity.random_mac({"00:50:56:00:00:00"}, Stuck(), attempts=5)


@dataclass
class _Rec:
    id: int
    pool: str
    hostname: str
    ip: str
    mac: str


def test_guestinfo_keys_and_values():
    net = NetworkAlloc.parse("10.20.0.0/22", gateway="10.20.0.1", dns=["10.20.0.2", "10.20.0.3"])
    values = identity.guestinfo(_Rec(7, "qs", "qs-007", "10.20.0.9", "00:50:56:00:00:01"), net, {"role": "web"})
    assert values == {
        "guestinfo.forkscale.hostname": "qs-007",
        "guestinfo.forkscale.ip": "10.20.0.9",
        "guestinfo.forkscale.prefix": "22",
        "guestinfo.forkscale.netmask": "255.255.252.0",
        "guestinfo.forkscale.gateway": "10.20.0.1",
        "guestinfo.forkscale.dns": "10.20.0.2,10.20.0.3",
        "guestinfo.forkscale.mac": "00:50:56:00:00:01",
        "guestinfo.forkscale.pool": "qs",
        "guestinfo.forkscale.id": "7",
        "guestinfo.forkscale.role": "web",
    }


def test_guestinfo_extra_cannot_override_identity():
    net = NetworkAlloc.parse("10.20.0.0/24")
    with pytest.raises(ValueError, match="reserved"):
        identity.guestinfo(_Rec(1, "p", "h", "10.20.0.5", "00:50:56:00:00:01"), net, {"ip": "1.2.3.4"})
    values = identity.guestinfo(_Rec(1, "p", "h", "10.20.0.5", "00:50:56:00:00:01"), net, {})
    assert values["guestinfo.forkscale.gateway"] == ""
    assert values["guestinfo.forkscale.dns"] == ""
