"""What keeps dmnc from starting its tunnel (another program's tunnel address, docker-mac-net-connect's launchd
service, two dmnc services), and how dmnc knows it runs as a service."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dmnc.supervisor.conflicts import (
    DOCKER_MAC_NET_CONNECT_LABEL,
    address_is_local,
    both_dmnc_daemons,
    host_address_conflicts,
    launchd_conflicts,
    running_as_service,
)

TUNNEL_ADDRESSES = (ipaddress.ip_address("10.33.33.1"), ipaddress.ip_address("fd33:33:33::1"))


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"XPC_SERVICE_NAME": "0"}, False),  # a Terminal session on macOS
        ({"XPC_SERVICE_NAME": ""}, False),
        ({"XPC_SERVICE_NAME": "io.github.dmnc"}, True),
        ({"XPC_SERVICE_NAME": "homebrew.mxcl.dmnc"}, True),
        ({"INVOCATION_ID": "0b5d3c2e8f0a4d6c9e1f2a3b4c5d6e7f"}, True),
        ({"INVOCATION_ID": ""}, False),
    ],
)
def test_a_service_is_known_by_what_launchd_or_systemd_put_in_its_environment(
    environ: dict[str, str], expected: bool
) -> None:
    assert running_as_service(environ) is expected


def test_an_address_is_local_only_when_an_interface_holds_it() -> None:
    assert address_is_local(ipaddress.ip_address("127.0.0.1"))
    assert not address_is_local(ipaddress.ip_address("192.0.2.1"))  # TEST-NET-1 (RFC 5737)


def test_each_tunnel_address_another_interface_holds_is_one_conflict_naming_it_and_the_remedy() -> None:
    held = {ipaddress.ip_address("10.33.33.1")}
    (conflict,) = host_address_conflicts(TUNNEL_ADDRESSES, is_local=lambda address: address in held)
    assert "10.33.33.1" in conflict.describe()
    assert "sudo brew services stop docker-mac-net-connect" in conflict.describe()
    assert "\n" not in conflict.describe()
    assert host_address_conflicts(TUNNEL_ADDRESSES, is_local=lambda address: False) == []


def test_docker_mac_net_connect_counts_when_its_plist_is_installed_or_its_label_loaded(tmp_path: Path) -> None:
    asked: list[str] = []

    def loaded(label: str) -> bool:
        asked.append(label)
        return False

    assert launchd_conflicts(tmp_path, loaded=loaded) == []
    assert asked == [DOCKER_MAC_NET_CONNECT_LABEL]
    (conflict,) = launchd_conflicts(tmp_path, loaded=lambda label: True)
    assert "sudo brew services stop docker-mac-net-connect" in conflict.remedy
    (tmp_path / f"{DOCKER_MAC_NET_CONNECT_LABEL}.plist").write_bytes(b"")
    assert len(launchd_conflicts(tmp_path, loaded=lambda label: False)) == 1


def test_both_dmnc_launchd_services_installed_is_found(tmp_path: Path) -> None:
    daemons = tmp_path / "Library" / "LaunchDaemons"
    daemons.mkdir(parents=True)
    (daemons / "io.github.dmnc.plist").write_bytes(b"")
    assert not both_dmnc_daemons(tmp_path)
    (daemons / "homebrew.mxcl.dmnc.plist").write_bytes(b"")
    assert both_dmnc_daemons(tmp_path)
