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

from dmnc.vm import IptablesBackend, ScriptMode, SetupParams, script_command
from tests.conftest import require_root, require_tools
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
    completed = empty_namespace.run(script_command(params, mode), check=False, timeout=30)
    assert completed.returncode != USAGE_ERROR, completed.stderr
    assert "invalid" not in completed.stderr, completed.stderr
