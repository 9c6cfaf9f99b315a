"""The real `dmnc run` pointed at an impostor Docker daemon: it must stay up, answer `dmnc status`, and say why.

The impostor (tests/fakes/docker_daemon.py, served from a thread) answers /version and /info like Docker 20.10, keeps
the event stream open, and answers every list with JSON nested 100 000 levels deep: before the nesting bound, that
was a RecursionError, which is no Docker error, and the whole service exited with its tunnel and routes.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import dmnc_command, require_root, require_tools
from tests.fakes.docker_daemon import Request, chunked_head, fake_daemon, json_response, reply, response
from tests.lab.netns import netns, stop_process
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

HOSTILE_DEPTH = 100_000
NESTED_LIST = response(200, b"[" * HOSTILE_DEPTH + b"]" * HOSTILE_DEPTH)
START_TIMEOUT_S = 60.0
# Reconnect backoff is capped at 5 s (dmnc.supervisor.docker_watch.RECONNECT_MAX_S); leave room for a loaded box.
RETRY_TIMEOUT_S = 30.0


async def _open_event_stream(_request: Request, stream: trio.SocketStream) -> None:
    await stream.send_all(chunked_head())
    await trio.sleep_forever()


IMPOSTOR_ROUTES = {
    "/info": reply(json_response(200, {"ID": "impostor", "Name": "impostor", "OperatingSystem": "Impostor OS"})),
    "/events": _open_event_stream,
    "/networks": reply(NESTED_LIST),
    "/containers/json": reply(NESTED_LIST),
    "/images/json": reply(NESTED_LIST),
}


@contextlib.contextmanager
def impostor_daemon() -> Iterator[str]:
    """The impostor on a Unix socket, served by trio in a thread until the block ends; yields its unix:// URL."""
    started: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope]] = queue.Queue()

    async def serve() -> None:
        with trio.CancelScope() as scope:
            async with fake_daemon(IMPOSTOR_ROUTES) as url:
                started.put((url, trio.lowlevel.current_trio_token(), scope))
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    url, token, scope = started.get(timeout=10)
    try:
        yield url
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=10)


def test_dmnc_survives_an_impostor_daemon_that_sends_deeply_nested_json() -> None:
    require_root()
    require_tools("ip")
    with (
        tempfile.TemporaryDirectory(prefix="dmnc-hostile-") as workdir,
        impostor_daemon() as docker_host,
        netns("dmhostile") as host,
    ):
        control_socket = Path(workdir) / "dmnc.sock"
        config_file = Path(workdir) / "config.toml"
        config_file.write_text("", encoding="utf-8")  # keeps the machine's /etc/dmnc out of the test
        log_path = Path(workdir) / "dmnc.log"
        argv = [
            *dmnc_command(),
            "run",
            *("--path", "tunnel"),
            *("--docker-host", docker_host),
            *("--control-socket", str(control_socket)),
            *("--config", str(config_file)),
        ]
        with log_path.open("wb") as log:
            dmnc = host.popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: "misbehaves" in log_path.read_text() or dmnc.poll() is not None, START_TIMEOUT_S, "log")
            log_text = log_path.read_text()
            assert dmnc.poll() is None, f"dmnc exited ({dmnc.returncode}):\n{log_text}"
            assert "the Docker daemon misbehaves: response is not usable JSON: JSON nested deeper than" in log_text
            assert "RecursionError" not in log_text
            status = host.run([*dmnc_command(), "status", "--control-socket", str(control_socket)], check=False)
            assert status.returncode == 0, status.stderr
            # It reconnects (with backoff: the impostor may be a daemon starting up) and stays up doing so.
            wait_until(lambda: log_path.read_text().count("misbehaves") >= 2, RETRY_TIMEOUT_S, "a second attempt")
            assert dmnc.poll() is None, log_path.read_text()
            print(log_path.read_text())  # the lines users see, for the test log
        finally:
            stop_process(dmnc)
