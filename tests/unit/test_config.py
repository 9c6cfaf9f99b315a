from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc import config
from dmnc.config import (
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_LISTEN_PORT,
    Config,
    ConfigError,
    ConfigFlags,
    EndpointOption,
    ListenAddress,
    ValueProblem,
    load_config,
    load_control_socket_path,
    parse_bool_word,
    parse_docker_host,
    parse_endpoint,
    parse_image_reference,
    parse_listen,
    parse_log_level,
    parse_vm_stale_after,
)
from dmnc.docker.address import DaemonAddress
from dmnc.logsetup import LogLevel

# Property tests check behaviour, not speed: a loaded machine must not fail them (no per-example deadline).
untimed = settings(deadline=None)


@pytest.fixture(autouse=True)
def no_default_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the machine's /etc/dmnc/config.toml."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent-default.toml")


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return {"DMNC_CONFIG": str(path)}


def config_error(flags: ConfigFlags, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(flags, environ)
    return str(raised.value)


# --- defaults and precedence ------------------------------------------------------------------------------------------


def test_nothing_given_yields_documented_defaults() -> None:
    loaded = load_config(ConfigFlags(), {})
    assert loaded == Config()
    assert loaded.listen == ListenAddress(ipaddress.IPv4Address("0.0.0.0"), 3333, port_explicit=False)
    assert loaded.control_socket == Path("/var/run/dmnc.sock")
    assert loaded.log_level is LogLevel.INFO
    assert loaded.docker_host is None
    assert loaded.endpoint is None
    assert loaded.setup_image is None
    assert loaded.config_file is None
    assert not loaded.keep_vm_config
    assert not loaded.routes.force
    assert loaded.vm_stale_after == config.DEFAULT_VM_STALE_AFTER_S == 40.0


def test_default_config_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "default.toml"
    default.write_text('listen = "127.0.0.1:4000"\n', encoding="utf-8")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", default)
    loaded = load_config(ConfigFlags(), {})
    assert str(loaded.listen) == "127.0.0.1:4000"
    assert loaded.config_file == default


@pytest.mark.parametrize(
    ("field", "file_value", "env_value", "flag_value"),
    [
        ("listen", "127.0.0.3:3", "127.0.0.2:2", "127.0.0.1:1"),
        ("endpoint", "file.example", "env.example", "flag.example"),
        ("docker_host", "unix:///file.sock", "unix:///env.sock", "unix:///flag.sock"),
        ("setup_image", "file:1", "env:1", "flag:1"),
        ("control_socket", "/file.sock", "/env.sock", "/flag.sock"),
        ("log_level", "debug", "warning", "error"),
    ],
)
def test_flag_beats_environment_beats_file(
    tmp_path: Path, field: str, file_value: str, env_value: str, flag_value: str
) -> None:
    def shown(loaded: Config) -> str:
        value = getattr(loaded, field)
        return value.url if isinstance(value, DaemonAddress) else str(value)

    environ = write_config(tmp_path, f'{field} = "{file_value}"\n')
    assert shown(load_config(ConfigFlags(), environ)) == file_value
    with_env = {**environ, f"DMNC_{field.upper()}": env_value}
    assert shown(load_config(ConfigFlags(), with_env)) == env_value
    flag_setting: dict[str, Any] = {field: flag_value}
    with_flag = dataclasses.replace(ConfigFlags(), **flag_setting)
    assert shown(load_config(with_flag, with_env)) == flag_value


def test_log_level_falls_back_to_docker_mac_net_connect_variable() -> None:
    assert load_config(ConfigFlags(), {"LOG_LEVEL": "verbose"}).log_level is LogLevel.DEBUG
    assert load_config(ConfigFlags(), {"LOG_LEVEL": "error", "DMNC_LOG_LEVEL": "info"}).log_level is LogLevel.INFO


def test_overridden_values_are_not_parsed() -> None:
    # LOG_LEVEL is a common name; a value meant for another program must not stop dmnc when a flag decides.
    loaded = load_config(ConfigFlags(log_level="debug", listen="0.0.0.0"), {"LOG_LEVEL": "chatty", "DMNC_LISTEN": "?"})
    assert loaded.log_level is LogLevel.DEBUG
    assert "DMNC_LISTEN" in config_error(ConfigFlags(), {"DMNC_LISTEN": "not an address"})


def test_empty_environment_variable_counts_as_unset() -> None:
    assert load_config(ConfigFlags(), {"DMNC_LISTEN": "", "DMNC_KEEP_VM_CONFIG": ""}) == Config()


def test_switches_flag_environment_and_file(tmp_path: Path) -> None:
    environ = write_config(tmp_path, "keep_vm_config = true\nforce_routes = true\n")
    from_file = load_config(ConfigFlags(), environ)
    assert from_file.keep_vm_config
    assert from_file.routes.force
    turned_off = load_config(ConfigFlags(), {**environ, "DMNC_KEEP_VM_CONFIG": "no", "DMNC_FORCE_ROUTES": "0"})
    assert not turned_off.keep_vm_config
    assert not turned_off.routes.force
    from_flags = load_config(
        ConfigFlags(keep_vm_config=True, force_routes=True), {"DMNC_KEEP_VM_CONFIG": "off", "DMNC_FORCE_ROUTES": "off"}
    )
    assert from_flags.keep_vm_config
    assert from_flags.routes.force


def test_route_patterns_from_each_layer(tmp_path: Path) -> None:
    environ = write_config(tmp_path, '[routes]\ninclude = ["10.0.0.0/8"]\nexclude = ["bridge"]\n')
    from_file = load_config(ConfigFlags(), environ).routes
    assert [str(pattern) for pattern in from_file.include] == ["10.0.0.0/8"]
    assert [str(pattern) for pattern in from_file.exclude] == ["bridge"]
    from_env = load_config(ConfigFlags(), {**environ, "DMNC_ROUTES_INCLUDE": " proj_* , 172.16.0.0/12,"}).routes
    assert [str(pattern) for pattern in from_env.include] == ["proj_*", "172.16.0.0/12"]
    from_flags = load_config(ConfigFlags(route_include=("db",)), {**environ, "DMNC_ROUTES_INCLUDE": "x"}).routes
    assert [str(pattern) for pattern in from_flags.include] == ["db"]


def test_route_allow_and_over_cidrs_from_each_layer(tmp_path: Path) -> None:
    environ = write_config(tmp_path, '[routes]\nallow = ["8.8.8.0/24"]\nover = ["172.30.0.0/16", "fd77::/16"]\n')
    from_file = load_config(ConfigFlags(), environ).routes
    assert [str(cidr) for cidr in from_file.allow] == ["8.8.8.0/24"]
    assert [str(cidr) for cidr in from_file.over] == ["172.30.0.0/16", "fd77::/16"]
    from_env = load_config(ConfigFlags(), {**environ, "DMNC_ROUTES_ALLOW": " 1.2.3.0/24 , 2001:4860::/32,"}).routes
    assert [str(cidr) for cidr in from_env.allow] == ["1.2.3.0/24", "2001:4860::/32"]
    from_flags = load_config(ConfigFlags(route_over=("10.9.0.0/16",)), {**environ, "DMNC_ROUTES_OVER": "x"}).routes
    assert [str(cidr) for cidr in from_flags.over] == ["10.9.0.0/16"]


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (ConfigFlags(route_allow=("web_*",)), {}, "--route-allow: network 'web_*' is not a valid CIDR"),
        (ConfigFlags(), {"DMNC_ROUTES_OVER": "10.0.0.1/8"}, "DMNC_ROUTES_OVER: network '10.0.0.1/8' is not a valid"),
    ],
)
def test_bad_allow_or_over_cidrs_name_their_source(
    tmp_path: Path, flags: ConfigFlags, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(flags, {**write_config(tmp_path, ""), **environ})
    assert message in str(caught.value)


def test_config_file_named_by_flag_beats_environment(tmp_path: Path) -> None:
    environ = write_config(tmp_path, 'listen = "127.0.0.1:5"\n')
    other = tmp_path / "other.toml"
    other.write_text('listen = "127.0.0.1:6"\n', encoding="utf-8")
    loaded = load_config(ConfigFlags(config_file=str(other)), environ)
    assert loaded.listen.port == 6
    assert loaded.config_file == other


# --- error messages -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (ConfigFlags(listen="1.2.3.4:99999"), "--listen: port 99999 is not in 0-65535"),
        (ConfigFlags(listen="1.2.3.4:http"), "--listen: port 'http' is not a number"),
        (ConfigFlags(listen="localhost:3333"), "--listen: 'localhost' is not an IP address"),
        (ConfigFlags(listen=":3333"), "--listen: ':3333' has no address (use 0.0.0.0:PORT to listen on every address)"),
        (ConfigFlags(listen="[::1"), "--listen: '[::1' opens '[' without a closing ']'"),
        (ConfigFlags(listen="[::1]3333"), "--listen: '[::1]3333' has '3333' after ']' where ':PORT' or nothing"),
        (ConfigFlags(listen="[]:1"), "--listen: '[]:1' has an empty address between '[' and ']'"),
        (ConfigFlags(endpoint="host:0"), "--endpoint: port 0 is not in 1-65535"),
        (ConfigFlags(endpoint="-bad-"), "--endpoint: '-bad-' is neither an IP address nor a valid host name"),
        (ConfigFlags(endpoint=":3333"), "--endpoint: ':3333' has no host"),
        (ConfigFlags(docker_host="ssh://vm"), "--docker-host: unsupported Docker host 'ssh://vm': dmnc speaks unix://"),
        (ConfigFlags(docker_host="unix://relative.sock"), "--docker-host: unix socket address needs an absolute path"),
        (ConfigFlags(setup_image="bad image"), "--setup-image: 'bad image' is not an image reference"),
        (ConfigFlags(setup_image="x/" + "a" * 300), "--setup-image: the image name in"),
        (ConfigFlags(control_socket=""), "--control-socket: the socket path is empty"),
        (ConfigFlags(control_socket="/" + "s" * 200), "is longer than the"),
        (ConfigFlags(log_level="loud"), "--log-level: unknown log level 'loud'; expected one of debug, info,"),
        (
            ConfigFlags(route_include=("10.0.0.1/8",)),
            "--route-include: network pattern '10.0.0.1/8' is not a valid CIDR",
        ),
        (ConfigFlags(route_exclude=("ok", " ")), "--route-exclude: empty network pattern"),
        (ConfigFlags(config_file=""), "--config: the path is empty"),
    ],
)
def test_bad_flag_values_name_the_flag_and_the_reason(flags: ConfigFlags, message: str) -> None:
    assert message in config_error(flags, {})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DMNC_LISTEN": "1.2.3.4:x"}, "DMNC_LISTEN: port 'x' is not a number"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL: unknown log level 'chatty'"),
        ({"DMNC_LOG_LEVEL": "chatty", "LOG_LEVEL": "info"}, "DMNC_LOG_LEVEL: unknown log level 'chatty'"),
        ({"DMNC_KEEP_VM_CONFIG": "maybe"}, "DMNC_KEEP_VM_CONFIG: 'maybe' is not a yes/no value"),
        ({"DMNC_FORCE_ROUTES": "2"}, "DMNC_FORCE_ROUTES: '2' is not a yes/no value"),
        (
            {"DMNC_ROUTES_EXCLUDE": "ok,10.0.0.0/99"},
            "DMNC_ROUTES_EXCLUDE: network pattern '10.0.0.0/99' is not a valid",
        ),
        ({"DMNC_CONFIG": "/nonexistent/dmnc.toml"}, "DMNC_CONFIG: config file '/nonexistent/dmnc.toml' does not exist"),
    ],
)
def test_bad_environment_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    assert message in config_error(ConfigFlags(), environ)


