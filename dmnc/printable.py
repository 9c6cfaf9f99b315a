"""Text from outside dmnc (the Docker daemon, a container's output, a user's Docker files) made safe to log or print.

A network name or an error message can hold any character: an escape sequence would drive the terminal that shows
the log, a newline would fake a log line of its own. Every such value goes through `printable` before it reaches a
log line, `dmnc status` or `dmnc doctor`. This module imports nothing, so the service and the commands can share it.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character that `str.isprintable` refuses (controls, line and paragraph separators, format
    characters) escaped as `\\x1b`, `\\x85`, `\\u2028`: one readable line that shows what was there."""
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
