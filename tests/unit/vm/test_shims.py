"""Which macvlan/ipvlan networks get a shim, with which address and route (dmnc.vm.shims), and its argv item."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.docker.models import IpamConfig, Network
from dmnc.vm.errors import SetupParamsError
from dmnc.vm.params import ScriptMode, SetupParams, script_arguments, shim_argument
from dmnc.vm.shims import (
    MAX_PROBE_CANDIDATES,
    RESERVATION_NAMES,
    SHIM_LINK_PREFIX,
    Shim,
    ShimKind,
    plan_shims,
    probe_candidates,
)

NETWORK_ID = "5788c847685ca548c22a70da7deddcdd9ee7e97639bcef5bb28411af015ce7eb"
SUBNET = ipaddress.IPv4Network("192.168.1.0/24")
IP_RANGE = ipaddress.IPv4Network("192.168.1.192/27")
GATEWAY = ipaddress.IPv4Address("192.168.1.1")
KEY = bytes(range(32))
NONCE = "0123456789abcdef" * 2


def lan(
    *,
    driver: str = "macvlan",
    ip_range: ipaddress.IPv4Network | ipaddress.IPv6Network | None = IP_RANGE,
    aux: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network = SUBNET,
) -> Network:
    config = IpamConfig(
        subnet,
        GATEWAY if isinstance(subnet, ipaddress.IPv4Network) else None,
        ip_range,
        {name: ipaddress.ip_address(text) for name, text in (aux or {}).items()},
    )
    return Network(
        NETWORK_ID, "lan", driver, ipam_configs=(config,), options={"parent": "eth1"} if options is None else options
    )


def test_the_dmnc_aux_address_is_the_shim_and_the_ip_range_its_route() -> None:
    plan = plan_shims([lan(aux={"dmnc": "192.168.1.223", "host": "192.168.1.224"})])
    assert plan.missing == ()
    assert plan.shims == (
        Shim(
            "lan",
            f"{SHIM_LINK_PREFIX}5788c8470",
            ShimKind.MACVLAN,
            "eth1",
            (ipaddress.IPv4Address("192.168.1.223"),),
            IP_RANGE,
            probe=False,
        ),
    )


def test_a_host_aux_address_without_a_range_routes_the_subnet() -> None:
    (shim,) = plan_shims([lan(ip_range=None, aux={"host": "192.168.1.250"})]).shims
    assert (shim.addresses, shim.route, shim.probe) == ((ipaddress.IPv4Address("192.168.1.250"),), SUBNET, False)


def test_an_aux_address_outside_the_subnet_or_under_another_name_is_not_taken() -> None:
    plan = plan_shims([lan(ip_range=None, aux={"dmnc": "10.0.0.5", "router": "192.168.1.254"})])
    assert plan.shims == ()
    (missing,) = plan.missing
    assert "--aux-address dmnc=IP" in missing.describe()
    assert "host.docker.internal" in missing.describe()


def test_with_only_an_ip_range_addresses_outside_it_are_probed() -> None:
    (shim,) = plan_shims([lan()]).shims
    assert shim.probe
    assert shim.route == IP_RANGE
    assert shim.addresses == tuple(ipaddress.IPv4Address(f"192.168.1.{last}") for last in (253, 252, 251))


def test_no_range_and_no_reservation_means_no_shim_and_a_fix() -> None:
    plan = plan_shims([lan(ip_range=None)])
    assert plan.shims == ()
    assert [item.network for item in plan.missing_for("lan")] == ["lan"]


def test_bridge_networks_get_no_shim_ipvlan_ones_get_a_shim_of_their_own_mode() -> None:
    assert plan_shims([lan(driver="bridge")]) == plan_shims([])
    (l2,) = plan_shims([lan(driver="ipvlan", aux={"dmnc": "192.168.1.223"})]).shims
    assert l2.kind is ShimKind.IPVLAN
    for mode, kind in (("l3", ShimKind.IPVLAN_L3), ("L3S", ShimKind.IPVLAN_L3S)):
        options = {"parent": "eth1", "ipvlan_mode": mode}
        (l3,) = plan_shims([lan(driver="ipvlan", aux={"dmnc": "192.168.1.223"}, options=options)]).shims
        assert (l3.kind, l3.probe, l3.route) == (kind, False, IP_RANGE)


def test_an_ipvlan_l3_network_without_a_reservation_gets_no_probed_shim() -> None:
    options = {"parent": "eth1", "ipvlan_mode": "l3"}
    (missing,) = plan_shims([lan(driver="ipvlan", options=options)]).missing
    assert "answers no ARP probe" in missing.reason
    assert "--aux-address dmnc=IP" in missing.fix


def test_an_ipvlan_network_of_an_unknown_mode_gets_no_shim_and_says_which_modes_do() -> None:
    (missing,) = plan_shims([lan(driver="ipvlan", options={"parent": "eth1", "ipvlan_mode": "l9"})]).missing
    assert "unknown mode 'l9'" in missing.reason


def test_a_network_without_a_parent_or_ipv6_gets_no_shim() -> None:
    assert plan_shims([lan(options={})]).missing[0].fix == "create it with `-o parent=IF`"
    (missing,) = plan_shims([lan(subnet=ipaddress.IPv6Network("fd00:1::/64"), ip_range=None)]).missing
    assert "IPv6" in missing.reason


@given(
    network=st.ip_addresses(v=4),
    prefix=st.integers(min_value=8, max_value=32),
    range_prefix_extra=st.integers(min_value=0, max_value=8),
    aux=st.lists(st.integers(min_value=0, max_value=2**24), max_size=3),
)
def test_probe_candidates_are_never_the_gateway_the_range_the_ends_or_a_reservation(
    *, network: ipaddress.IPv4Address, prefix: int, range_prefix_extra: int, aux: list[int]
) -> None:
    subnet = ipaddress.IPv4Network((network, prefix), strict=False)
    ip_range = next(subnet.subnets(prefixlen_diff=min(range_prefix_extra, 32 - prefix)))
    reserved = {
        f"a{index}": subnet.network_address + (offset % subnet.num_addresses) for index, offset in enumerate(aux)
    }
    config = IpamConfig(subnet, subnet.network_address + 1 if subnet.num_addresses > 2 else None, ip_range, reserved)
    candidates = probe_candidates(subnet, ip_range, config)
    assert len(candidates) <= MAX_PROBE_CANDIDATES
    for address in candidates:
        assert address in subnet
        assert address not in ip_range
        assert address != config.gateway
        assert address not in reserved.values()
        assert int(subnet.network_address) < int(address) < int(subnet.broadcast_address) - 1


def test_the_shim_argument_carries_every_field_in_order() -> None:
    (shim,) = plan_shims([lan()]).shims
    assert shim_argument(shim) == (
        f"{shim.link},macvlan,eth1,192.168.1.192/27,probe,192.168.1.253,192.168.1.252,192.168.1.251"
    )
    arguments = script_arguments(SetupParams(KEY, 51820, shims=(shim,)), ScriptMode.SETUP, nonce=NONCE)
    assert arguments[arguments.index("--shim") + 1] == shim_argument(shim)


@pytest.mark.parametrize(
    ("link", "parent", "addresses", "probe"),
    [
        ("eth0", "eth1", ("192.168.1.5",), False),
        (f"{SHIM_LINK_PREFIX}1", "bad,parent", ("192.168.1.5",), False),
        (f"{SHIM_LINK_PREFIX}1", f"{SHIM_LINK_PREFIX}2", ("192.168.1.5",), False),
        (f"{SHIM_LINK_PREFIX}1", "eth1", (), True),
        (f"{SHIM_LINK_PREFIX}1", "eth1", ("192.168.1.5", "192.168.1.6"), False),
    ],
)
def test_setup_params_refuse_a_malformed_shim(link: str, parent: str, addresses: tuple[str, ...], probe: bool) -> None:
    shim = Shim("lan", link, ShimKind.MACVLAN, parent, tuple(map(ipaddress.IPv4Address, addresses)), IP_RANGE, probe)
    with pytest.raises(SetupParamsError):
        SetupParams(KEY, 51820, shims=(shim,))


@pytest.mark.parametrize("kind", [ShimKind.IPVLAN_L3, ShimKind.IPVLAN_L3S])
def test_setup_params_refuse_a_probed_ipvlan_l3_shim(kind: ShimKind) -> None:
    address = (ipaddress.IPv4Address("192.168.1.5"),)
    with pytest.raises(SetupParamsError, match="no ARP"):
        SetupParams(KEY, 51820, shims=(Shim("lan", f"{SHIM_LINK_PREFIX}1", kind, "eth1", address, IP_RANGE, True),))
    reserved = Shim("lan", f"{SHIM_LINK_PREFIX}1", kind, "eth1", address, IP_RANGE, False)
    assert f",{kind.value},eth1," in shim_argument(reserved)


def test_an_ipv6_pool_gets_a_shim_from_its_reservation_only() -> None:
    subnet6, range6 = ipaddress.IPv6Network("fd77:1::/64"), ipaddress.IPv6Network("fd77:1::100/120")
    network = lan(subnet=subnet6, ip_range=range6, aux={"dmnc": "fd77:1::ff"})
    (shim,) = plan_shims([network]).shims
    assert (shim.addresses, shim.route, shim.probe) == ((ipaddress.IPv6Address("fd77:1::ff"),), range6, False)
    assert shim_argument(shim).endswith(f",{range6},reserved,fd77:1::ff")
    SetupParams(KEY, 51820, shims=(shim,))
    # An IPv4 reservation says nothing about the IPv6 pool; without its own, no shim and no probing.
    (missing,) = plan_shims([lan(subnet=subnet6, ip_range=range6, aux={"dmnc": "192.168.1.223"})]).missing
    assert "no IPv6 address reserved" in missing.reason


@pytest.mark.parametrize(
    ("addresses", "route", "probe"),
    [
        (("fd77:1::ff",), "fd77:1::/64", True),
        (("192.168.1.5",), "fd77:1::/64", False),
        (("fd77:1::ff",), "192.168.1.0/24", False),
    ],
)
def test_setup_params_refuse_a_probed_or_mixed_version_ipv6_shim(
    addresses: tuple[str, ...], route: str, probe: bool
) -> None:
    shim = Shim(
        "lan",
        f"{SHIM_LINK_PREFIX}1",
        ShimKind.MACVLAN,
        "eth1",
        tuple(ipaddress.ip_address(text) for text in addresses),  # type: ignore[arg-type]
        ipaddress.ip_network(route),
        probe,
    )
    with pytest.raises(SetupParamsError):
        SetupParams(KEY, 51820, shims=(shim,))


@given(
    host=st.integers(min_value=1, max_value=2**64 - 1),
    name=st.sampled_from(["dmnc", "host", "other"]),
    inside=st.booleans(),
)
def test_an_ipv6_pool_has_a_shim_exactly_when_a_reserved_name_holds_an_address_of_its_subnet(
    host: int, name: str, inside: bool
) -> None:
    subnet = ipaddress.IPv6Network("fd77:1::/64")
    base = subnet if inside else ipaddress.IPv6Network("fd77:2::/64")
    address = base.network_address + host
    plan = plan_shims([lan(subnet=subnet, ip_range=None, aux={name: str(address)})])
    if name in RESERVATION_NAMES and inside:
        (shim,) = plan.shims
        assert shim.addresses == (address,)
        assert shim.route == subnet
        assert not shim.probe
    else:
        assert plan.shims == ()
        assert len(plan.missing) == 1