def test_missing_config_file_named_by_flag(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert (
        config_error(ConfigFlags(config_file=str(missing)), {}) == f"--config: config file '{missing}' does not exist"
    )


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    open_before = len(os.listdir("/dev/fd"))
    assert config_error(ConfigFlags(config_file=str(tmp_path)), {}) == (
        f"--config: config file '{tmp_path}' is a directory"
    )
    assert len(os.listdir("/dev/fd")) == open_before


def deny_reading(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `path` unreadable, as it would be for a user without permission (root reads everything)."""
    real_open = os.open

    def open_unless_denied(name: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if Path(name) == path:
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, flags, mode)

    monkeypatch.setattr(os, "open", open_unless_denied)


def test_unreadable_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environ = write_config(tmp_path, "")
    deny_reading(tmp_path / "config.toml", monkeypatch)
    assert config_error(ConfigFlags(), environ) == (
        f"DMNC_CONFIG: no permission to read config file '{tmp_path / 'config.toml'}'"
    )


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_root_refuses_a_config_file_others_may_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    environ = write_config(tmp_path, 'setup_image = "attacker/image"\n')
    path = tmp_path / "config.toml"
    path.chmod(mode)
    assert config_error(ConfigFlags(), environ) == (
        f"{path}: other users may change this file (mode {mode:04o}) while dmnc runs it as root; "
        f"make it writable by its owner only: chmod go-w {path}"
    )
    path.chmod(0o644)
    assert load_config(ConfigFlags(), environ).setup_image == "attacker/image"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    assert config_error(ConfigFlags(config_file=str(fifo)), {}) == f"{fifo}: not a regular file"


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    environ = write_config(tmp_path, "#" * config.MAX_CONFIG_FILE_BYTES)
    assert load_config(ConfigFlags(), environ) == Config(config_file=tmp_path / "config.toml")


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    environ = write_config(tmp_path, "#" * (config.MAX_CONFIG_FILE_BYTES + 1))
    assert config_error(ConfigFlags(), environ).endswith("larger than 1048576 bytes; is this the right file?")


def test_config_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'listen = "\xff"\n')
    assert config_error(ConfigFlags(config_file=str(path)), {}).startswith(
        f"{path}: not UTF-8 text (invalid start byte"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('log_level = "info"\nlisten = [\n', "config.toml: not valid TOML: "),
        ('log_level = "info"\n\nlisten = 3333\n', "config.toml:3 (listen): expected a string, got an integer"),
        ('keep_vm_config = "yes"\n', "config.toml:1 (keep_vm_config): expected true or false, got a string"),
        ('[routes]\ninclude = "10.0.0.0/8"\n', "config.toml:2 (routes.include): expected an array of strings, got a"),
        ("[routes]\ninclude = [1]\n", "config.toml:2 (routes.include): expected an array of strings, got an array"),
        ('routes = "all"\n', "config.toml:1 (routes): expected a table [routes], got a string"),
        ('lisen = "0.0.0.0"\n', "config.toml:1 (lisen): unknown key (known keys: control_socket, dns, docker_host,"),
        (
            "[routes]\nonly = []\n",
            "config.toml:2 (routes.only): unknown key (known in [routes]: allow, exclude, include, over)",
        ),
        ('listen = "0.0.0.0:1"\n"endpoint" = "a_b"\n', "config.toml:2 (endpoint): 'a_b' is neither an IP address"),
        (
            '[routes]\nexclude = ["10.0.0.0/33"]\n',
            "config.toml:2 (routes.exclude): network pattern '10.0.0.0/33' is not a valid",
        ),
        ('control_socket = "run/dmnc.sock"\n', "config.toml:1 (control_socket): the control socket path 'run/dmnc"),
        ("routes.include = [2]\n", "config.toml (routes.include): expected an array of strings"),
    ],
)
def test_bad_config_file_values_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    assert message in config_error(ConfigFlags(), write_config(tmp_path, text))


def test_wrongly_typed_file_value_is_reported_even_when_overridden(tmp_path: Path) -> None:
    environ = write_config(tmp_path, "listen = 3333\n")
    assert "config.toml:1 (listen): expected a string" in config_error(ConfigFlags(listen="0.0.0.0:1"), environ)


# --- value parsers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0", ListenAddress(ipaddress.ip_address("0.0.0.0"), DEFAULT_LISTEN_PORT, port_explicit=False)),
        ("127.0.0.1:0", ListenAddress(ipaddress.ip_address("127.0.0.1"), 0, port_explicit=True)),
        ("10.0.0.1:3333", ListenAddress(ipaddress.ip_address("10.0.0.1"), 3333, port_explicit=True)),
        ("::", ListenAddress(ipaddress.ip_address("::"), DEFAULT_LISTEN_PORT, port_explicit=False)),
        ("::1:3333", ListenAddress(ipaddress.ip_address("::1:3333"), DEFAULT_LISTEN_PORT, port_explicit=False)),
        ("[::1]", ListenAddress(ipaddress.ip_address("::1"), DEFAULT_LISTEN_PORT, port_explicit=False)),
        ("[::1]:3333", ListenAddress(ipaddress.ip_address("::1"), 3333, port_explicit=True)),
    ],
)
def test_listen_forms(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected


def test_explicit_default_port_is_still_explicit() -> None:
    assert parse_listen("0.0.0.0:3333").port_explicit
    assert not parse_listen("0.0.0.0").port_explicit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.docker.internal", EndpointOption("host.docker.internal", None)),
        ("host.docker.internal:3333", EndpointOption("host.docker.internal", 3333)),
        ("192.168.65.254:51820", EndpointOption("192.168.65.254", 51820)),
        ("[fd00::1]:3333", EndpointOption("fd00::1", 3333)),
        ("fd00::1", EndpointOption("fd00::1", None)),
        ("[FD00:0::1]", EndpointOption("fd00::1", None)),
    ],
)
def test_endpoint_forms(text: str, expected: EndpointOption) -> None:
    assert parse_endpoint(text) == expected


def test_docker_host_unix_url() -> None:
    docker_host = parse_docker_host("unix:///var/run/docker.sock")
    assert docker_host.socket_path == "/var/run/docker.sock"
    assert docker_host.url == "unix:///var/run/docker.sock"
    assert parse_docker_host("tcp://127.0.0.1:2375").port == 2375


@pytest.mark.parametrize(
    "reference",
    [
        "dmnc-setup",
        "dmnc-setup:0.1.0",
        "ghcr.io/chipmk/docker-mac-net-connect/setup:v0.1.3",
        "localhost:5000/a/b__c-d.e:tag",
        "busybox@sha256:" + "a" * 64,
        "busybox:1.36@sha256:" + "0" * 64,
    ],
)
def test_valid_image_references(reference: str) -> None:
    assert parse_image_reference(reference) == reference


@pytest.mark.parametrize("reference", ["", "Busybox", "a:b:c", "name:" + "t" * 129, "a@sha256:abc", "a//b", "-a"])
def test_invalid_image_references(reference: str) -> None:
    with pytest.raises(ValueProblem):
        parse_image_reference(reference)


def test_log_level_spellings() -> None:
    assert parse_log_level("VERBOSE") is LogLevel.DEBUG
    assert parse_log_level("warn") is LogLevel.WARNING
    assert parse_log_level(" Error ") is LogLevel.ERROR
    assert parse_log_level("silent").logging_level > 50


def test_bool_words() -> None:
    assert all(parse_bool_word(word) for word in ["1", "true", "YES", "On"])
    assert not any(parse_bool_word(word) for word in ["0", "false", "No", "OFF"])


# --- property tests: parsers accept their own output and reject everything else with ValueProblem ---------------------

ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
ports = st.integers(min_value=0, max_value=65535)
host_labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)
hostnames = st.lists(host_labels, min_size=1, max_size=4).map(".".join).filter(lambda name: len(name) <= 253)


@untimed
@given(st.one_of(ipv4, ipv6), ports)
def test_listen_round_trips_with_port(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    listen = ListenAddress(address, port, port_explicit=True)
    assert parse_listen(str(listen)) == listen


@untimed
@given(st.one_of(ipv4, ipv6))
def test_listen_without_port_uses_default(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert parse_listen(str(address)) == ListenAddress(address, DEFAULT_LISTEN_PORT, port_explicit=False)


@untimed
@given(ipv6, st.integers(min_value=1, max_value=65535))
def test_ipv6_endpoint_with_port_needs_brackets(address: ipaddress.IPv6Address, port: int) -> None:
    assert parse_endpoint(f"[{address}]:{port}") == EndpointOption(str(address), port)
    assert parse_endpoint(str(EndpointOption(str(address), port))) == EndpointOption(str(address), port)


@untimed
@given(st.one_of(hostnames, ipv4.map(str)), st.one_of(st.none(), st.integers(min_value=1, max_value=65535)))
def test_endpoint_round_trips(host: str, port: int | None) -> None:
    endpoint = EndpointOption(host, port)
    assert parse_endpoint(str(endpoint)) == endpoint


@untimed
@given(st.integers().filter(lambda port: not 0 <= port <= 65535))
def test_out_of_range_ports_are_rejected(port: int) -> None:
    with pytest.raises(ValueProblem):
        parse_listen(f"127.0.0.1:{port}")


address_like_text = st.text(alphabet=string.hexdigits + ".:[]-% /x" + "٣", max_size=40)


@untimed
@given(st.one_of(st.text(max_size=60), address_like_text))
def test_parsers_raise_only_value_problem(text: str) -> None:
    parsers = [
        parse_listen,
        parse_endpoint,
        parse_docker_host,
        parse_image_reference,
        parse_log_level,
        parse_bool_word,
        parse_vm_stale_after,
    ]
    for parse in parsers:
        with contextlib.suppress(ValueProblem):
            parse(text)


@untimed
@given(st.text(max_size=200))
def test_any_config_file_text_loads_or_raises_config_error(text: str) -> None:
    try:
        config._ConfigFile(Path("fuzz.toml"), text)
    except ConfigError as error:
        problem = str(error)
    else:
        problem = "fuzz.toml: loaded"
    assert problem.startswith("fuzz.toml")


# --- the control socket lookup for clients ----------------------------------------------------------------------------


def test_client_socket_path_precedence(tmp_path: Path) -> None:
    environ = write_config(tmp_path, 'control_socket = "/file.sock"\n')
    assert load_control_socket_path(None, {}) == DEFAULT_CONTROL_SOCKET
    assert load_control_socket_path(None, environ) == Path("/file.sock")
    assert load_control_socket_path(None, {**environ, "DMNC_CONTROL_SOCKET": "/env.sock"}) == Path("/env.sock")
    assert load_control_socket_path("/flag.sock", {**environ, "DMNC_CONTROL_SOCKET": "/env.sock"}) == Path("/flag.sock")


def test_client_socket_lookup_ignores_other_options(tmp_path: Path) -> None:
    environ = write_config(tmp_path, 'control_socket = "/file.sock"\n')
    assert load_control_socket_path(None, {**environ, "LOG_LEVEL": "chatty"}) == Path("/file.sock")


def test_client_socket_lookup_skips_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environ = write_config(tmp_path, 'control_socket = "/file.sock"\n')
    deny_reading(tmp_path / "config.toml", monkeypatch)
    assert load_control_socket_path(None, environ) == DEFAULT_CONTROL_SOCKET


def test_client_socket_lookup_reports_bad_values() -> None:
    with pytest.raises(ConfigError, match="DMNC_CONTROL_SOCKET: the socket path contains a NUL byte"):
        load_control_socket_path(None, {"DMNC_CONTROL_SOCKET": "/a\0b"})


@untimed
@given(st.text(max_size=60))
def test_any_route_pattern_text_loads_or_names_the_variable(text: str) -> None:
    try:
        load_config(ConfigFlags(), {"DMNC_ROUTES_INCLUDE": text, "DMNC_ROUTES_EXCLUDE": text})
    except ConfigError as error:
        blamed = error.source
    else:
        blamed = "DMNC_ROUTES_INCLUDE"
    assert blamed == "DMNC_ROUTES_INCLUDE"


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [("192.0.2.1", 51820, "192.0.2.1:51820"), ("fd00::1", 51820, "[fd00::1]:51820"), ("vm.example", 1, "vm.example:1")],
)
def test_endpoints_are_written_one_way_with_ipv6_in_brackets(host: str, port: int, text: str) -> None:
    assert config.format_host_port(host, port) == text
    assert config.split_host_port(text) == (host, str(port))


# --- vm_stale_after ---------------------------------------------------------------------------------------------------


def test_vm_stale_after_from_each_layer(tmp_path: Path) -> None:
    environ = write_config(tmp_path, "vm_stale_after = 60\n")
    assert load_config(ConfigFlags(), environ).vm_stale_after == 60.0
    with_env = {**environ, "DMNC_VM_STALE_AFTER": "4"}
    assert load_config(ConfigFlags(), with_env).vm_stale_after == 4.0
    assert load_config(ConfigFlags(vm_stale_after="2.5"), with_env).vm_stale_after == 2.5
    assert load_config(ConfigFlags(), write_config(tmp_path, "vm_stale_after = 90.5\n")).vm_stale_after == 90.5


@pytest.mark.parametrize("value", [1, 1.0, "1", "40", " 40 ", "3600", "4.25", "3599.999"])
def test_vm_stale_after_accepts_seconds_within_bounds(value: str | float) -> None:
    assert config.MIN_VM_STALE_AFTER_S <= parse_vm_stale_after(value) <= config.MAX_VM_STALE_AFTER_S


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0 seconds is not in 1-3600"),
        ("0.5", "0.5 seconds is not in 1-3600"),
        ("3601", "3601 seconds is not in 1-3600"),
        ("-4", "'-4' is not a number of seconds"),
        ("nan", "'nan' is not a number of seconds"),
        ("inf", "'inf' is not a number of seconds"),
        ("1e3", "'1e3' is not a number of seconds"),
        ("4s", "'4s' is not a number of seconds"),
        ("", "'' is not a number of seconds"),
        (float("nan"), "nan seconds is not in 1-3600"),
        (1e9, "1e+09 seconds is not in 1-3600"),
    ],
)
def test_vm_stale_after_rejects_what_is_not_seconds_in_bounds(value: str | float, message: str) -> None:
    with pytest.raises(ValueProblem, match="^" + re.escape(message)):
        parse_vm_stale_after(value)


@pytest.mark.parametrize(
    ("flags", "environ", "text", "message"),
    [
        (ConfigFlags(vm_stale_after="0"), {}, "", "--vm-stale-after: 0 seconds is not in 1-3600 (the default is 40)"),
        (ConfigFlags(), {"DMNC_VM_STALE_AFTER": "soon"}, "", "DMNC_VM_STALE_AFTER: 'soon' is not a number of seconds"),
        (ConfigFlags(), {}, "vm_stale_after = 0\n", "config.toml:1 (vm_stale_after): 0 seconds is not in 1-3600"),
        (ConfigFlags(), {}, 'vm_stale_after = "40"\n', "config.toml:1 (vm_stale_after): expected a number of seconds"),
        (ConfigFlags(), {}, "vm_stale_after = true\n", "(vm_stale_after): expected a number of seconds, got a bool"),
    ],
)
def test_bad_vm_stale_after_names_its_source(
    tmp_path: Path, flags: ConfigFlags, environ: dict[str, str], text: str, message: str
) -> None:
    if text:
        environ = {**environ, **write_config(tmp_path, text)}
    assert message in config_error(flags, environ)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_refuses_a_config_file_a_user_owns(tmp_path: Path) -> None:
    environ = write_config(tmp_path, "")
    path = tmp_path / "config.toml"
    os.chown(path, 1000, 1000)
    assert config_error(ConfigFlags(), environ) == (
        f"{path}: owned by uid 1000, who may change it while dmnc runs it as root; give it to root: chown root {path}"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="tmp_path is root's only when run as root")
def test_root_refuses_a_config_file_in_a_folder_others_may_write_but_not_in_a_sticky_one(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "config.toml"
    path.write_text('log_level = "debug"\n', encoding="utf-8")
    folder.chmod(0o777)
    assert config_error(ConfigFlags(config_file=str(path)), {}) == (
        f"{path}: the folder {folder} is group- and world-writable (mode 0777), so others may replace this file "
        f"while dmnc runs it as root; make the folder root's alone: chown root {folder} && chmod go-w {folder}"
    )
    folder.chmod(0o1777)  # root-owned and sticky, as /tmp: only root may rename root's file
    assert load_config(ConfigFlags(config_file=str(path)), {}).log_level is LogLevel.DEBUG


def test_without_root_a_config_file_is_not_judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    environ = write_config(tmp_path, "")
    (tmp_path / "config.toml").chmod(0o666)
    assert load_config(ConfigFlags(), environ) == Config(config_file=tmp_path / "config.toml")


def test_stale_after_text_with_characters_only_str_strip_takes_for_space() -> None:
    assert config.parse_vm_stale_after("40\x1f") == 40.0
