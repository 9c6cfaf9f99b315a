"""Error paths against a scripted broken daemon: each failure is the documented typed error, within a time limit.

`GUARD_S` only keeps a regression from hanging the suite: the client's own limits (request_timeout) are what fire.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import trio

from dmnc.docker import client as client_module
from dmnc.docker.client import DockerClient
from dmnc.docker.errors import (
    ApiError,
    ApiVersionError,
    BadResponse,
    ConnectionLost,
    DaemonTimeout,
    DaemonUnavailable,
    NotFound,
    OperationFailed,
)
from tests.fakes.docker_daemon import (
    Request,
    chunk,
    chunked_head,
    fake_daemon,
    hang,
    json_response,
    reply,
    response,
)

GUARD_S = 10.0
SHORT_TIMEOUT_S = 0.5


def event(action: str, time_nano: int) -> bytes:
    payload = {"Type": "network", "Action": action, "Actor": {"ID": "n1"}, "timeNano": time_nano}
    return json.dumps(payload).encode() + b"\n"


async def collect_event_actions(docker: DockerClient, into: list[str], idle_timeout: float | None = None) -> None:
    async with docker.events(idle_timeout=idle_timeout) as stream:
        async for item in stream:
            into.append(item.action)


async def collect_build_output(docker: DockerClient, into: list[str]) -> None:
    async with docker.build_image(b"", "x:1") as progress:
        async for message in progress:
            into.append(message.stream)


async def test_version_refused_by_the_daemon_is_an_api_version_error() -> None:
    too_new = json_response(400, {"message": "client version 1.41 is too new. Maximum supported API version is 1.40"})
    async with fake_daemon({"/info": reply(too_new)}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(ApiVersionError) as raised:
            await docker.info()
    assert raised.value.status == 400
    assert raised.value.endpoint == "GET /info"
    assert "too new" in raised.value.message


async def test_daemon_newer_than_dmnc_is_spoken_to_in_dmncs_newest_version() -> None:
    seen: list[str] = []

    async def info(request: Request, stream: trio.SocketStream) -> None:
        seen.append(request.path)
        await stream.send_all(json_response(200, {"ID": "x", "Name": "vm"}))

    newer = {"Version": "29.0.0", "ApiVersion": "1.52", "MinAPIVersion": "1.44"}
    routes = {"/version": reply(json_response(200, newer)), "/info": info}
    async with fake_daemon(routes) as url, DockerClient.connect(url) as docker:
        assert docker.api_version == "1.51"
        assert (await docker.info()).name == "vm"
    assert seen == ["/info"]


async def test_404_is_not_found_with_the_daemons_message() -> None:
    missing = json_response(404, {"message": "network dmnc-x not found"})
    async with fake_daemon({"/networks/dmnc-x": reply(missing)}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(NotFound, match="network dmnc-x not found") as raised:
            await docker.inspect_network("dmnc-x")
    assert (raised.value.status, raised.value.endpoint) == (404, "GET /networks/dmnc-x")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"message": "driver failed programming external connectivity"}', "application/json", "driver failed"),
        (b"plain text panic: runtime error", "text/plain", "plain text panic: runtime error"),
        (b"", "text/plain", "Internal Server Error"),
        (b'{"cause": "x"}', "application/json", '{"cause": "x"}'),
    ],
)
async def test_500_is_an_api_error_with_or_without_json_body(body: bytes, content_type: str, message: str) -> None:
    failing = response(500, body, content_type=content_type, reason="Internal Server Error")
    async with fake_daemon({"/networks": reply(failing)}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(ApiError) as raised:
            await docker.list_networks()
    assert type(raised.value) is ApiError
    assert raised.value.status == 500
    assert message in raised.value.message


async def test_error_status_on_a_stream_is_a_typed_error_too() -> None:
    failing = json_response(500, {"message": "events backend broken"})
    async with fake_daemon({"/events": reply(failing)}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(ApiError, match="events backend broken"):
            async with docker.events():
                pass


async def test_malformed_json_body_is_a_bad_response() -> None:
    async with fake_daemon({"/networks": reply(response(200, b"[{"))}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(BadResponse, match="not JSON"):
            await docker.list_networks()


@pytest.mark.parametrize("status", [200, 500])
async def test_json_nested_deeper_than_the_recursion_limit_is_a_bad_response_or_api_error(status: int) -> None:
    # An impostor's list answer (or error body) nested 100 000 levels deep: json.loads alone raises RecursionError.
    hostile = response(status, b"[" * 100_000 + b"]" * 100_000)
    async with fake_daemon({"/networks": reply(hostile)}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(BadResponse if status == 200 else ApiError) as raised:
            await docker.list_networks()
    assert raised.value.endpoint == "GET /networks"
    if status == 200:
        assert "nested deeper than" in raised.value.message


async def test_run_container_keeps_only_the_tail_of_endless_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_RUN_OUTPUT_BYTES", 1000)
    noise = b"x" * 4000 + b"\nthe verdict\n"

    async def logs(_request: Request, stream: trio.SocketStream) -> None:
        # A TTY container's logs are one raw stream: 50 pieces of noise, then the last line.
        await stream.send_all(chunked_head("application/vnd.docker.raw-stream"))
        for _ in range(50):
            await stream.send_all(chunk(noise))
        await stream.send_all(chunk(b""))

    routes = {
        "/containers/create": reply(json_response(201, {"Id": "c1", "Warnings": []})),
        "/containers/c1/start": reply(response(204)),
        "/containers/c1/wait": reply(json_response(200, {"StatusCode": 0})),
        "/containers/c1/logs": logs,
        "/containers/c1": reply(response(204)),
    }
    async with fake_daemon(routes) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S):
            run = await docker.run_container(client_module.ContainerSpec(image="busybox", tty=True))
    assert run.exit_code == 0
    assert run.stdout == (noise * 50)[-1000:]
    assert run.stdout.endswith(b"\nthe verdict\n")


async def test_json_of_the_wrong_shape_is_a_bad_response() -> None:
    wrong = json_response(200, {"Name": "bridge", "Id": 7})
    async with fake_daemon({"/networks/bridge": reply(wrong)}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(BadResponse, match="'Id'"):
            await docker.inspect_network("bridge")


async def test_one_network_of_the_wrong_shape_is_skipped_and_counted_not_the_whole_list() -> None:
    good = {"Name": "bridge", "Id": "b1", "Driver": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}}
    bad_subnet = {"Name": "odd", "Id": "o1", "IPAM": {"Config": [{"Subnet": "10.0.0.0/33"}]}}
    listed = json_response(200, [{"Name": "broken", "Id": 7}, good, bad_subnet])
    async with fake_daemon({"/networks": reply(listed)}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S):
            networks = await docker.list_networks()
        assert docker.malformed_networks == 1
    # The one without a usable Id is dropped; the one with a malformed subnet is kept for the policy to skip.
    assert [(network.name, network.malformed is None) for network in networks] == [("bridge", True), ("odd", False)]


async def test_a_server_that_does_not_speak_http_is_a_bad_response() -> None:
    async with fake_daemon({"/version": reply(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")}) as url:
        with trio.fail_after(GUARD_S), pytest.raises(BadResponse, match="malformed HTTP"):
            async with DockerClient.connect(url):
                pass


async def test_truncated_chunked_stream_is_connection_lost_after_the_complete_events() -> None:
    async def events(_request: Request, stream: trio.SocketStream) -> None:
        await stream.send_all(chunked_head() + chunk(event("create", 1)) + b"40\r\n" + event("destroy", 2)[:10])
        await stream.aclose()

    async with fake_daemon({"/events": events}) as url, DockerClient.connect(url) as docker:
        received: list[str] = []
        with trio.fail_after(GUARD_S), pytest.raises(ConnectionLost):
            await collect_event_actions(docker, received)
    assert received == ["create"]


async def test_garbage_event_lines_are_skipped_and_counted() -> None:
    async def events(_request: Request, stream: trio.SocketStream) -> None:
        created = event("create", 1)
        await stream.send_all(chunked_head() + chunk(created[:7]) + chunk(created[7:] + b"%%% garbage\n"))
        await stream.send_all(chunk(b'{"unknown": true, "Action": 5}\n' + event("destroy", 2)) + b"0\r\n\r\n")

    async with fake_daemon({"/events": events}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S):
            async with docker.events(filters={"type": ["network"]}) as stream:
                actions = [item.action async for item in stream]
    assert actions == ["create", "destroy"]
    assert stream.skipped == 2
    assert stream.last_time_nano == 2


async def test_events_request_carries_filters_and_since() -> None:
    queries: list[str] = []

    async def events(request: Request, stream: trio.SocketStream) -> None:
        queries.append(request.query)
        await stream.send_all(chunked_head() + b"0\r\n\r\n")

    async with (
        fake_daemon({"/events": events}) as url,
        DockerClient.connect(url) as docker,
        docker.events(filters={"type": ["network"]}, since=1_500_000_000_123_456_789) as stream,
    ):
        assert [item async for item in stream] == []
    assert "since=1500000000.123456789" in queries[0]
    assert "filters=%7B%22type%22%3A%5B%22network%22%5D%7D" in queries[0]


async def test_socket_that_accepts_and_never_answers_is_a_timeout() -> None:
    async with fake_daemon({"/version": hang}) as url:
        with trio.fail_after(GUARD_S), pytest.raises(DaemonTimeout) as raised:
            async with DockerClient.connect(url, request_timeout=SHORT_TIMEOUT_S):
                pass
    assert raised.value.endpoint == "GET /version"


async def test_stream_whose_headers_never_come_is_a_timeout() -> None:
    async with (
        fake_daemon({"/events": hang}) as url,
        DockerClient.connect(url, request_timeout=SHORT_TIMEOUT_S) as docker,
    ):
        with trio.fail_after(GUARD_S), pytest.raises(DaemonTimeout):
            await collect_event_actions(docker, [])


async def test_silent_stream_with_idle_timeout_is_a_timeout() -> None:
    async def events(_request: Request, stream: trio.SocketStream) -> None:
        await stream.send_all(chunked_head())
        await trio.sleep_forever()

    async with fake_daemon({"/events": events}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(DaemonTimeout):
            await collect_event_actions(docker, [], idle_timeout=SHORT_TIMEOUT_S)


async def test_missing_socket_is_daemon_unavailable(tmp_path: Path) -> None:
    with trio.fail_after(GUARD_S), pytest.raises(DaemonUnavailable, match="No such file") as raised:
        async with DockerClient.connect(f"unix://{tmp_path}/docker.sock"):
            pass
    assert not isinstance(raised.value, ConnectionLost)


async def test_socket_file_without_listener_is_daemon_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    stale = trio.socket.socket(trio.socket.AF_UNIX)
    await stale.bind(str(path))
    stale.close()
    with trio.fail_after(GUARD_S), pytest.raises(DaemonUnavailable, match="refused"):
        async with DockerClient.connect(f"unix://{path}"):
            pass


async def test_connection_closed_before_any_response_is_connection_lost() -> None:
    async def close(_request: Request, stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with fake_daemon({"/info": close}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(ConnectionLost):
            await docker.info()


async def test_build_error_in_the_progress_stream_is_operation_failed() -> None:
    async def build(_request: Request, stream: trio.SocketStream) -> None:
        lines = b'{"stream":"Step 1/1 : FROM nothing\\n"}\r\n{"errorDetail":{"message":"pull access denied"}}\r\n'
        await stream.send_all(chunked_head() + chunk(lines) + b"0\r\n\r\n")

    async with fake_daemon({"/build": build}) as url, DockerClient.connect(url) as docker:
        seen: list[str] = []
        with trio.fail_after(GUARD_S), pytest.raises(OperationFailed, match="pull access denied"):
            await collect_build_output(docker, seen)
    assert seen == ["Step 1/1 : FROM nothing\n"]


async def test_pull_progress_is_streamed_message_by_message() -> None:
    queries: list[str] = []

    async def pull(request: Request, stream: trio.SocketStream) -> None:
        queries.append(request.query)
        lines = [
            {"status": "Pulling from library/alpine", "id": "3.20"},
            {"status": "Downloading", "progressDetail": {"current": 1, "total": 2}, "progress": "[=> ]", "id": "a1"},
            {"status": "Digest: sha256:0123"},
            {"status": "Status: Downloaded newer image for alpine:3.20"},
        ]
        body = b"".join(json.dumps(line).encode() + b"\r\n" for line in lines)
        await stream.send_all(chunked_head() + chunk(body[:50]) + chunk(body[50:]) + b"0\r\n\r\n")

    async with fake_daemon({"/images/create": pull}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S):
            async with docker.pull_image("registry.local:5000/library/alpine:3.20") as progress:
                messages = [message async for message in progress]
    assert [message.status for message in messages][-1] == "Status: Downloaded newer image for alpine:3.20"
    assert messages[1].progress == "[=> ]"
    assert "fromImage=registry.local%3A5000%2Flibrary%2Falpine" in queries[0]
    assert "tag=3.20" in queries[0]


async def test_endless_plain_answer_is_a_bad_response_not_unbounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_RESPONSE_BYTES", 1 << 20)

    async def endless(_request: Request, stream: trio.SocketStream) -> None:
        await stream.send_all(chunked_head() + chunk(b"["))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await stream.send_all(chunk(b'{"Name": "n", "Id": "x"},' * 2000))

    async with fake_daemon({"/networks": endless}) as url, DockerClient.connect(url) as docker:
        with trio.fail_after(GUARD_S), pytest.raises(BadResponse, match="larger than 1048576 bytes"):
            await docker.list_networks()
