"""--allow-inbound / DMNC_ALLOW_INBOUND / [inbound] allow: the host ports containers may connect to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.config import ConfigFlags, ValueProblem, load_config, parse_inbound_port
from dmnc.tunnel.flowfilter import InboundPort
from tests.unit.test_config import config_error, no_default_config_file, write_config

__all__ = ["no_default_config_file"]  # the autouse fixture, active here too


def test_the_default_is_no_inbound_port() -> None:
    assert load_config(ConfigFlags(), {}).inbound_allow == ()


def test_inbound_ports_from_each_layer_sorted_without_repeats(tmp_path: Path) -> None:
    environ = write_config(tmp_path, '[inbound]\nallow = ["8088", "53/udp"]\n')
    assert load_config(ConfigFlags(), environ).inbound_allow == (InboundPort(53, "udp"), InboundPort(8088))
    from_env = load_config(ConfigFlags(), {**environ, "DMNC_ALLOW_INBOUND": "9000/TCP, 9000 ,5353/udp"})
    assert from_env.inbound_allow == (InboundPort(5353, "udp"), InboundPort(9000))
    from_flags = load_config(ConfigFlags(allow_inbound=("22",)), {**environ, "DMNC_ALLOW_INBOUND": "1"})
    assert from_flags.inbound_allow == (InboundPort(22),)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (ConfigFlags(allow_inbound=("0",)), "--allow-inbound: port 0 is not in 1-65535"),
        (ConfigFlags(allow_inbound=("70000",)), "--allow-inbound: port 70000 is not in 1-65535"),
        (ConfigFlags(allow_inbound=("80/sctp",)), "--allow-inbound: '80/sctp' is not PORT, PORT/tcp or PORT/udp"),
        (ConfigFlags(allow_inbound=("80,81",)), "--allow-inbound: '80,81' is not PORT, PORT/tcp or PORT/udp"),
        (ConfigFlags(allow_inbound=("-1",)), "is not PORT, PORT/tcp or PORT/udp"),
    ],
)
def test_bad_inbound_ports_name_the_flag(flags: ConfigFlags, message: str) -> None:
    assert message in config_error(flags, {})


def test_a_bad_port_in_the_file_names_the_file(tmp_path: Path) -> None:
    environ = write_config(tmp_path, '[inbound]\nallow = ["http"]\n')
    assert "config.toml:2 (inbound.allow)" in config_error(ConfigFlags(), environ)


@given(st.text(max_size=12))
def test_any_text_parses_to_a_port_or_a_clear_problem(text: str) -> None:
    if (
        not re.fullmatch(r"\s*[0-9]{1,5}(/(tcp|udp))?\s*", text.lower())
        or not 0 < int(text.split("/", maxsplit=1)[0]) < 65536
    ):
        with pytest.raises(ValueProblem, match=r"."):
            parse_inbound_port(text)
        return
    port = parse_inbound_port(text)
    assert 1 <= port.port <= 65535
    assert parse_inbound_port(str(port)) == port
