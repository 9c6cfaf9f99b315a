"""Route boundaries end to end (issue 13): the real `dmnc` and a real dockerd, what a user would do.

Networks with hostile subnets next to a normal dual-stack one: only the normal one is routed. An address the host
gets inside a routed subnet withdraws that route. Then a "VPN" (a veth in the host namespace: this kernel has no
`dummy` module) installs a full tunnel's four /1 routes, and a network
created after that is still routed; a more specific route of the VPN for one of dmnc's subnets makes dmnc yield;
and a Tailscale-like policy rule (`ip rule add pref 5270 table 52`, a default route in table 52) makes status say
"shadowed". Status decisions are asserted as the design promises, not log wording.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.lab.netns import unique_suffix
from tests.lab.service_lab import ServiceLab, dmnc_routes, running_dmnc, status_json
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

# Each hostile subnet and the rule the route policy leaves it out by (dmnc.routes.policy.SkipReason.decision).
HOSTILE = {
    "8.8.8.0/24": "not-private",
    "1.0.0.0/8": "not-private",
    "127.0.0.0/16": "special-purpose",
    "169.254.0.0/16": "special-purpose",
    "224.0.0.0/4": "too-wide",
    "10.33.33.0/28": "tunnel",  # the tunnel's own addresses (10.33.33.1 and .2)
    "2001:4860:4860::/48": "not-private",
}
NORMAL = ("172.30.5.0/24", "fd77:5::/64")
AFTER_VPN = ("172.30.6.0/24", "fd77:6::/64")
LAN_LATER = "172.30.8.0/24"
FULL_TUNNEL = ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1")
# Status follows a Docker event or a routing change within about a second; generous for a loaded machine.
DECISION_TIMEOUT_S = 30.0


def create_network(lab: ServiceLab, name: str, *subnets: str) -> bool:
    """Create a network with `subnets`; False when Docker refuses it (which some versions do for some ranges)."""
    body = {
        "Name": name,
        "EnableIPv6": any(":" in subnet for subnet in subnets),
        "IPAM": {"Config": [{"Subnet": subnet} for subnet in subnets]},
    }
    try:
        lab.engine_request("POST", "/networks/create", json=body)
    except httpx.HTTPStatusError as error:
        print(f"Docker refused {name} {subnets}: {error.response.text.strip()}")
        return False
    return True


def decisions(lab: ServiceLab) -> dict[str, dict[str, Any]]:
    return {route["subnet"]: route for route in status_json(lab)["routes"]}


def wait_for_decisions(lab: ServiceLab, wanted: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Wait until status gives every subnet of `wanted` its decision; the routes of that status."""

    def reached() -> dict[str, dict[str, Any]]:
        routes = decisions(lab)
        got = {subnet: routes[subnet]["decision"] if subnet in routes else None for subnet in wanted}
        return routes if got == wanted else {}

    try:
        return wait_until(reached, DECISION_TIMEOUT_S, f"status decisions {wanted}", interval=0.2)
    except Exception:
        print(f"last status routes: {decisions(lab)}")
        raise


@contextlib.contextmanager
def vpn_interface(lab: ServiceLab) -> Iterator[str]:
    """A veth pair in the host namespace playing a VPN's interface; its routes, table 52 and rule 5270 go with it."""
    name = f"vpn{unique_suffix()}"[:15]
    lab.host.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name[:12]}p"])
    try:
        lab.host.run(["ip", "link", "set", name, "up"])
        lab.host.run(["ip", "link", "set", f"{name[:12]}p", "up"])
        yield name
    finally:
        lab.host.run(["ip", "rule", "del", "pref", "5270"], check=False)
        lab.host.run(["ip", "link", "del", name], check=False)  # its routes, in every table, go with it


def host_route_get(lab: ServiceLab, address: str) -> str:
    result = lab.host.run(["ip", "route", "get", address], check=False)
    return result.stdout + result.stderr


