from __future__ import annotations

import base64
import contextlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.wireguard.conffile import (
    ConfFileError,
    InterfaceSection,
    PeerSection,
    WireGuardConfig,
    load_conffile,
    parse_conffile,
)

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(1, 33))).decode()
KEY_C = base64.b64encode(bytes(range(2, 34))).decode()

FULL = f"""
# comment line
[Interface]
PrivateKey = {KEY_A}
ListenPort = 51820
Address = 10.44.0.1/24, fd00:44::1/64
Address = 10.45.0.1/24
MTU = 1380
DNS = 1.1.1.1

[Peer]  # the VM
PublicKey = {KEY_B}
PresharedKey = {KEY_C}
Endpoint = 192.0.2.7:51821
AllowedIPs = 10.44.0.2/32, 172.17.0.0/16
AllowedIPs = fd00:44::2/128
PersistentKeepalive = 25

[peer]
publickey={KEY_C}
endpoint = [2001:db8::1]:443
allowedips = 10.9.0.1/24
persistentkeepalive = off
"""


def test_full_config_with_two_peers() -> None:
    config = parse_conffile(FULL, "wg0.conf")
    assert config.interface == InterfaceSection(
        private_key=bytes(range(32)),
        listen_port=51820,
        addresses=(
            ipaddress.ip_interface("10.44.0.1/24"),
            ipaddress.ip_interface("fd00:44::1/64"),
            ipaddress.ip_interface("10.45.0.1/24"),
        ),
        mtu=1380,
    )
    first, second = config.peers
    assert first.public_key == bytes(range(1, 33))
    assert first.preshared_key == bytes(range(2, 34))
    assert first.endpoint == ("192.0.2.7", 51821)
    assert first.allowed_ips == (
        ipaddress.ip_network("10.44.0.2/32"),
        ipaddress.ip_network("172.17.0.0/16"),
        ipaddress.ip_network("fd00:44::2/128"),
    )
    assert first.persistent_keepalive == 25
    assert first.line == 11
    assert second.endpoint == ("2001:db8::1", 443)
    assert second.allowed_ips == (ipaddress.ip_network("10.9.0.0/24"),)  # host bits masked like wg(8)
    assert second.persistent_keepalive == 0
    assert config.ignored_keys == ("dns",)


def test_minimal_config_defaults() -> None:
    config = parse_conffile(f"[Interface]\nPrivateKey={KEY_A}\n")
    assert config.interface.listen_port is None
    assert config.interface.mtu is None
    assert config.peers == ()


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("PrivateKey = x\n", 1, "outside of a section"),
        ("[Interface\n", 1, "unterminated section header"),
        ("[Wat]\n", 1, "unknown section"),
        (f"[Interface]\nPrivateKey = {KEY_A}\nListenPort = 70000\n", 3, "between 0 and 65535"),
        (f"[Interface]\nPrivateKey = {KEY_A}\nListenPort = -1\n", 3, "must be a number"),
        (f"[Interface]\nPrivateKey = {KEY_A}\nMTU = 10\n", 3, "between 68 and 65535"),
        (f"[Interface]\nPrivateKey = {KEY_A}\nPrivateKey = {KEY_B}\n", 3, "given twice"),
        ("[Interface]\nPrivateKey = abc\n", 2, "44 base64 characters"),
        (f"[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.0.0.300/24\n", 3, "not an IP address"),
        (f"[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.0.0.1/24,\n", 3, "empty entry"),
        (f"[Interface]\nPrivateKey = {KEY_A}\nListen = 1\n", 3, "unknown key `listen`"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nEndpoint = ::1:5\n", 5, "needs brackets"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nEndpoint = host\n", 5, "host:port"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nEndpoint = h:0\n", 5, "between 1"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nEndpoint = [1.2.3.4]:5\n", 5, "IPv6"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nAllowedIPs = nope\n", 5, "not an IP"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nDNS = 1.1.1.1\n", 5, "unknown key"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPersistentKeepalive = 5\n", 3, "no PublicKey"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey={KEY_B}\n[Peer]\nPublicKey={KEY_B}\n", 5, "line 3"),
        (f"[Interface]\nPrivateKey = {KEY_A}\n[Interface]\n", 3, r"second \[Interface\]"),
        ("[Interface]\nListenPort = 1\n", 1, "no PrivateKey"),
        ("[Interface]\nPrivateKey\n", 2, "expected `Key = Value`"),
    ],
)
def test_errors_name_file_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfFileError, match=reason) as raised:
        parse_conffile(text, "bad.conf")
    assert raised.value.filename == "bad.conf"
    assert raised.value.line == line
    assert str(raised.value).startswith(f"bad.conf:{line}: ")


