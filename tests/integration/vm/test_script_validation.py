"""The script and SetupParams agree on what is valid: every SetupParams dmnc accepts passes the script's own checks.

A mismatch would turn into a setup failure at runtime ("invalid --mtu" from a value dmnc considered fine), so this
runs the real script (dash, as in the lab image) on generated parameters. It runs in a fresh namespace, where this
kernel has no WireGuard: after validation the script only looks up names (no network there, so lookups fail fast) and
reports `kernel-missing` or an unresolvable endpoint, never a usage error (exit 2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmnc.vm import (
    IptablesBackend,
    ScriptMode,
    ScriptOutcome,
    SetupParams,
    new_run_nonce,
    outcome_from_output_untrusted,
    script_command,
)
from dmnc.vm.assets import setup_script
from dmnc.vm.params import SCRIPT_NAME
from tests.conftest import require_root, require_tools
from tests.integration.vm.scriptlab import LAB_NONCE
from tests.lab.netns import Netns, netns

pytestmark = pytest.mark.lab

USAGE_ERROR = 2

host_names = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True
)


@st.composite
def setup_params(draw: st.DrawFn) -> SetupParams:
    host_address, vm_address = draw(st.lists(st.ip_addresses(v=4), min_size=2, max_size=2, unique=True))
    with_ipv6 = draw(st.booleans())
    host6, vm6 = (
        draw(st.lists(st.ip_addresses(v=6), min_size=2, max_size=2, unique=True)) if with_ipv6 else (None, None)
    )
    endpoint = draw(st.one_of(st.none(), st.ip_addresses().map(str), host_names))
    candidates = tuple(draw(st.lists(host_names, min_size=1, max_size=3)))
    assert isinstance(host_address, ipaddress.IPv4Address)
    assert isinstance(vm_address, ipaddress.IPv4Address)
    assert host6 is None or isinstance(host6, ipaddress.IPv6Address)
    assert vm6 is None or isinstance(vm6, ipaddress.IPv6Address)
    return SetupParams(
        host_public_key=draw(st.binary(min_size=32, max_size=32)),
        port=draw(st.integers(1, 65535)),
        endpoint=endpoint,
        endpoint_candidates=candidates,
        host_address=host_address,
        vm_address=vm_address,
        host_address6=host6,
        vm_address6=vm6,
        mtu=draw(st.integers(1280, 65535)),
        interface=draw(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", fullmatch=True)),
        iptables=draw(st.sampled_from(IptablesBackend)),
    )


@pytest.fixture(scope="module")
def empty_namespace() -> Iterator[Netns]:
    require_root()
    require_tools("ip", "dash")
    with netns("dmva") as namespace:
        yield namespace


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=setup_params(), mode=st.sampled_from(ScriptMode))
def test_every_accepted_setup_params_passes_the_scripts_validation(
    empty_namespace: Netns, params: SetupParams, mode: ScriptMode
) -> None:
    if mode is ScriptMode.USERSPACE:
        # Validation is shared; the userspace entry would start wireguard-go, so check it through `setup`.
        mode = ScriptMode.SETUP
    completed = empty_namespace.run(script_command(params, mode, nonce=LAB_NONCE), check=False, timeout=30)
    assert completed.returncode != USAGE_ERROR, completed.stderr
    assert "invalid" not in completed.stderr, completed.stderr


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nonce=st.sampled_from([new_run_nonce(), LAB_NONCE]), mode=st.sampled_from([ScriptMode.CHECK, ScriptMode.SETUP]))
def test_the_script_echoes_the_runs_nonce_in_its_result_line(
    empty_namespace: Netns, nonce: str, mode: ScriptMode
) -> None:
    params = SetupParams(bytes(32), 51820, endpoint="192.0.2.1")
    completed = empty_namespace.run(script_command(params, mode, nonce=nonce), check=False, timeout=30)
    assert isinstance(outcome_from_output_untrusted(completed.stdout, completed.returncode, nonce=nonce), ScriptOutcome)


@pytest.mark.parametrize(
    "nonce_arguments",
    [
        [],
        ["--nonce", ""],
        ["--nonce", "0" * 31],
        ["--nonce", "0" * 33],
        ["--nonce", "A" * 32],
        ["--nonce", "0" * 32 + " x"],
    ],
)
def test_a_missing_or_malformed_nonce_is_a_usage_error(empty_namespace: Netns, nonce_arguments: list[str]) -> None:
    # Built by hand: script_command refuses such a nonce before any script could see it.
    command = ["/bin/sh", "-c", setup_script(), SCRIPT_NAME, ScriptMode.CHECK.value, *nonce_arguments]
    completed = empty_namespace.run(command, check=False, timeout=30)
    assert completed.returncode == USAGE_ERROR, completed.stderr
    assert "--nonce" in completed.stderr
    assert "dmnc-setup-result" not in completed.stdout


@pytest.mark.parametrize("address", ["010.1.1.1", "1.2.3.256", "1.2.3", "1.2.3.4.5", "1..3.4", "1.2.3.4.", "1.2.3.0x1"])
def test_an_ipv4_address_not_in_canonical_dotted_decimal_is_a_usage_error(empty_namespace: Netns, address: str) -> None:
    # Built by hand: SetupParams holds ipaddress objects, which never print such text.
    params = SetupParams(bytes(32), 51820, endpoint="192.0.2.1")
    command = [*script_command(params, ScriptMode.SETUP, nonce=LAB_NONCE), "--host-address", address]
    completed = empty_namespace.run(command, check=False, timeout=30)
    assert completed.returncode == USAGE_ERROR, completed.stderr
    assert f"invalid --host-address '{address}'" in completed.stderr
