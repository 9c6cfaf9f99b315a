from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.lab.netns import netns, unique_name

pytestmark = pytest.mark.lab

REPOSITORY = Path(__file__).resolve().parents[3]


def test_linux_tun_is_configured_over_rtnetlink_and_carries_packets_both_ways() -> None:
    require_root()
    with netns() as namespace:
        name = unique_name("dt")
        probe = namespace.popen(
            [sys.executable, "-m", "tests.integration.tunnel.tun_probe", name],
            cwd=REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert probe.stdout is not None
        assert probe.stdin is not None
        assert probe.stdout.readline().decode().split() == ["ready", name]

        (link,) = json.loads(namespace.run(["ip", "-j", "addr", "show", "dev", name]).stdout)
        assert link["mtu"] == 1400
        assert "UP" in link["flags"]
        addresses = {(entry["local"], entry.get("address"), entry["prefixlen"]) for entry in link["addr_info"]}
        assert ("10.77.0.1", "10.77.0.2", 32) in addresses
        assert ("fd00:77::1", None, 64) in addresses
        # The host takes no orders through the tunnel: no link-local address, router advertisements ignored.
        assert not [entry for entry in link["addr_info"] if entry["local"].startswith("fe80:")]
        assert namespace.run(["sysctl", "-n", f"net.ipv6.conf.{name}.accept_ra"]).stdout.strip() == "0"
        assert namespace.run(["sysctl", "-n", f"net.ipv6.conf.{name}.addr_gen_mode"]).stdout.strip() == "1"

        probe.stdin.write(b"go\n")
        probe.stdin.flush()
        assert probe.stdout.readline().decode().split() == ["reply", "through", "the", "tun", "10.77.0.2", "9999"]
        assert probe.wait(timeout=10) == 0


def test_ping_through_a_tun_answered_by_the_responder_script() -> None:
    # The same script the macOS CI job can run against utun.
    require_root()
    with netns() as namespace:
        script = REPOSITORY / "tests/integration/tunnel/tun_ping_responder.py"
        result = namespace.run([sys.executable, str(script)], check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "3 received" in result.stdout
