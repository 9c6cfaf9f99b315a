"""Socket discovery with fake home directories (no real daemon: a fake probe says which sockets answer)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmnc.docker.address import DaemonAddress
from dmnc.docker.discovery import (
    MAX_DOCKER_FILE_BYTES,
    DiscoveryEnvironment,
    Runtime,
    context_candidate,
    detect_runtime,
    discover_endpoint,
)
from dmnc.docker.errors import DiscoveryError
from dmnc.docker.models import Info, Version


class FakeMachine:
    """A fake filesystem layout: homes for `root` and `alice`, system socket paths, and which sockets answer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.homes = {"root": root / "root", "alice": root / "Users" / "alice"}
        for home in self.homes.values():
            home.mkdir(parents=True)
        self.answering: set[str] = set()
        self.probed: list[str] = []

    def env(
        self,
        *,
        euid: int = 501,
        sudo_user: str | None = None,
        console_user: tuple[str, int] | None = None,
        **environ: str,
    ) -> DiscoveryEnvironment:
        variables = {"HOME": str(self.homes["root" if euid == 0 else "alice"]), **environ}
        if sudo_user is not None:
            variables |= {"SUDO_USER": sudo_user, "SUDO_UID": "501"}
        return DiscoveryEnvironment(
            environ=variables,
            euid=euid,
            home_of_user=self.homes.get,
            console_user=console_user,
            system_docker_socket=self.root / "var" / "run" / "docker.sock",
            system_podman_socket=self.root / "run" / "podman" / "podman.sock",
            run_user_dir=self.root / "run" / "user",
            darwin_temp_root=self.root / "var" / "folders",
        )

    def socket(self, path: Path, *, answering: bool = True) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mknod makes a socket inode without binding, so paths longer than sun_path (108 bytes) work too.
        os.mknod(path, stat.S_IFSOCK | 0o660)
        if answering:
            self.answering.add(f"unix://{path}")
        return path

    def context(self, home: Path, name: str, host: str, *, current: bool = True) -> None:
        docker_dir = home / ".docker"
        meta_dir = docker_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
        meta_dir.mkdir(parents=True)
        (meta_dir / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}}))
        if current:
            (docker_dir / "config.json").write_text(json.dumps({"auths": {}, "currentContext": name}))

    async def probe(self, address: DaemonAddress) -> str | None:
        self.probed.append(address.url)
        return None if address.url in self.answering else "connection refused"


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path)


async def test_docker_host_is_used_and_nothing_else_is_tried(machine: FakeMachine) -> None:
    desktop = machine.socket(machine.homes["alice"] / ".docker" / "run" / "docker.sock")
    chosen = machine.socket(machine.root / "custom.sock")
    endpoint = await discover_endpoint(env=machine.env(DOCKER_HOST=f"unix://{chosen}"), probe=machine.probe)
    assert endpoint.address.socket_path == str(chosen)
    assert endpoint.source == "DOCKER_HOST"
    assert machine.probed == [f"unix://{chosen}"]
    assert str(desktop) not in " ".join(machine.probed)


async def test_docker_host_flag_wins_over_the_environment(machine: FakeMachine) -> None:
    flag = machine.socket(machine.root / "flag.sock")
    machine.socket(machine.root / "env.sock")
    endpoint = await discover_endpoint(
        docker_host=f"unix://{flag}",
        env=machine.env(DOCKER_HOST=f"unix://{machine.root / 'env.sock'}"),
        probe=machine.probe,
    )
    assert (endpoint.source, endpoint.address.socket_path) == ("--docker-host", str(flag))


async def test_explicit_docker_host_that_fails_does_not_fall_back(machine: FakeMachine) -> None:
    machine.socket(machine.homes["alice"] / ".docker" / "run" / "docker.sock")
    with pytest.raises(DiscoveryError) as raised:
        await discover_endpoint(env=machine.env(DOCKER_HOST="unix:///nonexistent/docker.sock"), probe=machine.probe)
    assert [attempt.source for attempt in raised.value.attempts] == ["DOCKER_HOST"]
    assert raised.value.attempts[0].outcome == "does not exist"


