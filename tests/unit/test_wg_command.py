from __future__ import annotations

import ipaddress
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.commands.wg import (
    WgUpError,
    load_peers_for_reload,
    peer_config,
    reload_peers,
    status_line,
    timing_from_flag,
)
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.flowfilter import FlowFilter
from dmnc.tunnel.udp import UdpEndpoint
from dmnc.wireguard import (
    Device,
    PeerConfig,
    PeerConfigError,
    Timing,
    decode_key,
    encode_key,
    generate_private_key,
    public_key,
)
from dmnc.wireguard.conffile import ConfFileError, PeerSection, load_conffile
from tests.fakes.tun import FakeTun


def dmnc(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmnc", *args], input=stdin, capture_output=True, text=True, check=False, timeout=30
    )


def test_genkey_then_pubkey_round_trip() -> None:
    generated = dmnc("wg", "genkey")
    assert generated.returncode == 0
    private_key = decode_key(generated.stdout)
    derived = dmnc("wg", "pubkey", stdin=generated.stdout)
    assert derived.returncode == 0
    assert decode_key(derived.stdout) == public_key(private_key)


def test_pubkey_of_garbage_is_one_line_error() -> None:
    result = dmnc("wg", "pubkey", stdin="not a key\n")
    assert result.returncode == 1
    assert result.stderr.startswith("dmnc wg pubkey: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_up_with_bad_config_names_file_and_line_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.conf"
    config.write_text("[Interface]\nListenPort = nope\n")
    result = dmnc("wg", "up", str(config))
    assert result.returncode == 1
    assert result.stderr.strip() == f"dmnc wg up: {config}:2: ListenPort must be a number, got 'nope'"


def test_rekey_time_comes_from_the_flag_and_is_checked() -> None:
    assert timing_from_flag(None) == Timing()
    assert timing_from_flag("2.5").rekey_after_time == 2.5
    assert timing_from_flag(str(Timing().reject_after_time)).rekey_after_time == Timing().reject_after_time
    with pytest.raises(WgUpError, match="not a number"):
        timing_from_flag("soon")
    for out_of_bounds in ("0", "-1", "nan", "inf", str(Timing().reject_after_time + 1)):
        with pytest.raises(WgUpError, match="must be in"):
            timing_from_flag(out_of_bounds)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_rekey_time_flag_accepts_exactly_the_bounded_interval(seconds: float) -> None:
    if 0 < seconds <= Timing().reject_after_time:
        assert timing_from_flag(repr(seconds)).rekey_after_time == seconds
    else:
        with pytest.raises(WgUpError, match="must be in"):
            timing_from_flag(repr(seconds))


def test_a_bad_rekey_time_exits_2_with_one_line(tmp_path: Path) -> None:
    result = dmnc("wg", "up", str(tmp_path / "never-read.conf"), "--rekey-after-time", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "dmnc wg up: --rekey-after-time must be in (0, 180] seconds, got 0"


def test_peer_endpoint_is_resolved_and_unresolvable_names_report_the_peer_line() -> None:
    peer = PeerSection(public_key=bytes(32), endpoint=("127.0.0.1", 51820), line=7)
    assert peer_config(peer, "x.conf").endpoint == ("127.0.0.1", 51820)
    unresolvable = PeerSection(public_key=bytes(32), endpoint=("no-such-host.invalid", 51820), line=7)
    with pytest.raises(ConfFileError, match=r"^x\.conf:7: Endpoint 'no-such-host.invalid' does not resolve"):
        peer_config(unresolvable, "x.conf")


def test_reload_keeps_unchanged_peers_and_replaces_changed_ones() -> None:
    device = Device(generate_private_key(os.urandom), rng=os.urandom, wall_offset=0)
    keys = [public_key(generate_private_key(os.urandom)) for _ in range(3)]
    network = ipaddress.ip_network
    kept = PeerConfig(keys[0], allowed_ips=(network("10.0.0.1/32"),))
    changed = PeerConfig(keys[1], allowed_ips=(network("10.0.0.2/32"),))
    current = [kept, changed]
    for peer in current:
        device.add_peer(peer)
    kept_stats = device.peer_stats()[keys[0]]
    wanted = [kept, PeerConfig(keys[1], allowed_ips=(network("10.0.0.3/32"),)), PeerConfig(keys[2])]
    changes = reload_peers(device, current, wanted)
    assert changes == [f"changed peer {encode_key(keys[1])}", f"added peer {encode_key(keys[2])}"]
    assert device.peer_stats()[keys[0]] is kept_stats  # same peer object: its sessions survive
    assert set(device.peer_stats()) == set(keys)
    assert reload_peers(device, wanted, [kept]) == [
        f"removed peer {encode_key(keys[1])}",
        f"removed peer {encode_key(keys[2])}",
    ]
    with pytest.raises(PeerConfigError, match="own public key"):
        reload_peers(device, [kept], [kept, PeerConfig(device.public_key)])
    assert set(device.peer_stats()) == {keys[0]}  # refused before anything changed


def test_reload_refuses_interface_changes(tmp_path: Path) -> None:
    key = encode_key(generate_private_key(os.urandom))
    path = tmp_path / "wg.conf"
    path.write_text(f"[Interface]\nPrivateKey = {key}\nListenPort = 51820\n")
    running = load_conffile(path)
    assert load_peers_for_reload(str(path), running) == []
    path.write_text(f"[Interface]\nPrivateKey = {key}\nListenPort = 51821\n")
    with pytest.raises(ConfFileError, match=r"\[Interface\] changed: restart to apply it"):
        load_peers_for_reload(str(path), running)


HOST_TUNNEL_IP = ipaddress.IPv4Address("10.33.33.1")
VM_TUNNEL_IP = ipaddress.IPv4Address("10.33.33.2")


def tcp_syn_from_the_vm(port: int) -> bytes:
    """An IPv4 TCP SYN (RFC 9293 section 3.1, flags byte 0x02) from the VM to `port` on the host's tunnel address."""
    tcp = struct.pack(">HHIIBBHHH", 40000, port, 0, 0, 5 << 4, 0x02, 65535, 0, 0)
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, VM_TUNNEL_IP.packed, HOST_TUNNEL_IP.packed
    )
    return header + tcp


@pytest.mark.parametrize("filtered", [True, False])
def test_the_status_line_shows_the_flow_filters_drops_by_reason_or_null_without_a_filter(filtered: bool) -> None:
    flow_filter = FlowFilter([HOST_TUNNEL_IP.packed]) if filtered else None
    tun, udp = FakeTun(), UdpEndpoint.open(0, ["127.0.0.1"])
    try:
        device = Device(generate_private_key(os.urandom), rng=os.urandom, wall_offset=0)
        tunnel = Tunnel(device, tun, udp, flow_filter=flow_filter)
        if flow_filter is not None:
            for port in (22, 8088):
                assert not flow_filter.inbound(tcp_syn_from_the_vm(port), 0.0)
            assert not flow_filter.inbound(b"\x45", 0.0)
        status = json.loads(status_line(tunnel, tun))
    finally:
        udp.close()
        tun.close()
    expected = {"inbound_not_allowed": 2, "unparsable_packet": 1} if filtered else None
    assert status["filter_drops"] == expected
    assert status["interface"] == tun.name
    assert status["port"] == udp.port