def test_only_container_subnets_are_routed_beside_a_full_tunnel_vpn_which_wins_what_it_routes(
    service_lab: ServiceLab,
) -> None:
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        accepted = {
            subnet: decision
            for index, (subnet, decision) in enumerate(HOSTILE.items())
            if create_network(service_lab, f"hostile{index}", subnet)
        }
        assert "8.8.8.0/24" in accepted  # the measured case of the issue: Docker 20.10 accepts it
        assert create_network(service_lab, "normal", *NORMAL)
        routes = wait_for_decisions(service_lab, {**accepted, **dict.fromkeys(NORMAL, "routed")})
        for subnet in accepted:
            assert routes[subnet]["installed"] is False
            assert routes[subnet]["reason"]  # the rule, what it found and the fix
        tunnel_destinations = {line.split()[0] for line in dmnc_routes(service_lab)}
        assert NORMAL[0] in tunnel_destinations
        assert not tunnel_destinations & set(accepted)
        for address in ("8.8.8.8", "1.1.1.1", "127.0.0.1", "169.254.169.254", "10.33.33.9", "2001:4860:4860::8888"):
            assert "dev dmnc" not in host_route_get(service_lab, address)
        assert "dev dmnc" in host_route_get(service_lab, "172.30.5.9")
        assert "dev dmnc" in host_route_get(service_lab, "fd77:5::9")

        with vpn_interface(service_lab) as vpn:
            # The host gets an address inside a routed subnet (a new Wi-Fi, say): noticed at once and withdrawn.
            assert create_network(service_lab, "lan-later", LAN_LATER)
            wait_for_decisions(service_lab, {LAN_LATER: "routed"})
            service_lab.host.run(["ip", "addr", "add", "172.30.8.5/24", "dev", vpn])
            routes = wait_for_decisions(service_lab, {LAN_LATER: "host-network"})
            assert f"overlaps 172.30.8.5/32 on {vpn}" in routes[LAN_LATER]["reason"]  # the address, then its subnet
            assert "withdrawing its route" in dmnc.log()

            for destination in FULL_TUNNEL:
                service_lab.host.run(["ip", "route", "add", destination, "dev", vpn])
            assert create_network(service_lab, "after-vpn", *AFTER_VPN)
            wait_for_decisions(service_lab, dict.fromkeys(NORMAL + AFTER_VPN, "routed"))
            assert "dev dmnc" in host_route_get(service_lab, "172.30.6.9")

            # The VPN routes part of one of dmnc's subnets itself: dmnc yields and says who took it.
            service_lab.host.run(["ip", "route", "add", "172.30.5.0/25", "dev", vpn])
            routes = wait_for_decisions(service_lab, {NORMAL[0]: "taken", AFTER_VPN[0]: "routed"})
            assert routes[NORMAL[0]]["installed"] is False
            assert f"taken by 172.30.5.0/25 via {vpn}" in routes[NORMAL[0]]["reason"]
            wait_until(
                lambda: NORMAL[0] not in {line.split()[0] for line in dmnc_routes(service_lab)},
                DECISION_TIMEOUT_S,
                "dmnc's route to 172.30.5.0/24 withdrawn",
                interval=0.2,
            )

            # An exit node: a rule before the main table sends everything to table 52's default route.
            service_lab.host.run(["ip", "route", "add", "default", "dev", vpn, "table", "52"])
            service_lab.host.run(["ip", "rule", "add", "pref", "5270", "table", "52"])
            routes = wait_for_decisions(service_lab, {AFTER_VPN[0]: "shadowed", AFTER_VPN[1]: "routed"})
            assert routes[AFTER_VPN[0]]["installed"] is False
            assert routes[AFTER_VPN[0]]["reason"].startswith(f"shadowed by rule 5270 -> table 52 (0.0.0.0/0 dev {vpn})")
        # The VPN gone (its interface deleted): dmnc routes both again.
        wait_for_decisions(service_lab, dict.fromkeys(NORMAL + AFTER_VPN, "routed"))
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(service_lab) == []
    assert "Traceback" not in dmnc.log()
