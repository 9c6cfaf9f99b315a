"""The route policy with a VM that has IPv6 disabled (issue 12): its IPv6 subnets get no host route, each with the
decision `vm-no-ipv6`, the reason and the fix; its IPv4 subnets are decided as if the VM had IPv6. Until the VM setup
has said (`VmIpv6.UNKNOWN`), no IPv6 route is added and none is withdrawn."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes import Destination
from dmnc.routes.policy import HostState, NetworkInfo, PolicyConfig, SkipReason, VmIpv6, evaluate

net = ipaddress.ip_network
NO_IPV6 = HostState(vm_ipv6=VmIpv6.OFF)
NOT_YET_KNOWN = HostState(vm_ipv6=VmIpv6.UNKNOWN)
# Property tests take no time limit: a loaded CI machine must not fail them (speed lives in tests/bench).
untimed = settings(deadline=None)


def network(name: str, *subnets: str) -> NetworkInfo:
    return NetworkInfo(
        name=name, id=f"id-{name}", driver="bridge", scope="local", internal=False, subnets=tuple(map(net, subnets))
    )


def test_a_dual_stack_network_keeps_its_ipv4_route_and_says_why_ipv6_is_not_routed() -> None:
    result = evaluate([network("web", "172.31.31.0/24", "fd77:31::/64")], PolicyConfig(), host=NO_IPV6)

    assert result.desired == {net("172.31.31.0/24")}
    (skipped,) = result.skipped
    assert (skipped.network, skipped.subnet, skipped.reason) == ("web", net("fd77:31::/64"), SkipReason.VM_NO_IPV6)
    assert skipped.reason.decision == "vm-no-ipv6"
    assert skipped.describe() == (
        "the Docker VM has IPv6 disabled: the tunnel carries IPv4 only, so nothing in the VM could answer;"
        " enable IPv6 in the VM (sysctl net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0, or"
        " boot it without ipv6.disable=1), then restart dmnc to set the VM side up again"
    )


def test_an_ipv6_only_network_gets_no_route_while_the_vm_has_no_ipv6_and_one_when_it_has() -> None:
    only6 = network("v6only", "fd5e:7a3b:1c2d::/64")

    assert evaluate([only6], PolicyConfig(), host=NO_IPV6).desired == frozenset()
    assert evaluate([only6], PolicyConfig(), host=HostState(vm_ipv6=VmIpv6.ON)).desired == {net("fd5e:7a3b:1c2d::/64")}


def test_without_a_vm_to_ask_the_policy_assumes_ipv6() -> None:
    assert HostState().vm_ipv6 is VmIpv6.ON


def test_before_the_vm_says_a_new_ipv6_subnet_waits_and_ipv4_does_not() -> None:
    result = evaluate([network("web", "172.31.31.0/24", "fd77:31::/64")], PolicyConfig(), host=NOT_YET_KNOWN)

    assert result.desired == {net("172.31.31.0/24")}
    (skipped,) = result.skipped
    assert (skipped.subnet, skipped.reason) == (net("fd77:31::/64"), SkipReason.VM_IPV6_UNKNOWN)
    assert skipped.reason.decision == "vm-ipv6-unknown"
    assert skipped.describe() == (
        "waiting for the VM setup to say whether the VM has IPv6; none needed: decided once it is set up"
    )


def test_before_the_vm_says_an_installed_ipv6_route_stays() -> None:
    subnets = [net("172.31.31.0/24"), net("fd77:31::/64")]
    result = evaluate([network("web", *map(str, subnets))], PolicyConfig(), already_routed=subnets, host=NOT_YET_KNOWN)

    assert result.desired == set(subnets)
    assert result.skipped == ()


def test_a_vm_without_ipv6_never_gets_a_new_ipv6_route_on_the_way_to_saying_so() -> None:
    # The service's sequence: unknown until the setup result, then what the VM said. Each pass routes what the
    # previous one installed (already_routed); the IPv6 subnet must never be among them.
    networks = [network("web", "172.31.31.0/24", "fd77:31::/64")]
    installed: frozenset[Destination] = frozenset()
    for state in (NOT_YET_KNOWN, NOT_YET_KNOWN, NO_IPV6):
        installed = evaluate(networks, PolicyConfig(), already_routed=installed, host=state).desired
        assert installed == {net("172.31.31.0/24")}


def test_rules_the_user_chose_come_first_and_the_never_list_before_the_vm() -> None:
    excluded = evaluate([network("a", "fd00:1::/64")], PolicyConfig.from_strings(exclude=["a"]), host=NO_IPV6)
    special = evaluate([network("b", "fe80::/64")], PolicyConfig(), host=NO_IPV6)

    assert [skip.reason for skip in excluded.skipped] == [SkipReason.EXCLUDED]
    assert [skip.reason for skip in special.skipped] == [SkipReason.SPECIAL_PURPOSE]


subnets4 = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(8, 32)
)
subnets6 = st.builds(
    lambda a, p: ipaddress.IPv6Network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(16, 128)
)


@untimed
@given(st.lists(st.lists(subnets4 | subnets6, min_size=1, max_size=3), max_size=6))
def test_without_ipv6_in_the_vm_no_ipv6_subnet_is_routed_and_ipv4_decisions_do_not_change(
    networks_subnets: list[list[ipaddress.IPv4Network | ipaddress.IPv6Network]],
) -> None:
    networks = [network(f"n{index}", *map(str, subnets)) for index, subnets in enumerate(networks_subnets)]

    without = evaluate(networks, PolicyConfig(), host=NO_IPV6)
    with_ipv6 = evaluate(networks, PolicyConfig(), host=HostState())

    assert all(subnet.version == 4 for subnet in without.desired)
    assert without.desired == {subnet for subnet in with_ipv6.desired if subnet.version == 4}
    for skip in without.skipped:
        if skip.reason is SkipReason.VM_NO_IPV6:
            assert skip.subnet is not None
            assert skip.subnet.version == 6


@untimed
@given(
    st.lists(st.lists(subnets4 | subnets6, min_size=1, max_size=3), max_size=6),
    st.lists(subnets4 | subnets6, max_size=6),
)
def test_an_unknown_vm_adds_exactly_no_new_ipv6_route_and_decides_the_rest_as_a_vm_with_ipv6(
    networks_subnets: list[list[ipaddress.IPv4Network | ipaddress.IPv6Network]],
    routed: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    networks = [network(f"n{index}", *map(str, subnets)) for index, subnets in enumerate(networks_subnets)]
    # Routes of an earlier pass: some of the networks' subnets, and subnets no network has any more.
    already_routed = {subnet for subnets in networks_subnets for subnet in subnets[:1]} | set(routed)

    unknown = evaluate(networks, PolicyConfig(), already_routed=already_routed, host=NOT_YET_KNOWN)
    with_ipv6 = evaluate(networks, PolicyConfig(), already_routed=already_routed, host=HostState())

    assert unknown.desired == {
        subnet for subnet in with_ipv6.desired if subnet.version == 4 or subnet in already_routed
    }
    for skip in unknown.skipped:
        if skip.reason is SkipReason.VM_IPV6_UNKNOWN:
            assert skip.subnet is not None
            assert skip.subnet.version == 6
            assert skip.subnet not in already_routed
