"""The path chooser (dmnc.supervisor.path): tunnel or direct per family, with the reason; pure, fed `now`."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes.manager import InstalledRoute, NextHop
from dmnc.routes.policy import HostNetwork
from dmnc.supervisor.path import (
    PROBE_FRESH_S,
    Candidate,
    PathKind,
    PathOption,
    ProbeResult,
    ProbeTarget,
    choose_path,
    choose_paths,
    direct_host_addresses,
    examine_links,
    probe_targets,
    uplink_interfaces,
)
from dmnc.vm.result import DirectLink

untimed = settings(deadline=None)
ip = ipaddress.ip_address
net = ipaddress.ip_network
TUNNEL = "utun7"
TUNNEL_NETWORKS = (net("10.33.33.1/32"), net("10.33.33.2/32"), net("fd33:33:33::1/128"), net("fd33:33:33::2/128"))
# Colima with --network-address: bridge100 on the Mac, col0 in the VM.
COLIMA = (
    HostNetwork("bridge100", net("192.168.106.1/32")),
    HostNetwork("bridge100", net("192.168.106.0/24")),
    HostNetwork("en0", net("192.168.1.10/32")),
    HostNetwork("en0", net("192.168.1.0/24")),
)
COL0 = DirectLink("col0", ip("192.168.106.2"), ip("192.168.106.1"))
TARGET = ProbeTarget(ip("192.168.106.2"), "bridge100")
NOW = 1000.0


def candidates(*links: DirectLink, networks: tuple[HostNetwork, ...] = COLIMA) -> tuple[Candidate, ...]:
    return examine_links(links, networks, tunnel_interface=TUNNEL, tunnel_networks=TUNNEL_NETWORKS)


def answered(target: ProbeTarget = TARGET, at: float = NOW) -> dict[ProbeTarget, ProbeResult]:
    return {target: ProbeResult(target, answered=True, at=at)}


def test_a_shared_link_that_answers_its_probe_takes_its_family_direct_and_leaves_the_other_on_the_tunnel() -> None:
    ipv4, ipv6 = choose_paths(PathOption.AUTO, candidates(COL0), answered(), NOW)
    assert ipv4.next_hop == NextHop(ip("192.168.106.2"), "bridge100")
    assert ipv4.kind is PathKind.DIRECT
    assert "192.168.106.2 via bridge100 (its col0)" in ipv4.reason
    assert ipv6.kind is PathKind.TUNNEL
    assert ipv6.reason == "the VM reported no IPv6 address on a link it shares with the host"
    assert not ipv6.problem


def test_until_a_probe_answers_the_family_stays_on_the_tunnel() -> None:
    pending = choose_path(4, PathOption.AUTO, candidates(COL0), {}, NOW)
    assert (pending.kind, pending.reason) == (PathKind.TUNNEL, "192.168.106.2 via bridge100 is being probed")
    failed = {TARGET: ProbeResult(TARGET, answered=False, at=NOW, detail="timed out")}
    silent = choose_path(4, PathOption.AUTO, candidates(COL0), failed, NOW)
    assert silent.reason == "192.168.106.2 via bridge100 did not answer the probe (timed out)"


def test_an_answer_older_than_the_freshness_limit_falls_back_to_the_tunnel() -> None:
    fresh = choose_path(4, PathOption.AUTO, candidates(COL0), answered(at=NOW), NOW + PROBE_FRESH_S)
    stale = choose_path(4, PathOption.AUTO, candidates(COL0), answered(at=NOW), NOW + PROBE_FRESH_S + 0.1)
    assert (fresh.kind, stale.kind) == (PathKind.DIRECT, PathKind.TUNNEL)


def test_a_link_whose_host_address_is_gone_is_no_candidate() -> None:
    gone = tuple(network for network in COLIMA if network.interface != "bridge100")
    [candidate] = candidates(COL0, networks=gone)
    assert candidate.target is None
    assert candidate.rejected == "the host no longer has the address 192.168.106.1 the VM shares a link with"
    choice = choose_path(4, PathOption.AUTO, [candidate], answered(), NOW)
    assert choice.kind is PathKind.TUNNEL


def test_a_host_address_without_a_connected_subnet_holding_the_vm_is_no_candidate() -> None:
    # The lab's tunnel link: the host's address is a /32 and the VM is reached by a device route, not on-link.
    link = DirectLink("veth0", ip("10.204.0.2"), ip("10.204.0.1"))
    [candidate] = candidates(link, networks=(HostNetwork("veth0", net("10.204.0.1/32")),))
    assert candidate.rejected == "the VM address 10.204.0.2 is in no subnet connected to veth0"


def test_the_tunnel_option_never_goes_direct_and_direct_says_when_it_cannot() -> None:
    assert choose_path(4, PathOption.TUNNEL, candidates(COL0), answered(), NOW).reason == "--path tunnel"
    direct = choose_path(6, PathOption.DIRECT, candidates(COL0), answered(), NOW)
    assert direct.problem
    assert direct.reason == (
        "--path direct, but the VM reported no IPv6 address on a link it shares with the host: IPv6 stays on the tunnel"
    )


def test_the_vm_address_is_never_a_next_hop_inside_a_routed_subnet() -> None:
    [candidate] = examine_links(
        [COL0], COLIMA, tunnel_interface=TUNNEL, tunnel_networks=TUNNEL_NETWORKS, routed=[net("192.168.106.0/28")]
    )
    assert candidate.target is None
    assert "lies in a subnet dmnc routes" in (candidate.rejected or "")


def test_probe_targets_are_the_candidates_once_each_ipv4_first() -> None:
    twice = DirectLink("eth1", ip("192.168.106.2"), ip("192.168.106.1"))
    assert probe_targets(candidates(COL0, twice)) == (TARGET,)
    dual = (*COLIMA, HostNetwork("bridge100", net("fd10::1/128")), HostNetwork("bridge100", net("fd10::/64")))
    col0_6 = DirectLink("col0", ip("fd10::2"), ip("fd10::1"))
    assert probe_targets(candidates(col0_6, COL0, networks=dual)) == (TARGET, ProbeTarget(ip("fd10::2"), "bridge100"))


def test_the_vm_is_offered_the_hosts_own_addresses_but_not_loopback_link_local_or_the_tunnels() -> None:
    networks = (
        *COLIMA,
        HostNetwork("lo", net("127.0.0.1/32")),
        HostNetwork("en0", net("fe80::1/128")),
        HostNetwork("en0", net("2001:db8::10/128")),
        HostNetwork(TUNNEL, net("10.33.33.1/32")),
    )
    hosts = direct_host_addresses(networks, tunnel_interface=TUNNEL, tunnel_networks=TUNNEL_NETWORKS, limit=16)
    assert hosts == (ip("192.168.1.10"), ip("192.168.106.1"), ip("2001:db8::10"))
    assert direct_host_addresses(networks, tunnel_interface=TUNNEL, tunnel_networks=(), limit=1) == (
        ip("192.168.1.10"),
    )


def test_a_link_on_the_hosts_uplink_is_no_candidate_and_its_address_is_not_offered_to_the_vm() -> None:
    # A VM bridged onto the host's LAN (en0 holds the default route): the link is shared, but others share it too.
    lan = DirectLink("eth1", ip("192.168.1.20"), ip("192.168.1.10"))
    uplinks = uplink_interfaces([InstalledRoute(net("0.0.0.0/0"), "en0", 4, ours=False, gateway=ip("192.168.1.1"))])
    assert uplinks == {"en0"}
    [candidate] = examine_links([lan], COLIMA, tunnel_interface=TUNNEL, uplinks=uplinks)
    assert candidate.target is None
    assert candidate.rejected is not None
    assert "en0 holds the host's default route (its LAN)" in candidate.rejected
    assert examine_links([COL0], COLIMA, tunnel_interface=TUNNEL, uplinks=uplinks)[0].target == TARGET
    hosts = direct_host_addresses(COLIMA, tunnel_interface=TUNNEL, tunnel_networks=(), limit=16, uplinks=uplinks)
    assert hosts == (ip("192.168.106.1"),)


def test_only_other_programs_default_routes_make_an_uplink() -> None:
    routes = [
        InstalledRoute(net("::/0"), "wlan0", 3, ours=False, gateway=ip("fe80::1")),
        InstalledRoute(net("0.0.0.0/1"), "utun3", 9, ours=False),  # a VPN's half: not a default route's interface
        InstalledRoute(net("0.0.0.0/0"), TUNNEL, 7, ours=True),  # dmnc's own, should it ever route one
        InstalledRoute(net("192.168.106.0/24"), "bridge100", 5, ours=False),
    ]
    assert uplink_interfaces(routes) == {"wlan0"}


addresses4 = st.ip_addresses(v=4, network="10.0.0.0/16")
addresses6 = st.ip_addresses(v=6, network="fd00::/120")
links = st.one_of(
    st.builds(DirectLink, st.sampled_from(["col0", "eth1"]), addresses4, addresses4),
    st.builds(DirectLink, st.sampled_from(["col0", "eth1"]), addresses6, addresses6),
).filter(lambda link: link.vm_address != link.host_address)
host_networks = st.builds(
    HostNetwork,
    st.sampled_from(["bridge100", "en0", TUNNEL]),
    st.one_of(
        st.builds(lambda a, p: ipaddress.ip_interface((a, p)).network, addresses4, st.integers(16, 32)),
        st.builds(lambda a, p: ipaddress.ip_interface((a, p)).network, addresses6, st.integers(112, 128)),
    ),
)
routed_subnets = st.lists(
    st.builds(lambda a, p: ipaddress.ip_interface((a, p)).network, addresses4, st.integers(16, 30)), max_size=3
)


@st.composite
def shared_links(draw: st.DrawFn) -> tuple[list[DirectLink], list[HostNetwork]]:
    """Reported links, and host networks of which many really share a link with them (both families mixed)."""
    reported = draw(st.lists(links, max_size=4))
    networks = draw(st.lists(host_networks, max_size=4))
    mostly = st.sampled_from([True, True, True, False])
    for link in reported:
        interface = draw(st.sampled_from(["bridge100", "en0", "bridge100", TUNNEL]))
        if draw(mostly):
            networks.append(HostNetwork(interface, ipaddress.ip_network(link.host_address)))
        if draw(mostly):
            prefix = draw(st.integers(8, 31) if link.vm_address.version == 4 else st.integers(64, 127))
            supernet = ipaddress.ip_interface((link.vm_address, prefix)).network
            networks.append(HostNetwork(interface, supernet))
    return reported, networks


@settings(deadline=None, max_examples=300)
@given(
    shared_links(),
    routed_subnets,
    st.sampled_from(PathOption),
    st.lists(st.tuples(st.booleans(), st.floats(0, 10)), max_size=4),
    st.frozensets(st.sampled_from(["bridge100", "en0"])),
)
def test_a_direct_choice_is_always_a_fresh_answered_on_link_address_outside_everything_dmnc_routes(
    reported_and_networks: tuple[list[DirectLink], list[HostNetwork]],
    routed: list[ipaddress.IPv4Network],
    option: PathOption,
    answers: list[tuple[bool, float]],
    uplinks: frozenset[str],
) -> None:
    reported, networks = reported_and_networks
    examined = examine_links(
        reported, networks, tunnel_interface=TUNNEL, tunnel_networks=TUNNEL_NETWORKS, routed=routed, uplinks=uplinks
    )
    targets = probe_targets(examined)
    probes = {target: ProbeResult(target, ok, NOW - age) for target, (ok, age) in zip(targets, answers, strict=False)}
    for choice in choose_paths(option, examined, probes, NOW):
        assert choice.reason
        if choice.next_hop is None:
            assert choice.problem == (option is PathOption.DIRECT)
            continue
        hop = choice.next_hop
        assert option is not PathOption.TUNNEL
        assert hop.gateway.version == choice.version
        assert hop.interface != TUNNEL
        assert hop.interface not in uplinks
        assert not any(hop.gateway in subnet for subnet in [*routed, *TUNNEL_NETWORKS])
        assert any(
            n.interface == hop.interface and hop.gateway in n.network and n.network.num_addresses > 1 for n in networks
        )
        assert hop.gateway not in {n.network.network_address for n in networks if n.network.num_addresses == 1}
        probe = probes[ProbeTarget(hop.gateway, hop.interface)]
        assert probe.answered
        assert NOW - probe.at <= PROBE_FRESH_S
