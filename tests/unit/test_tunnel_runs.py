"""How a batch of datagrams is cut for sending: runs to one endpoint (the tunnel), then GSO runs (the UDP endpoint)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dmnc.tunnel.datapath import endpoint_run_end
from dmnc.tunnel.udp import MAX_UDP_PAYLOAD, UDP_MAX_SEGMENTS, segment_run_end
from dmnc.wireguard import SendDatagram

ENDPOINTS = [("10.0.0.1", 51820), ("10.0.0.2", 51820), ("fd00::1", 51820)]


def datagram(endpoint: int, size: int) -> SendDatagram:
    return SendDatagram(ENDPOINTS[endpoint], bytes(size))


def runs(datagrams: list[SendDatagram]) -> list[list[SendDatagram]]:
    """What leaves as one send each: the runs to one endpoint, each cut into GSO runs."""
    result, start = [], 0
    while start < len(datagrams):
        end = endpoint_run_end(datagrams, start)
        to_one_endpoint = datagrams[start:end]
        payloads = [item.data for item in to_one_endpoint]
        segment_start = 0
        while segment_start < len(payloads):
            segment_end = segment_run_end(payloads, segment_start)
            result.append(to_one_endpoint[segment_start:segment_end])
            segment_start = segment_end
        start = end
    return result


def test_equal_sizes_then_a_short_one_form_one_run() -> None:
    datagrams = [datagram(0, 100)] * 3 + [datagram(0, 40), datagram(0, 100)]
    assert [len(run) for run in runs(datagrams)] == [4, 1]


def test_another_endpoint_or_a_larger_datagram_ends_the_run() -> None:
    datagrams = [datagram(0, 100), datagram(1, 100), datagram(1, 100), datagram(1, 200)]
    assert [len(run) for run in runs(datagrams)] == [1, 2, 1]


def test_runs_stop_at_the_segment_and_payload_limits() -> None:
    assert [len(run) for run in runs([datagram(0, 32)] * 100)] == [UDP_MAX_SEGMENTS, 100 - UDP_MAX_SEGMENTS]
    per_run = MAX_UDP_PAYLOAD // 1452
    assert [len(run) for run in runs([datagram(0, 1452)] * 100)] == [per_run, per_run, 100 - 2 * per_run]


@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([32, 48, 64, 1452, 1468, 9000])), min_size=1))
def test_runs_cover_everything_in_order_and_each_is_sendable(entries: list[tuple[int, int]]) -> None:
    datagrams = [datagram(endpoint, size) for endpoint, size in entries]
    split = runs(datagrams)
    assert [item for run in split for item in run] == datagrams
    for run in split:
        size = len(run[0].data)
        assert {item.endpoint for item in run} == {run[0].endpoint}
        assert all(len(item.data) == size for item in run[:-1])
        assert len(run[-1].data) <= size
        assert len(run) <= UDP_MAX_SEGMENTS
        assert len(run) == 1 or sum(len(item.data) for item in run) <= MAX_UDP_PAYLOAD


@given(st.lists(st.integers(0, 2), min_size=1))
def test_endpoint_runs_are_maximal(endpoints: list[int]) -> None:
    datagrams = [datagram(endpoint, 10) for endpoint in endpoints]
    start = 0
    while start < len(datagrams):
        end = endpoint_run_end(datagrams, start)
        assert {item.endpoint for item in datagrams[start:end]} == {datagrams[start].endpoint}
        assert end == len(datagrams) or datagrams[end].endpoint != datagrams[start].endpoint
        start = end
