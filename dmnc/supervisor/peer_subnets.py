"""The VM peer's allowed IPs (cryptokey routing, whitepaper section 2): the VM's own tunnel addresses plus the
subnets dmnc currently routes into the tunnel, nothing else.

So the host sends into the tunnel only what it routes there, and accepts from the VM only sources it routes back:
a process in the VM cannot spoof another source towards host services. The route reconciler calls `before_add`
before it installs a route and `after_delete` once a route is gone (its `RouteHooks`), so no packet of a routed
subnet meets a peer that does not own it, in either direction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dmnc.routes.manager import Destination
from dmnc.supervisor.log import logger
from dmnc.vm.params import DEFAULT_VM_ADDRESS, DEFAULT_VM_ADDRESS6
from dmnc.wireguard import Device
from dmnc.wireguard.config import IPNetwork

VM_TUNNEL_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network(f"{DEFAULT_VM_ADDRESS}/32"),
    ipaddress.ip_network(f"{DEFAULT_VM_ADDRESS6}/128"),
)


class VmPeerSubnets:
    """Keeps the VM peer's allowed IPs equal to its tunnel addresses plus the routed subnets (a `RouteHooks`)."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self._subnets: set[Destination] = set()
        self._peer: bytes | None = None

    def allowed_ips(self) -> tuple[IPNetwork, ...]:
        """What the VM peer may use now: for `add_peer` when the VM side is (re)installed."""
        return (*VM_TUNNEL_NETWORKS, *sorted(self._subnets, key=lambda network: (network.version, network)))

    def attach(self, public_key: bytes | None) -> None:
        """The VM peer is now the one with `public_key` (None: no VM peer)."""
        self._peer = public_key

    def before_add(self, destinations: Sequence[Destination]) -> None:
        if not set(destinations) <= self._subnets:
            self._subnets.update(destinations)
            self._apply()

    def after_delete(self, destinations: Sequence[Destination]) -> None:
        if self._subnets & set(destinations):
            self._subnets.difference_update(destinations)
            self._apply()

    def _apply(self) -> None:
        if self._peer is not None:
            allowed = self.allowed_ips()
            self._device.set_allowed_ips(self._peer, allowed)
            logger.debug("VM peer allowed IPs: %s", ", ".join(map(str, allowed)))
