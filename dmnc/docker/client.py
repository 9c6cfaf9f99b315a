"""Docker Engine API client over the daemon's Unix socket (httpx under trio; no Docker SDK).

Public surface:

    async with DockerClient.connect("unix:///var/run/docker.sock") as docker:
        docker.api_version                       # negotiated, e.g. "1.41"
        await docker.ping() / version() / info()
        await docker.list_networks() / inspect_network(id) / create_network(name, ...) / remove_network(id)
        async with docker.events(filters={"type": ["network"]}, since=...) as events:
            async for event in events: ...       # events.last_time_nano for a reconnect's `since`
        await docker.inspect_image(ref)
        async with docker.pull_image(ref) as progress:  async for message in progress: ...
        async with docker.build_image(context_tar, tag) as build:  async for message in build: ...
        await docker.create_container(ContainerSpec(...)) / start_container / wait_container / inspect_container
        async with docker.container_logs(id) as output:  async for chunk in output: ...   # stdout/stderr apart
        await docker.remove_container(id, force=True)
        await docker.run_container(ContainerSpec(...))   # create, start, wait, collect output, remove
        async with docker.attach_websocket(id) as session:  async for data in session: ...

API version: `connect` reads `GET /version` and speaks min(the daemon's ApiVersion, NEWEST_KNOWN_API_VERSION), raised
to the daemon's MinAPIVersion when that is higher, so daemons older or newer than dmnc keep working.
Errors: only `dmnc.docker.errors.DockerError` subclasses leave this module (see that module for the hierarchy).
Every call has a time limit: plain requests `request_timeout` seconds overall (except `wait_container`, bounded by the
caller), streams `request_timeout` for the response headers, then no limit between chunks (events may be quiet for
hours) unless `idle_timeout` is given.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, Self, TypeVar, cast

import httpx
import trio

from dmnc.docker.address import DaemonAddress
from dmnc.docker.attach import AttachSession, open_attach_session
from dmnc.docker.errors import (
    ApiError,
    ApiVersionError,
    BadResponse,
    Conflict,
    DockerError,
    NotFound,
    OperationFailed,
    map_exceptions,
)
from dmnc.docker.events import EventDecoder, EventFilters, encode_filters, format_since
from dmnc.docker.models import (
    ContainerInfo,
    ContainerSummary,
    CreatedContainer,
    Event,
    ImageInfo,
    Info,
    JsonFields,
    Network,
    ProgressMessage,
    Version,
    WaitResult,
    json_list_untrusted,
)
from dmnc.docker.streams import FrameDemuxer, OutputChunk, OutputTail, ProgressDecoder, StreamKind
from dmnc.docker.untrusted_json import JsonTooDeep, loads_untrusted

logger = logging.getLogger(__name__)

# Docker Engine 28.3 speaks API 1.51; everything dmnc calls exists unchanged from 1.41 (Engine 20.10) on.
NEWEST_KNOWN_API_VERSION = (1, 51)
OLDEST_SUPPORTED_API_VERSION = (1, 41)
DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
# An error body that is not Docker's {"message": ...} (a proxy's HTML page, a panic) is quoted up to this length.
ERROR_BODY_PREVIEW_CHARS = 300
# A plain answer (/networks, /info, an inspect) is kilobytes, a few MB with thousands of networks; anything bigger is
# not a sane daemon's answer and must not exhaust memory. Streams (events, logs, builds) are not limited this way.
MAX_RESPONSE_BYTES = 64 << 20
# `run_container` keeps the last this many bytes of each stream: a one-shot tool's verdict is at the end, and a
# container that prints without end must not exhaust memory.
MAX_RUN_OUTPUT_BYTES = 1 << 20
# dockerd's refusal of an API version: "client version 1.52 is too new. Maximum supported API version is 1.41".
_VERSION_ERROR = re.compile(r"client version \S+ is too (new|old)", re.IGNORECASE)
_Item = TypeVar("_Item")


def parse_api_version(text: str) -> tuple[int, int]:
    """Parse "1.41" as (1, 41); BadResponse for anything else."""
    match = re.fullmatch(r"(\d{1,4})\.(\d{1,4})", text.strip())
    if match is None:
        raise BadResponse(f"not an API version: {text!r:.40}")
    return int(match.group(1)), int(match.group(2))


def negotiate_api_version(server: Version) -> str:
    """The API version to speak with `server` (see the module docstring); ApiVersionError if there is none."""
    server_newest = parse_api_version(server.api_version)
    chosen = min(server_newest, NEWEST_KNOWN_API_VERSION)
    if server.min_api_version:
        chosen = max(chosen, parse_api_version(server.min_api_version))
    if chosen > NEWEST_KNOWN_API_VERSION:
        raise ApiVersionError(
            f"the daemon needs API >= {server.min_api_version}, dmnc knows up to "
            f"{'.'.join(map(str, NEWEST_KNOWN_API_VERSION))}: upgrade dmnc"
        )
    if chosen < OLDEST_SUPPORTED_API_VERSION:
        raise ApiVersionError(
            f"the daemon speaks API {server.api_version}, dmnc needs >= "
            f"{'.'.join(map(str, OLDEST_SUPPORTED_API_VERSION))}: upgrade the container engine"
        )
    return f"{chosen[0]}.{chosen[1]}"


@dataclass(frozen=True)
class ContainerSpec:
    """What `create_container` makes: the subset of the Engine API's container config dmnc uses.

    `devices` are host device paths given to the container at the same path (e.g. /dev/net/tun).
    `restart_policy` is an Engine API restart policy name ("no", "always", "unless-stopped", "on-failure").
    """

    image: str
    command: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None
    cap_add: Sequence[str] = ()
    devices: Sequence[str] = ()
    binds: Sequence[str] = ()
    privileged: bool = False
    pid_mode: str | None = None
    auto_remove: bool = False
    tty: bool = False
    open_stdin: bool = False
    restart_policy: str | None = None

    def to_json(self) -> dict[str, object]:
        host_config: dict[str, object] = {
            "CapAdd": list(self.cap_add),
            "Privileged": self.privileged,
            "AutoRemove": self.auto_remove,
            "Binds": list(self.binds),
            "Devices": [
                {"PathOnHost": path, "PathInContainer": path, "CgroupPermissions": "rwm"} for path in self.devices
            ],
        }
        if self.network_mode is not None:
            host_config["NetworkMode"] = self.network_mode
        if self.pid_mode is not None:
            host_config["PidMode"] = self.pid_mode
        if self.restart_policy is not None:
            host_config["RestartPolicy"] = {"Name": self.restart_policy}
        body: dict[str, object] = {
            "Image": self.image,
            "Env": [f"{key}={value}" for key, value in self.env.items()],
            "Labels": dict(self.labels),
            "Tty": self.tty,
            "OpenStdin": self.open_stdin,
            "StdinOnce": self.open_stdin,
            "AttachStdin": self.open_stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "HostConfig": host_config,
        }
        if self.command is not None:
            body["Cmd"] = list(self.command)
        if self.entrypoint is not None:
            body["Entrypoint"] = list(self.entrypoint)
        return body


@dataclass(frozen=True)
class ContainerRun:
    """Outcome of `run_container`: exit code and stdout and stderr kept apart, each its last MAX_RUN_OUTPUT_BYTES."""

    container_id: str
    exit_code: int
    stdout: bytes
    stderr: bytes


class _Body:
    """Reads a streamed response body chunk by chunk, translating transport errors."""

    def __init__(self, response: httpx.Response, endpoint: str, idle_timeout: float | None) -> None:
        # httpx implements aiter_raw as an async generator; typing it so lets `close` finalize it deterministically
        # (trio warns about, and may never run, generators left to the garbage collector).
        self._chunks = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
        self._endpoint = endpoint
        self._idle_timeout = math.inf if idle_timeout is None else idle_timeout

    async def read(self) -> bytes | None:
        """The next chunk, or None at the end of the body."""
        with map_exceptions(self._endpoint), trio.fail_after(self._idle_timeout):
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                return None

    async def close(self) -> None:
        await self._chunks.aclose()


class _DecodedBody(Generic[_Item]):
    """Items decoded from one streamed response body, handed out one at a time (the async iterator protocol)."""

    def __init__(self, body: _Body) -> None:
        self._body = body
        self._pending: collections.deque[_Item] = collections.deque()
        self._ended = False

    def _decode(self, chunk: bytes | None) -> list[_Item]:
        """The items `chunk` completes; `chunk` None means the body ended."""
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def _next_item(self) -> _Item:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            chunk = await self._body.read()
            self._ended = chunk is None
            self._pending.extend(self._decode(chunk))
        return self._pending.popleft()


class EventStream(_DecodedBody[Event]):
    """Async iterator of `Event`s from one `GET /events` response. See `dmnc.docker.events` for `since`."""

    def __init__(self, body: _Body) -> None:
        super().__init__(body)
        self._decoder = EventDecoder()

    @property
    def last_time_nano(self) -> int:
        """timeNano of the newest event received (0 before the first): pass it as `since` when reconnecting."""
        return self._decoder.last_time_nano

    @property
    def skipped(self) -> int:
        """Lines dropped as garbage so far."""
        return self._decoder.skipped

    def _decode(self, chunk: bytes | None) -> list[Event]:
        return self._decoder.finish() if chunk is None else self._decoder.feed(chunk)

    async def __anext__(self) -> Event:
        return await self._next_item()


class OutputStream(_DecodedBody[OutputChunk]):
    """Async iterator of `OutputChunk`s of a container's logs, stdout and stderr kept apart.

    A TTY container has one raw stream (reported as stdout); otherwise the body is demultiplexed.
    """

    def __init__(self, body: _Body, *, multiplexed: bool, endpoint: str) -> None:
        super().__init__(body)
        self._demuxer = FrameDemuxer() if multiplexed else None
        self._endpoint = endpoint

    def _decode(self, chunk: bytes | None) -> list[OutputChunk]:
        if self._demuxer is None:
            return [] if chunk is None else [OutputChunk(StreamKind.STDOUT, chunk)]
        if chunk is None:
            with map_exceptions(self._endpoint):
                self._demuxer.finish()
            return []
        return self._demuxer.feed(chunk)

    async def __anext__(self) -> OutputChunk:
        return await self._next_item()


class ProgressStream(_DecodedBody[ProgressMessage]):
    """Async iterator of `ProgressMessage`s of an image pull or build.

    A message carrying an error raises `OperationFailed` (after the earlier messages were delivered). After a build,
    `image_id` holds the ID the daemon reported (aux message or "Successfully built"), if it reported one.
    """

    def __init__(self, body: _Body, endpoint: str) -> None:
        super().__init__(body)
        self._endpoint = endpoint
        self._decoder = ProgressDecoder()
        self.image_id: str | None = None

    def _decode(self, chunk: bytes | None) -> list[ProgressMessage]:
        return self._decoder.finish() if chunk is None else self._decoder.feed(chunk)

    async def __anext__(self) -> ProgressMessage:
        message = await self._next_item()
        if message.error:
            raise OperationFailed(message.error, endpoint=self._endpoint)
        self._remember_image_id(message)
        return message

    def _remember_image_id(self, message: ProgressMessage) -> None:
        aux_id = message.aux.get("ID")
        if isinstance(aux_id, str):
            self.image_id = aux_id
        built = re.match(r"Successfully built ([0-9a-f]{12,64})\s*$", message.stream)
        if built is not None and self.image_id is None:
            self.image_id = built.group(1)

    async def drain(self) -> str | None:
        """Consume the rest of the stream (raising OperationFailed if it fails); return `image_id`."""
        async for _message in self:
            pass
        return self.image_id


class DockerClient:
    """A connected Engine API client; create it with `DockerClient.connect(...)` (see the module docstring)."""

    def __init__(self, http: httpx.AsyncClient, address: DaemonAddress, request_timeout: float) -> None:
        """Use `connect`: a client is only usable once `_negotiate` has read the daemon's version."""
        self._http = http
        self.address = address
        self.request_timeout = request_timeout
        self.server_version = Version(version="", api_version="")
        """The daemon's `GET /version`, as read when connecting."""
        self.api_version = ""
        """The negotiated API version ("1.41"); every versioned path starts with /v<api_version>."""
        self.malformed_networks = 0
        """Networks `list_networks` skipped because the daemon described them wrongly."""

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, address: str | DaemonAddress, *, request_timeout: float = DEFAULT_TIMEOUT_S
    ) -> AsyncIterator[DockerClient]:
        """Connect to the daemon at `address` and negotiate the API version (one `GET /version`).

        `request_timeout` bounds every plain request, and the wait for a stream's response headers."""
        daemon = address if isinstance(address, DaemonAddress) else DaemonAddress.parse(address)
        async with httpx.AsyncClient(
            transport=daemon.http_transport(), base_url=daemon.base_url, timeout=request_timeout
        ) as http:
            client = cls(http, daemon, request_timeout)
            await client._negotiate()
            yield client

    # --- system -----------------------------------------------------------------------------------------------

    async def ping(self) -> str:
        """`GET /_ping`: "OK" from a healthy daemon."""
        response = await self._request("GET", "/_ping", versioned=False)
        return response.text

    async def version(self) -> Version:
        return Version.from_json_untrusted(await self._get_json("/version"))

    async def info(self) -> Info:
        return Info.from_json_untrusted(await self._get_json("/info"))

    # --- networks ---------------------------------------------------------------------------------------------

    async def list_networks(self, filters: EventFilters | None = None) -> list[Network]:
        params = {"filters": encode_filters(filters)} if filters else None
        values = json_list_untrusted(await self._get_json("/networks", params=params), "networks")
        networks: list[Network] = []
        for value in values:
            try:
                networks.append(Network.from_json_untrusted(value))
            except BadResponse as error:
                # One network the daemon describes wrongly (no Id, a Name that is not a string) must not hide the
                # others: it is skipped, counted and logged.
                self.malformed_networks += 1
                logger.warning("skipped a network the daemon listed: %s", error)
        return networks

    async def inspect_network(self, network: str) -> Network:
        return Network.from_json_untrusted(await self._get_json(f"/networks/{_segment(network)}"))

    async def create_network(
        self,
        name: str,
        *,
        driver: str = "bridge",
        internal: bool = False,
        enable_ipv6: bool = False,
        subnets: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Create a network; return its ID."""
        body: dict[str, object] = {
            "Name": name,
            "Driver": driver,
            "Internal": internal,
            "EnableIPv6": enable_ipv6,
            "Labels": dict(labels or {}),
            "CheckDuplicate": True,
        }
        if subnets:
            body["IPAM"] = {"Driver": "default", "Config": [{"Subnet": subnet} for subnet in subnets]}
        response = await self._request("POST", "/networks/create", json_body=body)
        return _json_field_str(response, "Id", "POST /networks/create")

    async def remove_network(self, network: str) -> None:
        await self._request("DELETE", f"/networks/{_segment(network)}")

    @asynccontextmanager
    async def events(
        self, filters: EventFilters | None = None, *, since: int | None = None, idle_timeout: float | None = None
    ) -> AsyncIterator[EventStream]:
        """Stream events (optionally filtered), starting at `since` (nanoseconds since the epoch) if given.

        Podman 4.3 emits no network events at all (container events only): with Podman, network changes are seen
        only by listing networks again."""
        params: dict[str, str] = {}
        if filters:
            params["filters"] = encode_filters(filters)
        if since is not None:
            params["since"] = format_since(since)
        async with self._stream("GET", "/events", params=params, idle_timeout=idle_timeout) as body:
            yield EventStream(body)

    # --- images -----------------------------------------------------------------------------------------------

    async def inspect_image(self, image: str) -> ImageInfo:
        return ImageInfo.from_json_untrusted(await self._get_json(f"/images/{_segment(image)}/json"))

    async def list_images(self, reference: str) -> list[ImageInfo]:
        """Images with a tag matching `reference` (a repository name matches all its tags), `GET /images/json`."""
        path = "/images/json"
        value = await self._get_json(path, params={"filters": encode_filters({"reference": [reference]})})
        if not isinstance(value, list):
            raise BadResponse("the image list is not a JSON array", endpoint=f"GET {path}")
        # A summary, not an inspect answer: `Created` is a number here and there is no `Config`.
        summaries = [JsonFields(item, "image summary") for item in value]
        return [ImageInfo(id=item.required_str("Id"), repo_tags=item.string_list("RepoTags")) for item in summaries]

    async def remove_image(self, image: str, *, force: bool = False) -> None:
        """`DELETE /images/{name}`: untag, and delete once no tag is left."""
        await self._request("DELETE", f"/images/{_segment(image)}", params={"force": "1" if force else "0"})

    @asynccontextmanager
    async def pull_image(self, reference: str, *, idle_timeout: float | None = None) -> AsyncIterator[ProgressStream]:
        """Pull `reference` ("name[:tag]"; no tag means "latest") with streamed progress."""
        name, tag = _split_reference(reference)
        endpoint = "POST /images/create"
        params = {"fromImage": name, "tag": tag}
        async with self._stream("POST", "/images/create", params=params, idle_timeout=idle_timeout) as body:
            yield ProgressStream(body, endpoint)

    @asynccontextmanager
    async def build_image(
        self,
        context_tar: bytes,
        tag: str,
        *,
        dockerfile: str = "Dockerfile",
        labels: Mapping[str, str] | None = None,
        build_args: Mapping[str, str] | None = None,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[ProgressStream]:
        """Build an image from an in-memory tar build context (see `dmnc.docker.buildcontext`), output streamed."""
        params = {
            "t": tag,
            "dockerfile": dockerfile,
            "rm": "1",
            "forcerm": "1",
            "labels": json.dumps(dict(labels or {})),
            "buildargs": json.dumps(dict(build_args or {})),
        }
        async with self._stream(
            "POST",
            "/build",
            params=params,
            content=context_tar,
            headers={"Content-Type": "application/x-tar"},
            idle_timeout=idle_timeout,
        ) as body:
            yield ProgressStream(body, "POST /build")

    # --- containers -------------------------------------------------------------------------------------------

    async def create_container(self, spec: ContainerSpec, *, name: str | None = None) -> CreatedContainer:
        params = {"name": name} if name else None
        response = await self._request("POST", "/containers/create", params=params, json_body=spec.to_json())
        return CreatedContainer.from_json_untrusted(_decode_json(response, "POST /containers/create"))

    async def start_container(self, container: str) -> None:
        await self._request("POST", f"/containers/{_segment(container)}/start")

    async def wait_container(self, container: str) -> WaitResult:
        """Block until the container is not running (at once if it already stopped). No time limit of its own: a
        caller that must not wait forever wraps it in `trio.fail_after`/`move_on_after`."""
        path = f"/containers/{_segment(container)}/wait"
        response = await self._request("POST", path, params={"condition": "not-running"}, request_timeout=math.inf)
        return WaitResult.from_json_untrusted(_decode_json(response, f"POST {path}"))

    async def list_containers(self) -> list[ContainerSummary]:
        """The running containers (`GET /containers/json` without `all`), with their addresses per network."""
        values = json_list_untrusted(await self._get_json("/containers/json"), "containers")
        return [ContainerSummary.from_json_untrusted(value) for value in values]

    async def inspect_container(self, container: str) -> ContainerInfo:
        return ContainerInfo.from_json_untrusted(await self._get_json(f"/containers/{_segment(container)}/json"))

    async def remove_container(self, container: str, *, force: bool = False) -> None:
        params = {"force": "1" if force else "0", "v": "1"}
        await self._request("DELETE", f"/containers/{_segment(container)}", params=params)

    @asynccontextmanager
    async def container_logs(
        self,
        container: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        tty: bool | None = None,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[OutputStream]:
        """The container's output so far (and, with `follow`, until it stops). `tty` says whether the container has
        a TTY (one raw stream); None looks it up."""
        if tty is None:
            tty = (await self.inspect_container(container)).tty
        path = f"/containers/{_segment(container)}/logs"
        params = {"stdout": _flag(stdout), "stderr": _flag(stderr), "follow": _flag(follow)}
        async with self._stream("GET", path, params=params, idle_timeout=idle_timeout) as body:
            yield OutputStream(body, multiplexed=not tty, endpoint=f"GET {path}")

    async def run_container(self, spec: ContainerSpec, *, name: str | None = None) -> ContainerRun:
        """Create and start a container, wait for it to exit, collect stdout and stderr apart (the last
        MAX_RUN_OUTPUT_BYTES of each), and remove it, also when something failed or the caller was cancelled (limit
        the run with `trio.fail_after` around the call)."""
        # The daemon's auto-remove would delete the container, and its logs, before they are read; this removes it.
        created = await self.create_container(dataclasses.replace(spec, auto_remove=False), name=name)
        try:
            await self.start_container(created.id)
            result = await self.wait_container(created.id)
            stdout = OutputTail(MAX_RUN_OUTPUT_BYTES)
            stderr = OutputTail(MAX_RUN_OUTPUT_BYTES)
            async with self.container_logs(created.id, tty=spec.tty) as output:
                async for chunk in output:
                    if chunk.stream == StreamKind.STDERR:
                        stderr.append(chunk.data)
                    elif chunk.stream == StreamKind.STDOUT:
                        stdout.append(chunk.data)
            return ContainerRun(created.id, result.status_code, bytes(stdout), bytes(stderr))
        finally:
            with trio.CancelScope(shield=True):
                await self._remove_quietly(created.id)

    @asynccontextmanager
    async def attach_websocket(
        self, container: str, *, stdin: bool = False, logs: bool = False
    ) -> AsyncIterator[AttachSession]:
        """Attach to the container's output (and stdin) over a websocket. Attach before `start_container` to see all
        output; the session ends when the container stops. Output arrives as bytes, stdout and stderr merged."""
        query = urllib.parse.urlencode(
            {"stream": "1", "stdout": "1", "stderr": "1", "stdin": _flag(stdin), "logs": _flag(logs)}
        )
        resource = f"/v{self.api_version}/containers/{_segment(container)}/attach/ws?{query}"
        async with open_attach_session(self.address, resource, handshake_timeout=self.request_timeout) as session:
            yield session

    # --- plumbing ---------------------------------------------------------------------------------------------

    async def _negotiate(self) -> None:
        # Unversioned: /version answers whatever API version the daemon speaks, which is what we need to learn.
        self.server_version = Version.from_json_untrusted(await self._get_json("/version", versioned=False))
        self.api_version = negotiate_api_version(self.server_version)

    async def _remove_quietly(self, container_id: str) -> None:
        try:
            await self.remove_container(container_id, force=True)
        except DockerError:
            # Cleanup after a failure: the original error matters more; a leftover container is reported by status.
            return

    def _url(self, path: str, versioned: bool) -> str:
        return f"/v{self.api_version}{path}" if versioned else path

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: object = None,
        versioned: bool = True,
        request_timeout: float | None = None,
    ) -> _Reply:
        endpoint = f"{method} {path}"
        limit = self.request_timeout if request_timeout is None else request_timeout
        content = None if json_body is None else json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        read_timeout = None if math.isinf(limit) else limit
        request = self._http.build_request(
            method,
            self._url(path, versioned),
            params=params,
            content=content,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT_S),
        )
        with map_exceptions(endpoint), trio.fail_after(limit):
            response = await self._http.send(request, stream=True)
            try:
                reply = _Reply(response.status_code, response.reason_phrase, await _read_capped(response, endpoint))
            finally:
                with trio.CancelScope(shield=True):
                    await _close_quietly(response.aclose())
        if reply.status_code >= 400:
            raise _api_error(reply, endpoint)
        return reply

    async def _get_json(self, path: str, *, params: Mapping[str, str] | None = None, versioned: bool = True) -> object:
        response = await self._request("GET", path, params=params, versioned=versioned)
        return _decode_json(response, f"GET {path}")

    @asynccontextmanager
    async def _stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[_Body]:
        endpoint = f"{method} {path}"
        request = self._http.build_request(
            method,
            self._url(path, versioned=True),
            params=params,
            content=content,
            headers=headers,
            # Per-read limits are enforced by _Body (idle_timeout); the headers must come within request_timeout.
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
        )
        with map_exceptions(endpoint), trio.fail_after(self.request_timeout):
            response = await self._http.send(request, stream=True)
        body: _Body | None = None
        try:
            if response.status_code >= 400:
                with map_exceptions(endpoint), trio.fail_after(self.request_timeout):
                    error_body = await _read_capped(response, endpoint)
                raise _api_error(_Reply(response.status_code, response.reason_phrase, error_body), endpoint)
            body = _Body(response, endpoint, idle_timeout)
            yield body
        finally:
            # Shielded so a cancelled watcher still releases the connection; bounded so a dead daemon cannot hang it.
            with trio.CancelScope(shield=True), trio.move_on_after(CONNECT_TIMEOUT_S):
                if body is not None:
                    await _close_quietly(body.close())
                await _close_quietly(response.aclose())


@dataclass(frozen=True)
class _Reply:
    """A complete (size-capped) answer to a plain request."""

    status_code: int
    reason_phrase: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


async def _read_capped(response: httpx.Response, endpoint: str) -> bytes:
    """The whole body of a plain answer; BadResponse past MAX_RESPONSE_BYTES instead of unbounded memory."""
    body = bytearray()
    # httpx implements aiter_raw as an async generator; aclosing finalizes it even when we stop early.
    async with contextlib.aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_raw())) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise BadResponse(f"answer larger than {MAX_RESPONSE_BYTES} bytes", endpoint=endpoint)
    return bytes(body)


async def _close_quietly(closing: Awaitable[None]) -> None:
    try:
        await closing
    except (httpx.TransportError, OSError, trio.BrokenResourceError):
        # Closing only drops the connection; an error doing so must not mask the error that ended the stream.
        return


def _segment(value: str) -> str:
    """One URL path segment: names and IDs from callers never change the path's shape."""
    return urllib.parse.quote(value, safe="")


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _split_reference(reference: str) -> tuple[str, str]:
    """ "repo/name:tag" -> ("repo/name", "tag"); a ':' before the last '/' belongs to a registry port."""
    name, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return reference, "latest"
    return name, tag


def _decode_json(response: _Reply, endpoint: str) -> object:
    try:
        return loads_untrusted(response.content)
    except JsonTooDeep as error:
        raise BadResponse(f"response is not usable JSON: {error}", endpoint=endpoint) from error
    except ValueError as error:
        raise BadResponse(f"response is not JSON: {response.text[:80]!r}", endpoint=endpoint) from error


def _json_field_str(response: _Reply, key: str, endpoint: str) -> str:
    value = _decode_json(response, endpoint)
    if not isinstance(value, dict) or not isinstance(value.get(key), str):
        raise BadResponse(f"no {key!r} string in the response", endpoint=endpoint)
    result: str = value[key]
    return result


def _api_error(response: _Reply, endpoint: str) -> ApiError:
    """The typed error for an error status; the daemon's JSON `message` if it sent one, else the body or reason."""
    message = ""
    body: object
    try:
        body = loads_untrusted(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    if not message:
        message = response.text.strip()[:ERROR_BODY_PREVIEW_CHARS] or response.reason_phrase or "error"
    status = response.status_code
    if status == 400 and _VERSION_ERROR.search(message):
        return ApiVersionError(message, endpoint=endpoint, status=status)
    if status == 404:
        return NotFound(message, endpoint=endpoint, status=status)
    if status == 409:
        return Conflict(message, endpoint=endpoint, status=status)
    return ApiError(message, endpoint=endpoint, status=status)
