"""Keeps the route policy's view of the host's own traffic current: the tunnel's addresses, the addresses and
connected subnets of the host's other interfaces (read again on every address change the OS reports, and every
ADDRESS_REREAD_SECONDS in case one was lost), the DNS servers (re-read every DNS_REREAD_SECONDS: they change with
the network, without any event dmnc follows), the address the VM's UDP packets come from (it roams with the VM's
network), and whether the VM side carries IPv6."""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Awaitable, Callable

import trio

from dmnc.routes.hoststate import ADDRESS_REREAD_SECONDS, DNS_REREAD_SECONDS, HostAddressSource, read_dns_servers
from dmnc.routes.manager import Address, Destination, RouteError
from dmnc.routes.policy import HostNetwork, HostState
from dmnc.routes.reconcile import RESUBSCRIBE_SECONDS, RouteReconciler
from dmnc.supervisor.vm_keeper import VmKeeper

logger = logging.getLogger(__name__)

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


async def read_host_dns_servers() -> tuple[Address, ...]:
    """This platform's DNS servers: macOS's from `scutil --dns`, elsewhere the resolver files, read off the event
    loop (a file read can block on a stalled network file system)."""
    if sys.platform == "darwin":
        from dmnc.routes.darwin_host import read_dns_servers_darwin  # noqa: PLC0415 (loads only where it runs)

        return await read_dns_servers_darwin()
    return await trio.to_thread.run_sync(read_dns_servers)


class _AddressWatch:
    """The host's interface addresses as last read, and whether they must be read again."""

    def __init__(self, source: HostAddressSource | None) -> None:
        self._source = source
        self.networks: tuple[HostNetwork, ...] = ()
        self.changed = trio.Event()
        self._read_at = -ADDRESS_REREAD_SECONDS
        self._failed: str | None = None

    async def follow(self) -> None:
        """Mark the addresses stale on every change the OS reports; a failed subscription is opened again."""
        if self._source is None:
            return
        while True:
            try:
                async with self._source.address_changes() as changes:
                    async for _ in changes:
                        self._read_at = -ADDRESS_REREAD_SECONDS
                        self.changed.set()
            except RouteError as error:
                logger.warning("watching the host's addresses failed, subscribing again: %s", error)
            await trio.sleep(RESUBSCRIBE_SECONDS)

    async def refresh(self) -> None:
        """Read the addresses if stale; on failure keep the last ones (and say so once)."""
        self.changed = trio.Event()
        if self._source is None or trio.current_time() - self._read_at < ADDRESS_REREAD_SECONDS:
            return
        self._read_at = trio.current_time()
        try:
            self.networks = await self._source.host_networks()
        except RouteError as error:
            if str(error) != self._failed:
                logger.warning("could not read the host's addresses, keeping the last ones: %s", error)
            self._failed = str(error)
        else:
            self._failed = None


async def watch_host_state(
    routes: RouteReconciler,
    vm: VmKeeper,
    tunnel: tuple[Destination, ...],
    read_dns: Callable[[], Awaitable[tuple[Address, ...]]] = read_host_dns_servers,
    addresses: HostAddressSource | None = None,
) -> None:
    """Feed `routes` the host state until cancelled; the reconciler re-evaluates only when it changed."""
    dns_servers: tuple[Address, ...] = ()
    dns_read_at = -DNS_REREAD_SECONDS
    watch = _AddressWatch(addresses)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.follow)
        while True:
            if trio.current_time() - dns_read_at >= DNS_REREAD_SECONDS:
                dns_servers = await read_dns()
                dns_read_at = trio.current_time()
            await watch.refresh()
            routes.set_host_state(
                HostState(
                    tunnel=tunnel,
                    networks=watch.networks,
                    vm_endpoint=vm_endpoint_address(vm),
                    dns_servers=dns_servers,
                    vm_ipv6=vm.carries_ipv6,
                )
            )
            with trio.move_on_after(ENDPOINT_CHECK_SECONDS):
                # A finished VM setup is news at once: its IPv6 state decides the IPv6 routes (issue 12's start).
                await _first_of(watch.changed.wait, vm.wait_side_set)


async def _first_of(*waits: Callable[[], Awaitable[None]]) -> None:
    """Until the first of `waits` returns; the others are cancelled."""
    async with trio.open_nursery() as nursery:

        async def wait_then_stop(wait: Callable[[], Awaitable[None]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(wait_then_stop, wait)
