"""The one-way door end to end, through the real `dmnc` and a real dockerd: the host reaches containers (TCP, and UDP
with replies larger than the tunnel MTU, which cross as fragments), containers and the VM do not reach host services
(TCP, UDP, ping) through the tunnel unless a port is allowed, and router advertisements injected from the VM change
nothing on the host.

The "VM"'s own firewall (setup.sh's DMNC-TO-HOST chain) stops most of this before it enters the tunnel; the tests
that flush that chain play a VM whose root has removed it, so dmnc's own flow filter is what stands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from dmnc.wireguard.constants import DEFAULT_MTU
from tests.conftest import require_tools
from tests.lab.netns import stop_process
from tests.lab.service_lab import (
    HTTP_TIMEOUT_S,
    ServiceLab,
    create_network,
    http_get,
    running_dmnc,
    start_container,
    start_web_container,
    status_json,
    vm_leftovers,
)
from tests.lab.socat_image import SOCAT_IMAGE, import_socat_image
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

HOST_TUNNEL_ADDRESS, HOST_TUNNEL_ADDRESS6 = "10.33.33.1", "fd33:33:33::1"
HOST_HTTP_PORT = 8088
HOST_PAGE = "host-only-service"
HOST_UDP_PORT = 5514
CONTAINER_UDP_PORT = 7  # the echo service (RFC 862)
# A dual-stack network for the UDP exchanges, so both IP versions' fragments are exercised.
UDP_SUBNETS = ("172.31.32.0/24", "fd77:32::/64")
# A dual-stack network whose containers probe the host's IPv6 tunnel address (the default bridge has no IPv6).
PROBE_NETWORK, PROBE_SUBNETS = "e2e-probe", ("172.31.33.0/24", "fd77:33::/64")
NOTHING_REACHED = {"tcp": False, "udp": False, "ping": False}
ONLY_ALLOWED_REACHED = {"tcp": True, "udp": True, "ping": False}
# Answers of both sizes must arrive: one datagram fits the tunnel, the other is split into IP fragments.
UDP_SIZES = (64, 3 * DEFAULT_MTU)
# socat(1): an echo service answering each datagram from its own process, which exits after 1 s of idleness.
UDP_ECHO_SERVICE = ["socat", "-T", "1", "UDP6-RECVFROM:{port},fork,ipv6only=0", "PIPE"]
# One datagram of argv[3] random bytes to argv[1] port argv[2]; exit 0 only if the same bytes come back in time.
UDP_EXCHANGE = """
import os, socket, sys
address, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(2.0)
payload = os.urandom(size)
client.sendto(payload, (address, port))
try:
    sys.exit(0 if client.recv(65535) == payload else 1)
except TimeoutError:
    sys.exit(1)
"""
RA_PREFIX = "2001:db8:77::"
# A Router Advertisement (RFC 4861 section 4.2) with a Prefix Information option for RA_PREFIX/64 (autonomous,
# on-link), hop limit 255, sent as a whole IPv6 packet from `source` (IPPROTO_RAW: the header is ours).
RA_SENDER = """
import ipaddress, socket, struct, sys
source, destination = ipaddress.IPv6Address(sys.argv[1]), ipaddress.IPv6Address(sys.argv[2])
prefix = ipaddress.IPv6Address(sys.argv[3])
option = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0, prefix.packed)
body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + option
pseudo = source.packed + destination.packed + struct.pack("!I3xB", len(body), 58)
data = pseudo + body
total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
while total > 0xFFFF:
    total = (total & 0xFFFF) + (total >> 16)
body = body[:2] + struct.pack("!H", ~total & 0xFFFF) + body[4:]
header = struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 255, source.packed, destination.packed)
sender = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3):
    sender.sendto(header + body, (str(destination), 0))
