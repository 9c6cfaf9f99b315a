"""The direct path on macOS: dmnc's routes in the gateway form (`route -n add -net SUBNET GATEWAY -proto1`), byte
for byte against xnu's layouts (bsd/net/route.h rt_msghdr, RTAX_* order; bsd/netinet/in.h sockaddr_in,
bsd/netinet6/in6.h sockaddr_in6), and owned by RTF_PROTO1 alone."""

from __future__ import annotations

import ipaddress
import struct

import trio

from dmnc.routes import add_route, delete_route, pfroute
from dmnc.routes.darwin import DarwinRouteManager, route_message
from dmnc.routes.manager import NextHop
from tests.unit.routes.test_darwin import FakeXnu

net = ipaddress.ip_network
UTUN_INDEX = 21
BRIDGE100_INDEX = 14
HOP4 = NextHop(ipaddress.ip_address("192.168.64.2"), "bridge100")
HOP6 = NextHop(ipaddress.ip_address("fd64::2"), "bridge100")


def test_ipv4_gateway_route_is_dst_gateway_netmask_with_rtf_gateway_and_proto1() -> None:
    data = pfroute.encode_route_message(route_message(pfroute.RTM_ADD, net("172.17.0.0/16"), UTUN_INDEX, HOP4))
    assert len(data) == 92 + 16 + 16 + 16 == 140
    flags, addrs = struct.unpack_from("=ii", data, 8)
    # RTF_UP|RTF_GATEWAY|RTF_STATIC as route(8) sets for a gateway, plus RTF_PROTO1 as dmnc's mark
    assert flags == 0x1 | 0x2 | 0x800 | 0x8000
    assert addrs == pfroute.RTA_DST | pfroute.RTA_GATEWAY | pfroute.RTA_NETMASK
    assert data[92:108] == bytes([16, 2, 0, 0, 172, 17, 0, 0]) + bytes(8)
    assert data[108:124] == bytes([16, 2, 0, 0, 192, 168, 64, 2]) + bytes(8)  # sockaddr_in, not sockaddr_dl
    assert data[124:140] == bytes([16, 2, 0, 0, 255, 255, 0, 0]) + bytes(8)


def test_ipv6_gateway_route_carries_a_sockaddr_in6_gateway() -> None:
    data = pfroute.encode_route_message(route_message(pfroute.RTM_ADD, net("fd00:d0c::/64"), UTUN_INDEX, HOP6))
    assert len(data) == 92 + 28 * 3
    gateway = data[120:148]
    assert gateway[:2] == bytes([28, 30])  # sin6_len, AF_INET6 (30 on xnu)
    assert gateway[8:24] == HOP6.gateway.packed
    assert struct.unpack_from("=i", data, 8)[0] & pfroute.RTF_GATEWAY


def test_without_a_next_hop_the_route_stays_the_interface_form() -> None:
    message = route_message(pfroute.RTM_ADD, net("10.9.9.9/32"), UTUN_INDEX, None)
    assert message.gateway_interface == UTUN_INDEX
    assert message.gateway is None
    assert message.flags == pfroute.DMNC_ROUTE_FLAGS | pfroute.RTF_HOST


def test_a_gateway_route_decodes_back_to_the_same_message() -> None:
    message = route_message(pfroute.RTM_DELETE, net("172.18.0.0/16"), UTUN_INDEX, HOP4, pid=77, seq=3)
    assert pfroute.decode_route_message_untrusted(pfroute.encode_route_message(message)) == message


def test_a_proto1_gateway_route_on_another_interface_is_ours_and_only_proto1_counts() -> None:
    manager = DarwinRouteManager("utun20", UTUN_INDEX, FakeXnu())
    kernel_view = pfroute.RouteSocketMessage(
        pfroute.RTM_GET, net("172.17.0.0/16"), pfroute.DMNC_ROUTE_FLAGS | pfroute.RTF_GATEWAY, BRIDGE100_INDEX,
        gateway=HOP4.gateway,
    )  # fmt: skip
    route = manager.installed_route(kernel_view)
    assert route is not None
    assert route.ours
    assert route.gateway == HOP4.gateway
    foreign = manager.installed_route(
        pfroute.RouteSocketMessage(
            pfroute.RTM_GET, net("172.18.0.0/16"), 0x803, UTUN_INDEX, gateway_interface=UTUN_INDEX
        )
    )
    assert foreign is not None
    assert not foreign.ours


def test_the_manager_adds_via_the_next_hop_of_the_family_and_deletes_its_own() -> None:
    async def scenario() -> None:
        xnu = FakeXnu()
        manager = DarwinRouteManager("utun20", UTUN_INDEX, xnu)
        manager.set_next_hop(4, HOP4)
        await add_route(manager, net("172.17.0.0/16"))
        await add_route(manager, net("fd00:d0c::/64"))
        ipv4, ipv6 = xnu.sent
        assert (ipv4.gateway, ipv4.gateway_interface) == (HOP4.gateway, None)
        assert (ipv6.gateway, ipv6.gateway_interface) == (None, UTUN_INDEX)
        manager.set_next_hop(4, None)
        assert manager.next_hop(4) is None
        assert await delete_route(manager, net("172.17.0.0/16")) is True

    trio.run(scenario)
