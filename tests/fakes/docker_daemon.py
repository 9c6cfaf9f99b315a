"""A scripted, deliberately broken Docker daemon on a Unix socket, for the client's error-path tests.

`fake_daemon(routes)` serves HTTP/1.1 on a fresh socket in a private temp dir and yields its `unix://` URL. Each
request is looked up in `routes` by path without the `/vX.Y` prefix and query; the route gets the parsed request and
the raw stream and writes whatever bytes the test wants (a valid answer, a truncated body, nothing at all).
`GET /version` answers as Docker 20.10 (API 1.41) unless a route overrides it. Unknown paths get 404.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

VERSION_1_41 = {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12", "Os": "linux"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    body: bytes


Route = Callable[[Request, trio.SocketStream], Awaitable[None]]


def response(status: int, body: bytes = b"", *, content_type: str = "application/json", reason: str = "X") -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def json_response(status: int, value: object) -> bytes:
    return response(status, json.dumps(value).encode())


def chunked_head(content_type: str = "application/json") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def reply(data: bytes) -> Route:
    """A route that always answers with these exact bytes."""

    async def route(_request: Request, stream: trio.SocketStream) -> None:
        await stream.send_all(data)

    return route


async def hang(_request: Request, _stream: trio.SocketStream) -> None:
    """Accept the request and never answer."""
    await trio.sleep_forever()


async def _read_request(stream: trio.SocketStream, buffer: bytearray) -> Request | None:
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    length_match = re.search(r"(?im)^content-length:\s*(\d+)", "\n".join(lines[1:]))
    length = int(length_match.group(1)) if length_match else 0
    body = bytearray(rest)
    while len(body) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        body += data
    buffer[:] = body[length:]
    path, _, query = target.partition("?")
    return Request(method, re.sub(r"^/v\d+\.\d+", "", path), query, bytes(body[:length]))


@asynccontextmanager
async def fake_daemon(routes: Mapping[str, Route]) -> AsyncIterator[str]:
    all_routes: dict[str, Route] = {"/version": reply(json_response(200, VERSION_1_41)), **routes}
    directory = Path(tempfile.mkdtemp(prefix="dmnc-fake-daemon-"))
    socket_path = directory / "docker.sock"
    listener_socket = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)

    async def serve_connection(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            while (request := await _read_request(stream, buffer)) is not None:
                route = all_routes.get(request.path, reply(json_response(404, {"message": "page not found"})))
                await route(request, stream)

    try:
        await listener_socket.bind(str(socket_path))
        listener_socket.listen()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, serve_connection, [trio.SocketListener(listener_socket)])
            yield f"unix://{socket_path}"
            nursery.cancel_scope.cancel()
    finally:
        listener_socket.close()
        shutil.rmtree(directory, ignore_errors=True)
