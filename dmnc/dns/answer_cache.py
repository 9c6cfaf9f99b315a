"""Encoded answers, kept per query shape so a repeated question costs a dictionary lookup instead of dnspython.

Parsing a query and encoding its answer with dnspython costs about 150 us of the thread the tunnel's data path
shares; a resolver asks the same few questions again and again. An answer depends on nothing but the query's octets,
the transport (the UDP size limit) and the zone, so the cache is keyed by the query's octets and the transport and
emptied whenever the zone changes. Three parts of a query shape its answer only by being echoed, or not at all; they
are left out of the key, and the first two are written back into the cached answer:

- the ID (RFC 1035 section 4.1.1: copied into the answer). It also picks which of several addresses comes first
  (answer.py); the cache keeps the records in the order of ID 0 and rotates them for each asker (`rotated`);
- the letter case of the question name: names match case-insensitively (RFC 4343) and the answer echoes the question
  as asked, which resolvers that randomise the case (draft-vixie-dnsext-dns0x20) check. The question is the first
  name of the answer and every later name is a compression pointer into it or written in our own (lower) case, so
  only the question's octets carry the asker's case;
- the value of a DNS cookie (RFC 7873), new in every query from resolvers that send one: dmnc answers without
  cookies, so only the option's length counts (`_cookie_blanked`).

Only the simple, common shape is cached: one question whose name is written out in full (no compression pointer) and
a query and answer small enough that the cache's size stays bounded. Everything else takes the full path every time.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 1035 section 4.1.1: the header is six 16-bit fields; the question section starts right after it.
HEADER_OCTETS = 12
QDCOUNT_OFFSET = 4
ID_OCTETS = 2
ANCOUNT_OFFSET = 6
# RFC 1035 section 4.1.2: QTYPE and QCLASS follow the question name.
QUESTION_TYPE_CLASS_OCTETS = 4
# RFC 1035 section 4.1.3: TYPE, CLASS, TTL and RDLENGTH follow a record's name.
RR_FIXED_OCTETS = 10
# RFC 6891 section 6.1.2: the OPT record's owner is the root (one zero octet) and its TYPE 41; NAME, TYPE, CLASS,
# TTL and RDLENGTH take 11 octets; each option is OPTION-CODE, OPTION-LENGTH (two octets each) and its value.
OPT_OWNER_AND_TYPE = b"\x00\x00\x29"
OPT_FIXED_OCTETS = 11
OPTION_HEADER_OCTETS = 4
# RFC 7873 section 4: the COOKIE option's code.
COOKIE_OPTION = 10
# A (RFC 1035 section 3.2.2) and AAAA (RFC 3596 section 2.1).
ADDRESS_TYPES = frozenset({1, 28})
# RFC 1035 section 4.1.4: a label's length octet with the two top bits set starts a compression pointer (and 01/10
# are reserved, RFC 6891 section 5): either way not a plain label.
LABEL_TYPE_MASK = 0xC0
# Answers kept at most; the least recently used goes first. Each entry is at most one query plus one answer.
MAX_CACHED_ANSWERS = 1024
# Queries longer than this are not cached: real ones are well under 300 octets (a 255-octet name, a question, an OPT
# record with a cookie), and the cache's memory stays below MAX_CACHED_ANSWERS * (this + MAX_CACHED_ANSWER_OCTETS).
MAX_CACHED_QUERY_OCTETS = 512
# Answers longer than this (large TCP answers) are not cached: the common UDP answer size limit (answer.py).
MAX_CACHED_ANSWER_OCTETS = 1232


@dataclass(frozen=True)
class AddressRun:
    """The records of one A or AAAA RRset in an encoded answer: `count` records of `size` octets from `start`."""

    start: int
    count: int
    size: int
    rdtype: int

    @property
    def end(self) -> int:
        return self.start + self.count * self.size


@dataclass(frozen=True)
class CachedAnswer:
    """An answer with its address records in the order of query ID 0 (see `rotated`), where they are, and the
    outcomes it counted (they are counted again at every hit)."""

    wire: bytes
    outcomes: tuple[str, ...]
    runs: tuple[AddressRun, ...] = ()


def question_name_end(wire: bytes) -> int | None:
    """Where the question name ends (the offset after its root label) in a one-question message whose name is
    written out in full; None for any other message."""
    if wire[QDCOUNT_OFFSET : QDCOUNT_OFFSET + 2] != b"\x00\x01":
        return None
    return _name_end(wire, HEADER_OCTETS, pointer_allowed=False)


def cache_key(wire: bytes, *, tcp: bool) -> tuple[bytes, int] | None:
    """The key of a query's answer and the end of its question name, or None for a query that is not cached.

    The key is the query without its ID, with its question name in lower case (ASCII only, as RFC 4343 and
    dnspython compare names) and its cookie blanked (`_cookie_blanked`), behind one octet for the transport. Length
    octets are below 64 and never change."""
    if len(wire) > MAX_CACHED_QUERY_OCTETS:
        return None
    end = question_name_end(wire)
    if end is None:
        return None
    transport = b"T" if tcp else b"U"
    rest = _cookie_blanked(wire, end)
    return transport + wire[ID_OCTETS:HEADER_OCTETS] + wire[HEADER_OCTETS:end].lower() + rest, end


def _cookie_blanked(wire: bytes, question_end: int) -> bytes:
    """The query after its question name, with the value of any COOKIE option (RFC 7873 section 4) of its one OPT
    record (RFC 6891 section 6.1.2) zeroed; unchanged when the rest is not exactly the question's type and class and
    one OPT record.

    A resolver that sends cookies (dig, BIND) sends a new client cookie with every query, which would make every
    one a miss. dmnc never answers with a cookie, so the value shapes nothing in the answer; its length does (a
    malformed cookie is FORMERR) and is kept."""
    rest = wire[question_end:]
    opt = question_end + QUESTION_TYPE_CLASS_OCTETS
    options = opt + OPT_FIXED_OCTETS
    if (
        wire[ANCOUNT_OFFSET:HEADER_OCTETS] != b"\x00\x00\x00\x00\x00\x01"  # ANCOUNT 0, NSCOUNT 0, ARCOUNT 1
        or wire[opt : opt + len(OPT_OWNER_AND_TYPE)] != OPT_OWNER_AND_TYPE
        or options + int.from_bytes(wire[options - 2 : options], "big") != len(wire)
    ):
        return rest
    blanked = bytearray(rest)
    position = options
    while position + OPTION_HEADER_OCTETS <= len(wire):
        code = int.from_bytes(wire[position : position + 2], "big")
        value_start = position + OPTION_HEADER_OCTETS
        value_end = value_start + int.from_bytes(wire[position + 2 : value_start], "big")
        if code == COOKIE_OPTION and value_end <= len(wire):
            blanked[value_start - question_end : value_end - question_end] = bytes(value_end - value_start)
        position = value_end
    return bytes(blanked)


def answer_fits(answer: bytes, query: bytes, question_end: int) -> bool:
    """Whether `answer` can be cached for `query`: it is small enough and echoes the query's one question name
    octet for octet at the same place (so `patched` writes the next asker's name exactly over it)."""
    return (
        len(answer) <= MAX_CACHED_ANSWER_OCTETS
        and answer[QDCOUNT_OFFSET : QDCOUNT_OFFSET + 2] == b"\x00\x01"
        and answer[HEADER_OCTETS:question_end] == query[HEADER_OCTETS:question_end]
    )


def address_runs(answer: bytes, question_end: int) -> tuple[AddressRun, ...] | None:
    """Where the A and AAAA RRsets of several records lie in an answer's answer section (after one question ending
    at `question_end`); None when the section is not the shape dmnc writes (then the answer is not cached)."""
    offset = question_end + QUESTION_TYPE_CLASS_OCTETS
    runs: list[AddressRun] = []
    for _ in range(int.from_bytes(answer[ANCOUNT_OFFSET : ANCOUNT_OFFSET + 2], "big")):
        start = offset
        name_end = _name_end(answer, offset)
        if name_end is None or name_end + RR_FIXED_OCTETS > len(answer):
            return None
        rdtype = int.from_bytes(answer[name_end : name_end + 2], "big")
        rdlength = int.from_bytes(answer[name_end + RR_FIXED_OCTETS - 2 : name_end + RR_FIXED_OCTETS], "big")
        offset = name_end + RR_FIXED_OCTETS + rdlength
        if offset > len(answer):
            return None
        if rdtype not in ADDRESS_TYPES:
            continue
        size = offset - start
        last = runs[-1] if runs else None
        if last is not None and last.rdtype == rdtype and last.end == start:
            if last.size != size:
                return None
            runs[-1] = AddressRun(last.start, last.count + 1, size, rdtype)
        else:
            runs.append(AddressRun(start, 1, size, rdtype))
    return tuple(run for run in runs if run.count > 1)


def rotated(answer: bytes, runs: tuple[AddressRun, ...], query_id: int, *, undo: bool = False) -> bytes:
    """The answer with each run's records rotated to start at record `query_id % count`, the order answer.py gives
    a query with that ID (or, with `undo`, rotated back from it to the order of ID 0)."""
    parts: list[bytes] = []
    position = 0
    for run in runs:
        first = query_id % run.count
        if undo:
            first = (run.count - first) % run.count
        split = run.start + first * run.size
        parts += [answer[position : run.start], answer[split : run.end], answer[run.start : split]]
        position = run.end
    parts.append(answer[position:])
    return b"".join(parts)


def _name_end(message: bytes, offset: int, *, pointer_allowed: bool = True) -> int | None:
    """The offset after the name at `offset` (ending in a compression pointer when `pointer_allowed`); None when it
    runs off the end or uses a reserved label type."""
    while offset < len(message):
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & LABEL_TYPE_MASK == LABEL_TYPE_MASK and pointer_allowed:
            return offset + 2
        if length & LABEL_TYPE_MASK:
            return None
        offset += 1 + length
    return None


def patched(cached: bytes, query: bytes, question_end: int) -> bytes:
    """The cached answer with this query's ID and question name (its letter case) written in."""
    header_after_id = cached[ID_OCTETS:HEADER_OCTETS]
    return query[:ID_OCTETS] + header_after_id + query[HEADER_OCTETS:question_end] + cached[question_end:]


class AnswerCache:
    """Encoded answers by `cache_key`, at most `capacity`, least recently used dropped first."""

    def __init__(self, capacity: int = MAX_CACHED_ANSWERS) -> None:
        self._capacity = capacity
        self._entries: dict[bytes, CachedAnswer] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> CachedAnswer | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            self.misses += 1
            return None
        self._entries[key] = entry  # re-inserted: dict order is then least recently used first
        self.hits += 1
        return entry

    def put(self, key: bytes, entry: CachedAnswer) -> None:
        if self._capacity <= 0:
            return
        if key not in self._entries and len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = entry

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
