"""`dmnc wg up` on macOS routes what wg-quick routes: each IPv4 address's network and every peer's AllowedIPs,
through the utun, removed on exit. Driven through the real DarwinRouteManager against a fake kernel that speaks
PF_ROUTE bytes (tests/unit/routes/test_darwin.py's FakeXnu)."""

from __future__ import annotations

import errno
import ipaddress
from pathlib import Path

import pytest

from dmnc.commands.wg import interface_routes, interface_routes_installed
from dmnc.routes import pfroute
from dmnc.routes.darwin import DarwinRouteManager
from dmnc.wireguard.conffile import load_conffile
from tests.unit.routes.test_darwin import UTUN_INDEX, FakeXnu

net = ipaddress.ip_network
KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="

CONFIG = f"""\
[Interface]
PrivateKey = {KEY}
Address = 10.0.0.2/24, fd00:77::2/64, 10.9.9.9/32

[Peer]
PublicKey = {KEY}
AllowedIPs = 10.0.0.0/24, 192.168.50.0/24

[Peer]
PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
AllowedIPs = 0.0.0.0/0, fd00:88::/64
"""


def test_routes_are_the_ipv4_address_networks_and_every_peers_allowed_ips_once(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text(CONFIG)
    assert interface_routes(load_conffile(path)) == [
        net("10.0.0.0/24"),  # the address's network (and a peer's AllowedIPs): once
        net("192.168.50.0/24"),
        net("fd00:88::/64"),  # 10.9.9.9/32 has no network to route; fd00:77::/64 xnu routes itself; /0 is skipped
    ]


async def test_routes_are_added_through_the_utun_and_removed_on_exit(capsys: pytest.CaptureFixture[str]) -> None:
    xnu = FakeXnu()
    manager = DarwinRouteManager("utun20", UTUN_INDEX, xnu)
    xnu.refuse[net("192.168.50.0/24")] = errno.ENETUNREACH  # one refused destination: reported, not fatal
    wanted = [net("10.0.0.0/24"), net("192.168.50.0/24"), net("fd00:88::/64")]
    async with interface_routes_installed(manager, wanted):
        routes = {destination: message for destination, message in xnu.table.items()}
        assert set(routes) == {net("10.0.0.0/24"), net("fd00:88::/64")}
        for message in routes.values():
            assert message.gateway_interface == UTUN_INDEX
            assert message.flags & pfroute.DMNC_ROUTE_FLAGS == pfroute.DMNC_ROUTE_FLAGS
    assert xnu.table == {}
    assert "no route to 192.168.50.0/24" in capsys.readouterr().err
