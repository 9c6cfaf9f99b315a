"""Sans-I/O decoders for the Engine API's streamed bodies: feed them bytes as they arrive, get values back.

- `JsonLinesDecoder`: newline-delimited JSON (events, pull and build progress). Tolerant: a value split across
  reads is reassembled, blank lines are ignored, a line that is not JSON is counted in `skipped` and dropped, and a
  line longer than `max_line_bytes` is dropped too, so a broken daemon cannot grow the buffer without bound; so is
  a value nested deeper than `dmnc.docker.untrusted_json.MAX_JSON_DEPTH`.
- `FrameDemuxer`: the multiplexed stdout/stderr stream of logs and attach for containers without a TTY. Each frame
  is an 8-byte header `[stream type, 0, 0, 0, payload size as uint32 big-endian]` and the payload (Engine API
  "Attach to a container", section "Stream format"). Payload bytes are handed out as they arrive; a frame is never
  buffered whole.
- `OutputTail`: the bounded tail of a container's output, for callers that collect it.
- `JsonModelDecoder`: one model per JSON line, what the model refuses counted and dropped; `ProgressDecoder` is
  the one for pull/build progress messages (`ProgressMessage`), `dmnc.docker.events.EventDecoder` the one for events.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from dmnc.docker.errors import BadResponse
from dmnc.docker.models import ProgressMessage
from dmnc.docker.untrusted_json import raw_decode_untrusted

DEFAULT_MAX_LINE_BYTES = 1 << 20
FRAME_HEADER = struct.Struct(">BxxxI")
_Model = TypeVar("_Model")


class JsonLinesDecoder:
    """Splits a byte stream into JSON values; see the module docstring for what it tolerates."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_line_bytes = max_line_bytes
        self._discarding_long_line = False
        self.skipped = 0
        """Lines dropped because they were not JSON or too long."""

    def feed(self, data: bytes) -> list[object]:
        values: list[object] = []
        self._buffer += data
        last_newline = self._buffer.rfind(b"\n")
        if last_newline >= 0:
            lines = bytes(self._buffer[:last_newline]).split(b"\n")
            del self._buffer[: last_newline + 1]
            if self._discarding_long_line:
                # The first line is the tail of an overlong line already counted and dropped.
                lines = lines[1:]
                self._discarding_long_line = False
            for line in lines:
                self._decode_line_into(line, values)
        if len(self._buffer) > self._max_line_bytes:
            self._buffer.clear()
            if not self._discarding_long_line:
                self.skipped += 1
                self._discarding_long_line = True
        return values

    def finish(self) -> list[object]:
        """Decode what is left after the stream ended (a last line without newline)."""
        values: list[object] = []
        if not self._discarding_long_line:
            self._decode_line_into(bytes(self._buffer), values)
        self._buffer.clear()
        self._discarding_long_line = False
        return values

    def _decode_line_into(self, line: bytes, values: list[object]) -> None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped += 1
            return
        # A line normally holds one value; concatenated values without a newline between them are accepted too.
        position = 0
        length = len(text)
        while True:
            while position < length and text[position] in " \t\r":
                position += 1
            if position >= length:
                return
            try:
                value, position = raw_decode_untrusted(text, position)
            except ValueError:
                self.skipped += 1
                return
            values.append(value)


class StreamKind(enum.IntEnum):
    """Stream type byte of a multiplexed frame (Engine API, "Stream format")."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    # Sent by dockerd when the log driver or attach itself fails; carries an error text.
    SYSTEMERR = 3


@dataclass(frozen=True)
class OutputChunk:
    """Bytes one container stream produced, in order; consecutive chunks of one stream may be split anywhere."""

    stream: StreamKind
    data: bytes


class FrameDemuxer:
    """Demultiplexes a stdout/stderr frame stream; invalid headers raise BadResponse."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._current: StreamKind | None = None
        self._remaining = 0

    def feed(self, data: bytes) -> list[OutputChunk]:
        chunks: list[OutputChunk] = []
        view = memoryview(data)
        while view:
            if self._current is None:
                needed = FRAME_HEADER.size - len(self._header)
                self._header += view[:needed]
                view = view[needed:]
                if len(self._header) < FRAME_HEADER.size:
                    break
                self._start_frame_untrusted(bytes(self._header))
                self._header.clear()
                if self._remaining == 0:
                    self._current = None
                continue
            piece = view[: self._remaining]
            view = view[len(piece) :]
            self._remaining -= len(piece)
            chunks.append(OutputChunk(self._current, bytes(piece)))
            if self._remaining == 0:
                self._current = None
        return chunks

    def finish(self) -> None:
        """Check that the stream ended on a frame boundary."""
        if self._header or self._current is not None:
            raise BadResponse("multiplexed output stream ended inside a frame")

    def _start_frame_untrusted(self, header: bytes) -> None:
        kind_byte, size = FRAME_HEADER.unpack(header)
        if header[1:4] != b"\x00\x00\x00":
            raise BadResponse(f"multiplexed output stream: bad frame header {header.hex()}")
        try:
            self._current = StreamKind(kind_byte)
        except ValueError as error:
            raise BadResponse(f"multiplexed output stream: unknown stream type {kind_byte}") from error
        self._remaining = size


class OutputTail:
    """The last `limit` bytes of a container's output: what it printed last (a result line) survives, however much
    it printed before, and memory stays bounded."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.dropped = 0
        """Bytes dropped from the front so far."""

    def append(self, data: bytes) -> None:
        self._data += data
        excess = len(self._data) - self._limit
        if excess > 0:
            del self._data[:excess]
            self.dropped += excess

    def __bytes__(self) -> bytes:
        return bytes(self._data)


class JsonModelDecoder(Generic[_Model]):
    """JSON lines in, one model per line out: `decode` (a model's `from_json_untrusted`) turns each JSON value into
    a model; lines that are not JSON, and values `decode` refuses with BadResponse, are counted and dropped."""

    def __init__(self, decode: Callable[[object], _Model]) -> None:
        self._lines = JsonLinesDecoder()
        self._decode = decode
        self._malformed = 0

    @property
    def skipped(self) -> int:
        """Lines and values dropped because they were not JSON or not a model."""
        return self._lines.skipped + self._malformed

    def feed(self, data: bytes) -> list[_Model]:
        return self._models(self._lines.feed(data))

    def finish(self) -> list[_Model]:
        return self._models(self._lines.finish())

    def _models(self, values: list[object]) -> list[_Model]:
        models: list[_Model] = []
        for value in values:
            try:
                models.append(self._decode(value))
            except BadResponse:
                self._malformed += 1
        return models


class ProgressDecoder(JsonModelDecoder[ProgressMessage]):
    """Turns a pull/build progress body into ProgressMessages; values that are not message objects are skipped."""

    def __init__(self) -> None:
        super().__init__(ProgressMessage.from_json_untrusted)
