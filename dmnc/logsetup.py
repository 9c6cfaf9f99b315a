"""Readable logs for a foreground service: one line per record, time, level, component, message.

    2026-11-22 19:50:01.123 INFO  tunnel: handshake completed with 192.168.65.3:51820

Loggers are named `dmnc.<component>`; the `dmnc.` prefix is dropped from the output since every line is dmnc's.
Third-party libraries (trio-websocket, httpx, httpcore) show only their warnings and errors, even at debug level:
their lines describe dmnc's own requests and frames a second time and would drown dmnc's own debug lines.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import TextIO

from dmnc.config import LogLevel

_ROOT_LOGGER = "dmnc"
_CHATTY_LIBRARIES = ("trio-websocket", "httpx", "httpcore", "hpack")


_LEVEL_NAMES = {logging.WARNING: "WARN", logging.CRITICAL: "FATAL"}


class ReadableFormatter(logging.Formatter):
    """`YYYY-MM-DD HH:MM:SS.mmm LEVEL component: message`, a traceback (bugs only) indented below the line."""

    def __init__(self) -> None:
        super().__init__(datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        component = record.name.removeprefix(f"{_ROOT_LOGGER}.")
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        when = f"{self.formatTime(record, self.datefmt)}.{int(record.msecs):03d}"
        line = f"{when} {level:<5} {component}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + textwrap.indent(self.formatException(record.exc_info), "    ")
        return line


def setup_logging(level: LogLevel, stream: TextIO | None = None) -> logging.Handler:
    """Send log records at `level` and above to `stream` (stderr by default); returns the installed handler.

    Calling it again (SIGHUP reload) replaces the previous handler instead of adding a second one.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(ReadableFormatter())
    root = logging.getLogger()
    for old in [existing for existing in root.handlers if isinstance(existing.formatter, ReadableFormatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.logging_level)
    library_level = max(logging.WARNING, level.logging_level)
    for library in _CHATTY_LIBRARIES:
        logging.getLogger(library).setLevel(library_level)
    return handler
