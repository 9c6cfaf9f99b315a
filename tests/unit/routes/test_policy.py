"""Which Docker networks get routes: the policy table."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes.manager import InstalledRoute
from dmnc.routes.policy import (
    CidrPattern,
    NamePattern,
    NetworkInfo,
    PolicyConfig,
    PolicyConfigError,
    SkipReason,
    evaluate,
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
    assert "--force-routes" in text


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


subnets = st.one_of(
    st.builds(lambda a, p: ipaddress.IPv4Network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(1, 32)),
    st.builds(
        lambda a, p: ipaddress.IPv6Network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(1, 128)
    ),
)


@untimed
@given(st.lists(subnets, max_size=6), st.lists(subnets, max_size=6), st.booleans())
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
