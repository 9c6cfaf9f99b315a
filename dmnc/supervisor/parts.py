"""The parts of a running service, built before its nursery starts and handed to the tasks that use them."""

from __future__ import annotations

from dataclasses import dataclass

from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.peer_subnets import VmPeerSubnets
from dmnc.tun import TunDevice
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.udp import UdpEndpoint
from dmnc.wireguard import Device

# Cleanup on SIGTERM (routes, VM side) must end well within the service managers' stop timeouts (the unit's
# TimeoutStopSec, launchd's ExitTimeOut of 20 s). The VM side's teardown is a one-shot container, which takes a second
# or two, but over 4 s on a loaded VM: then the container still runs after dmnc exited.
SHUTDOWN_BUDGET_S = 8.0


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