def test_config_without_interface_is_an_error_for_the_file() -> None:
    with pytest.raises(ConfFileError, match=r"^x\.conf: no \[Interface\] section$"):
        parse_conffile(f"[Peer]\nPublicKey = {KEY_B}\n", "x.conf")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfFileError, match="cannot read"):
        load_conffile(tmp_path / "missing.conf")
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfFileError, match="not UTF-8"):
        load_conffile(binary)


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfFileError):
        parse_conffile(text)


@given(
    st.lists(
        st.sampled_from(
            [
                "[Interface]",
                "[Peer]",
                f"PrivateKey = {KEY_A}",
                f"PublicKey = {KEY_B}",
                f"PublicKey = {KEY_C}",
                "ListenPort = 51820",
                "Address = 10.0.0.1/24",
                "AllowedIPs = 0.0.0.0/0, ::/0",
                "Endpoint = [::1]:1",
                "Endpoint = a:b",
                "MTU = 1420",
                "PersistentKeepalive = 25",
                "# comment",
                "",
                "junk",
                "=",
            ]
        ),
        max_size=12,
    )
)
def test_shuffled_config_lines_parse_or_raise_config_error(lines: list[str]) -> None:
    with contextlib.suppress(ConfFileError):
        parse_conffile("\n".join(lines))


keys = st.binary(min_size=32, max_size=32)
networks = st.one_of(
    st.builds(lambda a, p: ipaddress.IPv4Network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(
        lambda a, p: ipaddress.IPv6Network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(0, 128)
    ),
)
peers = st.builds(
    PeerSection,
    public_key=keys,
    preshared_key=st.none() | keys,
    endpoint=st.none() | st.tuples(st.ip_addresses().map(str), st.integers(1, 65535)),
    allowed_ips=st.lists(networks, max_size=4).map(tuple),
    persistent_keepalive=st.integers(0, 65535),
)


def render(config: WireGuardConfig) -> str:
    lines = ["[Interface]", f"PrivateKey = {base64.b64encode(config.interface.private_key).decode()}"]
    if config.interface.listen_port is not None:
        lines.append(f"ListenPort = {config.interface.listen_port}")
    if config.interface.mtu is not None:
        lines.append(f"MTU = {config.interface.mtu}")
    for peer in config.peers:
        lines += ["", "[Peer]", f"PublicKey = {base64.b64encode(peer.public_key).decode()}"]
        if peer.preshared_key is not None:
            lines.append(f"PresharedKey = {base64.b64encode(peer.preshared_key).decode()}")
        if peer.endpoint is not None:
            host, port = peer.endpoint
            lines.append(f"Endpoint = [{host}]:{port}" if ":" in host else f"Endpoint = {host}:{port}")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(map(str, peer.allowed_ips))}")
        lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(lines)


@given(
    private_key=keys,
    listen_port=st.none() | st.integers(0, 65535),
    mtu=st.none() | st.integers(68, 65535),
    peer_list=st.lists(peers, max_size=3, unique_by=lambda peer: peer.public_key),
)
def test_rendered_config_parses_back_to_the_same_values(
    private_key: bytes, listen_port: int | None, mtu: int | None, peer_list: list[PeerSection]
) -> None:
    config = WireGuardConfig(InterfaceSection(private_key, listen_port, (), mtu), tuple(peer_list))
    parsed = parse_conffile(render(config))
    assert parsed.interface == config.interface
    assert [
        (p.public_key, p.preshared_key, p.endpoint, p.allowed_ips, p.persistent_keepalive) for p in parsed.peers
    ] == [(p.public_key, p.preshared_key, p.endpoint, p.allowed_ips, p.persistent_keepalive) for p in peer_list]
