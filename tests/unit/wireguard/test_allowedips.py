"""Cryptokey routing: longest-prefix match over IPv4 and IPv6, against a brute-force model."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.wireguard.allowedips import AllowedIPs


def v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def test_longest_prefix_wins_ipv4() -> None:
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(ipaddress.ip_network("10.0.0.0/8"), "wide")
    table.insert(ipaddress.ip_network("10.1.0.0/16"), "narrow")
    table.insert(ipaddress.ip_network("10.1.2.3/32"), "host")
    assert table.lookup_v4(v4("10.9.9.9")) == "wide"
    assert table.lookup_v4(v4("10.1.9.9")) == "narrow"
    assert table.lookup_v4(v4("10.1.2.3")) == "host"
    assert table.lookup_v4(v4("11.0.0.1")) is None


def test_longest_prefix_wins_ipv6_and_families_are_separate() -> None:
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(ipaddress.ip_network("::/0"), "default")
    table.insert(ipaddress.ip_network("fd00::/64"), "ula")
    assert table.lookup_v6(v6("fd00::1")) == "ula"
    assert table.lookup_v6(v6("2001:db8::1")) == "default"
    assert table.lookup_v4(v4("0.0.0.0")) is None


def test_default_route_ipv4() -> None:
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(ipaddress.ip_network("0.0.0.0/0"), "all")
    assert table.lookup_v4(v4("203.0.113.7")) == "all"


def test_inserting_a_present_network_moves_it_and_invalidates_cached_lookups() -> None:
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(ipaddress.ip_network("192.168.0.0/24"), "first")
    assert table.lookup_v4(v4("192.168.0.5")) == "first"
    table.insert(ipaddress.ip_network("192.168.0.0/24"), "second")
    assert table.lookup_v4(v4("192.168.0.5")) == "second"


def test_remove_value_removes_all_its_networks() -> None:
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(ipaddress.ip_network("10.0.0.0/8"), "a")
    table.insert(ipaddress.ip_network("fd00::/8"), "a")
    table.insert(ipaddress.ip_network("10.2.0.0/16"), "b")
    assert table.lookup_v4(v4("10.9.0.1")) == "a"
    table.remove_value("a")
    assert table.lookup_v4(v4("10.9.0.1")) is None
    assert table.lookup_v6(v6("fd00::1")) is None
    assert table.lookup_v4(v4("10.2.0.1")) == "b"


networks_v4 = st.builds(
    lambda address, length: ipaddress.IPv4Network((address, length), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(networks_v4, st.integers(0, 5)), max_size=30), st.lists(st.integers(0, 2**32 - 1), max_size=30)
)
def test_matches_brute_force_longest_prefix(
    entries: list[tuple[ipaddress.IPv4Network, int]], probes: list[int]
) -> None:
    table: AllowedIPs[int] = AllowedIPs()
    model: dict[ipaddress.IPv4Network, int] = {}
    for network, value in entries:
        table.insert(network, value)
        model[network] = value
    for probe in probes:
        address = ipaddress.IPv4Address(probe)
        matches = [network for network in model if address in network]
        expected = model[max(matches, key=lambda network: network.prefixlen)] if matches else None
        assert table.lookup_v4(address.packed) == expected
