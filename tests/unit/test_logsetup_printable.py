"""The one escaping helper for outside text in logs and output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dmnc.logsetup import printable


@given(st.text())
def test_output_is_one_printable_line_whatever_the_input(text: str) -> None:
    escaped = printable(text)
    assert escaped.isprintable()
    assert not {"\n", "\r", "\x1b"} & set(escaped)


@given(st.text().filter(str.isprintable))
def test_printable_text_is_left_alone(text: str) -> None:
    assert printable(text) == text


@given(st.characters())
def test_each_escape_names_the_code_point(char: str) -> None:
    escaped = printable(char)
    if not char.isprintable():
        assert escaped.startswith("\\")
        assert int(escaped[2:], 16) == ord(char)


def test_examples() -> None:
    assert printable("net\x1b[2Jwork\nFAKE LINE") == "net\\x1b[2Jwork\\x0aFAKE LINE"
    assert printable("a\u2028b\U000e0001") == "a\\u2028b\\U000e0001"
