"""The encoded-answer cache: a cached answer is byte for byte the answer the full path gives, for any query (any ID,
any letter case, EDNS or not, UDP or TCP) and any table; a new zone empties it; its size is bounded."""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdatatype
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from dmnc.dns.answer import Responder, Zone
from dmnc.dns.answer_cache import (
    HEADER_OCTETS,
    MAX_CACHED_QUERY_OCTETS,
    AnswerCache,
    CachedAnswer,
    address_runs,
    cache_key,
    question_name_end,
    rotated,
)
from dmnc.dns.domain import parse_domain
from dmnc.dns.names import (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    ContainerEndpoints,
    NameTable,
    Reachability,
    build_table,
)

DOMAIN = parse_domain("dmnc.internal")
REACHABLE = Reachability(
    frozenset({ipaddress.ip_network("172.16.0.0/12"), ipaddress.ip_network("fd00:dead::/64")}), ipv6=True
)
WORDS = ["web", "Web_1", "api", "shop", "db.v2", "big", "svc", "bridge"]
# Few container names, so that generated questions often name one.
CONTAINER_NAMES = ["web", "Web_1", "api"]
ADDRESSES = [ipaddress.ip_address(f"172.20.0.{index}") for index in range(2, 40)] + [
    ipaddress.ip_address(f"fd00:dead::{index:x}") for index in range(2, 10)
]
RDTYPES = ["A", "AAAA", "ANY", "SOA", "PTR", "TXT", "AXFR", "MX"]


def other_case(wire: bytes, flips: list[bool]) -> bytes:
    """`wire` with the letter case of its question name's letters swapped where `flips` says so."""
    end = question_name_end(wire)
    if end is None:
        return wire
    name = bytearray(wire[HEADER_OCTETS:end])
    for index, flip in zip(range(len(name)), flips, strict=False):
        if flip and chr(name[index]).isalpha() and name[index] < 0x80:
            name[index] ^= 0x20
    return wire[:HEADER_OCTETS] + bytes(name) + wire[end:]


def question_labels(wire: bytes) -> tuple[bytes, ...]:
    """The question name's labels under the domain, or () when there is none."""
    try:
        name = dns.message.from_wire(wire).question[0].name
    except (dns.exception.DNSException, IndexError, ValueError, UnicodeError):
        return ()
    return name.relativize(DOMAIN).labels if name.is_subdomain(DOMAIN) and name != DOMAIN else ()


def web_responder(*, cache_size: int = 1024) -> Responder:
    """A responder for one container, `web`, with one address."""
    table = build_table([ContainerEndpoints("1", "web", networks={"n": (ADDRESSES[0],)})], REACHABLE)
    return Responder(Zone(DOMAIN, table), cache_size=cache_size)


def with_id(wire: bytes, query_id: int) -> bytes:
    return query_id.to_bytes(2, "big") + wire[2:]


containers = st.lists(
    st.builds(
        lambda index, name, networks, compose: ContainerEndpoints(
            str(index),
            name,
            {COMPOSE_PROJECT_LABEL: compose[0], COMPOSE_SERVICE_LABEL: compose[1]} if compose else {},
            networks,
        ),
        st.integers(0, 10**6),
        st.sampled_from(CONTAINER_NAMES),
        st.dictionaries(
            st.sampled_from(WORDS),
            st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=24).map(tuple),
            min_size=1,
            max_size=3,
        ),
        st.none() | st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)),
    ),
    max_size=6,
)
query_names = st.one_of(
    # A container's name, or its name on a network: the questions with records, most worth caching right.
    st.tuples(st.sampled_from(CONTAINER_NAMES), st.sampled_from(["", ".bridge", ".web", ".api"])).map(
        lambda parts: f"{parts[0]}{parts[1]}.dmnc.internal"
    ),
    st.lists(st.sampled_from([*WORDS, "nosuch", "MY-app"]), max_size=3).flatmap(
        lambda labels: st.sampled_from(
            [
                ".".join([*labels, "dmnc.internal"]),
                ".".join([*labels, "DMNC.Internal"]),
                ".".join([*labels, "example.com"]),
            ]
        )
    ),
)


