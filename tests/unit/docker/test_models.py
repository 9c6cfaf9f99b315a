"""Model parsing: real daemon payloads (Docker 20.10, Podman 4.3) read correctly; malformed ones raise BadResponse."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.docker.errors import BadResponse
from dmnc.docker.models import (
    ContainerInfo,
    ContainerState,
    CreatedContainer,
    Event,
    ImageInfo,
    Info,
    IpamConfig,
    Network,
    ProgressMessage,
    Version,
    WaitResult,
    json_list_untrusted,
)

DOCKER_NETWORK = {
    "Name": "dmnc-test",
    "Id": "5788c847685ca548c22a70da7deddcdd9ee7e97639bcef5bb28411af015ce7eb",
    "Created": "2026-11-22T19:57:55.6Z",
    "Scope": "local",
    "Driver": "bridge",
    "EnableIPv6": True,
    "IPAM": {
        "Driver": "default",
        "Options": {},
        "Config": [{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.1"}, {"Subnet": "fd00:99::/64"}],
    },
    "Internal": True,
    "Attachable": False,
    "Containers": {},
    "Options": {},
    "Labels": {"a": "b"},
    "SomethingNewer": [1, 2, 3],
}

PODMAN_NETWORK = {
    "Name": "bridge",
    "Id": "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
    "Scope": "local",
    "Driver": "bridge",
    "EnableIPv6": False,
    "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": "10.88.0.0/16", "Gateway": "10.88.0.1"}]},
    "Internal": False,
    "Labels": None,
}


def test_network_reads_docker_payload_with_ipv4_and_ipv6_pools() -> None:
    network = Network.from_json_untrusted(DOCKER_NETWORK)
    assert network.name == "dmnc-test"
    assert network.driver == "bridge"
    assert network.internal is True
    assert network.enable_ipv6 is True
    assert network.labels == {"a": "b"}
    assert network.subnets == (ipaddress.ip_network("10.99.0.0/24"), ipaddress.ip_network("fd00:99::/64"))
    assert network.ipam_configs[0].gateway == ipaddress.ip_address("10.99.0.1")
    assert network.ipam_configs[1].gateway is None


def test_network_reads_podman_payload_with_nulls() -> None:
    network = Network.from_json_untrusted(PODMAN_NETWORK)
    assert network.labels == {}
    assert network.subnets == (ipaddress.ip_network("10.88.0.0/16"),)


def test_ipv4_is_on_unless_a_docker_28_daemon_says_otherwise() -> None:
    assert Network.from_json_untrusted(DOCKER_NETWORK).enable_ipv4 is True
    assert Network.from_json_untrusted({**DOCKER_NETWORK, "EnableIPv4": False}).enable_ipv4 is False


def test_network_without_ipam_config_has_no_subnets() -> None:
    network = Network.from_json_untrusted({"Name": "host", "Id": "abc", "Driver": "host", "IPAM": {"Config": None}})
    assert network.subnets == ()
    assert network.scope == "local"


def test_network_subnet_with_host_bits_is_normalised() -> None:
    payload = {**DOCKER_NETWORK, "IPAM": {"Config": [{"Subnet": "172.20.0.1/16"}]}}
    assert Network.from_json_untrusted(payload).subnets == (ipaddress.ip_network("172.20.0.0/16"),)


def test_podman_nil_gateway_of_an_internal_network_reads_as_no_gateway() -> None:
    payload = {**PODMAN_NETWORK, "Internal": True, "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "<nil>"}]}}
    assert Network.from_json_untrusted(payload).ipam_configs[0].gateway is None


def test_gateway_with_prefix_length_is_accepted() -> None:
    payload = {**DOCKER_NETWORK, "IPAM": {"Config": [{"Subnet": "10.1.0.0/16", "Gateway": "10.1.0.1/16"}]}}
    assert Network.from_json_untrusted(payload).ipam_configs[0].gateway == ipaddress.ip_address("10.1.0.1")


def test_macvlan_network_reads_parent_ip_range_and_aux_addresses() -> None:
    payload = {
        **DOCKER_NETWORK,
        "Driver": "macvlan",
        "Options": {"parent": "eth1", "macvlan_mode": "bridge"},
        "IPAM": {
            "Config": [
                {
                    "Subnet": "192.168.1.0/24",
                    "Gateway": "192.168.1.1",
                    "IPRange": "192.168.1.192/27",
                    "AuxiliaryAddresses": {"dmnc": "192.168.1.223"},
                }
            ]
        },
    }
    network = Network.from_json_untrusted(payload)
    assert (network.driver, network.parent) == ("macvlan", "eth1")
    (config,) = network.ipam_configs
    assert config.ip_range == ipaddress.ip_network("192.168.1.192/27")
    assert dict(config.aux_addresses) == {"dmnc": ipaddress.ip_address("192.168.1.223")}


def test_network_without_options_has_no_parent_and_no_aux_addresses() -> None:
    network = Network.from_json_untrusted(PODMAN_NETWORK)
    assert network.parent == ""
    assert network.options == {}
    assert all(not config.aux_addresses for config in network.ipam_configs)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"Id": None}, "'Id'"),
        ({"Name": 5}, "'Name'"),
        ({"Internal": "yes"}, "'Internal'"),
        ({"Labels": {"a": 1}}, "'Labels'"),
        ({"Options": {"parent": 1}}, "'Options'"),
    ],
)
def test_network_with_malformed_field_raises_bad_response(change: dict[str, object], complaint: str) -> None:
    with pytest.raises(BadResponse, match=complaint):
        Network.from_json_untrusted({**DOCKER_NETWORK, **change})


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"IPAM": {"Config": [{"Subnet": "10.0.0.0/33"}]}}, "not an IP subnet"),
        ({"IPAM": {"Config": [{"Gateway": "gateway"}]}}, "not an IP address"),
        ({"IPAM": {"Config": "10.0.0.0/8"}}, "'Config'"),
        ({"IPAM": [1]}, "IPAM"),
        ({"IPAM": {"Config": [{"AuxiliaryAddresses": {"dmnc": "shim"}}]}}, "not an IP address"),
        ({"IPAM": {"Config": [{"AuxiliaryAddresses": ["10.0.0.2"]}]}}, "'AuxiliaryAddresses'"),
    ],
)
def test_network_with_malformed_ipam_is_read_with_the_reason_and_no_subnets(
    change: dict[str, object], complaint: str
) -> None:
    # The route policy skips such a network with this reason; one bad network must not fail the whole list.
    network = Network.from_json_untrusted({**DOCKER_NETWORK, **change})
    assert network.name == DOCKER_NETWORK["Name"]
    assert network.subnets == ()
    assert network.malformed is not None
    assert complaint in network.malformed


def test_version_reads_docker_and_podman_payloads() -> None:
    docker = Version.from_json_untrusted(
        {
            "Platform": {"Name": ""},
            "Components": [{"Name": "Engine", "Version": "20.10.24"}, {"Name": "containerd"}],
            "Version": "20.10.24+dfsg1",
            "ApiVersion": "1.41",
            "MinAPIVersion": "1.12",
            "Os": "linux",
            "Arch": "amd64",
        }
    )
    assert (docker.api_version, docker.min_api_version, docker.component_names) == (
        "1.41",
        "1.12",
        ("Engine", "containerd"),
    )
    podman = Version.from_json_untrusted(
        {
            "Platform": {"Name": "linux/amd64/debian-12"},
            "Components": [{"Name": "Podman Engine"}],
            "Version": "4.3.1",
            "ApiVersion": "1.41",
        }
    )
    assert "Podman Engine" in podman.component_names
    assert podman.min_api_version == ""


def test_info_and_container_and_image_and_wait_payloads() -> None:
    info = Info.from_json_untrusted({"ID": "", "Name": "colima", "OperatingSystem": "Ubuntu", "NCPU": 2})
    assert (info.name, info.cpus) == ("colima", 2)
    container = ContainerInfo.from_json_untrusted(
        {
            "Id": "abc",
            "Name": "/setup",
            "Image": "sha256:1",
            "State": {"Status": "exited", "Running": False, "ExitCode": 3, "Error": ""},
            "Config": {"Tty": True, "Labels": {"dmnc": "1"}},
        }
    )
    assert (container.name, container.state.exit_code, container.tty, container.labels) == (
        "setup",
        3,
        True,
        {"dmnc": "1"},
    )
    image = ImageInfo.from_json_untrusted({"Id": "sha256:1", "RepoTags": ["a:b"], "Config": {"Labels": None}})
    assert image.repo_tags == ("a:b",)
    assert WaitResult.from_json_untrusted({"StatusCode": 3, "Error": None}).status_code == 3
    assert CreatedContainer.from_json_untrusted({"Id": "abc", "Warnings": None}).warnings == ()


def test_container_without_state_raises_bad_response() -> None:
    with pytest.raises(BadResponse, match="container state"):
        ContainerInfo.from_json_untrusted({"Id": "abc"})


def test_wait_result_rejects_boolean_status_code() -> None:
    with pytest.raises(BadResponse, match="StatusCode"):
        WaitResult.from_json_untrusted({"StatusCode": True})


def test_event_reads_modern_and_legacy_fields() -> None:
    modern = Event.from_json_untrusted(
        {
            "Type": "network",
            "Action": "create",
            "Actor": {"ID": "n1", "Attributes": {"name": "x", "type": "bridge"}},
            "scope": "local",
            "time": 1795377475,
            "timeNano": 1795377475613830319,
        }
    )
    assert (modern.type, modern.action, modern.actor_id, modern.time_nano) == (
        "network",
        "create",
        "n1",
        1795377475613830319,
    )
    legacy = Event.from_json_untrusted({"status": "die", "id": "c1", "time": 10})
    assert (legacy.action, legacy.actor_id, legacy.time_nano) == ("die", "c1", 10_000_000_000)


MODELS: list[Callable[[object], object]] = [
    Network.from_json_untrusted,
    IpamConfig.from_json_untrusted,
    ContainerState.from_json_untrusted,
    lambda value: json_list_untrusted(value, "networks"),
    Version.from_json_untrusted,
    Info.from_json_untrusted,
    ContainerInfo.from_json_untrusted,
    CreatedContainer.from_json_untrusted,
    WaitResult.from_json_untrusted,
    ImageInfo.from_json_untrusted,
    Event.from_json_untrusted,
    ProgressMessage.from_json_untrusted,
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
# Objects shaped like the real ones, with the right keys but any values: the interesting malformed case.
KEYS = [
    "Id",
    "Name",
    "Driver",
    "Scope",
    "Internal",
    "EnableIPv6",
    "Labels",
    "IPAM",
    "Config",
    "Subnet",
    "Gateway",
    "IPRange",
    "AuxiliaryAddresses",
    "Options",
    "Running",
    "Pid",
    "ExitCode",
    "Version",
    "ApiVersion",
    "Components",
    "State",
    "Status",
    "StatusCode",
    "Actor",
    "Attributes",
    "timeNano",
    "time",
    "Type",
    "Action",
    "RepoTags",
    "error",
    "errorDetail",
    "aux",
    "Platform",
    "Error",
    "Warnings",
]
shaped_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(["10.0.0.0/8", "fd00::/64"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=6),
    max_leaves=20,
)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(model=st.sampled_from(MODELS), value=json_values | shaped_values)
def test_any_json_either_parses_or_raises_bad_response(model: Callable[[object], object], value: object) -> None:
    # Anything but BadResponse (KeyError, TypeError, ValueError...) escaping fails the test.
    with contextlib.suppress(BadResponse):
        model(value)


ipv4_subnets = st.builds(
    lambda address, prefix: ipaddress.IPv4Network((address, prefix), strict=False),
    st.ip_addresses(v=4),
    st.integers(min_value=8, max_value=32),
)
ipv6_subnets = st.builds(
    lambda address, prefix: ipaddress.IPv6Network((address, prefix), strict=False),
    st.ip_addresses(v=6),
    st.integers(min_value=16, max_value=128),
)
names = st.text(min_size=1, max_size=20)


@given(
    network_id=st.text(alphabet="0123456789abcdef", min_size=12, max_size=64),
    name=names,
    internal=st.booleans(),
    enable_ipv6=st.booleans(),
    labels=st.dictionaries(names, st.text(max_size=10), max_size=3),
    pools=st.lists(st.tuples(ipv4_subnets | ipv6_subnets, st.booleans()), max_size=4),
)
def test_any_well_formed_network_reads_back_what_the_daemon_sent(
    *,
    network_id: str,
    name: str,
    internal: bool,
    enable_ipv6: bool,
    labels: dict[str, str],
    pools: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, bool]],
) -> None:
    """The decoder keeps every subnet in daemon order, and the gateway (written as Docker or Podman does)."""
    configs: list[dict[str, str]] = []
    for subnet, with_prefix in pools:
        gateway = subnet.network_address
        configs.append(
            {"Subnet": str(subnet), "Gateway": f"{gateway}/{subnet.prefixlen}" if with_prefix else str(gateway)}
        )
    payload = {
        "Id": network_id,
        "Name": name,
        "Driver": "bridge",
        "Internal": internal,
        "EnableIPv6": enable_ipv6,
        "Labels": labels,
        "IPAM": {"Driver": "default", "Config": configs},
    }
    network = Network.from_json_untrusted(payload)
    assert (network.id, network.name, network.internal, network.enable_ipv6) == (
        network_id,
        name,
        internal,
        enable_ipv6,
    )
    assert dict(network.labels) == labels
    assert network.subnets == tuple(subnet for subnet, _ in pools)
    assert [config.gateway for config in network.ipam_configs] == [subnet.network_address for subnet, _ in pools]


@given(
    parent=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=15),
    subnet=ipv4_subnets,
    aux=st.dictionaries(names, st.ip_addresses(), max_size=3),
    with_range=st.booleans(),
)
def test_any_macvlan_network_reads_back_parent_range_and_reservations(
    *,
    parent: str,
    subnet: ipaddress.IPv4Network,
    aux: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address],
    with_range: bool,
) -> None:
    ip_range = next(subnet.subnets(prefixlen_diff=1), subnet) if with_range else None
    config: dict[str, object] = {"Subnet": str(subnet), "AuxiliaryAddresses": {k: str(v) for k, v in aux.items()}}
    if ip_range is not None:
        config["IPRange"] = str(ip_range)
    payload = {
        "Id": "ab" * 32,
        "Name": "lan",
        "Driver": "macvlan",
        "Options": {"parent": parent},
        "IPAM": {"Config": [config]},
    }
    network = Network.from_json_untrusted(payload)
    assert network.parent == parent
    (read,) = network.ipam_configs
    assert read.ip_range == ip_range
    assert dict(read.aux_addresses) == aux
