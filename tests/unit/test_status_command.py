"""The readable output of `dmnc status`."""

from __future__ import annotations

import ipaddress

import pytest

from dmnc.commands.status import format_age, format_bytes, render_event, render_snapshot
from dmnc.config import format_host_port
from dmnc.control.messages import DnsStatus, PathStatus, RouteStatus, StatusEvent, StatusSnapshot, TunnelStatus
from dmnc.logsetup import printable


def test_fresh_service_shows_what_is_not_known_yet() -> None:
    text = render_snapshot(StatusSnapshot(version="0.1.0"))
    lines = text.splitlines()
    assert lines[0] == "dmnc 0.1.0"
    assert "  peer endpoint    unknown (no handshake yet)" in lines
    assert "  last handshake   never" in lines
    assert "  dropped packets  none" in lines
    assert "  connected        no" in lines
    assert "  setup            not set up" in lines
    assert lines[-2:] == ["Routes", "  none"]


def test_routes_are_a_table_aligned_on_the_longest_entry() -> None:
    snapshot = StatusSnapshot(
        version="0.1.0",
        routes=(
            RouteStatus(ipaddress.ip_network("172.17.0.0/16"), "bridge", installed=True),
            RouteStatus(ipaddress.ip_network("fd00:dead:beef::/64"), "a_long_network_name", installed=False),
            RouteStatus(ipaddress.ip_network("10.8.0.0/16"), "vpn", installed=False, reason="overlaps 10.0.0.0/8"),
        ),
    )
    assert render_snapshot(snapshot).splitlines()[-4:] == [
        "  SUBNET               NETWORK              INSTALLED",
        "  172.17.0.0/16        bridge               yes",
        "  fd00:dead:beef::/64  a_long_network_name  no",
        "  10.8.0.0/16          vpn                  no: overlaps 10.0.0.0/8",
    ]


LEFT_OUT = [
    ("8.8.8.0/24", "dns", "not-private", "not a private range: outside ...; allow it with --route-allow 8.8.8.0/24"),
    # A VM with IPv6 disabled: said per IPv6 subnet.
    ("fd77:31::/64", "web", "vm-no-ipv6", "the Docker VM has IPv6 disabled: the tunnel carries IPv4 only; enable it"),
]


@pytest.mark.parametrize(("subnet", "network", "decision", "reason"), LEFT_OUT, ids=[case[2] for case in LEFT_OUT])
def test_routes_left_out_show_their_decision_and_reason(subnet: str, network: str, decision: str, reason: str) -> None:
    snapshot = StatusSnapshot(
        version="0.2.0",
        routes=(RouteStatus(ipaddress.ip_network(subnet), network, False, reason, decision=decision),),
    )
    assert render_snapshot(snapshot).splitlines()[-1] == f"  {subnet}  {network}      no [{decision}]: {reason}"


def test_drops_are_listed_by_reason_skipping_zero_counts() -> None:
    snapshot = StatusSnapshot(
        version="x", tunnel=TunnelStatus(drops={"replayed_counter": 2, "invalid_mac1": 1, "tun_write_failed": 0})
    )
    assert "  dropped packets  invalid_mac1 1, replayed_counter 2" in render_snapshot(snapshot).splitlines()


def test_names_from_the_daemon_cannot_drive_the_terminal() -> None:
    hostile = "net\x1b[2J\x07"
    snapshot = StatusSnapshot(
        version="0.1.0", routes=(RouteStatus(ipaddress.ip_network("10.0.0.0/8"), hostile, installed=True),)
    )
    rendered = render_snapshot(snapshot)
    assert "\x1b" not in rendered
    assert "net\\x1b[2J\\x07" in rendered
    assert printable("tab\there") == "tab\\x09here"


def test_sizes_and_ages() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 1024**3) == "5.0 GiB"
    assert format_bytes(2**64) == "16.0 EiB"
    assert format_age(None) == "never"
    assert format_age(4.4) == "4 s ago"
    assert format_age(600) == "10 min ago"
    assert format_age(36000) == "10 h ago"


def test_event_line_has_time_kind_message_and_details() -> None:
    line = render_event(StatusEvent(0.0, "route.installed", "10.0.0.0/8 via utun4", {"network": "proj", "n": 1}))
    when, clock, rest = line.split(" ", 2)
    assert len(when) == 10
    assert len(clock) == 8
    assert rest == 'route.installed        10.0.0.0/8 via utun4 (network="proj" n=1)'


def test_event_time_beyond_the_calendar_is_shown_raw() -> None:
    assert render_event(StatusEvent(1e20, "a.b", "far")).startswith("@100000000000000000000 a.b")


def test_ipv6_endpoints_are_shown_in_brackets() -> None:
    tunnel = TunnelStatus(listen=format_host_port("::", 3333), endpoint=format_host_port("fd00::1", 51820))
    lines = render_snapshot(StatusSnapshot(version="0.1.0", tunnel=tunnel)).splitlines()
    assert "  listening on     [::]:3333" in lines
    assert "  peer endpoint    [fd00::1]:51820" in lines


def test_dns_shows_domain_port_names_and_last_update() -> None:
    snapshot = StatusSnapshot(
        version="0.1.0",
        dns=DnsStatus(
            "dmnc.internal",
            port=5353,
            addresses=("10.33.33.1",),
            records=3,
            last_update_age_s=4.0,
            host_resolver="/etc/resolver/dmnc.internal",
            drops={"rate_limited_source": 7},
        ),
    )
    lines = render_snapshot(snapshot).splitlines()
    assert "  domain           dmnc.internal" in lines
    assert "  listening on     10.33.33.1 port 5353" in lines
    assert "  names            3" in lines
    assert "  last update      4 s ago" in lines
    assert "  dropped          rate_limited_source 7" in lines
    not_serving = StatusSnapshot(version="0.1.0", dns=DnsStatus("dmnc.internal", problem="no address"))
    assert "  listening on     not serving: no address" in render_snapshot(not_serving).splitlines()


def test_a_service_in_standby_says_why_at_the_top() -> None:
    reason = "chip0 is not dmnc's\x1b[2J"
    lines = render_snapshot(StatusSnapshot(version="0.2.0", standby=reason)).splitlines()
    assert lines[2] == "Standby: " + printable(reason)
    assert "\x1b" not in lines[2]


def test_the_path_of_each_family_is_a_section_with_its_reason() -> None:
    paths = (
        PathStatus("ipv4", "direct", "the VM answers", next_hop="192.168.106.2", interface="bridge100"),
        PathStatus("ipv6", "tunnel", "--path direct, but no link", problem=True),
    )
    lines = render_snapshot(StatusSnapshot(version="0.1.0", paths=paths)).splitlines()
    start = lines.index("Path")
    assert lines[start + 1 : start + 3] == [
        "  IPv4             direct via 192.168.106.2 dev bridge100: the VM answers",
        "  IPv6             tunnel [problem]: --path direct, but no link",
    ]
    assert "Path" not in render_snapshot(StatusSnapshot(version="0.1.0")).splitlines()
