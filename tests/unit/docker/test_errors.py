"""Translation of transport exceptions into dmnc's typed Docker errors, and how they read."""

from __future__ import annotations

import errno

import h11
import httpcore
import httpx
import pytest
import trio
import trio_websocket

from dmnc.docker.attach import ATTACH_ERRORS
from dmnc.docker.errors import (
    TRANSPORT_ERRORS,
    ApiError,
    BadResponse,
    ConnectionLost,
    DaemonTimeout,
    DaemonUnavailable,
    DiscoveryAttempt,
    DiscoveryError,
    DockerError,
    NotFound,
    map_exceptions,
    translation_for,
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


def httpx_error_from_h11(message: str) -> httpx.RemoteProtocolError:
    """The chain httpx builds for an HTTP violation h11 found: httpx's error from httpcore's, which httpcore's pool
    re-raises `from None`, leaving h11's as its context only."""
    from_h11 = h11.RemoteProtocolError(message)
    from_httpcore = httpcore.RemoteProtocolError(from_h11)
    from_httpcore.__context__ = from_h11
    from_httpcore.__suppress_context__ = True
    error = httpx.RemoteProtocolError(message)
    error.__cause__ = from_httpcore
    return error


def httpx_error_from_httpcore(message: str) -> httpx.RemoteProtocolError:
    error = httpx.RemoteProtocolError(message)
    error.__cause__ = httpcore.RemoteProtocolError(message)
    return error


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (httpx.ReadTimeout("slow"), DaemonTimeout),
        (httpx.ConnectTimeout("slow"), DaemonTimeout),
        (trio.TooSlowError(), DaemonTimeout),
        (
            httpx_error_from_h11(
                "peer closed connection without sending complete message body (incomplete chunked read)"
            ),
            ConnectionLost,
        ),
        (httpx_error_from_httpcore("Server disconnected without sending a response."), ConnectionLost),
        (httpx_error_from_h11("illegal chunk header: bytearray(b'zz')"), BadResponse),
        (httpx.RemoteProtocolError("Invalid URL in location header"), BadResponse),
        (httpx.ReadError("reset"), ConnectionLost),
        (trio.BrokenResourceError(), ConnectionLost),
        (httpx.DecodingError("bad gzip"), BadResponse),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), DaemonUnavailable),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), DaemonUnavailable),
        (PermissionError(errno.EACCES, "Permission denied"), DaemonUnavailable),
    ],
)
def test_transport_exceptions_become_typed_errors(exception: Exception, expected: type[DockerError]) -> None:
    with pytest.raises(expected) as raised, map_exceptions("GET /events"):
        raise exception
    assert type(raised.value) is expected
    assert raised.value.endpoint == "GET /events"
    assert raised.value.__cause__ is exception


@pytest.mark.parametrize(
    ("os_error", "reason"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), r"No such file or directory \(ENOENT\)"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), r"Connection refused \(ECONNREFUSED\)"),
        (PermissionError(errno.EACCES, "Permission denied"), r"Permission denied \(EACCES\)"),
    ],
)
def test_socket_errors_say_which_by_errno_whether_raised_bare_or_under_httpx(os_error: OSError, reason: str) -> None:
    with pytest.raises(DaemonUnavailable, match=f"cannot use the Docker daemon socket: {reason}"), map_exceptions("a"):
        raise os_error
    with pytest.raises(DaemonUnavailable, match=f"cannot connect to the Docker daemon: {reason}"), map_exceptions("b"):
        raise_chained(httpx.ConnectError("connect failed"), os_error)


def every_subclass(base: type[Exception]) -> set[type[Exception]]:
    found: set[type[Exception]] = set()
    for subclass in base.__subclasses__():
        found |= {subclass} | every_subclass(subclass)
    return found