async def test_tcp_docker_host_is_probed_without_a_socket_file(machine: FakeMachine) -> None:
    machine.answering.add("tcp://127.0.0.1:2375")
    endpoint = await discover_endpoint(env=machine.env(DOCKER_HOST="tcp://127.0.0.1:2375"), probe=machine.probe)
    assert (endpoint.address.host, endpoint.address.port) == ("127.0.0.1", 2375)


async def test_tcp_docker_host_with_tls_is_reported_as_unsupported(machine: FakeMachine) -> None:
    machine.answering.add("tcp://127.0.0.1:2376")
    with pytest.raises(DiscoveryError, match="TLS"):
        await discover_endpoint(
            env=machine.env(DOCKER_HOST="tcp://127.0.0.1:2376", DOCKER_TLS_VERIFY="1"), probe=machine.probe
        )
    assert machine.probed == []


async def test_ssh_docker_host_is_reported_as_unsupported(machine: FakeMachine) -> None:
    with pytest.raises(DiscoveryError, match="unsupported Docker host"):
        await discover_endpoint(env=machine.env(DOCKER_HOST="ssh://me@vm"), probe=machine.probe)


async def test_current_docker_context_comes_before_known_sockets(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    machine.socket(home / ".docker" / "run" / "docker.sock")
    colima = machine.socket(home / ".colima" / "work" / "docker.sock")
    machine.context(home, "colima-work", f"unix://{colima}")
    endpoint = await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert endpoint.source == "docker context 'colima-work'"
    assert endpoint.address.socket_path == str(colima)


async def test_docker_context_env_overrides_config_json(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    first = machine.socket(machine.root / "first.sock")
    second = machine.socket(machine.root / "second.sock")
    machine.context(home, "first", f"unix://{first}")
    machine.context(home, "second", f"unix://{second}", current=False)
    endpoint = await discover_endpoint(env=machine.env(DOCKER_CONTEXT="second"), probe=machine.probe)
    assert endpoint.address.socket_path == str(second)


async def test_under_sudo_the_invoking_users_context_and_home_are_used(machine: FakeMachine) -> None:
    alice = machine.homes["alice"]
    machine.socket(machine.homes["root"] / ".docker" / "run" / "docker.sock")
    rancher = machine.socket(alice / ".rd" / "docker.sock")
    machine.context(alice, "rancher-desktop", f"unix://{rancher}")
    endpoint = await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    assert endpoint.source == "docker context 'rancher-desktop'"
    assert str(machine.homes["root"]) not in " ".join(machine.probed)


async def test_under_sudo_the_invoking_users_runtime_sockets_are_searched(machine: FakeMachine) -> None:
    orbstack = machine.socket(machine.homes["alice"] / ".orbstack" / "run" / "docker.sock")
    endpoint = await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    assert endpoint.address.socket_path == str(orbstack)


async def test_root_service_without_sudo_uses_the_console_users_context(machine: FakeMachine) -> None:
    # launchd starts the macOS service as root with HOME=/var/root and no SUDO_USER: the logged-in user counts.
    alice = machine.homes["alice"]
    machine.socket(machine.homes["root"] / ".docker" / "run" / "docker.sock")
    colima = machine.socket(alice / ".colima" / "default" / "docker.sock")
    machine.context(alice, "colima", f"unix://{colima}")
    endpoint = await discover_endpoint(env=machine.env(euid=0, console_user=("alice", 501)), probe=machine.probe)
    assert endpoint.source == "docker context 'colima'"


async def test_console_user_is_ignored_when_not_running_as_root(machine: FakeMachine) -> None:
    alice = machine.homes["alice"]
    desktop = machine.socket(alice / ".docker" / "run" / "docker.sock")
    env = machine.env(euid=501, console_user=("bob", 502))
    assert env.desktop_user is None
    assert (await discover_endpoint(env=env, probe=machine.probe)).address.socket_path == str(desktop)


async def test_default_context_falls_through_to_known_sockets(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "default"}))
    system = machine.socket(machine.root / "var" / "run" / "docker.sock")
    endpoint = await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert (endpoint.source, endpoint.address.socket_path) == ("system docker socket", str(system))


