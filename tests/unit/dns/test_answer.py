"""The query path: answers per RFC 1035/2308, and hypothesis on arbitrary and mutated queries."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.dns.answer import NEGATIVE_TTL_S, RECORD_TTL_S, Responder, Zone
from dmnc.dns.domain import parse_domain
from dmnc.dns.names import COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL, ContainerEndpoints, Reachability, build_table

DOMAIN = parse_domain("dmnc.internal")
REACHABLE = Reachability(frozenset({ipaddress.ip_network("172.16.0.0/12")}), ipv6=False)
TABLE = build_table(
    [
        ContainerEndpoints("1", "webdns", networks={"bridge": (ipaddress.IPv4Address("172.17.0.2"),)}),
        ContainerEndpoints(
            "2",
            "shop-api-1",
            {COMPOSE_PROJECT_LABEL: "shop", COMPOSE_SERVICE_LABEL: "api"},
            {"shop_default": (ipaddress.IPv4Address("172.18.0.2"),)},
        ),
    ]
    + [
        ContainerEndpoints(
            str(index),
            f"many-{index}",
            {COMPOSE_PROJECT_LABEL: "big", COMPOSE_SERVICE_LABEL: "svc"},
            {"big": (ipaddress.IPv4Address(f"172.19.0.{index}"),)},
        )
        for index in range(2, 120)
    ],
    REACHABLE,
)


def ask(name: str, rdtype: str = "A", *, use_edns: int | bool = 0, tcp: bool = False) -> dns.message.Message:
    responder = Responder(Zone(DOMAIN, TABLE))
    wire = responder.respond(dns.message.make_query(name, rdtype, use_edns=use_edns).to_wire(), tcp=tcp)
    assert wire is not None
    return dns.message.from_wire(wire)


def addresses(answer: dns.message.Message) -> list[str]:
    return sorted(rdata.to_text() for rrset in answer.answer for rdata in rrset)


def soa_in_authority(answer: dns.message.Message) -> bool:
    return [rrset.rdtype for rrset in answer.authority] == [dns.rdatatype.SOA] and all(
        rrset.ttl == NEGATIVE_TTL_S and rrset.name == DOMAIN for rrset in answer.authority
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("webdns.dmnc.internal", ["172.17.0.2"]),
        ("WEBDNS.Bridge.DMNC.internal.", ["172.17.0.2"]),
        ("api.shop.dmnc.internal", ["172.18.0.2"]),
    ],
)
def test_a_known_name_gets_its_records_authoritatively_with_a_short_ttl(name: str, expected: list[str]) -> None:
    answer = ask(name)
    assert answer.rcode() == dns.rcode.NOERROR
    assert answer.flags & dns.flags.AA
    assert not answer.flags & dns.flags.RA
    assert addresses(answer) == expected
    assert all(rrset.ttl == RECORD_TTL_S for rrset in answer.answer)


def test_a_known_name_without_the_type_is_nodata_with_soa() -> None:
    answer = ask("webdns.dmnc.internal", "AAAA")
    assert answer.rcode() == dns.rcode.NOERROR
    assert answer.answer == []
    assert soa_in_authority(answer)


def test_a_parent_name_is_nodata_not_nxdomain() -> None:
    answer = ask("shop.dmnc.internal")
    assert (answer.rcode(), answer.answer) == (dns.rcode.NOERROR, [])
    assert soa_in_authority(answer)


def test_an_unknown_name_under_the_domain_is_nxdomain_with_soa() -> None:
    answer = ask("nosuch.dmnc.internal")
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert soa_in_authority(answer)


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [("example.com", "A"), ("2.0.17.172.in-addr.arpa", "PTR"), ("internal", "A"), ("dmnc.internal", "AXFR")],
)
def test_anything_outside_the_domain_is_refused(name: str, rdtype: str) -> None:
    answer = ask(name, rdtype)
    assert answer.rcode() == dns.rcode.REFUSED
    assert answer.answer == []
    assert answer.authority == []


def test_the_apex_answers_its_soa() -> None:
    answer = ask("dmnc.internal", "SOA")
    assert [rrset.rdtype for rrset in answer.answer] == [dns.rdatatype.SOA]


def test_edns_is_echoed_and_an_unknown_version_gets_badvers() -> None:
    assert ask("webdns.dmnc.internal").edns == 0
    assert ask("webdns.dmnc.internal", use_edns=False).edns == -1
    assert ask("webdns.dmnc.internal", use_edns=1).rcode() == dns.rcode.BADVERS


def test_an_answer_too_large_for_udp_is_truncated_and_complete_over_tcp() -> None:
    udp = ask("svc.big.dmnc.internal", use_edns=False)
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    tcp = ask("svc.big.dmnc.internal", use_edns=False, tcp=True)
    assert len(addresses(tcp)) == 118


def test_a_response_is_never_answered_and_garbage_is_counted() -> None:
    responder = Responder(Zone(DOMAIN, TABLE))
    query = dns.message.make_query("webdns.dmnc.internal", "A")
    response = dns.message.make_response(query)
    assert responder.respond(response.to_wire()) is None
    assert responder.respond(b"\x00\x01") is None
    formerr = responder.respond(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff")
    assert formerr is not None
    assert dns.message.from_wire(formerr).rcode() == dns.rcode.FORMERR
    assert formerr[:2] == b"\xab\xcd"
    assert responder.outcomes == {"dropped_response": 1, "dropped_malformed": 1, "formerr": 1}


def assert_safe(wire: bytes) -> None:
    """Never raises; whatever answers carry lies under the domain."""
    responder = Responder(Zone(DOMAIN, TABLE))
    answer = responder.respond(wire)
    if answer is None:
        return
    assert answer[2] & 0x80, "an answer has QR set"
    try:
        parsed = dns.message.from_wire(answer)
    except dns.exception.DNSException:
        # Only the header-only FORMERR echoes nothing of the query; it must be exactly 12 octets.
        assert len(answer) == 12
        return
    for section in (parsed.answer, parsed.authority, parsed.additional):
        for rrset in section:
            assert rrset.name.is_subdomain(DOMAIN) or rrset.rdtype == dns.rdatatype.OPT


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_nor_answer_outside_the_domain(wire: bytes) -> None:
    assert_safe(wire)


VALID_QUERIES = [
    dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
    for name in ("webdns.dmnc.internal", "api.shop.dmnc.internal", "example.com", "nosuch.dmnc.internal")
    for rdtype in ("A", "AAAA", "ANY", "PTR")
    for edns in (False, 0)
]


@given(
    st.sampled_from(VALID_QUERIES),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
    st.binary(max_size=20),
)
def test_mutated_valid_queries_never_raise_nor_answer_outside_the_domain(
    query: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    mutated = bytearray(query)
    for position, value in flips:
        if position < len(mutated):
            mutated[position] = value
    assert_safe(bytes(mutated[: max(cut, 12)]) + tail)
    assert_safe(bytes(mutated))
