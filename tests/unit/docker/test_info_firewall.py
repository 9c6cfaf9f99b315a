"""`GET /info`'s FirewallBackend (Engine API FirewallInfo): the driver dmnc's doctor compares with what the VM shows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.docker.errors import BadResponse
from dmnc.docker.models import Info


@pytest.mark.parametrize(
    ("extra", "driver"),
    [
        ({"FirewallBackend": {"Driver": "nftables", "Info": [["ReloadedAt", "2025-01-01T00:00:00Z"]]}}, "nftables"),
        ({"FirewallBackend": {"Driver": "iptables"}}, "iptables"),
        ({"FirewallBackend": None}, ""),
        ({}, ""),
    ],
)
def test_the_firewall_driver_is_read_when_reported(extra: dict[str, object], driver: str) -> None:
    assert Info.from_json_untrusted({"ID": "x", "Name": "vm", **extra}).firewall_backend == driver


@given(backend=st.one_of(st.text(max_size=10), st.integers(), st.lists(st.text(max_size=5), max_size=2)))
def test_a_firewall_backend_that_is_no_object_is_a_bad_response(backend: object) -> None:
    with pytest.raises(BadResponse):
        Info.from_json_untrusted({"ID": "x", "Name": "vm", "FirewallBackend": backend})


@given(driver=st.one_of(st.none(), st.text(max_size=20), st.integers(), st.booleans()))
def test_any_driver_value_is_a_string_or_a_bad_response(driver: object) -> None:
    try:
        info = Info.from_json_untrusted({"ID": "x", "FirewallBackend": {"Driver": driver}})
    except BadResponse:
        assert not isinstance(driver, str | None)
        return
    assert info.firewall_backend == (driver or "")
