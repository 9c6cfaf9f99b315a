"""One DNS query in, one answer out: pure, no I/O, no clock.

dmnc is authoritative for one domain and nothing else (RFC 1035 section 4.3.1: it never recurses, so RA is clear):

- a known name: its A/AAAA records, AA set, TTL `RECORD_TTL_S` (short: containers come and go). Several addresses
  come in the table's (sorted) order rotated by the query's ID: the first address differs from query to query, as
  with Docker's embedded DNS, which shuffles them (moby's libnetwork/resolver.go, shuffleAddr), so clients that take
  the first spread over a service's containers; and the answer is still a function of the query's octets alone, so
  it can come from the cache;
- a name that exists without the asked type (IPv4-only container asked for AAAA, a network's name): NOERROR with an
  empty answer and the SOA in the authority section, "NODATA" (RFC 2308 section 2.2). NXDOMAIN there would tell
  resolvers the whole name is gone (RFC 8020) and they would stop asking for its A record too;
- an unknown name under the domain: NXDOMAIN with the SOA (RFC 2308 section 3), whose MINIMUM and TTL bound how long
  the negative answer is cached (`NEGATIVE_TTL_S`);
- anything outside the domain, reverse lookups (in-addr.arpa, ip6.arpa) and zone transfers included: REFUSED
  (RFC 1035 section 4.1.1). dmnc is never an open or recursive resolver;
- a message that does not parse, or has other than one question: FORMERR when its header can be answered, otherwise
  dropped; a message that is itself a response (QR set) is always dropped, so two servers can never loop. Every such
  outcome is counted; none raises.

EDNS (RFC 6891): a query with an OPT record gets one back (version 0, our UDP payload size); an unknown EDNS version
gets BADVERS (section 6.1.3). A UDP answer larger than the client's payload size (512 without EDNS, RFC 1035 section
4.2.1) is sent without records and with TC set, and the client retries over TCP (RFC 7766 section 5).
"""

from __future__ import annotations

import functools
import struct
from collections import Counter
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

from dmnc.dns.answer_cache import (
    MAX_CACHED_ANSWERS,
    AnswerCache,
    CachedAnswer,
    address_runs,
    answer_fits,
    cache_key,
    patched,
    rotated,
)
from dmnc.dns.names import IPAddress, NameTable

# A few seconds: a resolver re-asks soon after a container restarts with a new address, and a query flood from one
# lookup loop is still absorbed by the host's cache.
RECORD_TTL_S = 5
# RFC 2308 section 5: the negative TTL is min(SOA TTL, SOA MINIMUM); both are this, so a name that appears (a
# container started) is found within a few seconds even by a resolver that cached its absence.
NEGATIVE_TTL_S = 5
# RFC 1035 section 4.2.1: without EDNS a UDP message carries at most 512 octets.
CLASSIC_UDP_PAYLOAD = 512
# What we accept and advertise: 1232 avoids IP fragmentation on any path with a 1280 MTU (DNS flag day 2020).
OUR_UDP_PAYLOAD = 1232
# TCP messages carry a two-octet length (RFC 1035 section 4.2.2).
MAX_TCP_MESSAGE = 65535
HEADER = struct.Struct("!HHHHHH")
QR_BIT = 0x8000
OPCODE_SHIFT = 11
OPCODE_MASK = 0x7800
RD_BIT = 0x0100
# SOA timers other than MINIMUM matter only to secondaries, which dmnc never has; RFC 1912 section 2.2's usual values.
SOA_REFRESH_S = 3600
SOA_RETRY_S = 600
SOA_EXPIRE_S = 86400


@dataclass(frozen=True)
class Zone:
    """What the answers are built from: the domain, the table, and a serial that changes with the table."""

    domain: dns.name.Name
    table: NameTable
    serial: int = 1

    @functools.cached_property
    def soa(self) -> dns.rrset.RRset:
        """The zone's SOA, for the apex and the authority section of negative answers."""
        text = (
            f"ns.{self.domain} hostmaster.{self.domain} {self.serial % 2**32}"
            f" {SOA_REFRESH_S} {SOA_RETRY_S} {SOA_EXPIRE_S} {NEGATIVE_TTL_S}"
        )
        return dns.rrset.from_text(self.domain, NEGATIVE_TTL_S, dns.rdataclass.IN, dns.rdatatype.SOA, text)


