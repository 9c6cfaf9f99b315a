"""SetupParams validation and the container command built from it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.tunnel.flowfilter import InboundPort
from dmnc.vm import (
    DEFAULT_ENDPOINT_CANDIDATES,
    IptablesBackend,
    ScriptMode,
    SetupParams,
    SetupParamsError,
    TeardownParams,
    decode_public_key,
    new_run_nonce,
    script_arguments,
    script_command,
)
from dmnc.vm.assets import setup_script

HOST_KEY = bytes(range(32))
HOST_KEY_BASE64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
NONCE = "0123456789abcdef" * 2


def option_values(arguments: list[str]) -> dict[str, list[str]]:
    """`--option value` pairs after the mode, grouped by option (candidates repeat)."""
    values: dict[str, list[str]] = {}
    pairs = arguments[1:]
    assert len(pairs) % 2 == 0
    for option, value in zip(pairs[::2], pairs[1::2], strict=True):
        assert option.startswith("--")
        values.setdefault(option, []).append(value)
    return values


def test_defaults_carry_the_docker_mac_net_connect_addresses_and_candidates() -> None:
    params = SetupParams(HOST_KEY, 51820)
    values = option_values(script_arguments(params, ScriptMode.SETUP, nonce=NONCE))
    assert values["--host-address"] == ["10.33.33.1"]
    assert values["--vm-address"] == ["10.33.33.2"]
    assert values["--host-address6"] == ["fd33:33:33::1"]
    assert values["--vm-address6"] == ["fd33:33:33::2"]
    assert values["--host-public-key"] == [HOST_KEY_BASE64]
    assert values["--port"] == ["51820"]
    assert values["--mtu"] == ["1420"]
    assert values["--interface"] == ["chip0"]
    assert values["--iptables"] == ["auto"]
    assert values["--endpoint-candidate"] == list(DEFAULT_ENDPOINT_CANDIDATES)
    assert "--endpoint" not in values


def test_explicit_endpoint_replaces_the_candidates() -> None:
    values = option_values(
        script_arguments(SetupParams(HOST_KEY, 4000, endpoint="192.168.65.254"), ScriptMode.SETUP, nonce=NONCE)
    )
    assert values["--endpoint"] == ["192.168.65.254"]
    assert "--endpoint-candidate" not in values


def test_teardown_gets_only_interface_backend_and_addresses() -> None:
    params = SetupParams(HOST_KEY, 4000, iptables=IptablesBackend.LEGACY, interface="wgx1")
    arguments = script_arguments(params, ScriptMode.TEARDOWN, nonce=NONCE)
    assert arguments[0] == "teardown"
    assert set(option_values(arguments)) == {
        "--nonce",
        "--interface",
        "--iptables",
        "--host-address",
        "--host-address6",
    }
    assert HOST_KEY_BASE64 not in arguments


def test_ipv4_only_params_send_no_ipv6_options() -> None:
    params = SetupParams(HOST_KEY, 4000, host_address6=None, vm_address6=None, mtu=1000)
    values = option_values(script_arguments(params, ScriptMode.USERSPACE, nonce=NONCE))
    assert "--host-address6" not in values
    assert "--vm-address6" not in values


def test_command_runs_the_embedded_script_with_values_as_separate_argv_items() -> None:
    params = SetupParams(HOST_KEY, 4000, endpoint="host.example")
    command = script_command(params, ScriptMode.SETUP, nonce=NONCE)
    assert command[:4] == ["/bin/sh", "-c", setup_script(), "dmnc-setup"]
    assert command[4:] == script_arguments(params, ScriptMode.SETUP, nonce=NONCE)
    assert "dmnc-setup-result v1" in command[2]  # the script text, not an interpolated command line


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"host_public_key": b"short"}, "32 bytes"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"endpoint": "-rf"}, "neither an IP"),
        ({"endpoint": "bad host"}, "neither an IP"),
        ({"endpoint": "a" * 64 + ".example"}, "neither an IP"),
        ({"endpoint": "fe80::1%en0"}, "IPv6 zone"),
        ({"endpoint_candidates": ()}, "no endpoint"),
        ({"endpoint_candidates": ("ok.example", "x;reboot")}, "candidate"),
        ({"host_address6": None}, "both IPv6"),
        ({"vm_address": ipaddress.IPv4Address("10.33.33.1")}, "must differ"),
        ({"mtu": 1279}, "MTU"),
        ({"mtu": 65536}, "MTU"),
        ({"interface": ""}, "interface name"),
        ({"interface": "-x"}, "interface name"),
        ({"interface": "a" * 16}, "interface name"),
        ({"interface": "ch ip0"}, "interface name"),
    ],
)
def test_invalid_inputs_raise_a_typed_error_naming_the_problem(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"host_public_key": HOST_KEY, "port": 51820, **changes}
    with pytest.raises(SetupParamsError, match=message):
        SetupParams(**arguments)  # type: ignore[arg-type]


def test_ipv4_only_allows_the_ipv4_minimum_mtu() -> None:
    SetupParams(HOST_KEY, 1, host_address6=None, vm_address6=None, mtu=576)


def test_decode_public_key_round_trips_and_rejects_non_keys() -> None:
    assert decode_public_key(HOST_KEY_BASE64) == HOST_KEY
    for bad in ["", "AAEC", HOST_KEY_BASE64[:-1] + "!", HOST_KEY_BASE64 + "AAAA", "é" * 44]:
        with pytest.raises(SetupParamsError):
            decode_public_key(bad)


@given(st.text(max_size=300))
def test_endpoint_is_either_rejected_or_passed_as_one_plain_argv_item(text: str) -> None:
    try:
        params = SetupParams(HOST_KEY, 51820, endpoint=text)
    except SetupParamsError:
        return
    arguments = script_arguments(params, ScriptMode.SETUP, nonce=NONCE)
    assert arguments[arguments.index("--endpoint") + 1] == text
    # Accepted endpoints never look like options and never carry shell or whitespace characters.
    assert not text.startswith("-")
    assert all(character.isalnum() or character in ".:-" for character in text)


@given(st.binary(min_size=32, max_size=32))
def test_any_32_byte_key_is_sent_as_44_base64_characters(key: bytes) -> None:
    encoded = SetupParams(key, 1).host_public_key_base64
    assert len(encoded) == 44
    assert decode_public_key(encoded) == key


def test_teardown_params_default_to_what_setup_params_default_to() -> None:
    assert SetupParams(HOST_KEY, 1).teardown_params == TeardownParams()
    assert script_command(TeardownParams(), ScriptMode.TEARDOWN, nonce=NONCE) == script_command(
        SetupParams(HOST_KEY, 1), ScriptMode.TEARDOWN, nonce=NONCE
    )


def test_teardown_params_cannot_run_a_setup() -> None:
    with pytest.raises(SetupParamsError, match="needs the full SetupParams"):
        script_command(TeardownParams(), ScriptMode.USERSPACE, nonce=NONCE)
    with pytest.raises(SetupParamsError, match="interface name"):
        TeardownParams(interface="bad name")


def test_check_mode_takes_only_the_nonce_whatever_the_params() -> None:
    command = script_command(SetupParams(HOST_KEY, 1), ScriptMode.CHECK, nonce=NONCE)
    assert command[-4:] == ["dmnc-setup", "check", "--nonce", NONCE]
    assert command == script_command(TeardownParams(interface="other0"), ScriptMode.CHECK, nonce=NONCE)


@pytest.mark.parametrize("mode", list(ScriptMode))
def test_every_mode_carries_the_runs_nonce_right_after_the_mode(mode: ScriptMode) -> None:
    command = script_command(SetupParams(HOST_KEY, 1), mode, nonce=NONCE)
    assert command[5:7] == ["--nonce", NONCE]


def test_fresh_nonces_have_the_checked_form_and_differ() -> None:
    first, second = new_run_nonce(), new_run_nonce()
    assert first != second
    for nonce in (first, second):
        script_command(TeardownParams(), ScriptMode.TEARDOWN, nonce=nonce)


@pytest.mark.parametrize("nonce", ["", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "0" * 31 + " ", "-" + "0" * 31])
def test_a_malformed_nonce_is_refused_before_any_command_is_built(nonce: str) -> None:
    for mode in ScriptMode:
        with pytest.raises(SetupParamsError, match="nonce"):
            script_command(SetupParams(HOST_KEY, 1), mode, nonce=nonce)


def test_inbound_ports_go_to_setup_as_one_argv_item_each_and_never_to_teardown() -> None:
    params = SetupParams(HOST_KEY, 3333, allow_inbound=(InboundPort(53, "udp"), InboundPort(8088)))
    arguments = script_arguments(params, ScriptMode.SETUP, nonce=NONCE)
    assert [arguments[index + 1] for index, item in enumerate(arguments) if item == "--allow-inbound"] == [
        "53/udp",
        "8088/tcp",
    ]
    assert "--allow-inbound" not in script_arguments(params, ScriptMode.TEARDOWN, nonce=NONCE)


@pytest.mark.parametrize("inbound", [InboundPort(0), InboundPort(65536), InboundPort(80, "sctp")])
def test_an_invalid_inbound_port_is_refused(inbound: InboundPort) -> None:
    with pytest.raises(SetupParamsError, match="is not PORT/tcp or PORT/udp"):
        SetupParams(HOST_KEY, 3333, allow_inbound=(inbound,))