@st.composite
def query_twins(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A query and its twin from another asker: the same but for the value of its cookie, if it has one."""
    name, rdtype = draw(query_names), draw(st.sampled_from(RDTYPES))
    use_edns = draw(st.sampled_from([False, 0, 1]))
    payload = draw(st.sampled_from([0, 512, 1232, 4096]))
    want_dnssec, clear_rd = draw(st.booleans()), draw(st.booleans())
    flags = draw(st.sampled_from([0, dns.flags.CD, dns.flags.AD]))
    opcode = draw(st.sampled_from([dns.opcode.QUERY, dns.opcode.QUERY, dns.opcode.STATUS]))
    # RFC 7873 section 4: a client cookie of 8 octets and a server cookie of none or 8 to 32; other lengths too.
    cookie_length = draw(st.none() | st.sampled_from([8, 16, 40, 7, 12, 41]))
    padded = draw(st.booleans())
    # An option whose value dnspython checks (client subnet, RFC 7871 section 6): its value must stay in the key. A
    # valid one (192.0.2.0/24), and of the same length a /8 with too many address octets and an unknown family.
    subnet = draw(
        st.none()
        | st.sampled_from(
            [b"\x00\x01\x18\x00\xc0\x00\x02", b"\x00\x01\x08\x00\xc0\x00\x02", b"\x00\x05\x18\x00\xc0\x00\x02"]
        )
    )
    # Some octets changed anywhere, as a careless or hostile client would.
    flips = draw(st.lists(st.tuples(st.integers(2, 90), st.integers(0, 255)), max_size=2))

    def build(cookie: bytes) -> bytes:
        options: list[dns.edns.Option] = []
        if cookie_length is not None:
            options.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie))
        if padded:
            options.append(dns.edns.GenericOption(dns.edns.OptionType.PADDING, b""))
        if subnet is not None:
            options.append(dns.edns.GenericOption(dns.edns.OptionType.ECS, subnet))
        query = dns.message.make_query(
            name, rdtype, use_edns=use_edns, payload=payload, want_dnssec=want_dnssec, options=options or None
        )
        if clear_rd:
            query.flags &= ~dns.flags.RD
        query.flags |= flags
        query.set_opcode(opcode)
        wire = query.to_wire()
        for position, value in flips:
            if position < len(wire):
                wire = wire[:position] + bytes([value]) + wire[position + 1 :]
        return wire

    length = cookie_length or 0
    return build(draw(st.binary(min_size=length, max_size=length))), build(
        draw(st.binary(min_size=length, max_size=length))
    )


queries = query_twins().map(lambda twins: twins[0])


@given(
    containers,
    st.lists(query_twins(), min_size=1, max_size=4),
    st.tuples(st.lists(st.booleans(), max_size=40), st.lists(st.booleans(), max_size=40)),
    st.integers(0, 0xFFFF),
    st.booleans(),
)
def test_a_cached_answer_is_byte_identical_to_the_uncached_one(
    endpoints: list[ContainerEndpoints],
    questions: list[tuple[bytes, bytes]],
    cases: tuple[list[bool], list[bool]],
    first_id: int,
    tcp: bool,
) -> None:
    """Several questions through one cache: a hit is the answer, and no two different questions share an entry."""
    first_case, second_case = cases
    zone = Zone(DOMAIN, build_table(endpoints, REACHABLE))
    cached, uncached = Responder(zone), Responder(zone, cache_size=0)
    for query, twin in questions:
        event(f"{len(zone.table.lookup(question_labels(query)) or ())} addresses")
        # Another asker's version of the same question (other ID, case and cookie) fills the cache first.
        earlier = with_id(other_case(twin, first_case), first_id)
        assert cached.respond(earlier, tcp=tcp) == uncached.respond(earlier, tcp=tcp)
        later = other_case(query, second_case)
        assert cached.respond(later, tcp=tcp) == uncached.respond(later, tcp=tcp)
    assert cached.outcomes == uncached.outcomes
    assert len(uncached.cache) == 0


@given(containers, containers, queries, st.booleans())
def test_a_new_zone_is_never_answered_from_the_old_one(
    before: list[ContainerEndpoints], after: list[ContainerEndpoints], query: bytes, tcp: bool
) -> None:
    responder = Responder(Zone(DOMAIN, build_table(before, REACHABLE)))
    responder.respond(query, tcp=tcp)
    new_zone = Zone(DOMAIN, build_table(after, REACHABLE), serial=2)
    responder.zone = new_zone
    assert len(responder.cache) == 0
    assert responder.respond(query, tcp=tcp) == Responder(new_zone, cache_size=0).respond(query, tcp=tcp)


@given(st.binary(max_size=300), st.booleans())
def test_any_octets_are_keyed_or_refused_without_raising(wire: bytes, tcp: bool) -> None:
    keyed = cache_key(wire, tcp=tcp)
    if keyed is not None:
        key, end = keyed
        assert HEADER_OCTETS < end <= len(wire)
        assert len(key) == len(wire) - 1  # the ID out, the transport in


def test_a_repeated_question_is_a_hit_whatever_its_id_and_case() -> None:
    responder = web_responder()
    first = dns.message.make_query("web.dmnc.internal", "A")
    first.id = 1
    second = dns.message.make_query("wEB.DMNC.internal", "A")
    second.id = 2
    responder.respond(first.to_wire())
    answer = responder.respond(second.to_wire())
    assert (responder.cache.hits, responder.cache.misses) == (1, 1)
    assert answer is not None
    parsed = dns.message.from_wire(answer)
    assert parsed.id == 2
    assert parsed.question[0].name.to_text() == "wEB.DMNC.internal."
    assert [rdata.to_text() for rdata in parsed.answer[0]] == [str(ADDRESSES[0])]
    assert responder.outcomes == {"noerror": 2}


def test_udp_and_tcp_answers_are_kept_apart() -> None:
    many = tuple(ADDRESSES[:38])
    table = build_table([ContainerEndpoints("1", "big", networks={"n": many})], REACHABLE)
    responder = Responder(Zone(DOMAIN, table))
    query = dns.message.make_query("big.dmnc.internal", "A", use_edns=False).to_wire()
    udp = responder.respond(query)
    tcp = responder.respond(query, tcp=True)
    assert udp is not None
    assert tcp is not None
    assert dns.message.from_wire(udp).flags & dns.flags.TC
    assert len(dns.message.from_wire(tcp).answer[0]) == len(many)
    assert responder.respond(query) == udp
    assert responder.outcomes == {"noerror": 3, "truncated": 2}


def test_compressed_long_and_multi_question_queries_take_the_full_path() -> None:
    pointer = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"
    assert question_name_end(pointer) is None
    two_questions = b"\x00\x01\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01"
    assert question_name_end(two_questions) is None
    unterminated = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web"
    assert question_name_end(unterminated) is None
    query = dns.message.make_query("web.dmnc.internal", "A").to_wire()
    assert cache_key(query + bytes(MAX_CACHED_QUERY_OCTETS), tcp=False) is None
    responder = Responder(Zone(DOMAIN, NameTable()))
    responder.respond(pointer)
    responder.respond(pointer)
    assert len(responder.cache) == 0


def test_the_cache_keeps_at_most_its_capacity_and_drops_the_least_recently_used() -> None:
    cache = AnswerCache(capacity=2)
    entry = CachedAnswer(b"answer", ("noerror",))
    cache.put(b"a", entry)
    cache.put(b"b", entry)
    assert cache.get(b"a") is entry  # "b" is now the least recently used
    cache.put(b"c", entry)
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") is entry
    assert cache.get(b"c") is entry


def test_a_zero_capacity_cache_keeps_nothing() -> None:
    cache = AnswerCache(capacity=0)
    cache.put(b"a", CachedAnswer(b"answer", ()))
    assert len(cache) == 0


def test_the_soa_and_answers_stay_lower_case_whatever_the_question_case() -> None:
    """What makes patching only the question safe: every other name is a pointer into it or our own lower case."""
    responder = web_responder(cache_size=0)
    upper = dns.message.make_query("WEB.DMNC.INTERNAL", "AAAA").to_wire()
    lower = upper[:HEADER_OCTETS] + upper[HEADER_OCTETS:].lower()
    upper_answer, lower_answer = responder.respond(upper), responder.respond(lower)
    assert upper_answer is not None
    assert lower_answer is not None
    end = question_name_end(upper)
    assert end is not None
    assert upper_answer[end:] == lower_answer[end:]
    assert dns.message.from_wire(upper_answer).authority[0].rdtype == dns.rdatatype.SOA


def test_several_addresses_start_at_the_one_the_query_id_picks_cached_or_not() -> None:
    three = tuple(ADDRESSES[:3])
    table = build_table([ContainerEndpoints("1", "web", networks={"n": three})], REACHABLE)
    cached, uncached = Responder(Zone(DOMAIN, table)), Responder(Zone(DOMAIN, table), cache_size=0)
    query = dns.message.make_query("web.dmnc.internal", "A").to_wire()
    firsts = []
    for query_id in (5, 0, 1, 2, 3):
        for responder in (cached, uncached):
            answer = responder.respond(with_id(query, query_id))
            assert answer is not None
            firsts.append((responder is cached, dns.message.from_wire(answer).answer[0][0].to_text()))
    assert [first for is_cached, first in firsts if is_cached] == [str(three[index]) for index in (2, 0, 1, 2, 0)]
    assert [first for is_cached, first in firsts if not is_cached] == [str(three[index]) for index in (2, 0, 1, 2, 0)]
    assert cached.cache.hits == 4


@given(containers, queries, st.integers(0, 0xFFFF))
def test_rotating_address_records_and_back_gives_the_answer_again(
    endpoints: list[ContainerEndpoints], query: bytes, query_id: int
) -> None:
    answer = Responder(Zone(DOMAIN, build_table(endpoints, REACHABLE)), cache_size=0).respond(query, tcp=True)
    end = question_name_end(query)
    if answer is None or end is None:
        return
    runs = address_runs(answer, end)
    if runs is None:
        return
    assert rotated(rotated(answer, runs, query_id), runs, query_id, undo=True) == answer
    assert all(run.count > 1 for run in runs)


def query_with_option(code: dns.edns.OptionType, value: bytes) -> bytes:
    option = dns.edns.GenericOption(code, value)
    return dns.message.make_query("web.dmnc.internal", "A", options=[option]).to_wire()


@pytest.mark.parametrize(
    ("code", "first", "second", "hits", "outcomes"),
    [
        # A new client cookie: the same answer, so a hit.
        (dns.edns.OptionType.COOKIE, b"12345678", b"abcdefgh", 1, {"noerror": 2}),
        # A valid client subnet (192.0.2.0/24), then an invalid one of the same length (a /8 with three address
        # octets): other options' values stay in the key.
        (
            dns.edns.OptionType.ECS,
            b"\x00\x01\x18\x00\xc0\x00\x02",
            b"\x00\x01\x08\x00\xc0\x00\x02",
            0,
            {"noerror": 1, "formerr": 1},
        ),
    ],
)
def test_only_the_cookie_value_is_left_out_of_the_key(
    code: dns.edns.OptionType, first: bytes, second: bytes, hits: int, outcomes: dict[str, int]
) -> None:
    responder = web_responder()
    assert responder.respond(query_with_option(code, first)) is not None
    assert responder.respond(query_with_option(code, second)) is not None
    assert (responder.cache.hits, responder.outcomes) == (hits, outcomes)