class Responder:
    """Answers queries for one zone at a time (`zone` is replaced as the containers change); counts outcomes.

    Answers are cached encoded (`answer_cache`): a repeated question costs a lookup instead of parsing and encoding,
    and a new zone empties the cache. Answering stays on the calling thread: it is pure Python, so under CPython's
    global interpreter lock a worker thread would take the same time from the data path, plus the hand-over.
    """

    def __init__(self, zone: Zone, *, cache_size: int = MAX_CACHED_ANSWERS) -> None:
        self._zone = zone
        self.cache = AnswerCache(cache_size)
        self.outcomes: Counter[str] = Counter()
        """Answers by outcome (noerror, nodata, nxdomain, refused, formerr, notimp, badvers, truncated) and drops
        (dropped_malformed, dropped_response)."""

    @property
    def zone(self) -> Zone:
        return self._zone

    @zone.setter
    def zone(self, zone: Zone) -> None:
        self._zone = zone
        self.cache.clear()

    def respond(self, wire: bytes, *, tcp: bool = False) -> bytes | None:
        """The answer to the query `wire`, or None when it is dropped."""
        if len(wire) < HEADER.size:
            self.outcomes["dropped_malformed"] += 1
            return None
        query_id, flags = HEADER.unpack_from(wire)[:2]
        if flags & QR_BIT:
            self.outcomes["dropped_response"] += 1
            return None
        keyed = cache_key(wire, tcp=tcp)
        if keyed is None:
            answer, outcomes = self._encode(wire, tcp=tcp)
            self.outcomes.update(outcomes)
            return answer
        key, question_end = keyed
        cached = self.cache.get(key)
        if cached is not None:
            self.outcomes.update(cached.outcomes)
            return rotated(patched(cached.wire, wire, question_end), cached.runs, query_id)
        answer, outcomes = self._encode(wire, tcp=tcp)
        self.outcomes.update(outcomes)
        runs = address_runs(answer, question_end) if answer_fits(answer, wire, question_end) else None
        if runs is not None:
            self.cache.put(key, CachedAnswer(rotated(answer, runs, query_id, undo=True), outcomes, runs))
        return answer

    def _encode(self, wire: bytes, *, tcp: bool) -> tuple[bytes, tuple[str, ...]]:
        """The answer to a query (not a response, at least a header long) and the outcomes to count for it."""
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, UnicodeError, IndexError, struct.error):
            # dnspython reports a malformed message as a FormError mostly, but as other DNSException subclasses
            # (BadEDNS, name errors, TrailingJunk) or ValueError for some record data too.
            query_id, flags = HEADER.unpack_from(wire)[:2]
            return _header_only_formerr(query_id, flags), ("formerr",)
        return self._answer(query, tcp=tcp)

    def _answer(self, query: dns.message.Message, *, tcp: bool) -> tuple[bytes, tuple[str, ...]]:
        response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD)
        response.flags &= ~dns.flags.RA
        refusal = self._refusal(query)
        if refusal is not None:
            if refusal[0] == dns.rcode.BADVERS:
                response.use_edns(0, 0, OUR_UDP_PAYLOAD)
            return _finish(response, query, *refusal, tcp=tcp)
        question = query.question[0]
        zone = self.zone
        response.flags |= dns.flags.AA
        addresses = zone.table.lookup(question.name.relativize(zone.domain).labels)
        if addresses is None:
            response.authority.append(zone.soa)
            return _finish(response, query, dns.rcode.NXDOMAIN, "nxdomain", tcp=tcp)
        if question.name == zone.domain and question.rdtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            response.answer.append(zone.soa)
        for rdtype in _address_types(question.rdtype):
            rrset = _address_rrset(question.name, rdtype, addresses, query.id)
            if rrset is not None:
                response.answer.append(rrset)
        if not response.answer:
            response.authority.append(zone.soa)
            return _finish(response, query, dns.rcode.NOERROR, "nodata", tcp=tcp)
        return _finish(response, query, dns.rcode.NOERROR, "noerror", tcp=tcp)

    def _refusal(self, query: dns.message.Message) -> tuple[dns.rcode.Rcode, str] | None:
        """The error rcode (and outcome name) for a query that gets no records, None for one to look up."""
        if query.opcode() != dns.opcode.QUERY:
            return dns.rcode.NOTIMP, "notimp"
        if query.edns > 0:
            return dns.rcode.BADVERS, "badvers"
        if len(query.question) != 1:
            return dns.rcode.FORMERR, "formerr"
        question = query.question[0]
        if (
            not question.name.is_subdomain(self.zone.domain)
            or question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY)
            or question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
        ):
            return dns.rcode.REFUSED, "refused"
        return None


def _finish(
    response: dns.message.Message,
    query: dns.message.Message,
    rcode: dns.rcode.Rcode,
    outcome: str,
    *,
    tcp: bool,
) -> tuple[bytes, tuple[str, ...]]:
    response.set_rcode(rcode)
    limit = MAX_TCP_MESSAGE if tcp else _udp_limit(query)
    try:
        # dnspython shuffles the records of an RRset by default; answers list addresses in the table's order, so
        # one query always gets the same octets and a cached answer is the answer.
        return response.to_wire(max_size=limit, want_shuffle=False), (outcome,)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit, want_shuffle=False), (outcome, "truncated")


def _udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return CLASSIC_UDP_PAYLOAD
    # RFC 6891 section 6.2.5: values below 512 are treated as 512.
    return min(max(query.payload, CLASSIC_UDP_PAYLOAD), OUR_UDP_PAYLOAD)


def _address_types(qtype: dns.rdatatype.RdataType) -> tuple[dns.rdatatype.RdataType, ...]:
    if qtype == dns.rdatatype.ANY:
        return (dns.rdatatype.A, dns.rdatatype.AAAA)
    if qtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return (qtype,)
    return ()


def _address_rrset(
    name: dns.name.Name, rdtype: dns.rdatatype.RdataType, addresses: tuple[IPAddress, ...], query_id: int
) -> dns.rrset.RRset | None:
    version = 4 if rdtype == dns.rdatatype.A else 6
    chosen = [address for address in addresses if address.version == version]
    if not chosen:
        return None
    first = query_id % len(chosen)  # see `answer_cache.rotated`: the same order the cache gives
    rdata_class = dns.rdtypes.IN.A.A if version == 4 else dns.rdtypes.IN.AAAA.AAAA
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
    for address in chosen[first:] + chosen[:first]:
        rrset.add(rdata_class(dns.rdataclass.IN, rdtype, str(address)), RECORD_TTL_S)
    return rrset


def _header_only_formerr(query_id: int, flags: int) -> bytes:
    """FORMERR for a message dnspython could not parse: the header alone, echoing ID, opcode and RD (RFC 1035
    section 4.1.1), no question (we could not read one)."""
    answer_flags = QR_BIT | (flags & (OPCODE_MASK | RD_BIT)) | dns.rcode.FORMERR
    return HEADER.pack(query_id, answer_flags, 0, 0, 0, 0)