"""


@pytest.fixture
def one_way_lab(service_lab: ServiceLab) -> Iterator[ServiceLab]:
    """The module's shared service lab with a web service and a UDP echo service listening on every address of the
    host namespace: what a container must not reach through the tunnel; and the socat image for the containers.
    The services are stopped again (the lab's reset removes the image), so the lab is as it was."""
    require_tools("socat")
    import_socat_image(service_lab.engine.socket_path)
    www = service_lab.workdir / "host-www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text(HOST_PAGE + "\n")
    servers = [
        service_lab.host.popen(["busybox", "httpd", "-f", "-p", f"[::]:{HOST_HTTP_PORT}", "-h", str(www)]),
        service_lab.host.popen([part.format(port=HOST_UDP_PORT) for part in UDP_ECHO_SERVICE]),
    ]
    try:
        wait_until(
            lambda: (
                f":{HOST_HTTP_PORT} " in service_lab.host.run(["ss", "-Hltn"]).stdout
                and f":{HOST_UDP_PORT} " in service_lab.host.run(["ss", "-Hlun"]).stdout
            ),
            10.0,
            "the host's services to listen",
        )
        yield service_lab
    finally:
        for server in servers:
            stop_process(server)
            service_lab.host.processes.remove(server)


def probe_from_containers(lab: ServiceLab) -> dict[str, dict[str, bool]]:
    """From fresh containers: can they reach the host's services through the tunnel, at the host's IPv4 tunnel
    address (from the default bridge) and at its IPv6 one (from the dual-stack network PROBE_NETWORK, which the
    test creates)?"""
    # An answer that reaches the container needs the host's route to it: IPv6 routes come once the VM said it has
    # IPv6, after the IPv4 ones.
    wait_until(
        lambda: PROBE_SUBNETS[1] in lab.host.run(["ip", "-6", "route", "show"]).stdout,
        HTTP_TIMEOUT_S,
        f"the host's route to {PROBE_SUBNETS[1]}",
    )
    return {
        "IPv4": probe_from_container(lab, HOST_TUNNEL_ADDRESS, f"UDP4:{HOST_TUNNEL_ADDRESS}", None),
        "IPv6": probe_from_container(lab, HOST_TUNNEL_ADDRESS6, f"UDP6:[{HOST_TUNNEL_ADDRESS6}]", PROBE_NETWORK),
    }


def probe_from_container(lab: ServiceLab, address: str, socat_udp: str, network: str | None) -> dict[str, bool]:
    script = (
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {HOST_HTTP_PORT} | grep -q {HOST_PAGE}"
        " && echo tcp-reached;"
        f" echo udp-probe | socat -t 3 -T 3 - {socat_udp}:{HOST_UDP_PORT} | grep -q udp-probe && echo udp-reached;"
        f" ping -c 1 -W 3 {address} >/dev/null && echo ping-reached; echo done"
    )
    output = run_container(lab, script, network)
    assert "done" in output, output
    return {kind: f"{kind}-reached" in output for kind in ("tcp", "udp", "ping")}


def run_container(lab: ServiceLab, script: str, network: str | None = None) -> str:
    body: dict[str, Any] = {"Image": SOCAT_IMAGE, "Cmd": ["sh", "-c", script]}
    if network is not None:
        body["HostConfig"] = {"NetworkMode": network}
    created = lab.engine_request("POST", "/containers/create", json=body).json()
    lab.engine_request("POST", f"/containers/{created['Id']}/start")
    lab.engine_request("POST", f"/containers/{created['Id']}/wait")
    logs = lab.engine_request("GET", f"/containers/{created['Id']}/logs", params={"stdout": "1", "stderr": "1"})
    lab.engine_request("DELETE", f"/containers/{created['Id']}")
    return logs.content.decode(errors="replace")


def flush_vm_firewall(lab: ServiceLab) -> None:
    """Play a VM whose root removed setup.sh's rules towards the host: only dmnc's filter is left."""
    for tool in ("iptables", "ip6tables"):
        lab.vm.run([tool, "-w", "-F", "DMNC-TO-HOST"])


def drops(lab: ServiceLab) -> dict[str, int]:
    found: dict[str, int] = status_json(lab)["tunnel"]["drops"]
    return found


def host_ipv6_state(lab: ServiceLab) -> tuple[str, str]:
    return (
        lab.host.run(["ip", "-6", "route", "show", "table", "all"]).stdout,
        lab.host.run(["ip", "-6", "addr", "show"]).stdout,
    )


def test_the_host_reaches_containers_and_containers_do_not_reach_the_host(one_way_lab: ServiceLab) -> None:
    create_network(one_way_lab, PROBE_NETWORK, *PROBE_SUBNETS)
    web = start_web_container(one_way_lab)
    with running_dmnc(one_way_lab, "--path", "tunnel") as dmnc:
        http_get(one_way_lab, web)
        assert probe_from_containers(one_way_lab) == {"IPv4": NOTHING_REACHED, "IPv6": NOTHING_REACHED}
        # Without the VM's rules dmnc's own filter holds the door, counts and says what to do.
        flush_vm_firewall(one_way_lab)
        assert probe_from_containers(one_way_lab) == {"IPv4": NOTHING_REACHED, "IPv6": NOTHING_REACHED}
        dropped = drops(one_way_lab)
        assert dropped.get("inbound_not_allowed", 0) >= 8, dropped
        for port in (str(HOST_HTTP_PORT), f"{HOST_UDP_PORT}/udp"):
            advice = f"use `--allow-inbound {port}` or host.docker.internal"
            dmnc.wait_for_log(f"container→host connection to port {port} dropped; {advice}")
        http_get(one_way_lab, web)  # replies still pass
        assert dmnc.stop() == 0
    assert vm_leftovers(one_way_lab) == []


def test_an_allowed_inbound_port_is_reachable_and_the_others_are_not(one_way_lab: ServiceLab) -> None:
    create_network(one_way_lab, PROBE_NETWORK, *PROBE_SUBNETS)
    web = start_web_container(one_way_lab)
    allowed = ("--allow-inbound", str(HOST_HTTP_PORT), "--allow-inbound", f"{HOST_UDP_PORT}/udp")
    with running_dmnc(one_way_lab, "--path", "tunnel", *allowed) as dmnc:
        http_get(one_way_lab, web)
        assert probe_from_containers(one_way_lab) == {"IPv4": ONLY_ALLOWED_REACHED, "IPv6": ONLY_ALLOWED_REACHED}
        flush_vm_firewall(one_way_lab)
        assert probe_from_containers(one_way_lab) == {"IPv4": ONLY_ALLOWED_REACHED, "IPv6": ONLY_ALLOWED_REACHED}
        assert dmnc.stop() == 0
    assert vm_leftovers(one_way_lab) == []


def udp_echo_answers(lab: ServiceLab, address: str, size: int) -> None:
    """Wait until a datagram of `size` bytes from the host namespace to `address` comes back unchanged. Retries
    cover what a first datagram may meet: a route not yet installed, an echo service not yet listening, a path MTU
    the container learns from the first reply's ICMPv6 Packet Too Big (RFC 8201)."""
    argv = [sys.executable, "-c", UDP_EXCHANGE, address, str(CONTAINER_UDP_PORT), str(size)]
    wait_until(
        lambda: lab.host.run(argv, check=False).returncode == 0,
        HTTP_TIMEOUT_S,
        f"a {size}-byte UDP echo from {address}",
        interval=0.2,
    )


def test_udp_answers_to_the_hosts_own_datagrams_arrive_also_as_fragments(one_way_lab: ServiceLab) -> None:
    create_network(one_way_lab, "e2e-udp", *UDP_SUBNETS)
    echo_service = " ".join(UDP_ECHO_SERVICE).format(port=CONTAINER_UDP_PORT)
    addresses = start_container(one_way_lab, f"exec {echo_service}", "e2e-udp", image=SOCAT_IMAGE)
    assert all(addresses), addresses
    with running_dmnc(one_way_lab, "--path", "tunnel") as dmnc:
        for address in addresses:
            for size in UDP_SIZES:
                udp_echo_answers(one_way_lab, address, size)
        # Without the VM's conntrack rules, dmnc's filter alone must match the answers and their later fragments.
        flush_vm_firewall(one_way_lab)
        for address in addresses:
            for size in UDP_SIZES:
                udp_echo_answers(one_way_lab, address, size)
        dropped = drops(one_way_lab)
        assert dropped.get("fragment_not_matched", 0) == 0, dropped
        assert dropped.get("inbound_not_allowed", 0) == 0, dropped
        assert dmnc.stop() == 0
    assert vm_leftovers(one_way_lab) == []


def test_a_router_advertisement_from_the_vm_changes_nothing_on_the_host(one_way_lab: ServiceLab) -> None:
    web = start_web_container(one_way_lab)
    with running_dmnc(one_way_lab, "--path", "tunnel") as dmnc:
        http_get(one_way_lab, web)
        routes_before, addresses_before = host_ipv6_state(one_way_lab)
        flush_vm_firewall(one_way_lab)
        # Once as in the issue (a link-local source, which the VM peer may not use), once from the VM's own tunnel
        # address (which it may), so the filter itself must refuse it.
        for source in ("fe80::2", "fd33:33:33::2"):
            one_way_lab.vm.run([sys.executable, "-c", RA_SENDER, source, HOST_TUNNEL_ADDRESS6, RA_PREFIX])
        wait_until(lambda: drops(one_way_lab).get("router_message", 0) >= 3, 10.0, "the filter to drop the RAs")
        dropped = drops(one_way_lab)
        assert dropped.get("disallowed_source_ip", 0) >= 3, dropped
        routes_after, addresses_after = host_ipv6_state(one_way_lab)
        assert "proto ra" not in routes_after
        assert RA_PREFIX not in routes_after
        assert RA_PREFIX not in addresses_after
        assert (
            "fe80:"
            not in one_way_lab.host.run(
                ["ip", "-6", "addr", "show", "dev", status_json(one_way_lab)["tunnel"]["interface"]]
            ).stdout
        )
        assert routes_after == routes_before
        assert addresses_after == addresses_before
        assert dmnc.stop() == 0
