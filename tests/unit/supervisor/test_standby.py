"""The supervisor's standby loop on fakes: conflicts come from a script instead of the host, the parts the service
would start are replaced by a recorder, and the control socket is real (in a temporary directory).

What it pins down: as a service, a conflict means standby (announced once, however often it is checked again),
status says why, and the service takes over as soon as a check finds nothing; in the foreground the same conflict
is one error and nothing is started; a control socket another dmnc holds is waited out the same way."""

from __future__ import annotations

import ipaddress
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trio

from dmnc.config import Config, ConfigFlags
from dmnc.control import bind_control_socket, fetch_snapshot
from dmnc.control.messages import StatusEvent
from dmnc.control.server import BoundControlSocket, EventSubscription
from dmnc.supervisor import supervisor as supervisor_module
from dmnc.supervisor.conflicts import Conflict
from dmnc.supervisor.supervisor import ServiceError, Supervisor

STAND_IN = Conflict("interface chip0 already holds the tunnel address 10.33.33.1", "stop docker-mac-net-connect")
# The loop's real period is 15 s; the script decides when a conflict goes, so any short period gives the same
# sequence of checks, only sooner.
RECHECK_S = 0.01


class ConflictScript:
    """find_conflicts' answers: `current` until the test changes it; counts the checks (run in worker threads)."""

    def __init__(self, current: Sequence[Conflict]) -> None:
        self._lock = threading.Lock()
        self._current = list(current)
        self.checks = 0
        self.addresses: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]] = []

    def set(self, conflicts: Sequence[Conflict]) -> None:
        with self._lock:
            self._current = list(conflicts)

    def __call__(
        self, addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address], **_: object
    ) -> list[Conflict]:
        with self._lock:
            self.checks += 1
            self.addresses.append(tuple(addresses))
            return list(self._current)


class PartsRecorder:
    """Stands in for Supervisor._run_with: records that the parts would start now, then runs until cancelled."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.control_socket: BoundControlSocket | None = None

    async def __call__(self, control: BoundControlSocket, task_status: trio.TaskStatus[None]) -> None:
        self.control_socket = control
        task_status.started()
        self.started.set()
        await trio.sleep_forever()


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> ConflictScript:
    found = ConflictScript([STAND_IN])
    monkeypatch.setattr(supervisor_module, "find_conflicts", found)
    monkeypatch.setattr(supervisor_module, "STANDBY_RECHECK_S", RECHECK_S)
    return found


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> PartsRecorder:
    recorder = PartsRecorder()
    monkeypatch.setattr(Supervisor, "_run_with", recorder.__call__)
    return recorder


@pytest.fixture
def config() -> Iterator[Config]:
    # Under /tmp: pytest's tmp_path on macOS (the CI runs this suite there) is longer than a Unix socket path may be
    # (sockaddr_un's sun_path holds 104 bytes, xnu bsd/sys/un.h).
    with tempfile.TemporaryDirectory(prefix="dmnc-standby-", dir="/tmp") as directory:
        yield Config(control_socket=Path(directory) / "dmnc.sock")


def drain(subscription: EventSubscription) -> list[StatusEvent]:
    """The events published so far."""
    events: list[StatusEvent] = []
    while True:
        try:
            events.append(subscription.receive.receive_nowait())
        except trio.WouldBlock:
            return events


async def wait_for(condition: object, what: str) -> None:
    """Until `condition()` holds, checked at every recheck period (bounded by the test's own timeout)."""
    assert callable(condition)
    with trio.fail_after(30):
        while not condition():
            await trio.sleep(RECHECK_S)


async def test_a_service_waits_in_standby_says_why_and_takes_over_once_the_conflict_is_gone(
    config: Config, script: ConflictScript, parts: PartsRecorder
) -> None:
    supervisor = Supervisor(config, ConfigFlags(), as_service=True)
    with supervisor.events.subscribe() as events:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)  # returns once standby is entered: signals work from then on
            snapshot = await fetch_snapshot(config.control_socket)
            assert snapshot.standby == STAND_IN.describe()
            assert not parts.started.is_set()

            await wait_for(lambda: script.checks >= 3, "three checks in standby")
            script.set([])
            with trio.fail_after(30):
                await parts.started.wait()
            assert parts.control_socket is not None
            assert parts.control_socket.path == config.control_socket  # the socket standby served is handed on
            nursery.cancel_scope.cancel()
        kinds = [event.kind for event in drain(events)]
    assert kinds.count("service.standby") == 1  # reported once, not at every check
    assert kinds[-1] == "service.active"
    assert set(script.addresses) == {supervisor_module.TUNNEL_HOST_ADDRESSES}


async def test_a_changed_reason_is_announced_again(
    config: Config, script: ConflictScript, parts: PartsRecorder
) -> None:
    other = Conflict("docker-mac-net-connect runs as a launchd service", "sudo brew services stop it")
    supervisor = Supervisor(config, ConfigFlags(), as_service=True)
    with supervisor.events.subscribe() as events:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            script.set([other])
            await wait_for(lambda: script.checks >= 3, "the new reason checked")
            assert (await fetch_snapshot(config.control_socket)).standby == other.describe()
            script.set([])
            with trio.fail_after(30):
                await parts.started.wait()
            nursery.cancel_scope.cancel()
        messages = [event.message for event in drain(events)]
    standby_lines = [message for message in messages if message.startswith("standby: ")]
    assert [line.split(" (checking again")[0] for line in standby_lines] == [
        f"standby: {STAND_IN.describe()}",
        f"standby: {other.describe()}",
    ]


async def test_in_the_foreground_a_conflict_is_one_error_and_nothing_starts(
    config: Config, script: ConflictScript, parts: PartsRecorder
) -> None:
    supervisor = Supervisor(config, ConfigFlags(), as_service=False)
    with pytest.raises(ServiceError, match=r"^interface chip0 already holds the tunnel address 10\.33\.33\.1: stop"):
        await supervisor.run()
    assert script.checks == 1
    assert not parts.started.is_set()
    assert not config.control_socket.exists()  # released: a later start is not told another dmnc runs


async def test_a_service_waits_for_a_control_socket_another_dmnc_holds(
    config: Config, script: ConflictScript, parts: PartsRecorder
) -> None:
    script.set([])
    other_dmnc = await bind_control_socket(config.control_socket)
    supervisor = Supervisor(config, ConfigFlags(), as_service=True)
    with supervisor.events.subscribe() as events:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            [first] = drain(events)
            assert first.kind == "service.standby"
            assert first.message.startswith("standby: another dmnc is already running: its control socket ")
            assert first.message.count("another dmnc is already running") == 1
            await other_dmnc.aclose()
            with trio.fail_after(30):
                await parts.started.wait()
            nursery.cancel_scope.cancel()
    assert script.checks == 1  # conflicts are looked for only once the socket is dmnc's
