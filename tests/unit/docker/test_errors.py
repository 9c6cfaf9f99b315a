"""Translation of transport exceptions into dmnc's typed Docker errors, and how they read."""

from __future__ import annotations

import errno

import httpx
import pytest
import trio

from dmnc.docker.errors import (
    BadResponse,
    ConnectionLost,
    DaemonTimeout,
    DaemonUnavailable,
    DiscoveryAttempt,
    DiscoveryError,
    DockerError,
    NotFound,
    map_exceptions,
)


def raise_chained(outer: Exception, cause: BaseException) -> None:
    raise outer from cause


def test_permission_denied_on_the_socket_says_so() -> None:
    denied = PermissionError(errno.EACCES, "Permission denied")
    expected = pytest.raises(DaemonUnavailable, match=r"Permission denied \(EACCES\)")
    with expected as raised, map_exceptions("GET /version"):
        raise_chained(httpx.ConnectError("connect failed"), denied)
    assert raised.value.endpoint == "GET /version"
    assert not isinstance(raised.value, ConnectionLost)


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (httpx.ReadTimeout("slow"), DaemonTimeout),
        (httpx.ConnectTimeout("slow"), DaemonTimeout),
        (trio.TooSlowError(), DaemonTimeout),
        (httpx.RemoteProtocolError("peer closed connection without sending complete message body"), ConnectionLost),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), ConnectionLost),
        (httpx.RemoteProtocolError("illegal chunk header"), BadResponse),
        (httpx.ReadError("reset"), ConnectionLost),
        (trio.BrokenResourceError(), ConnectionLost),
        (httpx.DecodingError("bad gzip"), BadResponse),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), DaemonUnavailable),
    ],
)
def test_transport_exceptions_become_typed_errors(exception: Exception, expected: type[DockerError]) -> None:
    with pytest.raises(expected) as raised, map_exceptions("GET /events"):
        raise exception
    assert raised.value.endpoint == "GET /events"
    assert raised.value.__cause__ is exception


def test_docker_errors_and_unrelated_exceptions_pass_through_unchanged() -> None:
    original = NotFound("no such network", endpoint="GET /networks/x", status=404)
    with pytest.raises(NotFound) as raised, map_exceptions("GET /networks/x"):
        raise original
    assert raised.value is original
    with pytest.raises(KeyError), map_exceptions("GET /x"):
        raise KeyError("a bug stays a bug")


def test_error_text_names_message_status_and_endpoint() -> None:
    assert str(NotFound("no such network", endpoint="GET /networks/x", status=404)) == (
        "no such network (HTTP 404, GET /networks/x)"
    )
    assert str(DockerError("plain")) == "plain"


def test_discovery_error_lists_every_attempt() -> None:
    error = DiscoveryError(
        (
            DiscoveryAttempt("DOCKER_HOST", "unix:///a.sock", "does not exist"),
            DiscoveryAttempt("OrbStack", "/h/.orbstack/run/docker.sock", "Connection refused"),
        )
    )
    assert str(error) == (
        "no Docker daemon found; tried DOCKER_HOST: unix:///a.sock: does not exist; "
        "OrbStack: /h/.orbstack/run/docker.sock: Connection refused"
    )
    assert isinstance(error, DaemonUnavailable)
