"""Typed errors of the Docker client; nothing else escapes `dmnc.docker`.

Every error carries `message` (one readable line), `endpoint` (method and path, or the socket, when known) and
`status` (the HTTP status when the daemon answered). The hierarchy says what a caller can do about it:

- `DaemonUnavailable`: nobody answers (socket missing, refused, permission denied) or the daemon went away in the
  middle of a response (`ConnectionLost`). Retry with backoff.
- `DaemonTimeout`: the daemon accepted but did not answer in time.
- `ApiError`: the daemon answered with an error status; `NotFound` (404), `Conflict` (409) and `ApiVersionError`
  (the negotiated API version was refused) are the ones dmnc acts on.
- `BadResponse`: the daemon's answer is not what the Engine API specifies (malformed JSON, wrong types, broken HTTP).
- `OperationFailed`: a streamed operation (image build or pull) reported its own failure in the stream.
- `DiscoveryError`: no daemon socket was found; lists every place tried and why each failed.
- `InvalidDaemonAddress`: an address that is not unix:// or plain tcp://.

`map_exceptions` translates httpx, trio and OS exceptions at the I/O boundary, by the table `TRANSPORT_ERRORS`.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import trio


class DockerError(Exception):
    """Base of every error the Docker client raises."""

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None) -> None:
        self.message = message
        self.endpoint = endpoint
        self.status = status
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.endpoint is not None:
            parts.append(self.endpoint)
        if len(parts) == 1:
            return self.message
        return f"{self.message} ({', '.join(parts[1:])})"


class InvalidDaemonAddress(DockerError):
    """A daemon address (DOCKER_HOST, --docker-host, a docker context) that dmnc cannot use."""


class DaemonUnavailable(DockerError):
    """The daemon cannot be reached: socket missing, connection refused or denied, or the connection dropped."""


class ConnectionLost(DaemonUnavailable):
    """The daemon closed the connection in the middle of a response (daemon stopped, killed or restarted)."""


class DaemonTimeout(DockerError):
    """The daemon did not answer within the timeout."""


class ApiError(DockerError):
    """The daemon answered with an HTTP error status; `message` is the daemon's own error text."""


class NotFound(ApiError):
    """HTTP 404: no such container, image or network (or an endpoint this daemon does not have)."""


class Conflict(ApiError):
    """HTTP 409: the object exists already or is in use."""


class ApiVersionError(ApiError):
    """The daemon refused the API version (`client version ... is too new/old`), or has none we can speak."""


class BadResponse(DockerError):
    """The daemon's answer does not follow the Engine API: malformed JSON, missing or mistyped fields, broken HTTP."""


class OperationFailed(DockerError):
    """A streamed operation (image build, image pull) reported an error inside its progress stream."""


@dataclass(frozen=True)
class DiscoveryAttempt:
    """One place socket discovery looked at: where it came from, what it pointed to, and the outcome."""

    source: str
    location: str
    outcome: str

    def describe(self) -> str:
        return f"{self.source}: {self.location}: {self.outcome}"


class DiscoveryError(DaemonUnavailable):
    """No usable Docker daemon socket; `attempts` lists every place tried and why each one failed."""

    def __init__(self, attempts: tuple[DiscoveryAttempt, ...]) -> None:
        self.attempts = attempts
        tried = "; ".join(attempt.describe() for attempt in attempts) or "nothing to try"
        super().__init__(f"no Docker daemon found; tried {tried}")


