"""Parsing the setup script's result line and whole output (untrusted bytes from a container)."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.vm import (
    ForeignInterface,
    KernelWireGuardMissing,
    KernelWireGuardPresent,
    SetupResult,
    SetupResultError,
    SetupScriptError,
    TeardownDone,
    VmMode,
    outcome_from_output_untrusted,
    parse_result_line_untrusted,
)
from dmnc.vm.nftables import DockerNftables

NONCE = "0123456789abcdef" * 2
VM_KEY = bytes(range(100, 132))
VM_KEY_BASE64 = base64.b64encode(VM_KEY).decode()
KERNEL_LINE = (
    f"dmnc-setup-result v1 nonce={NONCE} mode=kernel public-key={VM_KEY_BASE64} endpoint=192.168.65.254:51820 "
    "endpoint-name=host.docker.internal ipv6=on kernel=6.10.14-linuxkit"
)


def test_kernel_result_line_parses_into_typed_fields() -> None:
    assert parse_result_line_untrusted(KERNEL_LINE, nonce=NONCE) == SetupResult(
        mode=VmMode.KERNEL,
        vm_public_key=VM_KEY,
        endpoint=("192.168.65.254", 51820),
        endpoint_name="host.docker.internal",
        kernel_release="6.10.14-linuxkit",
        ipv6=True,
    )


def test_a_setup_result_may_name_the_shims_it_could_not_make() -> None:
    result = parse_result_line_untrusted(f"{KERNEL_LINE} shims-failed=dmncm1234abcd0,dmncm1234abcd1", nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert result.shims_failed == ("dmncm1234abcd0", "dmncm1234abcd1")
    plain = parse_result_line_untrusted(KERNEL_LINE, nonce=NONCE)
    assert isinstance(plain, SetupResult)
    assert plain.shims_failed == ()


@pytest.mark.parametrize(
    "line",
    [
        f"{KERNEL_LINE} shims-failed=eth0",
        f"{KERNEL_LINE} shims-failed=dmncm1,-x",
        f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=6.1 shims-failed=dmncm1",
    ],
)
def test_a_malformed_or_misplaced_shims_failed_field_is_refused(line: str) -> None:
    with pytest.raises(SetupResultError):
        parse_result_line_untrusted(line, nonce=NONCE)


def test_ipv6_off_means_an_ipv4_only_tunnel() -> None:
    result = parse_result_line_untrusted(KERNEL_LINE.replace("ipv6=on", "ipv6=off"), nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert result.ipv6 is False


def test_userspace_result_with_bracketed_ipv6_endpoint() -> None:
    line = KERNEL_LINE.replace("mode=kernel", "mode=userspace").replace(
        "endpoint=192.168.65.254:51820", "endpoint=[fd00::1]:4000"
    )
    result = parse_result_line_untrusted(line, nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert result.mode is VmMode.USERSPACE
    assert result.endpoint == ("fd00::1", 4000)


def test_kernel_missing_and_removed_lines() -> None:
    assert parse_result_line_untrusted(
        f"dmnc-setup-result v1 nonce={NONCE} mode=kernel-missing kernel=6.1.0-18-cloud-amd64", nonce=NONCE
    ) == (KernelWireGuardMissing("6.1.0-18-cloud-amd64"))
    assert parse_result_line_untrusted(
        f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=unknown", nonce=NONCE
    ) == TeardownDone("unknown")


def test_kernel_ok_line_of_the_check_mode() -> None:
    assert parse_result_line_untrusted(
        f"dmnc-setup-result v1 nonce={NONCE} mode=kernel-ok kernel=6.10.14-linuxkit", nonce=NONCE
    ) == (KernelWireGuardPresent("6.10.14-linuxkit"))
    with pytest.raises(SetupResultError, match="unexpected"):
        parse_result_line_untrusted(
            f"dmnc-setup-result v1 nonce={NONCE} mode=kernel-ok kernel=6.1 public-key=x", nonce=NONCE
        )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("something else", "not a result line"),
        (f"dmnc-setup-result v2 nonce={NONCE} mode=removed kernel=x", "version"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=x kernel=y", "twice"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=", "key=value"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=removed", "missing"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=x extra=1", "unexpected"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=magic kernel=x", "mode"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=a/b", "kernel release"),
        (KERNEL_LINE.replace(VM_KEY_BASE64, "AAAA"), "public key"),
        (KERNEL_LINE.replace("192.168.65.254:51820", "192.168.65.254"), "ADDRESS:PORT"),
        (KERNEL_LINE.replace("192.168.65.254:51820", "192.168.65.254:0"), "ADDRESS:PORT"),
        (KERNEL_LINE.replace("192.168.65.254:51820", "192.168.65.254:65536"), "ADDRESS:PORT"),
        (KERNEL_LINE.replace("192.168.65.254:51820", "300.1.1.1:1"), "valid IP"),
        (KERNEL_LINE.replace("192.168.65.254:51820", "fd00::1:1"), "bracketed"),
        (KERNEL_LINE.replace("192.168.65.254:51820", "[fe80::1%eth0]:1"), "scope"),
        (KERNEL_LINE.replace("host.docker.internal", "bad_name!"), "endpoint name"),
        (KERNEL_LINE.replace("ipv6=on", "ipv6=maybe"), "not on or off"),
        (KERNEL_LINE.replace(" ipv6=on", ""), "missing"),
        (KERNEL_LINE + " " + "x" * 2000, "characters long"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=foreign kernel=x", "missing"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=foreign interface=chip0;rm kernel=x", "interface name"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=foreign interface=-chip0 kernel=x", "interface name"),
        (f"dmnc-setup-result v1 nonce={NONCE} mode=foreign interface={'c' * 16} kernel=x", "interface name"),
    ],
)
def test_malformed_result_lines_raise_a_typed_error(line: str, message: str) -> None:
    with pytest.raises(SetupResultError, match=message):
        parse_result_line_untrusted(line, nonce=NONCE)


def test_output_takes_the_last_result_line_among_other_output() -> None:
    output = f"wireguard-go banner\n{KERNEL_LINE.replace('mode=kernel', 'mode=userspace')}\nnoise\n{KERNEL_LINE}\n"
    result = outcome_from_output_untrusted(output.encode(), nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert result.mode is VmMode.KERNEL


def test_script_error_line_becomes_setup_script_error_with_its_reason() -> None:
    output = b"dmnc-setup: note\ndmnc-setup: error: the endpoint 'x' does not resolve inside the VM\n"
    with pytest.raises(SetupScriptError, match="does not resolve") as caught:
        outcome_from_output_untrusted(output, exit_code=1, nonce=NONCE)
    assert caught.value.exit_code == 1
    assert caught.value.reason == "the endpoint 'x' does not resolve inside the VM"


def test_nonzero_exit_without_error_line_reports_the_last_output_line() -> None:
    with pytest.raises(SetupScriptError, match=r"exit 127.*sh: not found"):
        outcome_from_output_untrusted(b"sh: not found\n\n", exit_code=127, nonce=NONCE)


def test_output_without_result_line_is_a_result_error() -> None:
    with pytest.raises(SetupResultError, match="no result line"):
        outcome_from_output_untrusted(b"", exit_code=0, nonce=NONCE)


def test_error_reason_is_printable_and_bounded() -> None:
    with pytest.raises(SetupScriptError) as caught:
        outcome_from_output_untrusted(b"dmnc-setup: error: \x1b[31m" + b"x" * 5000, exit_code=1, nonce=NONCE)
    assert caught.value.reason.isprintable()
    assert len(caught.value.reason) <= 500


def test_a_result_line_without_a_nonce_is_refused() -> None:
    with pytest.raises(SetupResultError, match="carries no nonce"):
        parse_result_line_untrusted(KERNEL_LINE.replace(f" nonce={NONCE}", ""), nonce=NONCE)
    with pytest.raises(SetupResultError, match="carries no nonce"):
        outcome_from_output_untrusted(b"dmnc-setup-result v1 mode=removed kernel=6.1\n", 0, nonce=NONCE)


def test_a_result_line_with_another_runs_nonce_is_refused() -> None:
    other = "f" * 32
    with pytest.raises(SetupResultError, match="not this run's"):
        parse_result_line_untrusted(KERNEL_LINE, nonce=other)
    # The last result line decides: an earlier line of this run does not vouch for a later foreign one.
    output = f"{KERNEL_LINE}\n{KERNEL_LINE.replace(NONCE, other)}\n".encode()
    with pytest.raises(SetupResultError, match="not this run's"):
        outcome_from_output_untrusted(output, 0, nonce=NONCE)


@given(received=st.text(max_size=64).filter(lambda text: " " not in text and "\n" not in text and text))
def test_every_nonce_but_the_runs_own_is_refused(received: str) -> None:
    line = KERNEL_LINE.replace(f"nonce={NONCE}", f"nonce={received}")
    if received == NONCE:
        assert isinstance(parse_result_line_untrusted(line, nonce=NONCE), SetupResult)
        return
    with pytest.raises(SetupResultError):
        parse_result_line_untrusted(line, nonce=NONCE)


@given(st.text(max_size=400))
def test_any_text_line_parses_or_raises_result_error(line: str) -> None:
    try:
        outcome = parse_result_line_untrusted(line, nonce=NONCE)
    except SetupResultError:
        return
    assert isinstance(outcome, SetupResult | KernelWireGuardMissing | TeardownDone)


@given(st.binary(max_size=600), st.one_of(st.none(), st.integers(-300, 300)))
def test_any_output_bytes_parse_or_raise_only_typed_errors(output: bytes, exit_code: int | None) -> None:
    with contextlib.suppress(SetupResultError, SetupScriptError):
        outcome_from_output_untrusted(output, exit_code, nonce=NONCE)


@given(
    mode=st.sampled_from(["kernel", "userspace"]),
    key=st.binary(min_size=32, max_size=32),
    address=st.ip_addresses(),
    port=st.integers(1, 65535),
    release=st.from_regex(r"[A-Za-z0-9._+~-]{1,40}", fullmatch=True),
    ipv6=st.sampled_from(["on", "off"]),
)
def test_every_well_formed_line_round_trips(
    *, mode: str, key: bytes, address: object, port: int, release: str, ipv6: str
) -> None:
    address_text = f"[{address}]" if ":" in str(address) else str(address)
    line = (
        f"dmnc-setup-result v1 nonce={NONCE} mode={mode} public-key={base64.b64encode(key).decode()} "
        f"endpoint={address_text}:{port} endpoint-name=host.lima.internal ipv6={ipv6} kernel={release}"
    )
    result = parse_result_line_untrusted(line, nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert (result.mode.value, result.vm_public_key, result.endpoint, result.kernel_release, result.ipv6) == (
        mode,
        key,
        (str(address), port),
        release,
        ipv6 == "on",
    )


def test_foreign_line_names_the_interface_left_alone() -> None:
    assert parse_result_line_untrusted(
        f"dmnc-setup-result v1 nonce={NONCE} mode=foreign interface=chip0 kernel=6.10.14-linuxkit", nonce=NONCE
    ) == ForeignInterface("chip0", "6.10.14-linuxkit")


@given(
    interface=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", fullmatch=True),
    release=st.from_regex(r"[A-Za-z0-9._+~-]{1,40}", fullmatch=True),
)
def test_every_well_formed_foreign_line_round_trips(interface: str, release: str) -> None:
    line = f"dmnc-setup-result v1 nonce={NONCE} mode=foreign interface={interface} kernel={release}"
    assert parse_result_line_untrusted(line, nonce=NONCE) == ForeignInterface(interface, release)


@given(interface=st.text(max_size=40).filter(lambda text: " " not in text and "\n" not in text and text))
def test_any_foreign_interface_name_parses_as_itself_or_raises_result_error(interface: str) -> None:
    line = f"dmnc-setup-result v1 nonce={NONCE} mode=foreign interface={interface} kernel=6.1"
    with contextlib.suppress(SetupResultError):
        assert parse_result_line_untrusted(line, nonce=NONCE) == ForeignInterface(interface, "6.1")


@pytest.mark.parametrize("state", list(DockerNftables))
def test_setup_and_check_results_may_say_that_docker_runs_its_nftables_firewall(state: DockerNftables) -> None:
    setup = parse_result_line_untrusted(f"{KERNEL_LINE} docker-nftables={state.value}", nonce=NONCE)
    assert isinstance(setup, SetupResult)
    assert setup.docker_nftables is state
    check = f"dmnc-setup-result v1 nonce={NONCE} mode=kernel-ok kernel=6.1 docker-nftables={state.value}"
    assert parse_result_line_untrusted(check, nonce=NONCE) == KernelWireGuardPresent("6.1", state)
    missing = f"dmnc-setup-result v1 nonce={NONCE} mode=kernel-missing kernel=6.1 docker-nftables={state.value}"
    assert parse_result_line_untrusted(missing, nonce=NONCE) == KernelWireGuardMissing("6.1", state)
    plain = parse_result_line_untrusted(KERNEL_LINE, nonce=NONCE)
    assert isinstance(plain, SetupResult)
    assert plain.docker_nftables is None


@given(value=st.text(max_size=20).filter(lambda text: " " not in text and "\n" not in text and text))
def test_a_docker_nftables_field_is_one_of_its_states_or_refused(value: str) -> None:
    line = f"{KERNEL_LINE} docker-nftables={value}"
    try:
        result = parse_result_line_untrusted(line, nonce=NONCE)
    except SetupResultError:
        assert value not in {state.value for state in DockerNftables} or "=" in value
        return
    assert isinstance(result, SetupResult)
    assert result.docker_nftables is DockerNftables(value)


def test_a_teardown_result_carries_no_docker_nftables_field() -> None:
    with pytest.raises(SetupResultError, match="unexpected"):
        parse_result_line_untrusted(
            f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=6.1 docker-nftables=marked", nonce=NONCE
        )
