"""Properties of the flow filter under arbitrary traffic in both directions, interleaved."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.tunnel.flowfilter import DATAGRAM_IDLE_S, FlowFilter
from tests.unit.tunnel.packets import ACK, CONTAINER4, CONTAINER6, HOST4, HOST6, SYN, icmp, packed, tcp, udp

MAX_FLOWS, MAX_FRAGMENTS = 8, 4


def make_filter() -> FlowFilter:
    return FlowFilter([packed(HOST4), packed(HOST6)], max_flows=MAX_FLOWS, max_fragments=MAX_FRAGMENTS)


ports = st.integers(0, 65535)
hosts_and_containers = st.sampled_from([(HOST4, CONTAINER4), (HOST6, CONTAINER6)])


@st.composite
def plausible_packets(draw: st.DrawFn) -> bytes:
    """Well-formed headers, then arbitrary bytes written over a random span: parsers meet near-valid input."""
    host, container = draw(hosts_and_containers)
    sport, dport = draw(ports), draw(ports)
    packet = draw(
        st.sampled_from(
            [
                tcp(host, sport, container, dport),
                udp(host, sport, container, dport),
                icmp(host, container, 8 if ":" not in host else 128, ident=sport),
                tcp(container, dport, host, sport),
                udp(container, dport, host, sport),
            ]
        )
    )
    start = draw(st.integers(0, len(packet)))
    junk = draw(st.binary(max_size=16))
    return (packet[:start] + junk + packet[start + len(junk) :])[: draw(st.integers(0, 80))]


packets = st.one_of(st.binary(max_size=96), plausible_packets())
# (direction, packet, seconds since the previous packet)
steps = st.lists(st.tuples(st.booleans(), packets, st.floats(0, 2 * DATAGRAM_IDLE_S)), max_size=60)


@given(steps)
@settings(max_examples=400, deadline=None)
def test_arbitrary_traffic_never_raises_and_stays_within_bounds(traffic: list[tuple[bool, bytes, float]]) -> None:
    flows, now = make_filter(), 0.0
    for outbound, packet, gap in traffic:
        now += gap
        verdict = flows.outbound(packet, now) if outbound else flows.inbound(packet, now)
        assert isinstance(verdict, bool)
        assert flows.flow_count <= MAX_FLOWS
        assert flows.fragment_count <= MAX_FRAGMENTS


flows_of_the_host = st.tuples(hosts_and_containers, ports, ports, st.booleans())


@given(steps, flows_of_the_host, st.floats(0, DATAGRAM_IDLE_S - 1))
@settings(max_examples=300, deadline=None)
def test_replies_of_the_newest_host_flow_are_delivered(
    traffic: list[tuple[bool, bytes, float]], flow: tuple[tuple[str, str], int, int, bool], delay: float
) -> None:
    """Whatever came before, a flow the host just used is in the table and its replies pass."""
    (host, container), host_port, remote_port, is_tcp = flow
    flows, now = make_filter(), 0.0
    for outbound, packet, gap in traffic:
        now += gap
        flows.outbound(packet, now) if outbound else flows.inbound(packet, now)
    build = tcp if is_tcp else udp
    assert flows.outbound(build(host, host_port, container, remote_port), now)
    assert flows.inbound(build(container, remote_port, host, host_port), now + delay)
    assert flows.inbound(build(container, remote_port, host, host_port), now + 2 * delay)


few_ports = st.sampled_from([1, 1, 2])  # mostly one port: most packets meet a flow


@st.composite
def bulk_steps(draw: st.DrawFn, host: str, container: str) -> tuple[bool, bytes]:
    """(outbound, packet): the fast paths' kind of packet (TCP, or UDP long enough) in its own direction, with
    arbitrary bytes over a random span."""
    # Few ports and flags, so the VM's packets often meet a flow the host started: as its reply or as a new SYN.
    sport, dport = draw(few_ports), draw(few_ports)
    flags = draw(st.sampled_from([SYN, SYN, ACK, SYN | ACK, 0xFF, 0]))
    data = bytes(draw(st.integers(0, 40)))
    outbound = draw(st.booleans())
    source, destination, source_port, destination_port = (
        (host, container, sport, dport) if outbound else (container, host, dport, sport)
    )
    packet = draw(
        st.sampled_from(
            [
                tcp(source, source_port, destination, destination_port, flags),
                udp(source, source_port, destination, destination_port, data),
            ]
        )
    )
    start = draw(st.integers(0, len(packet)))
    junk = draw(st.binary(max_size=4))
    return outbound, packet[:start] + junk + packet[start + len(junk) :]


@pytest.mark.parametrize(("host", "container"), [(HOST4, CONTAINER4), (HOST6, CONTAINER6)])
@given(data=st.data())
@settings(max_examples=400, deadline=None)
def test_fast_paths_agree_with_the_full_judgement(host: str, container: str, data: st.DataObject) -> None:
    # Repeated packets at one `now` exercise the newest-flow shortcuts; gaps past the idle limit exercise expiry.
    gaps = st.sampled_from([0.0, 1.0, 200.0])
    any_step = st.tuples(st.booleans(), plausible_packets())
    traffic = data.draw(st.lists(st.tuples(st.one_of(bulk_steps(host, container), any_step), gaps), max_size=60))
    fast, full, now = make_filter(), make_filter(), 0.0
    for (outbound, packet), gap in traffic:
        now += gap
        if outbound:
            assert fast.outbound(packet, now) == full.judge_outbound(packet, now)
        else:
            assert fast.inbound(packet, now) == full.judge_inbound(packet, now)
        assert fast.drops == full.drops
        assert fast.flow_count == full.flow_count
