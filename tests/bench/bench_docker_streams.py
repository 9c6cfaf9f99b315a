"""Micro-benchmark of the Docker stream decoders: events per second, demultiplexed and progress MB/s.

Run: .venv/bin/python tests/bench/bench_docker_streams.py   (not collected by pytest)

These decoders sit between the daemon's socket and dmnc's reconcile loop; the figures show they are never the
bottleneck (a busy Docker host emits hundreds of events per second, setup output is kilobytes). Input arrives in
4 KiB reads, as from a socket. Each figure is the best of several runs, since shared machines are noisy.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable

from dmnc.docker.events import EventDecoder
from dmnc.docker.streams import FrameDemuxer, ProgressDecoder

READ_SIZE = 4096
RUNS = 5


def pieces(data: bytes) -> list[bytes]:
    return [data[offset : offset + READ_SIZE] for offset in range(0, len(data), READ_SIZE)]


def best_seconds(work: Callable[[], None]) -> float:
    best = float("inf")
    for _run in range(RUNS):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def bench_events(count: int = 20_000) -> None:
    line = {
        "Type": "network",
        "Action": "connect",
        "Actor": {"ID": "5788c847685ca548c22a70da7deddcdd9ee7e97639bcef5bb28411af015ce7eb",
                  "Attributes": {"container": "e20c5e74e81b", "name": "bridge", "type": "bridge"}},
        "scope": "local",
        "time": 1795377475,
        "timeNano": 1795377475613830319,
    }  # fmt: skip
    wire = pieces(b"".join(json.dumps(line).encode() + b"\n" for _ in range(count)))

    def decode() -> None:
        decoder = EventDecoder()
        decoded = sum(len(decoder.feed(piece)) for piece in wire)
        assert decoded == count

    seconds = best_seconds(decode)
    print(f"events:   {count / seconds:>12,.0f} events/s ({seconds / count * 1e6:.1f} us per event)")


def bench_demux(total_bytes: int = 32 << 20, frame_payload: int = 1024) -> None:
    frame = struct.pack(">BxxxI", 1, frame_payload) + b"x" * frame_payload
    wire = pieces(frame * (total_bytes // frame_payload))

    def demux() -> None:
        demuxer = FrameDemuxer()
        for piece in wire:
            demuxer.feed(piece)
        demuxer.finish()

    seconds = best_seconds(demux)
    print(f"demux:    {total_bytes / seconds / 1e6:>12,.0f} MB/s ({frame_payload}-byte frames)")


def bench_progress(count: int = 20_000) -> None:
    line = json.dumps({"stream": "Step 3/9 : RUN apk add --no-cache iptables wireguard-tools\n"}).encode() + b"\r\n"
    wire = pieces(line * count)

    def decode() -> None:
        decoder = ProgressDecoder()
        assert sum(len(decoder.feed(piece)) for piece in wire) == count

    seconds = best_seconds(decode)
    print(f"progress: {count / seconds:>12,.0f} messages/s")


if __name__ == "__main__":
    bench_events()
    bench_demux()
    bench_progress()
