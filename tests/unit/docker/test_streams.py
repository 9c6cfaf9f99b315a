"""Frame demultiplexer, JSON-lines and progress decoders: reassembly across arbitrary splits, garbage tolerance."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.docker.errors import BadResponse
from dmnc.docker.streams import (
    FrameDemuxer,
    JsonLinesDecoder,
    OutputChunk,
    OutputTail,
    ProgressDecoder,
    StreamKind,
)


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", kind, len(payload)) + payload


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces: list[bytes] = []
    start = 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def joined_by_stream(chunks: list[OutputChunk]) -> dict[StreamKind, bytes]:
    result: dict[StreamKind, bytes] = {}
    for chunk in chunks:
        result[chunk.stream] = result.get(chunk.stream, b"") + chunk.data
    return result


frames_strategy = st.lists(
    st.tuples(st.sampled_from([StreamKind.STDOUT, StreamKind.STDERR]), st.binary(max_size=300)), max_size=12
)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(frames=frames_strategy, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_demuxer_reassembles_stdout_and_stderr_however_the_bytes_are_split(
    frames: list[tuple[StreamKind, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(frame(kind, payload) for kind, payload in frames)
    demuxer = FrameDemuxer()
    chunks: list[OutputChunk] = []
    for piece in split_at(wire, cuts):
        chunks += demuxer.feed(piece)
    demuxer.finish()
    expected: dict[StreamKind, bytes] = {}
    for kind, payload in frames:
        if payload:
            expected[kind] = expected.get(kind, b"") + payload
    assert joined_by_stream(chunks) == expected
    assert all(chunk.data for chunk in chunks)


def test_demuxer_keeps_interleaving_order() -> None:
    demuxer = FrameDemuxer()
    chunks = demuxer.feed(frame(1, b"a") + frame(2, b"b") + frame(1, b"c"))
    assert [(chunk.stream, chunk.data) for chunk in chunks] == [
        (StreamKind.STDOUT, b"a"),
        (StreamKind.STDERR, b"b"),
        (StreamKind.STDOUT, b"c"),
    ]


def test_demuxer_rejects_unknown_stream_type() -> None:
    with pytest.raises(BadResponse, match="unknown stream type 7"):
        FrameDemuxer().feed(frame(7, b"x"))


def test_demuxer_rejects_nonzero_header_padding() -> None:
    with pytest.raises(BadResponse, match="bad frame header"):
        FrameDemuxer().feed(b"\x01\x00\x01\x00\x00\x00\x00\x01x")


def test_demuxer_finish_reports_a_stream_cut_inside_a_frame() -> None:
    demuxer = FrameDemuxer()
    demuxer.feed(frame(1, b"hello")[:-2])
    with pytest.raises(BadResponse, match="inside a frame"):
        demuxer.finish()


def test_demuxer_finish_reports_a_stream_cut_inside_a_header() -> None:
    demuxer = FrameDemuxer()
    demuxer.feed(b"\x01\x00\x00")
    with pytest.raises(BadResponse):
        demuxer.finish()


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=5))
def test_demuxer_on_arbitrary_bytes_yields_chunks_or_bad_response_only(data: bytes, cuts: list[int]) -> None:
    demuxer = FrameDemuxer()
    try:
        for piece in split_at(data, cuts):
            for chunk in demuxer.feed(piece):
                assert isinstance(chunk.stream, StreamKind)
        demuxer.finish()
    except BadResponse:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(
    values=st.lists(json_values, max_size=10),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_json_lines_decoder_returns_every_value_across_any_split(
    values: list[object], cuts: list[int], line_end: str
) -> None:
    wire = "".join(json.dumps(value) + line_end for value in values).encode()
    decoder = JsonLinesDecoder()
    decoded: list[object] = []
    for piece in split_at(wire, cuts):
        decoded += decoder.feed(piece)
    decoded += decoder.finish()
    assert decoded == values
    assert decoder.skipped == 0


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(garbage=st.binary(max_size=100).filter(lambda data: b"\n" not in data))
def test_json_lines_decoder_skips_a_garbage_line_and_continues(garbage: bytes) -> None:
    decoder = JsonLinesDecoder()
    decoded = decoder.feed(b'{"a": 1}\n' + garbage + b'\n{"b": 2}\n')
    assert decoded[0] == {"a": 1}
    assert decoded[-1] == {"b": 2}
    # The garbage line is dropped (counted once) unless it happens to be JSON; it never raises or eats neighbours.
    assert decoder.skipped in (0, 1)


def test_json_lines_decoder_accepts_values_concatenated_on_one_line() -> None:
    assert JsonLinesDecoder().feed(b'{"a":1}{"b":2}\n') == [{"a": 1}, {"b": 2}]


def test_json_lines_decoder_drops_an_overlong_line_without_buffering_it() -> None:
    decoder = JsonLinesDecoder(max_line_bytes=64)
    assert decoder.feed(b'{"x": "' + b"y" * 100) == []
    assert decoder.feed(b"z" * 100) == []
    assert decoder.feed(b'"}\n{"ok": true}\n') == [{"ok": True}]
    assert decoder.skipped == 1


def test_json_lines_decoder_decodes_a_last_line_without_newline_at_finish() -> None:
    decoder = JsonLinesDecoder()
    assert decoder.feed(b'{"a": 1}\n{"b"') == [{"a": 1}]
    assert decoder.feed(b": 2}") == []
    assert decoder.finish() == [{"b": 2}]


def test_json_lines_decoder_counts_invalid_utf8() -> None:
    decoder = JsonLinesDecoder()
    assert decoder.feed(b'\xff\xfe{"a": 1}\n') == []
    assert decoder.skipped == 1


def test_progress_decoder_reads_build_output_errors_and_aux() -> None:
    decoder = ProgressDecoder()
    messages = decoder.feed(
        b'{"stream":"Step 1/2 : FROM x\\n"}\r\n'
        b'{"aux":{"ID":"sha256:abc"}}\r\n'
        b"[1, 2]\r\n"
        b'{"errorDetail":{"message":"no such image"},"error":"no such image"}\r\n'
    )
    assert [message.stream for message in messages] == ["Step 1/2 : FROM x\n", "", ""]
    assert messages[1].aux == {"ID": "sha256:abc"}
    assert messages[2].error == "no such image"
    assert decoder.skipped == 1


progress_lines = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "status": st.text(max_size=20),
            "id": st.text(max_size=12),
            "progress": st.text(max_size=20),
            "stream": st.text(max_size=30),
        },
    ),
    max_size=8,
)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(
    lines=progress_lines,
    garbage=st.lists(st.binary(max_size=30).filter(lambda data: b"\n" not in data), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_progress_decoder_keeps_every_message_among_garbage_however_the_bytes_are_split(
    lines: list[dict[str, str]], garbage: list[bytes], cuts: list[int]
) -> None:
    # "%" starts no JSON value: each garbage line is dropped and counted, never mistaken for a message.
    noise = [b"%" + data + b"\n" for data in garbage]
    body = b"".join(json.dumps(line).encode() + b"\r\n" + (noise.pop() if noise else b"") for line in lines)
    decoder = ProgressDecoder()
    messages = [message for piece in split_at(body, cuts) for message in decoder.feed(piece)] + decoder.finish()
    assert [(message.status, message.id, message.progress, message.stream) for message in messages] == [
        (line.get("status", ""), line.get("id", ""), line.get("progress", ""), line.get("stream", "")) for line in lines
    ]
    assert decoder.skipped == min(len(garbage), len(lines))


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=5))
def test_progress_decoder_on_arbitrary_bytes_never_raises(data: bytes, cuts: list[int]) -> None:
    decoder = ProgressDecoder()
    for piece in split_at(data, cuts):
        decoder.feed(piece)
    decoder.finish()


def test_json_lines_decoder_drops_a_hostile_deeply_nested_line_and_keeps_going() -> None:
    decoder = JsonLinesDecoder()
    values = decoder.feed(b"[" * 100_000 + b"]" * 100_000 + b'\n{"ok": 1}\n')
    assert values == [{"ok": 1}]
    assert decoder.skipped == 1


@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(min_value=1, max_value=100))
def test_output_tail_keeps_exactly_the_last_bytes_within_its_limit(pieces: list[bytes], limit: int) -> None:
    tail = OutputTail(limit)
    for piece in pieces:
        tail.append(piece)
    everything = b"".join(pieces)
    assert bytes(tail) == everything[-limit:]
    assert tail.dropped == len(everything) - len(bytes(tail))
