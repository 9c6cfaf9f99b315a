"""Micro-benchmark of the protocol core: us per 1420-byte packet for encapsulate and decapsulate, and the cost of
answering one handshake initiation (the unit of work of the tunnel's handshake queue).

Run: .venv/bin/python tests/bench/bench_core.py   (not collected by pytest; the target is well under 10 us each)

Shared machines are noisy: figures are CPU time of this thread (not wall time, which other processes inflate), the
best of several batches, printed next to the cost of the bare libsodium AEAD call on the same buffer size (the floor
no Python code can beat).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nacl.bindings  # noqa: F401  # runs sodium_init()
from nacl._sodium import ffi, lib

from dmnc.wireguard import SendDatagram
from tests.fakes.wireguard_network import Network, ip4

PACKET_SIZE = 1420
BATCH = 1000  # 1.4 MB of datagrams per decapsulate batch: warm in cache like freshly received ones
BATCHES = 15
HANDSHAKE_BATCH = 20


def best_us_per_call(run_batch: Callable[[], None]) -> float:
    timings = []
    for _ in range(BATCHES):
        start = time.thread_time()
        run_batch()
        timings.append(time.thread_time() - start)
    return min(timings) / BATCH * 1e6


def main() -> None:
    net = Network(seed=int.from_bytes(os.urandom(4), "little"))
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_all()
    packet = ip4("10.0.0.1", "10.0.0.2", bytes(PACKET_SIZE - 20))
    source = a.endpoint
    now = net.now
    encapsulate = a.device.encapsulate
    decapsulate = b.device.decapsulate

    def encapsulate_batch() -> None:
        # Outputs are dropped at once, as the I/O layer does after sending: keeping thousands of datagrams alive
        # would measure the allocator instead.
        for _ in range(BATCH):
            encapsulate(packet, now)

    encapsulate_us = best_us_per_call(encapsulate_batch)
    assert isinstance(encapsulate(packet, now)[0], SendDatagram)
    # Decapsulate needs fresh counters each batch (replayed ones are dropped), so they are sealed beforehand.
    batches = [[encapsulate(packet, now)[0].data for _ in range(BATCH)] for _ in range(BATCHES)]  # type: ignore[union-attr]
    batch_iter = iter(batches)

    def decapsulate_batch() -> None:
        for datagram in next(batch_iter):
            decapsulate(datagram, source, now)

    decapsulate_us = best_us_per_call(decapsulate_batch)
    assert not b.device.peer_stats()[a.device.public_key].drops

    buffer = ffi.new("unsigned char[]", PACKET_SIZE + 16)
    key = ffi.new("unsigned char[]", 32)
    nonce = ffi.new("unsigned char[]", 12)
    aead = lib.crypto_aead_chacha20poly1305_ietf_encrypt

    def raw_batch() -> None:
        for _ in range(BATCH):
            aead(buffer, ffi.NULL, buffer, PACKET_SIZE, ffi.NULL, 0, ffi.NULL, nonce, key)

    raw_us = best_us_per_call(raw_batch)

    # A responder's work per initiation: mac1, two X25519 to open it, one more plus an ephemeral to respond.
    initiations = []
    for index in range(BATCHES * HANDSHAKE_BATCH):
        fresh = Network(seed=index)
        initiator, responder = fresh.pair()
        fresh.send(initiator, ip4("10.0.0.1", "10.0.0.2"))
        initiations.append((responder.device, fresh.in_flight[0].data, initiator.endpoint, fresh.now))
    initiation_iter = iter(initiations)

    def handshake_batch() -> None:
        for _ in range(HANDSHAKE_BATCH):
            device, datagram, sender, at = next(initiation_iter)
            device.decapsulate(datagram, sender, at)

    handshake_us = best_us_per_call(handshake_batch) * BATCH / HANDSHAKE_BATCH

    print(f"bare libsodium ChaCha20-Poly1305 {PACKET_SIZE} B: {raw_us:.2f} us/call")
    print(f"encapsulate {PACKET_SIZE} B: {encapsulate_us:.2f} us/packet")
    print(f"decapsulate {PACKET_SIZE} B: {decapsulate_us:.2f} us/packet")
    per_packet = max(encapsulate_us, decapsulate_us)
    print(f"answer one handshake initiation: {handshake_us:.0f} us")
    print(f"one core, crypto path only: {PACKET_SIZE * 8 / per_packet / 1000:.2f} Gbit/s")


if __name__ == "__main__":
    main()
