"""Readable logs for a foreground service: one line per record, time, level, component, message.

    2026-11-22 19:50:01.123 INFO  tunnel: handshake completed with 192.168.65.3:51820

Loggers are named `dmnc.<component>`; the `dmnc.` prefix is dropped from the output since every line is dmnc's.
Third-party libraries (trio-websocket, httpx, httpcore) show only their warnings and errors, even at debug level:
their lines describe dmnc's own requests and frames a second time and would drown dmnc's own debug lines.

Text from outside dmnc (the Docker daemon, a container's output, a user's Docker files) goes through `printable`
before it reaches a log line, `dmnc status` or `dmnc doctor`: an escape sequence would drive the terminal that shows
the log, a newline would fake a log line of its own. This module imports nothing of dmnc, so every layer can use it.
"""

from __future__ import annotations

import enum
import logging
import sys
import textwrap
from typing import TextIO


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    SILENT = "silent"

    @property
    def logging_level(self) -> int:
        """The `logging` module's level for this setting; SILENT is above every level that is ever logged."""
        return _LOGGING_LEVELS[self]


_LOGGING_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.SILENT: logging.CRITICAL + 1,
}


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


def printable(text: str) -> str:
    """`text` with every character that `str.isprintable` refuses (controls, line and paragraph separators, format
    characters) escaped as `\\x1b`, `\\x85`, `\\u2028`: one readable line that shows what was there."""
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
