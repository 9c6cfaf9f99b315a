"""The listeners on loopback: UDP, TCP framing, the fallback port, rate limits; and the table following Docker."""

from __future__ import annotations

import ipaddress
import socket

import dns.message
import dns.rcode
import trio

from dmnc.dns.answer import Responder, Zone
from dmnc.dns.domain import parse_domain
from dmnc.dns.names import NameTable, Reachability
from dmnc.dns.ratelimit import QueryLimiter, RateLimits
from dmnc.dns.server import DnsServer, open_listeners
from dmnc.dns.service import DnsService
from dmnc.docker.models import ContainerSummary
from tests.lab.wait import wait_until_async

DOMAIN = parse_domain("dmnc.internal")
REACHABLE = Reachability(frozenset({ipaddress.ip_network("172.16.0.0/12")}), ipv6=False)


def query(name: str, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype).to_wire()


async def ask_udp(port: int, wire: bytes) -> dns.message.Message:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(wire)
        with trio.fail_after(5):
            return dns.message.from_wire(await sock.recv(65535))


async def ask_tcp(port: int, *wires: bytes) -> list[dns.message.Message]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    answers: list[dns.message.Message] = []
    async with stream:
        await stream.send_all(b"".join(len(wire).to_bytes(2, "big") + wire for wire in wires))
        buffer = b""
        with trio.fail_after(5):
            while len(answers) < len(wires):
                buffer += await stream.receive_some(65535)
                while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                    size = int.from_bytes(buffer[:2], "big")
                    answers.append(dns.message.from_wire(buffer[2 : 2 + size]))
                    buffer = buffer[2 + size :]
    return answers


class FakeDocker:
    def __init__(self) -> None:
        self.containers: list[ContainerSummary] = []
        self.listed = 0

    async def list_containers(self) -> list[ContainerSummary]:
        self.listed += 1
        return list(self.containers)


def web(address: str = "172.17.0.2") -> ContainerSummary:
    return ContainerSummary("1", "web", "running", {}, {"bridge": (ipaddress.IPv4Address(address),)})


async def test_udp_and_pipelined_tcp_answer_on_a_fallback_port_when_the_port_is_taken() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    taken = blocker.getsockname()[1]
    with blocker:
        listeners = await open_listeners(["127.0.0.1"], taken)
    assert listeners.port != taken
    docker = FakeDocker()
    docker.containers = [web()]
    service = DnsService(DOMAIN, ["127.0.0.1"], lambda: REACHABLE, None)
    server = DnsServer(service.responder, service.limiter, listeners)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        nursery.start_soon(service.follow, docker)

        async def named() -> bool:
            return len(service.responder.zone.table) > 0

        await wait_until_async(named, 5, "the container listed into the table")
        answer = await ask_udp(listeners.port, query("web.dmnc.internal"))
        assert [rdata.to_text() for rrset in answer.answer for rdata in rrset] == ["172.17.0.2"]
        nxdomain, refused = await ask_tcp(listeners.port, query("nosuch.dmnc.internal"), query("example.com"))
        assert nxdomain.rcode() == dns.rcode.NXDOMAIN
        assert refused.rcode() == dns.rcode.REFUSED
        nursery.cancel_scope.cancel()
    listeners.close()


async def test_a_flood_from_one_source_is_dropped_and_counted() -> None:
    listeners = await open_listeners(["127.0.0.1"], 0)
    limiter = QueryLimiter(RateLimits(per_source_rate=1, per_source_burst=3), trio.current_time())
    server = DnsServer(Responder(Zone(DOMAIN, NameTable())), limiter, listeners)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect(("127.0.0.1", listeners.port))
            for _ in range(20):
                await sock.send(query("web.dmnc.internal"))
            answered = 0
            with trio.move_on_after(1):
                while True:
                    await sock.recv(65535)
                    answered += 1
        assert answered <= 4  # the burst, plus at most one token refilled in that second
        assert limiter.dropped_per_source >= 16
        nursery.cancel_scope.cancel()
    listeners.close()


async def test_the_table_follows_changes_and_the_routed_subnets() -> None:
    docker = FakeDocker()
    reachable = [Reachability(frozenset(), ipv6=False)]
    service = DnsService(DOMAIN, ["127.0.0.1"], lambda: reachable[0], None)
    async with trio.open_nursery() as nursery:
        docker.containers = [web()]
        nursery.start_soon(service.follow, docker)

        async def listed() -> bool:
            return docker.listed >= 1

        await wait_until_async(listed, 5, "the first listing")
        assert service.state.records == 0  # not routed (yet): no name
        reachable[0] = REACHABLE

        async def records(count: int) -> bool:
            return service.state.records == count

        await wait_until_async(lambda: records(2), 5, "names once the subnet is routed")
        docker.containers = []
        service.containers_changed()
        await wait_until_async(lambda: records(0), 5, "names gone after the container died")
        assert service.responder.zone.serial >= 3
        nursery.cancel_scope.cancel()
