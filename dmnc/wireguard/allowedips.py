"""Cryptokey routing table (whitepaper 2): longest-prefix match of IPv4 and IPv6 addresses to peers.

One hash table per prefix length, probed from the longest present length down: few distinct lengths exist in
practice, so a lookup is a handful of dict probes on integers. Results are cached per address (the data path looks
up the same few addresses for every packet), and the cache is emptied whenever the table changes.
"""

from __future__ import annotations

import ipaddress
from typing import Generic, TypeVar

Value = TypeVar("Value")
# Bound on cached addresses, so a scan of many destinations cannot grow memory without limit.
_CACHE_LIMIT = 4096
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _FamilyTable(Generic[Value]):
    def __init__(self, address_bits: int) -> None:
        self._address_bits = address_bits
        self._by_length: dict[int, dict[int, Value]] = {}
        self._lengths_longest_first: list[int] = []

    def insert(self, network: int, prefix_length: int, value: Value) -> None:
        table = self._by_length.get(prefix_length)
        if table is None:
            table = self._by_length[prefix_length] = {}
            self._lengths_longest_first = sorted(self._by_length, reverse=True)
        table[network] = value

    def lookup(self, address: int) -> Value | None:
        bits = self._address_bits
        for length in self._lengths_longest_first:
            value = self._by_length[length].get(address >> (bits - length) << (bits - length) if length else 0)
            if value is not None:
                return value
        return None

    def remove_value(self, value: Value) -> None:
        for length, table in list(self._by_length.items()):
            for network in [network for network, owner in table.items() if owner is value]:
                del table[network]
            if not table:
                del self._by_length[length]
        self._lengths_longest_first = sorted(self._by_length, reverse=True)


class AllowedIPs(Generic[Value]):
    """Maps networks to values (peers); inserting a network already present moves it to the new value."""

    def __init__(self) -> None:
        self._v4: _FamilyTable[Value] = _FamilyTable(32)
        self._v6: _FamilyTable[Value] = _FamilyTable(128)
        self._cache_v4: dict[bytes, Value | None] = {}
        self._cache_v6: dict[bytes, Value | None] = {}

    def insert(self, network: IPNetwork, value: Value) -> None:
        table = self._v4 if network.version == 4 else self._v6
        table.insert(int(network.network_address), network.prefixlen, value)
        self._cache_v4.clear()
        self._cache_v6.clear()

    def lookup_v4(self, address: bytes) -> Value | None:
        """Longest match for a 4-byte address (as found in an IPv4 header)."""
        try:
            return self._cache_v4[address]
        except KeyError:
            return self._remember(self._cache_v4, address, self._v4.lookup(int.from_bytes(address, "big")))

    def lookup_v6(self, address: bytes) -> Value | None:
        """Longest match for a 16-byte address (as found in an IPv6 header)."""
        try:
            return self._cache_v6[address]
        except KeyError:
            return self._remember(self._cache_v6, address, self._v6.lookup(int.from_bytes(address, "big")))

    @staticmethod
    def _remember(cache: dict[bytes, Value | None], address: bytes, value: Value | None) -> Value | None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[bytes(address)] = value
        return value

    def remove_value(self, value: Value) -> None:
        self._v4.remove_value(value)
        self._v6.remove_value(value)
        self._cache_v4.clear()
        self._cache_v6.clear()
