"""The parts of a running service, built before its nursery starts and handed to the tasks that use them."""

from __future__ import annotations

from dataclasses import dataclass

from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.peer_subnets import VmPeerSubnets
from dmnc.tun import TunDevice
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.udp import UdpEndpoint
from dmnc.wireguard import Device

# Cleanup on SIGTERM (routes, VM side) must end well within launchd's/systemd's default stop timeouts and the 5 s
# we promise.
SHUTDOWN_BUDGET_S = 4.0


@dataclass(frozen=True)
class RunningParts:
    """The TUN interface, the UDP socket, the WireGuard device, the data path between them, the route manager and
    the VM peer's allowed IPs that follow the routes."""

    tun: TunDevice
    udp: UdpEndpoint
    device: Device
    tunnel: Tunnel
    routes: RouteReconciler
    peer_subnets: VmPeerSubnets