# Every exception httpx raises for a failed request, and what it becomes. A new httpx release that adds one fails
# test_every_httpx_request_error_maps_to_a_typed_error until it is placed here (and, if need be, in the table).
HTTPX_REQUEST_ERRORS: dict[type[Exception], type[DockerError]] = {
    httpx.TransportError: DaemonUnavailable,
    httpx.TimeoutException: DaemonTimeout,
    httpx.ConnectTimeout: DaemonTimeout,
    httpx.ReadTimeout: DaemonTimeout,
    httpx.WriteTimeout: DaemonTimeout,
    httpx.PoolTimeout: DaemonTimeout,
    httpx.NetworkError: DaemonUnavailable,
    httpx.ConnectError: DaemonUnavailable,
    httpx.ReadError: ConnectionLost,
    httpx.WriteError: ConnectionLost,
    httpx.CloseError: ConnectionLost,
    httpx.ProtocolError: DaemonUnavailable,
    httpx.LocalProtocolError: DaemonUnavailable,
    httpx.RemoteProtocolError: BadResponse,
    httpx.ProxyError: DaemonUnavailable,
    httpx.UnsupportedProtocol: DaemonUnavailable,
    httpx.DecodingError: BadResponse,
    httpx.TooManyRedirects: DaemonUnavailable,
}


def test_every_httpx_request_error_maps_to_a_typed_error() -> None:
    assert every_subclass(httpx.RequestError) == set(HTTPX_REQUEST_ERRORS)
    for exception_type, expected in HTTPX_REQUEST_ERRORS.items():
        with pytest.raises(DockerError) as raised, map_exceptions("GET /info"):
            raise exception_type("failed")
        assert type(raised.value) is expected, exception_type
        assert raised.value.endpoint == "GET /info"


def test_the_most_specific_entry_wins_whatever_the_table_order() -> None:
    assert translation_for(httpx.ReadTimeout) is TRANSPORT_ERRORS[httpx.TimeoutException]
    assert translation_for(ConnectionRefusedError) is TRANSPORT_ERRORS[OSError]
    assert translation_for(KeyError) is None
    ordered_backwards = dict(reversed(list(TRANSPORT_ERRORS.items())))
    assert translation_for(httpx.ConnectError, ordered_backwards) is TRANSPORT_ERRORS[httpx.ConnectError]


async def request_through_httpcore(received: list[bytes]) -> None:
    """One GET through the real httpx, httpcore and h11 stack, the daemon's side played by httpcore's mock backend."""
    transport = httpx.AsyncHTTPTransport()
    # httpx has no public way to give its pool a network backend; the mock one plays back `received`, no socket.
    transport._pool = httpcore.AsyncConnectionPool(network_backend=httpcore.AsyncMockBackend(received))
    async with httpx.AsyncClient(transport=transport, base_url="http://docker") as http:
        with map_exceptions("GET /events"):
            await http.get("/events")


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        ([], ConnectionLost),
        ([b"HTTP/1.1 200 OK\r\nContent-"], ConnectionLost),
        ([CHUNKED_HEAD, b'40\r\n{"Action"'], ConnectionLost),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n[]"], ConnectionLost),
        ([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], BadResponse),
        ([CHUNKED_HEAD, b"zz\r\n"], BadResponse),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"], BadResponse),
    ],
)
async def test_real_http_stack_tells_a_lost_connection_from_malformed_http(
    received: list[bytes], expected: type[DockerError]
) -> None:
    """Exercises the exception chains httpx, httpcore and h11 really build, and h11's real wording for a close."""
    with pytest.raises(expected) as raised:
        await request_through_httpcore(received)
    assert type(raised.value) is expected


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


@pytest.mark.parametrize(
    ("exception", "expected", "status"),
    [
        (trio_websocket.ConnectionRejected(404, (), b"No such container: x\n"), NotFound, 404),
        (trio_websocket.ConnectionRejected(500, (), None), ApiError, 500),
        (trio_websocket.ConnectionTimeout(), DaemonTimeout, None),
        (trio_websocket.ConnectionClosed(None), ConnectionLost, None),
        (trio.BrokenResourceError(), ConnectionLost, None),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), ConnectionLost, None),
    ],
)
def test_attach_session_errors_become_typed_errors(
    exception: Exception, expected: type[DockerError], status: int | None
) -> None:
    translate = translation_for(type(exception), ATTACH_ERRORS)
    assert translate is not None
    error = translate(exception, "GET /containers/x/attach/ws")
    assert (type(error), error.status, error.endpoint) == (expected, status, "GET /containers/x/attach/ws")


def test_a_refused_attach_carries_the_daemons_text() -> None:
    translate = translation_for(trio_websocket.ConnectionRejected, ATTACH_ERRORS)
    assert translate is not None
    assert translate(trio_websocket.ConnectionRejected(404, (), b"No such container: x\n"), "e").message == (
        "No such container: x"
    )
    assert translate(trio_websocket.ConnectionRejected(500, (), None), "e").message == "attach refused"
