from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dmnc.commands.wg import (
    REKEY_AFTER_TIME_VARIABLE,
    WgUpError,
    leaf_exceptions,
    peer_config,
    timing_from_environment,
)
from dmnc.wgconfig import ConfigError, PeerSection
from dmnc.wireguard import Timing, decode_key, public_key


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


def test_rekey_time_comes_from_the_environment_and_is_checked() -> None:
    assert timing_from_environment({}) == Timing()
    assert timing_from_environment({REKEY_AFTER_TIME_VARIABLE: "2.5"}).rekey_after_time == 2.5
    with pytest.raises(WgUpError, match="not a number"):
        timing_from_environment({REKEY_AFTER_TIME_VARIABLE: "soon"})
    with pytest.raises(WgUpError, match="must be in"):
        timing_from_environment({REKEY_AFTER_TIME_VARIABLE: "0"})


def test_peer_endpoint_is_resolved_and_unresolvable_names_report_the_peer_line() -> None:
    peer = PeerSection(public_key=bytes(32), endpoint=("127.0.0.1", 51820), line=7)
    assert peer_config(peer, "x.conf").endpoint == ("127.0.0.1", 51820)
    unresolvable = PeerSection(public_key=bytes(32), endpoint=("no-such-host.invalid", 51820), line=7)
    with pytest.raises(ConfigError, match=r"^x\.conf:7: Endpoint 'no-such-host.invalid' does not resolve"):
        peer_config(unresolvable, "x.conf")


def test_leaf_exceptions_flattens_nested_groups_in_order() -> None:
    first, second, third = WgUpError("a"), ValueError("b"), WgUpError("c")
    group = ExceptionGroup("outer", [first, ExceptionGroup("inner", [second, third])])
    assert leaf_exceptions(group) == [first, second, third]
