"""`dmnc uninstall` waits for a stopped service's control socket to go before it touches the VM side."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from dmnc.commands.uninstall import wait_until_nothing_listens


def listening_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    return server


def test_waits_until_the_daemon_closes_its_control_socket(tmp_path: Path) -> None:
    path = tmp_path / "dmnc.sock"
    server = listening_socket(path)
    closing_after_s = 0.5

    def daemon_shuts_down() -> None:
        time.sleep(closing_after_s)  # stands in for the daemon's own shutdown work
        path.unlink()
        server.close()

    closer = threading.Thread(target=daemon_shuts_down)
    started = time.monotonic()
    closer.start()
    try:
        assert wait_until_nothing_listens(path, 10)
        assert time.monotonic() - started >= closing_after_s
    finally:
        closer.join()


def test_a_missing_or_stale_socket_needs_no_wait(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    assert wait_until_nothing_listens(missing, 0, sleep=lambda _: None)
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(stale))  # bound, never listening: ECONNREFUSED
        assert wait_until_nothing_listens(stale, 0, sleep=lambda _: None)


def test_a_daemon_that_stays_is_a_bounded_wait(tmp_path: Path) -> None:
    path = tmp_path / "dmnc.sock"
    with listening_socket(path):
        now = iter(float(second) for second in range(100))
        assert not wait_until_nothing_listens(path, 3, clock=lambda: next(now), sleep=lambda _: None)
