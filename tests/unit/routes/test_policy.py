"""Which Docker networks get routes: the policy table."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes.manager import InstalledRoute
from dmnc.routes.policy import (
    MAX_ROUTES,
    MIN_IPV4_PREFIX,
    MIN_IPV6_PREFIX,
    NEVER_RANGES,
    CidrPattern,
    HostNetwork,
    HostState,
    NamePattern,
    NetworkInfo,
    PolicyConfig,
    PolicyConfigError,
    PolicyResult,
    SkipReason,
    evaluate,
    force_routes_warning,
    is_private,
    parse_pattern,
)

net = ipaddress.ip_network
# Property tests take no time limit: a loaded CI machine must not fail them (speed lives in tests/bench).
untimed = settings(deadline=None)


def network(
    name: str = "app",
    subnets: tuple[str, ...] = ("172.20.0.0/16",),
    *,
    driver: str = "bridge",
    scope: str = "local",
    internal: bool = False,
    labels: dict[str, str] | None = None,
) -> NetworkInfo:
    return NetworkInfo(
        name=name,
        id=f"id-{name}",
        driver=driver,
        scope=scope,
        internal=internal,
        labels=labels or {},
        subnets=tuple(net(subnet) for subnet in subnets),
    )


def other_route(destination: str, interface: str = "en0", gateway: str | None = None) -> InstalledRoute:
    return InstalledRoute(
        net(destination), interface, 4, ours=False, gateway=ipaddress.ip_address(gateway) if gateway else None
    )


CASES: list[tuple[str, NetworkInfo, SkipReason | None]] = [
    ("bridge network", network(), None),
    ("internal network is routed", network(internal=True), None),
    ("macvlan network", network(driver="macvlan"), None),
    ("swarm-scope overlay", network(driver="overlay", scope="swarm"), SkipReason.NOT_LOCAL_SCOPE),
    ("global scope", network(scope="global"), SkipReason.NOT_LOCAL_SCOPE),
    ("host network", network("host", (), driver="host"), SkipReason.UNROUTABLE_DRIVER),
    ("none network", network("none", (), driver="null"), SkipReason.UNROUTABLE_DRIVER),
    ("no subnet", network(subnets=()), SkipReason.NO_SUBNETS),
    ("opt-out label", network(labels={"dmnc.route": "false"}), SkipReason.OPTED_OUT),
    ("opt-out label any case", network(labels={"dmnc.route": " FALSE "}), SkipReason.OPTED_OUT),
    ("label true keeps route", network(labels={"dmnc.route": "true"}), None),
    ("other labels ignored", network(labels={"com.docker.compose.project": "x"}), None),
]


@pytest.mark.parametrize(("case", "info", "reason"), CASES, ids=[case for case, _, _ in CASES])
def test_policy_table(case: str, info: NetworkInfo, reason: SkipReason | None) -> None:
    result = evaluate([info], PolicyConfig())
    if reason is None:
        assert result.desired == frozenset(info.subnets)
        assert result.skipped == ()
    else:
        assert result.desired == frozenset()
        assert [skip.reason for skip in result.skipped] == [reason]


def test_ipv4_and_ipv6_subnets_of_one_network_are_both_routed() -> None:
    info = network(subnets=("172.20.0.0/16", "fd00:d0c::/64"))
    assert evaluate([info], PolicyConfig()).desired == {net("172.20.0.0/16"), net("fd00:d0c::/64")}


def test_include_by_name_glob_and_by_cidr() -> None:
    networks = [
        network("web_default", ("172.20.0.0/16",)),
        network("db", ("10.5.0.0/24",)),
        network("x", ("10.9.0.0/24",)),
    ]
    config = PolicyConfig.from_strings(include=["web_*", "10.5.0.0/16"])
    result = evaluate(networks, config)
    assert result.desired == {net("172.20.0.0/16"), net("10.5.0.0/24")}
    assert [(skip.network, skip.reason) for skip in result.skipped] == [("x", SkipReason.NOT_INCLUDED)]


def test_include_cidr_must_contain_the_whole_subnet() -> None:
    result = evaluate([network(subnets=("10.0.0.0/8",))], PolicyConfig.from_strings(include=["10.0.0.0/16"]))
    assert result.desired == frozenset()


def test_exclude_wins_over_include_and_excludes_overlapping_cidrs() -> None:
    networks = [network("web", ("172.20.0.0/16",)), network("lab", ("10.0.0.0/8",))]
    config = PolicyConfig.from_strings(include=["*"], exclude=["10.1.0.0/16"])
    result = evaluate(networks, config)
    assert result.desired == {net("172.20.0.0/16")}
    assert [(skip.network, skip.reason) for skip in result.skipped] == [("lab", SkipReason.EXCLUDED)]


def test_exclude_by_name_is_case_sensitive_glob() -> None:
    config = PolicyConfig.from_strings(exclude=["Test*"])
    assert evaluate([network("Testing")], config).desired == frozenset()
    assert evaluate([network("testing")], config).desired == {net("172.20.0.0/16")}


def test_cidr_pattern_of_other_family_never_matches() -> None:
    config = PolicyConfig.from_strings(exclude=["::/0"])
    assert evaluate([network()], config).desired == {net("172.20.0.0/16")}


def test_patterns_parse_to_names_or_cidrs() -> None:
    assert parse_pattern(" web_* ") == NamePattern("web_*")
    assert parse_pattern("fd00::/8") == CidrPattern(net("fd00::/8"))


@untimed
@given(st.text(max_size=60))
def test_any_pattern_text_parses_or_is_a_config_error(text: str) -> None:
    try:
        pattern = parse_pattern(text)
    except PolicyConfigError:
        return
    if isinstance(pattern, CidrPattern):
        assert "/" in text
        assert str(pattern.network) == str(ipaddress.ip_network(text.strip()))
    else:
        assert pattern.glob == text.strip()
        assert "/" not in text


@untimed
@given(
    st.builds(lambda a, p: ipaddress.IPv6Network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(0, 128))
)
def test_cidr_patterns_round_trip_through_their_text(network: ipaddress.IPv6Network) -> None:
    assert parse_pattern(str(network)) == CidrPattern(network)


@pytest.mark.parametrize("text", ["", "  ", "10.0.0.1/8", "10.0.0.0/33", "web/1"])
def test_invalid_patterns_are_config_errors(text: str) -> None:
    with pytest.raises(PolicyConfigError):
        parse_pattern(text)


def test_overlap_with_another_route_names_both_and_skips() -> None:
    vpn = other_route("172.16.0.0/12", "utun4", "10.8.0.1")
    result = evaluate([network("app", ("172.20.0.0/16",))], PolicyConfig(), [vpn])
    assert result.desired == frozenset()
    [finding] = result.overlaps
    assert finding.other_route == vpn
    assert not finding.routed
    text = finding.describe()
    assert "172.20.0.0/16" in text
    assert "172.16.0.0/12 via 10.8.0.1 dev utun4" in text
    assert "--route-over 172.20.0.0/16" in text
    [skip] = result.skipped
    assert skip.reason is SkipReason.OVERLAP
    assert skip.fix == "route it anyway with --route-over 172.20.0.0/16"


def test_more_specific_other_route_inside_the_subnet_is_an_overlap_too() -> None:
    result = evaluate([network()], PolicyConfig(), [other_route("172.20.5.0/24", "eth0")])
    assert result.desired == frozenset()
    assert [skip.reason for skip in result.skipped] == [SkipReason.OVERLAP]


def test_forced_overlap_is_routed_and_still_reported() -> None:
    result = evaluate([network()], PolicyConfig(force=True), [other_route("172.20.0.0/16")])
    assert result.desired == {net("172.20.0.0/16")}
    assert [finding.routed for finding in result.overlaps] == [True]


def test_subnet_routed_before_the_other_route_appeared_stays_routed() -> None:
    result = evaluate(
        [network()], PolicyConfig(), [other_route("172.16.0.0/12")], already_routed={net("172.20.0.0/16")}
    )
    assert result.desired == {net("172.20.0.0/16")}
    assert [finding.routed for finding in result.overlaps] == [True]


def test_default_routes_and_disjoint_or_other_family_routes_do_not_overlap() -> None:
    routes = [other_route("0.0.0.0/0"), other_route("::/0"), other_route("192.168.1.0/24"), other_route("fd00::/8")]
    result = evaluate([network()], PolicyConfig(), routes)
    assert result.desired == {net("172.20.0.0/16")}
    assert result.overlaps == ()


def test_ipv6_overlap_is_detected() -> None:
    result = evaluate([network(subnets=("fd00:d0c::/64",))], PolicyConfig(), [other_route("fd00::/8", "utun3")])
    assert result.desired == frozenset()
    assert len(result.overlaps) == 1


def test_our_own_routes_are_never_overlaps() -> None:
    ours = InstalledRoute(net("172.20.0.0/16"), "utun7", 7, ours=True)
    assert evaluate([network()], PolicyConfig(), [ours]).overlaps == ()


# Container-like subnets: inside the private ranges, never too wide; other routes are never default routes.
private_subnets = st.one_of(
    st.builds(
        lambda a, p: ipaddress.IPv4Network((0x0A000000 | a, p), strict=False),
        st.integers(0, 2**24 - 1),
        st.integers(8, 32),
    ),
    st.builds(
        lambda a, p: ipaddress.IPv6Network(((0xFD << 120) | a, p), strict=False),
        st.integers(0, 2**120 - 1),
        st.integers(16, 128),
    ),
)
non_default_routes = st.one_of(
    st.builds(lambda a, p: ipaddress.IPv4Network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(2, 32)),
    st.builds(
        lambda a, p: ipaddress.IPv6Network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(2, 128)
    ),
)


@untimed
@given(st.lists(private_subnets, max_size=6), st.lists(non_default_routes, max_size=6), st.booleans())
def test_desired_routes_never_overlap_other_routes_unless_forced(
    network_subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    other_destinations: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    force: bool,
) -> None:
    networks = [network(f"n{index}", (str(subnet),)) for index, subnet in enumerate(network_subnets)]
    others = [InstalledRoute(destination, "en0", 4, ours=False) for destination in other_destinations]
    result = evaluate(networks, PolicyConfig(force=force), others)
    if force:
        assert result.desired == frozenset(network_subnets)
    for subnet in result.desired:
        clashes = [o for o in other_destinations if o.version == subnet.version and o.overlaps(subnet)]
        assert force or not clashes
    assert len(result.overlaps) == sum(
        1 for s in network_subnets for o in other_destinations if o.version == s.version and o.overlaps(s)
    )


def test_network_info_copies_a_docker_client_network_model() -> None:
    from dmnc.docker.models import Network  # noqa: PLC0415 (only this test crosses into the Docker layer)

    docker_network = Network.from_json_untrusted(
        {
            "Id": "abc",
            "Name": "web",
            "Driver": "bridge",
            "Scope": "local",
            "Internal": True,
            "Labels": {"dmnc.route": "false"},
            "IPAM": {"Config": [{"Subnet": "172.20.0.0/16"}, {"Subnet": "fd00:1::/64"}]},
        }
    )
    assert NetworkInfo.of(docker_network) == NetworkInfo(
        name="web",
        id="abc",
        driver="bridge",
        scope="local",
        internal=True,
        labels={"dmnc.route": "false"},
        subnets=(net("172.20.0.0/16"), net("fd00:1::/64")),
    )


# The route boundaries: private ranges by default, the never-list whatever the options.

HOSTILE = ["8.8.8.0/24", "1.0.0.0/8", "127.0.0.0/16", "169.254.0.0/16", "224.0.0.0/4", "2001:4860:4860::/48"]


def decisions(result: PolicyResult) -> dict[str, SkipReason]:
    return {str(skip.subnet): skip.reason for skip in result.skipped}


@pytest.mark.parametrize(
    "subnet",
    [
        "10.1.0.0/16",
        "172.30.5.0/24",
        "192.168.7.0/24",
        "fd77:5::/64",
        "fc00::/7",
        "2001:db8:1::/64",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
    ],
)
def test_private_and_documentation_ranges_are_routed_by_default(subnet: str) -> None:
    assert evaluate([network(subnets=(subnet,))], PolicyConfig()).desired == {net(subnet)}


@pytest.mark.parametrize(
    ("subnet", "reason"),
    [
        ("8.8.8.0/24", SkipReason.NOT_PRIVATE),
        ("2001:4860:4860::/48", SkipReason.NOT_PRIVATE),
        ("1.0.0.0/8", SkipReason.NOT_PRIVATE),
        ("2.0.0.0/7", SkipReason.TOO_WIDE),
        ("0.0.0.0/1", SkipReason.TOO_WIDE),
        ("2000::/15", SkipReason.TOO_WIDE),
        ("127.0.0.0/16", SkipReason.SPECIAL_PURPOSE),
        ("169.254.0.0/16", SkipReason.SPECIAL_PURPOSE),
        ("224.0.0.0/4", SkipReason.TOO_WIDE),
        ("224.0.0.0/24", SkipReason.SPECIAL_PURPOSE),
        ("240.0.0.0/8", SkipReason.SPECIAL_PURPOSE),
        ("255.255.255.255/32", SkipReason.SPECIAL_PURPOSE),
        ("0.0.0.0/8", SkipReason.SPECIAL_PURPOSE),
        ("::1/128", SkipReason.SPECIAL_PURPOSE),
        ("::/128", SkipReason.SPECIAL_PURPOSE),
        ("fe80::/64", SkipReason.SPECIAL_PURPOSE),
        ("ff02::/16", SkipReason.SPECIAL_PURPOSE),
        ("::ffff:0:0/96", SkipReason.SPECIAL_PURPOSE),
        ("::ffff:10.0.0.0/104", SkipReason.SPECIAL_PURPOSE),
        ("64:ff9b::/96", SkipReason.SPECIAL_PURPOSE),
        ("2002::/16", SkipReason.SPECIAL_PURPOSE),
        ("2001::/32", SkipReason.SPECIAL_PURPOSE),
        ("2001::/48", SkipReason.SPECIAL_PURPOSE),
    ],
)
def test_never_list_and_public_ranges_are_not_routed_with_rule_and_fix(subnet: str, reason: SkipReason) -> None:
    result = evaluate([network("hostile", (subnet,))], PolicyConfig())
    assert result.desired == frozenset()
    [skip] = result.skipped
    assert skip.reason is reason
    assert skip.network == "hostile"
    assert skip.fix
    if reason is SkipReason.NOT_PRIVATE:
        assert skip.fix == f"allow it with --route-allow {subnet}"


def test_route_allow_admits_public_ranges_but_never_the_never_list() -> None:
    config = PolicyConfig.from_strings(allow=["0.0.0.0/0", "::/0"], over=["0.0.0.0/0", "::/0"], force=True)
    result = evaluate([network(f"n{i}", (subnet,)) for i, subnet in enumerate(HOSTILE)], config)
    assert result.desired == {net("8.8.8.0/24"), net("1.0.0.0/8"), net("2001:4860:4860::/48")}
    assert decisions(result) == {
        "127.0.0.0/16": SkipReason.SPECIAL_PURPOSE,
        "169.254.0.0/16": SkipReason.SPECIAL_PURPOSE,
        "224.0.0.0/4": SkipReason.TOO_WIDE,
    }


def test_route_allow_admits_only_what_it_contains() -> None:
    config = PolicyConfig.from_strings(allow=["8.8.8.0/25"])
    assert evaluate([network(subnets=("8.8.8.0/24",))], config).desired == frozenset()
    assert evaluate([network(subnets=("8.8.8.0/26",))], config).desired == {net("8.8.8.0/26")}


HOST = HostState(
    tunnel=(net("10.33.33.0/28"),),
    networks=(HostNetwork("en0", net("192.168.1.0/24")), HostNetwork("utun4", net("10.8.0.2/32"))),
    vm_endpoint=ipaddress.ip_address("172.31.0.2"),
    dns_servers=(ipaddress.ip_address("10.99.0.53"), ipaddress.ip_address("fd99::53")),
)


@pytest.mark.parametrize(
    ("subnet", "reason", "detail"),
    [
        ("10.33.33.0/28", SkipReason.TUNNEL, "overlaps 10.33.33.0/28, the tunnel's own addresses"),
        ("10.33.0.0/16", SkipReason.TUNNEL, "overlaps 10.33.33.0/28, the tunnel's own addresses"),
        ("192.168.1.0/30", SkipReason.HOST_NETWORK, "overlaps 192.168.1.0/24 on en0"),
        ("192.168.0.0/16", SkipReason.HOST_NETWORK, "overlaps 192.168.1.0/24 on en0"),
        ("10.8.0.0/24", SkipReason.HOST_NETWORK, "overlaps 10.8.0.2/32 on utun4"),
        ("172.31.0.0/24", SkipReason.VM_ENDPOINT, "contains 172.31.0.2: the tunnel's packets would loop into itself"),
        ("10.99.0.0/24", SkipReason.DNS_SERVER, "contains the DNS server 10.99.0.53"),
        ("fd99::/64", SkipReason.DNS_SERVER, "contains the DNS server fd99::53"),
    ],
)
def test_host_state_is_never_routed(subnet: str, reason: SkipReason, detail: str) -> None:
    config = PolicyConfig.from_strings(allow=["0.0.0.0/0"], over=["0.0.0.0/0", "::/0"], force=True)
    result = evaluate([network("lan-clash", (subnet,))], config, host=HOST)
    assert result.desired == frozenset()
    [skip] = result.skipped
    assert (skip.reason, skip.detail) == (reason, detail)
    assert skip.describe() == f"{reason.value}: {detail}; no option routes it: give the Docker network another subnet"


def test_full_tunnel_vpn_half_routes_are_default_routes_not_overlaps() -> None:
    vpn = [other_route(cidr, "utun9") for cidr in ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1")]
    result = evaluate([network(subnets=("172.30.7.0/24", "fd77:7::/64"))], PolicyConfig(), vpn)
    assert result.desired == {net("172.30.7.0/24"), net("fd77:7::/64")}
    assert result.overlaps == ()


def test_routed_subnet_yields_to_an_equal_or_more_specific_route_and_says_who_took_it() -> None:
    for taker in ("172.20.0.0/16", "172.20.9.0/24"):
        result = evaluate([network()], PolicyConfig(), [other_route(taker, "utun4")], {net("172.20.0.0/16")})
        assert result.desired == frozenset()
        [skip] = result.skipped
        assert skip.reason is SkipReason.TAKEN
        assert skip.detail == f"taken by {taker} via utun4"
        assert skip.fix == "keep it with --route-over 172.20.0.0/16"


def test_route_over_keeps_a_subnet_against_more_specific_routes() -> None:
    config = PolicyConfig.from_strings(over=["172.20.0.0/16"])
    result = evaluate([network()], config, [other_route("172.20.9.0/24")], {net("172.20.0.0/16")})
    assert result.desired == {net("172.20.0.0/16")}
    result = evaluate([network(subnets=("172.21.0.0/16",))], config, [other_route("172.21.9.0/24")])
    assert result.desired == frozenset()


def test_at_most_max_routes_and_the_rest_skipped_with_a_reason() -> None:
    networks = [network(f"n{index:05}", (f"10.{index // 256}.{index % 256}.0/24",)) for index in range(MAX_ROUTES + 3)]
    result = evaluate(networks, PolicyConfig())
    assert len(result.desired) == MAX_ROUTES
    assert [skip.network for skip in result.skipped] == [f"n{index:05}" for index in range(MAX_ROUTES, MAX_ROUTES + 3)]
    assert {skip.reason for skip in result.skipped} == {SkipReason.TOO_MANY}


def test_network_without_ipam_config_is_a_skip_with_reason_and_fix() -> None:
    [skip] = evaluate([network(subnets=())], PolicyConfig()).skipped
    assert skip.describe() == "no IPAM subnet; give the network an IPAM subnet to route it"


def test_network_with_a_malformed_subnet_is_a_skip_with_the_daemons_fault_never_a_route() -> None:
    from dmnc.docker.models import Network  # noqa: PLC0415 (only these tests cross into the Docker layer)

    bad = Network.from_json_untrusted(
        {"Id": "x1", "Name": "odd", "Driver": "bridge", "IPAM": {"Config": [{"Subnet": "10.0.0.0/33"}]}}
    )
    result = evaluate([NetworkInfo.of(bad), network("good")], PolicyConfig())
    assert result.desired == {net("172.20.0.0/16")}
    [skip] = result.skipped
    assert (skip.network, skip.subnet, skip.reason) == ("odd", None, SkipReason.MALFORMED)
    assert skip.describe() == (
        "malformed IPAM config: IPAM config Subnet: not an IP subnet: '10.0.0.0/33'; "
        "recreate the network with a valid subnet to route it"
    )


def test_force_routes_warns_and_means_route_over_everything_only() -> None:
    assert force_routes_warning(PolicyConfig()) is None
    warning = force_routes_warning(PolicyConfig(force=True))
    assert warning is not None
    assert "--route-over" in warning
    result = evaluate([network(subnets=("8.8.8.0/24",))], PolicyConfig(force=True))
    assert decisions(result) == {"8.8.8.0/24": SkipReason.NOT_PRIVATE}


@pytest.mark.parametrize("text", ["10.0.0.1/8", "nonsense", ""])
def test_invalid_allow_or_over_cidrs_are_config_errors(text: str) -> None:
    with pytest.raises(PolicyConfigError):
        PolicyConfig.from_strings(allow=[text])
    with pytest.raises(PolicyConfigError):
        PolicyConfig.from_strings(over=[text])


any_v4 = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32)
)
any_v6 = st.builds(
    lambda a, p: ipaddress.IPv6Network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(0, 128)
)
# Addresses biased towards the private and special ranges, where the interesting overlaps are.
interesting_v4 = st.one_of(any_v4, st.sampled_from([net(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "127.0.0.0/8")]))
any_subnet = st.one_of(any_v4, any_v6, interesting_v4, st.sampled_from([n for n, _ in NEVER_RANGES]))
any_address = st.one_of(
    st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
    st.builds(lambda a: ipaddress.IPv4Address(0x0A000000 | a), st.integers(0, 2**24 - 1)),
)
host_states = st.builds(
    HostState,
    tunnel=st.lists(any_subnet, max_size=2).map(tuple),
    networks=st.lists(st.builds(HostNetwork, st.just("en0"), any_subnet), max_size=3).map(tuple),
    vm_endpoint=st.one_of(st.none(), any_address),
    dns_servers=st.lists(any_address, max_size=3).map(tuple),
)
configs = st.builds(
    PolicyConfig,
    include=st.lists(any_subnet.map(CidrPattern), max_size=2).map(tuple),
    exclude=st.lists(any_subnet.map(CidrPattern), max_size=2).map(tuple),
    force=st.booleans(),
    allow=st.lists(st.one_of(any_subnet, st.sampled_from([net("0.0.0.0/0"), net("::/0")])), max_size=3).map(tuple),
    over=st.lists(any_subnet, max_size=3).map(tuple),
)


@untimed
@given(
    st.lists(st.lists(any_subnet, min_size=1, max_size=3), max_size=5),
    configs,
    host_states,
    st.lists(any_subnet, max_size=4),
    st.lists(any_subnet, max_size=3),
)
def test_wanted_set_never_overlaps_the_never_list_whatever_the_inputs(
    network_subnets: list[list[ipaddress.IPv4Network | ipaddress.IPv6Network]],
    config: PolicyConfig,
    host: HostState,
    other_destinations: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    already_routed: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    networks = [network(f"n{i}", tuple(str(s) for s in subnets)) for i, subnets in enumerate(network_subnets)]
    others = [InstalledRoute(destination, "en0", 4, ours=False) for destination in other_destinations]
    result = evaluate(networks, config, others, set(already_routed), host)
    never = [n for n, _ in NEVER_RANGES] + list(host.tunnel) + [h.network for h in host.networks]
    addresses = [*host.dns_servers, *([host.vm_endpoint] if host.vm_endpoint else [])]
    for subnet in result.desired:
        assert not any(subnet.version == other.version and subnet.overlaps(other) for other in never)
        assert not any(subnet.version == address.version and address in subnet for address in addresses)
        minimum = MIN_IPV4_PREFIX if subnet.version == 4 else MIN_IPV6_PREFIX
        assert subnet.prefixlen >= minimum or (subnet.version == 6 and subnet.subnet_of(net("fc00::/7")))  # type: ignore[arg-type]
        assert is_private(subnet, config.allow)
    assert len(result.desired) <= MAX_ROUTES
    assert {w.subnet for w in result.wanted} == result.desired
