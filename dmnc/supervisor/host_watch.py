"""Keeps the route policy's view of the host's own traffic current: the tunnel's addresses, the DNS servers
(re-read every DNS_REREAD_SECONDS: they change with the network, without any event dmnc follows) and the address
the VM's UDP packets come from (it roams with the VM's network), and whether the VM side carries IPv6."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

import trio

from dmnc.routes.hoststate import DNS_REREAD_SECONDS, read_dns_servers
from dmnc.routes.manager import Address, Destination
from dmnc.routes.policy import HostState
from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.vm_keeper import VmKeeper

# The VM endpoint is read from the WireGuard peer, which updates it on every authenticated packet (whitepaper
# section 2.1, "built-in roaming"): looked at this often, so a roamed endpoint is left out of routes quickly.
ENDPOINT_CHECK_SECONDS = 2.0


def vm_endpoint_address(vm: VmKeeper) -> Address | None:
    """The IP the VM peer's packets come from, if known and an IP literal."""
    side = vm.side
    endpoint = None if side is None else side.peer.endpoint
    if endpoint is None:
        return None
    try:
        return ipaddress.ip_address(str(endpoint[0]).split("%", 1)[0])
    except ValueError:
        return None


async def read_dns_servers_in_thread() -> tuple[Address, ...]:
    """`read_dns_servers` off the event loop: a file read can block (a stalled network file system)."""
    return await trio.to_thread.run_sync(read_dns_servers)


async def watch_host_state(
    routes: RouteReconciler,
    vm: VmKeeper,
    tunnel: tuple[Destination, ...],
    read_dns: Callable[[], Awaitable[tuple[Address, ...]]] = read_dns_servers_in_thread,
) -> None:
    """Feed `routes` the host state until cancelled; the reconciler re-evaluates only when it changed."""
    dns_servers: tuple[Address, ...] = ()
    dns_read_at = -DNS_REREAD_SECONDS
    while True:
        if trio.current_time() - dns_read_at >= DNS_REREAD_SECONDS:
            dns_servers = await read_dns()
            dns_read_at = trio.current_time()
        routes.set_host_state(
            HostState(
                tunnel=tunnel,
                vm_endpoint=vm_endpoint_address(vm),
                dns_servers=dns_servers,
                vm_ipv6=vm.carries_ipv6,
            )
        )
        await trio.sleep(ENDPOINT_CHECK_SECONDS)
