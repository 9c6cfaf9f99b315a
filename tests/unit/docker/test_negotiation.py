"""API version negotiation and the small pure helpers of the client (addresses, specs, build contexts)."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.docker.address import DaemonAddress
from dmnc.docker.buildcontext import build_context_tar
from dmnc.docker.client import (
    NEWEST_KNOWN_API_VERSION,
    ContainerSpec,
    negotiate_api_version,
    parse_api_version,
)
from dmnc.docker.errors import ApiVersionError, BadResponse, InvalidDaemonAddress
from dmnc.docker.models import Version

NEWEST = "{}.{}".format(*NEWEST_KNOWN_API_VERSION)


def server(api: str, minimum: str = "") -> Version:
    return Version(version="x", api_version=api, min_api_version=minimum)


@pytest.mark.parametrize(
    ("api", "minimum", "chosen"),
    [
        ("1.41", "1.12", "1.41"),  # Docker 20.10, Podman 4
        ("1.43", "1.12", "1.43"),  # Docker 24
        ("1.47", "1.24", "1.47"),  # Docker 27
        (NEWEST, "1.24", NEWEST),
        ("1.52", "1.44", NEWEST),  # Docker 29: newer than dmnc, but still speaks dmnc's newest
        ("1.99", "1.44", NEWEST),
        ("1.41", "", "1.41"),  # Podman sends no MinAPIVersion at times
    ],
)
def test_negotiation_takes_the_lower_of_server_and_dmnc(api: str, minimum: str, chosen: str) -> None:
    assert negotiate_api_version(server(api, minimum)) == chosen


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(minor=st.integers(min_value=41, max_value=59))
def test_negotiation_never_fails_within_1_41_to_1_5x(minor: int) -> None:
    chosen = parse_api_version(negotiate_api_version(server(f"1.{minor}", "1.24")))
    assert (1, 41) <= chosen <= NEWEST_KNOWN_API_VERSION


def test_negotiation_refuses_a_daemon_older_than_1_41() -> None:
    with pytest.raises(ApiVersionError, match="upgrade the container engine"):
        negotiate_api_version(server("1.40", "1.12"))


def test_negotiation_refuses_a_daemon_whose_minimum_is_newer_than_dmnc() -> None:
    with pytest.raises(ApiVersionError, match="upgrade dmnc"):
        negotiate_api_version(server("1.70", "1.60"))


@pytest.mark.parametrize("text", ["", "1", "v1.41", "1.41.2", "a.b", "1.-1"])
def test_malformed_api_version_is_a_bad_response(text: str) -> None:
    with pytest.raises(BadResponse):
        parse_api_version(text)


@pytest.mark.parametrize(
    ("url", "socket_path", "host", "port"),
    [
        ("unix:///var/run/docker.sock", "/var/run/docker.sock", None, None),
        ("/var/run/docker.sock", "/var/run/docker.sock", None, None),
        ("tcp://127.0.0.1:2375", None, "127.0.0.1", 2375),
        ("tcp://localhost", None, "localhost", 2375),
    ],
)
def test_daemon_address_parses_unix_and_tcp(
    url: str, socket_path: str | None, host: str | None, port: int | None
) -> None:
    address = DaemonAddress.parse(url)
    assert (address.socket_path, address.host, address.port) == (socket_path, host, port)


@pytest.mark.parametrize("url", ["ssh://user@host", "npipe:////./pipe/docker_engine", "unix://relative", "tcp://:99"])
def test_daemon_address_rejects_what_dmnc_cannot_speak(url: str) -> None:
    with pytest.raises(InvalidDaemonAddress):
        DaemonAddress.parse(url)


def test_container_spec_builds_the_engine_api_body() -> None:
    body = ContainerSpec(
        image="dmnc-setup:1",
        command=["/setup.sh", "up"],
        env={"HOST_KEY": "abc="},
        labels={"dmnc": "setup"},
        network_mode="host",
        cap_add=["NET_ADMIN"],
        devices=["/dev/net/tun"],
    ).to_json()
    assert body["Cmd"] == ["/setup.sh", "up"]
    assert body["Env"] == ["HOST_KEY=abc="]
    assert "Entrypoint" not in body
    host_config = body["HostConfig"]
    assert isinstance(host_config, dict)
    assert host_config["NetworkMode"] == "host"
    assert host_config["CapAdd"] == ["NET_ADMIN"]
    assert host_config["Devices"] == [
        {"PathOnHost": "/dev/net/tun", "PathInContainer": "/dev/net/tun", "CgroupPermissions": "rwm"}
    ]
    assert "RestartPolicy" not in host_config


def test_container_spec_restart_policy() -> None:
    host_config = ContainerSpec(image="x", restart_policy="unless-stopped").to_json()["HostConfig"]
    assert isinstance(host_config, dict)
    assert host_config["RestartPolicy"] == {"Name": "unless-stopped"}


def test_build_context_is_a_reproducible_tar_with_modes() -> None:
    files: dict[str, bytes | str] = {"Dockerfile": "FROM scratch\n", "setup.sh": b"#!/bin/sh\n"}
    context = build_context_tar(files, executable={"setup.sh"})
    assert context == build_context_tar(files, executable={"setup.sh"})
    with tarfile.open(fileobj=io.BytesIO(context)) as archive:
        members = {member.name: member for member in archive.getmembers()}
        assert members["setup.sh"].mode == 0o755
        assert members["Dockerfile"].mode == 0o644
        extracted = archive.extractfile("Dockerfile")
        assert extracted is not None
        assert extracted.read() == b"FROM scratch\n"


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "a/../../b", ""])
def test_build_context_refuses_paths_outside_the_context(name: str) -> None:
    with pytest.raises(ValueError, match="inside the context"):
        build_context_tar({name: b"x"})


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(url=st.text(max_size=60))
def test_any_daemon_address_text_parses_or_is_invalid(url: str) -> None:
    try:
        address = DaemonAddress.parse(url)
    except InvalidDaemonAddress:
        return
    assert (address.socket_path is None) != (address.host is None)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(major=st.integers(min_value=0, max_value=9999), minor=st.integers(min_value=0, max_value=9999))
def test_api_version_round_trips(major: int, minor: int) -> None:
    assert parse_api_version(f"{major}.{minor}") == (major, minor)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(text=st.text(max_size=12))
def test_any_api_version_text_parses_or_is_a_bad_response(text: str) -> None:
    try:
        major, minor = parse_api_version(text)
    except BadResponse:
        return
    assert [major, minor] == [int(part) for part in text.strip().split(".")]