async def test_broken_context_is_reported_and_discovery_continues(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "gone"}))
    desktop = machine.socket(home / ".docker" / "run" / "docker.sock")
    endpoint = await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert endpoint.address.socket_path == str(desktop)
    machine.answering.clear()
    with pytest.raises(DiscoveryError, match=r"docker context 'gone': .*meta.json: context not found"):
        await discover_endpoint(env=machine.env(), probe=machine.probe)


async def test_unreadable_config_json_is_reported(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_text("{not json")
    with pytest.raises(DiscoveryError, match=r"docker context: .*config.json: unreadable"):
        await discover_endpoint(env=machine.env(), probe=machine.probe)


async def test_a_fifo_as_config_json_is_reported_at_once_and_never_blocks(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    (home / ".docker").mkdir()
    os.mkfifo(home / ".docker" / "config.json")
    desktop = machine.socket(home / ".docker" / "run" / "docker.sock")
    # A blocking open of a FIFO without a writer waits forever; the guard only keeps a regression from hanging.
    with trio.fail_after(5):
        endpoint = await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    assert endpoint.address.socket_path == str(desktop)
    assert endpoint.attempts[0].outcome.endswith("unreadable: not a regular file")


async def test_a_config_json_symlinked_by_a_dotfile_manager_is_read(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    colima = machine.socket(home / ".colima" / "work" / "docker.sock")
    machine.context(home, "colima-work", f"unix://{colima}")
    dotfiles = home / "dotfiles" / "docker-config.json"
    dotfiles.parent.mkdir()
    (home / ".docker" / "config.json").rename(dotfiles)
    (home / ".docker" / "config.json").symlink_to(dotfiles)
    endpoint = await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    assert endpoint.source == "docker context 'colima-work'"


async def test_files_and_sockets_of_a_third_user_are_refused(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    colima = machine.socket(home / ".colima" / "work" / "docker.sock", answering=False)
    machine.context(home, "colima-work", f"unix://{colima}")
    os.chown(home / ".docker" / "config.json", 4242, 4242)
    desktop = machine.socket(home / ".docker" / "run" / "docker.sock")
    os.chown(desktop, 4242, 4242)
    with pytest.raises(DiscoveryError) as raised:
        await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    outcomes = {attempt.location: attempt.outcome for attempt in raised.value.attempts}
    assert outcomes[str(home / ".docker" / "config.json")] == "unreadable: owned by uid 4242, neither root nor uid 501"
    assert outcomes[str(desktop)] == "owned by uid 4242, neither root nor uid 501"
    os.chown(desktop, 501, 20)  # the user's own socket is fine
    endpoint = await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    assert endpoint.address.socket_path == str(desktop)


async def test_an_oversized_config_json_is_refused(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    (home / ".docker").mkdir()
    (home / ".docker" / "config.json").write_bytes(b" " * (MAX_DOCKER_FILE_BYTES + 1))
    with pytest.raises(DiscoveryError, match=f"unreadable: larger than {MAX_DOCKER_FILE_BYTES} bytes"):
        await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)


async def test_as_root_tcp_comes_only_from_the_flag_not_from_the_users_environment(machine: FakeMachine) -> None:
    machine.answering.add("tcp://127.0.0.1:2375")
    root_under_sudo = machine.env(euid=0, sudo_user="alice", DOCKER_HOST="tcp://127.0.0.1:2375")
    with pytest.raises(DiscoveryError, match="tcp:// daemon from the user's environment is not used by root"):
        await discover_endpoint(env=root_under_sudo, probe=machine.probe)
    assert machine.probed == []
    endpoint = await discover_endpoint("tcp://127.0.0.1:2375", env=root_under_sudo, probe=machine.probe)
    assert (endpoint.source, endpoint.address.port) == ("--docker-host", 2375)


async def test_as_root_a_tcp_context_is_refused(machine: FakeMachine) -> None:
    machine.answering.add("tcp://10.0.0.5:2375")
    machine.context(machine.homes["alice"], "remote", "tcp://10.0.0.5:2375")
    refused = re.escape("docker context 'remote': tcp://10.0.0.5:2375: a tcp:// daemon")
    with pytest.raises(DiscoveryError, match=refused):
        await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    assert machine.probed == []


async def test_a_context_with_tls_material_is_reported_not_downgraded(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    machine.answering.add("tcp://10.0.0.5:2376")
    machine.context(home, "tls", "tcp://10.0.0.5:2376")
    (home / ".docker" / "contexts" / "tls" / hashlib.sha256(b"tls").hexdigest() / "docker").mkdir(parents=True)
    with pytest.raises(DiscoveryError, match="the context uses TLS and dmnc speaks no TLS"):
        await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert machine.probed == []


@pytest.mark.parametrize(
    ("relative_socket", "source", "runtime"),
    [
        (".docker/run/docker.sock", "Docker Desktop", Runtime.DOCKER_DESKTOP),
        (".docker/desktop/docker.sock", "Docker Desktop", Runtime.DOCKER_DESKTOP),
        (".colima/default/docker.sock", "Colima profile 'default'", Runtime.COLIMA),
        (".config/colima/default/docker.sock", "Colima profile 'default'", Runtime.COLIMA),
        (".rd/docker.sock", "Rancher Desktop", Runtime.RANCHER_DESKTOP),
        (".orbstack/run/docker.sock", "OrbStack", Runtime.ORBSTACK),
        (".lima/docker/sock/docker.sock", "Lima instance 'docker'", Runtime.LIMA),
        (".local/share/containers/podman/machine/qemu/podman.sock", "Podman machine", Runtime.PODMAN),
        (".local/share/containers/podman/machine/applehv/default/podman.sock", "Podman machine", Runtime.PODMAN),
    ],
)
async def test_each_runtime_socket_in_the_home_is_found(
    machine: FakeMachine, relative_socket: str, source: str, runtime: Runtime
) -> None:
    path = machine.socket(machine.homes["alice"] / relative_socket)
    endpoint = await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert (endpoint.source, endpoint.address.socket_path) == (source, str(path))
    plain_engine = (Version(version="1", api_version="1.41"), Info(id="", name="vm"))
    assert detect_runtime(*plain_engine, endpoint.address) == runtime


async def test_podman5_machine_socket_in_the_users_macos_temp_dir_is_found_under_sudo(machine: FakeMachine) -> None:
    # Podman 5 on macOS: $TMPDIR/podman/<machine>-api.sock, $TMPDIR being /var/folders/<xx>/<id>/T of the user.
    if os.geteuid() != 0:
        pytest.skip("giving files to other users (chown) needs root")
    others = machine.socket(machine.root / "var" / "folders" / "ab" / "other" / "T" / "podman" / "m-api.sock")
    os.chown(others, 777, 777)
    mine = machine.socket(machine.root / "var" / "folders" / "zz" / "alice" / "T" / "podman" / "m-api.sock")
    os.chown(mine, 501, 20)
    endpoint = await discover_endpoint(env=machine.env(euid=0, sudo_user="alice"), probe=machine.probe)
    assert (endpoint.source, endpoint.address.socket_path) == ("Podman machine", str(mine))
    assert f"unix://{others}" not in machine.probed


async def test_system_podman_sockets_are_found(machine: FakeMachine) -> None:
    rootless = machine.socket(machine.root / "run" / "user" / "501" / "podman" / "podman.sock")
    endpoint = await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert (endpoint.source, endpoint.address.socket_path) == ("Podman (rootless)", str(rootless))
    rootful = machine.socket(machine.root / "run" / "podman" / "podman.sock")
    endpoint = await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert (endpoint.source, endpoint.address.socket_path) == ("Podman (rootful)", str(rootful))


async def test_docker_desktop_comes_before_colima_and_colima_default_before_other_profiles(
    machine: FakeMachine,
) -> None:
    home = machine.homes["alice"]
    machine.socket(home / ".colima" / "another" / "docker.sock")
    default = machine.socket(home / ".colima" / "default" / "docker.sock")
    assert (await discover_endpoint(env=machine.env(), probe=machine.probe)).address.socket_path == str(default)
    desktop = machine.socket(home / ".docker" / "run" / "docker.sock")
    assert (await discover_endpoint(env=machine.env(), probe=machine.probe)).address.socket_path == str(desktop)


async def test_a_socket_that_does_not_answer_is_skipped(machine: FakeMachine) -> None:
    home = machine.homes["alice"]
    machine.socket(home / ".docker" / "run" / "docker.sock", answering=False)
    colima = machine.socket(home / ".colima" / "default" / "docker.sock")
    endpoint = await discover_endpoint(env=machine.env(), probe=machine.probe)
    assert endpoint.address.socket_path == str(colima)


async def test_failure_lists_every_place_tried_and_why(machine: FakeMachine, caplog: pytest.LogCaptureFixture) -> None:
    home = machine.homes["alice"]
    system = machine.root / "var" / "run" / "docker.sock"
    system.parent.mkdir(parents=True)
    # Docker Desktop's /var/run/docker.sock symlink left behind after an uninstall: the classic breakage.
    system.symlink_to(home / ".docker" / "run" / "docker.sock")
    (home / ".rd").mkdir()
    (home / ".rd" / "docker.sock").write_text("not a socket")
    machine.socket(home / ".orbstack" / "run" / "docker.sock", answering=False)
    caplog.set_level(logging.INFO, logger="dmnc.docker.discovery")
    with pytest.raises(DiscoveryError) as raised:
        await discover_endpoint(env=machine.env(), probe=machine.probe)
    outcomes = {attempt.location: attempt.outcome for attempt in raised.value.attempts}
    assert outcomes[str(home / ".docker" / "run" / "docker.sock")] == "does not exist"
    assert outcomes[str(system)] == f"dangling symlink to {home / '.docker' / 'run' / 'docker.sock'}"
    assert outcomes[str(home / ".rd" / "docker.sock")] == "exists but is not a socket"
    assert outcomes[str(home / ".orbstack" / "run" / "docker.sock")] == "connection refused"
    assert str(machine.root / "run" / "podman" / "podman.sock") in outcomes
    assert outcomes[str(home / ".colima")] == "no profile has a docker.sock"
    assert outcomes[str(home / ".lima")] == "no instance has a docker.sock"
    assert "dangling symlink" in str(raised.value)
    tried_lines = [record.getMessage() for record in caplog.records if "trying" in record.getMessage()]
    assert len(tried_lines) == len(raised.value.attempts)


def test_runtime_is_named_from_info_and_version() -> None:
    def runtime_of(*, name: str = "vm", operating_system: str = "", components: tuple[str, ...] = ()) -> Runtime:
        version = Version(version="1", api_version="1.41", component_names=components)
        return detect_runtime(version, Info(id="", name=name, operating_system=operating_system))

    assert runtime_of(operating_system="Docker Desktop") == Runtime.DOCKER_DESKTOP
    assert runtime_of(name="colima") == Runtime.COLIMA
    assert runtime_of(name="colima-work") == Runtime.COLIMA
    assert runtime_of(name="lima-rancher-desktop") == Runtime.RANCHER_DESKTOP
    assert runtime_of(operating_system="OrbStack") == Runtime.ORBSTACK
    assert runtime_of(name="lima-default") == Runtime.LIMA
    assert runtime_of(components=("Podman Engine", "Conmon")) == Runtime.PODMAN
    assert runtime_of(operating_system="Debian GNU/Linux 12 (bookworm)") == Runtime.DOCKER_ENGINE


json_shapes = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just("unix:///x.sock"),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["Endpoints", "docker", "Host", "Name", "currentContext"]), children, max_size=3
        )
    ),
    max_leaves=10,
)
active_config = st.just(b'{"currentContext": "ctx"}')


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(
    config=active_config | st.binary(max_size=100) | json_shapes.map(lambda value: json.dumps(value).encode()),
    meta=st.binary(max_size=100) | json_shapes.map(lambda value: json.dumps(value).encode()),
)
def test_any_config_and_meta_bytes_give_a_context_or_a_reported_problem(
    tmp_path: Path, config: bytes, meta: bytes
) -> None:
    home = tmp_path / "fuzz-home"
    shutil.rmtree(home, ignore_errors=True)
    meta_dir = home / ".docker" / "contexts" / "meta" / hashlib.sha256(b"ctx").hexdigest()
    meta_dir.mkdir(parents=True)
    (home / ".docker" / "config.json").write_bytes(config)
    (meta_dir / "meta.json").write_bytes(meta)
    env = DiscoveryEnvironment(environ={"HOME": str(home)}, euid=501, home_of_user=lambda _: None)
    candidate = context_candidate(env)
    assert candidate is None or (candidate.address is None) != (candidate.problem is None)
