"""The direct path's ICMP probe against a real kernel: two namespaces joined by a veth; the probe runs inside one of
them (the pytest process never changes namespace)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tools
from tests.lab.netns import Netns, two_namespaces

pytestmark = [pytest.mark.lab, pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces")]

REPO_ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import ipaddress, json, sys, trio
from dmnc.supervisor.echo_probe import probe_echo
address, interface = sys.argv[1], sys.argv[2]
outcome = trio.run(probe_echo, ipaddress.ip_address(address), interface, 1.0, 0x4242, 1)
print(json.dumps([outcome.answered, outcome.detail]))
"""


def probe(namespace: Netns, address: str, interface: str) -> list[object]:
    argv = namespace.command([sys.executable, "-c", PROBE, address, interface])
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    answer: list[object] = json.loads(result.stdout)
    return answer


def test_the_probe_is_answered_on_the_shared_link_only() -> None:
    require_root()
    require_tools("ip")
    with two_namespaces("10.201.7.1/24", "10.201.7.2/24") as (host, vm, link):
        host.run(["ip", "addr", "add", "fd07::1/64", "dev", link.left_interface, "nodad"])
        vm.run(["ip", "addr", "add", "fd07::2/64", "dev", link.right_interface, "nodad"])
        assert probe(host, "10.201.7.2", link.left_interface) == [True, ""]
        assert probe(host, "fd07::2", link.left_interface) == [True, ""]
        assert probe(host, "10.201.7.9", link.left_interface) == [False, "no answer within 1 s"]
        # Bound to another interface, the VM's address is not reached, whatever the routing table says.
        assert probe(host, "10.201.7.2", "lo")[0] is False
