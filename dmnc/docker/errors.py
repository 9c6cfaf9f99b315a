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

`map_exceptions` translates httpx, trio, OS and websocket exceptions at the I/O boundary.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
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
    """The most specific reason in an exception chain (httpx wraps the OSError that says what really happened)."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError) and current.errno is not None:
            name = errno.errorcode.get(current.errno, str(current.errno))
            return f"{current.strerror or name} ({name})"
        current = current.__cause__ or current.__context__
    return str(error) or type(error).__name__


@contextmanager
def map_exceptions(endpoint: str) -> Iterator[None]:
    """Translate transport exceptions raised inside the block into DockerError subclasses naming `endpoint`.

    DockerError passes through unchanged; trio.Cancelled is a BaseException and is never caught.
    """
    try:
        yield
    except DockerError:
        raise
    except (httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout, trio.TooSlowError) as error:
        raise DaemonTimeout("the Docker daemon did not answer in time", endpoint=endpoint) from error
    except httpx.ConnectError as error:
        raise DaemonUnavailable(
            f"cannot connect to the Docker daemon: {_describe_os_error(error)}", endpoint=endpoint
        ) from error
    except httpx.RemoteProtocolError as error:
        # h11 reports a peer that closed mid-response this way; anything else it rejects is malformed HTTP.
        if "peer closed connection" in str(error) or "Server disconnected" in str(error):
            raise ConnectionLost("the Docker daemon closed the connection mid-response", endpoint=endpoint) from error
        raise BadResponse(f"malformed HTTP from the Docker daemon: {error}", endpoint=endpoint) from error
    except (httpx.ReadError, httpx.WriteError, httpx.CloseError, trio.BrokenResourceError) as error:
        raise ConnectionLost(
            f"connection to the Docker daemon lost: {_describe_os_error(error)}", endpoint=endpoint
        ) from error
    except httpx.DecodingError as error:
        raise BadResponse(f"undecodable response body: {error}", endpoint=endpoint) from error
    except httpx.TransportError as error:
        raise DaemonUnavailable(f"transport error: {error}", endpoint=endpoint) from error
    except OSError as error:
        raise DaemonUnavailable(
            f"cannot use the Docker daemon socket: {_describe_os_error(error)}", endpoint=endpoint
        ) from error