def _describe_os_error(error: BaseException) -> str:
    """The most specific reason in an exception chain (httpx wraps the OSError that says what really happened).

    The errno, not the message, tells a missing socket (ENOENT) from a refused (ECONNREFUSED) or denied (EACCES) one:
    httpx's ConnectError is the same type for all three and carries the OSError as its cause."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError) and current.errno is not None:
            name = errno.errorcode.get(current.errno, str(current.errno))
            return f"{current.strerror or name} ({name})"
        current = current.__cause__ or current.__context__
    return str(error) or type(error).__name__


# h11 has one RemoteProtocolError type for every violation and no attribute saying which; it reports a peer that
# closed the connection before the message was complete with these words (h11/_readers.py `read_eof`,
# h11/_connection.py `_extract_next_receive_event`). tests/unit/docker/test_errors.py runs the real httpx, httpcore
# and h11 over truncated answers, so a change of wording in h11 fails there rather than turning lost connections
# into BadResponse.
_H11_PEER_CLOSED = re.compile(r"peer (unexpectedly )?closed connection")


def _peer_closed(error: BaseException) -> bool:
    """Whether an httpx.RemoteProtocolError means the daemon closed the connection mid-response.

    httpx raises it `from` httpcore's error (httpx/_transports/default.py `map_httpcore_exceptions`), which httpcore
    raises while handling h11's (httpcore/_exceptions.py `map_exceptions`), so the chain says who saw the problem:
    - no cause: httpx's own (a redirect with a bad Location), malformed;
    - an httpcore error with nothing under it: over HTTP/1.1 httpcore raises one itself only when the server closed
      the connection before sending a response (httpcore/_async/http11.py `_receive_event`);
    - an h11 error under it: a close if h11 says so (see _H11_PEER_CLOSED), any other violation is malformed HTTP.
    """
    from_httpcore = error.__cause__
    if from_httpcore is None:
        return False
    # httpcore's connection pool re-raises its error `from None` (httpcore/_async/connection_pool.py), which clears
    # the cause and leaves h11's error as the context only.
    from_h11 = from_httpcore.__cause__ or from_httpcore.__context__
    return from_h11 is None or _H11_PEER_CLOSED.match(str(from_h11)) is not None


Translate = Callable[[BaseException, str], DockerError]
"""Builds the typed error for one caught exception and the endpoint (method and path, or socket) it happened on."""


def to_error(error_type: type[DockerError], message: str) -> Translate:
    """A translation to `error_type`; `message` may name {reason} (the errno behind it) and {error} (the exception)."""

    def translate(error: BaseException, endpoint: str) -> DockerError:
        return error_type(message.format(reason=_describe_os_error(error), error=error), endpoint=endpoint)

    return translate


def _remote_protocol_error(error: BaseException, endpoint: str) -> DockerError:
    if _peer_closed(error):
        return ConnectionLost("the Docker daemon closed the connection mid-response", endpoint=endpoint)
    return BadResponse(f"malformed HTTP from the Docker daemon: {error}", endpoint=endpoint)


_TIMED_OUT = to_error(DaemonTimeout, "the Docker daemon did not answer in time")
_LOST = to_error(ConnectionLost, "connection to the Docker daemon lost: {reason}")

TRANSPORT_ERRORS: Mapping[type[BaseException], Translate] = {
    # httpx (httpx/_exceptions.py): timeouts of every phase, failed connects, broken HTTP, dropped connections.
    httpx.TimeoutException: _TIMED_OUT,
    httpx.ConnectError: to_error(DaemonUnavailable, "cannot connect to the Docker daemon: {reason}"),
    httpx.RemoteProtocolError: _remote_protocol_error,
    httpx.ReadError: _LOST,
    httpx.WriteError: _LOST,
    httpx.CloseError: _LOST,
    httpx.DecodingError: to_error(BadResponse, "undecodable response body: {error}"),
    # The rest (a proxy, an unsupported scheme, HTTP dmnc itself got wrong, redirects, which dmnc never follows):
    # nothing dmnc can talk to.
    httpx.RequestError: to_error(DaemonUnavailable, "transport error: {error}"),
    # trio: our own deadlines (trio.fail_after) and streams the daemon broke (trio's SocketStream wraps the OSError).
    trio.TooSlowError: _TIMED_OUT,
    trio.BrokenResourceError: _LOST,
    # OS errors from connecting to the socket ourselves (the attach websocket): ENOENT, ECONNREFUSED, EACCES, ...
    OSError: to_error(DaemonUnavailable, "cannot use the Docker daemon socket: {reason}"),
}
"""How each exception type from the I/O boundary becomes a typed Docker error; `translation_for` picks the entry of
the most specific type, whatever the order here."""


def translation_for(
    exception_type: type[BaseException], table: Mapping[type[BaseException], Translate] = TRANSPORT_ERRORS
) -> Translate | None:
    """The entry of `table` for the nearest class in `exception_type`'s method resolution order, if any."""
    for candidate in exception_type.__mro__:
        translate = table.get(candidate)
        if translate is not None:
            return translate
    return None


@contextmanager
def map_exceptions(endpoint: str) -> Iterator[None]:
    """Translate exceptions in TRANSPORT_ERRORS raised inside the block into DockerError subclasses naming `endpoint`.

    DockerError and exceptions not in the table (bugs) pass through unchanged; trio.Cancelled is a BaseException and
    is never caught.
    """
    try:
        yield
    except DockerError:
        raise
    except Exception as error:
        translate = translation_for(type(error))
        if translate is None:
            raise
        raise translate(error, endpoint) from error
