"""Where a Docker daemon listens: `unix:///path/docker.sock` or plain `tcp://host:port` (as in DOCKER_HOST).

`DaemonAddress.parse` accepts what DOCKER_HOST and docker contexts contain; anything else (ssh://, npipe://,
TLS-only setups) raises `InvalidDaemonAddress` saying what is supported.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Self

import httpx
import trio

from dmnc.docker.errors import InvalidDaemonAddress

# `tcp://host` without a port means Docker's plain-HTTP port (IANA registered 2375 for docker).
DEFAULT_TCP_PORT = 2375
# The Host header for requests over a Unix socket: the daemon ignores it, but HTTP/1.1 requires one.
UNIX_SOCKET_HOST = "docker"


@dataclass(frozen=True)
class DaemonAddress:
    """A parsed daemon address: either `socket_path` or `host` and `port` is set."""

    url: str
    socket_path: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> Self:
        if url.startswith("/"):
            return cls(url=f"unix://{url}", socket_path=url)
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "unix":
            path = parsed.path or parsed.netloc
            if not path.startswith("/"):
                raise InvalidDaemonAddress(f"unix socket address needs an absolute path: {url!r}")
            return cls(url=url, socket_path=path)
        if parsed.scheme in {"tcp", "http"}:
            try:
                port = parsed.port or DEFAULT_TCP_PORT
            except ValueError as error:
                raise InvalidDaemonAddress(f"bad port in {url!r}") from error
            if not parsed.hostname:
                raise InvalidDaemonAddress(f"tcp address needs a host: {url!r}")
            return cls(url=url, host=parsed.hostname, port=port)
        raise InvalidDaemonAddress(f"unsupported Docker host {url!r}: dmnc speaks unix:// sockets and plain tcp://")

    @property
    def http_host(self) -> str:
        """Value of the HTTP Host header (and websocket host) for this daemon."""
        if self.socket_path is not None:
            return UNIX_SOCKET_HOST
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.http_host}"

    def http_transport(self) -> httpx.AsyncHTTPTransport:
        # retries=0: a failed connect must surface now (discovery reports it), not after hidden retries.
        if self.socket_path is not None:
            return httpx.AsyncHTTPTransport(uds=self.socket_path, retries=0)
        return httpx.AsyncHTTPTransport(retries=0)

    async def open_stream(self) -> trio.SocketStream:
        """A raw byte stream to the daemon (for the websocket upgrade, which httpx does not do)."""
        if self.socket_path is not None:
            return await trio.open_unix_socket(self.socket_path)
        if self.host is None or self.port is None:
            raise InvalidDaemonAddress(f"no host in {self.url!r}")
        return await trio.open_tcp_stream(self.host, self.port)
