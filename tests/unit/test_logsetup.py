from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from dmnc.logsetup import LogLevel, setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_lines_carry_time_level_component_and_message() -> None:
    stream = io.StringIO()
    setup_logging(LogLevel.INFO, stream)
    logging.getLogger("dmnc.tunnel").info("handshake completed with %s", "192.0.2.1:51820")
    logging.getLogger("dmnc").warning("plain")
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO  tunnel: handshake completed with 192\.0\.2\.1:51820", lines[0]
    )
    assert lines[1].endswith(" WARN  dmnc: plain")


def test_level_filters_and_reload_replaces_the_handler() -> None:
    stream = io.StringIO()
    setup_logging(LogLevel.DEBUG, io.StringIO())
    setup_logging(LogLevel.WARNING, stream)
    logging.getLogger("dmnc.docker").info("hidden")
    logging.getLogger("dmnc.docker").error("shown")
    assert stream.getvalue().count("\n") == 1
    assert "ERROR docker: shown" in stream.getvalue()


def test_silent_hides_errors_too() -> None:
    stream = io.StringIO()
    setup_logging(LogLevel.SILENT, stream)
    logging.getLogger("dmnc").critical("not shown")
    assert stream.getvalue() == ""


def test_library_chatter_stays_hidden_even_at_debug() -> None:
    stream = io.StringIO()
    setup_logging(LogLevel.DEBUG, stream)
    logging.getLogger("httpx").info("HTTP Request: GET /v1.41/events")
    logging.getLogger("trio-websocket").debug("received 12 bytes")
    assert stream.getvalue() == ""
    logging.getLogger("httpx").warning("connection pool is full")
    assert "WARN  httpx: connection pool is full" in stream.getvalue()


def test_tracebacks_are_indented_below_the_line() -> None:
    stream = io.StringIO()
    setup_logging(LogLevel.INFO, stream)
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logging.getLogger("dmnc.x").exception("unexpected")
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("ERROR x: unexpected")
    assert rest
    assert all(line.startswith("    ") for line in rest)
