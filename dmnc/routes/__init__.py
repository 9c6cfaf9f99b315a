"""Host routes through the tunnel: one per Docker subnet, reconciled and defended.

The platform's manager is chosen once, by `sys.platform`, in `open_route_manager`; everything above it works with
the `RouteManager` protocol (and `fake.FakeRouteManager` in tests).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dmnc.routes.hoststate import HostAddressSource
from dmnc.routes.manager import (
    Address,
    Destination,
    InstalledRoute,
    InterfaceNotFoundError,
    RouteError,
    RouteEvent,
    RouteEventKind,
    RouteExistsError,
    RouteManager,
    RouteOperationError,
    RouteResult,
    add_route,
    delete_route,
)


def host_address_source(manager: RouteManager) -> HostAddressSource | None:
    """What tells this platform's interface addresses (the tunnel's left out): Linux's route manager itself (the
    same rtnetlink socket), on macOS a NET_RT_IFLIST reader; None elsewhere."""
    if isinstance(manager, HostAddressSource):
        return manager
    if sys.platform == "darwin":
        from dmnc.routes.darwin_host import DarwinHostAddresses  # noqa: PLC0415 (loads only where it runs)

        return DarwinHostAddresses(manager.interface)
    return None


@asynccontextmanager
async def open_route_manager(interface: str) -> AsyncIterator[RouteManager]:
    """The route manager of this platform for `interface`, closed on exit (routes stay; see RouteReconciler)."""
    manager: RouteManager
    if sys.platform == "linux":
        from dmnc.routes.linux import LinuxRouteManager  # noqa: PLC0415 (platform backends load only where they run)

        manager = LinuxRouteManager(interface)
    elif sys.platform == "darwin":
        from dmnc.routes.darwin import open_darwin_route_manager  # noqa: PLC0415

        manager = open_darwin_route_manager(interface)
    else:
        raise RouteError(f"routes are not supported on {sys.platform}")
    try:
        yield manager
    finally:
        await manager.aclose()


__all__ = [
    "Address",
    "Destination",
    "InstalledRoute",
    "InterfaceNotFoundError",
    "RouteError",
    "RouteEvent",
    "RouteEventKind",
    "RouteExistsError",
    "RouteManager",
    "RouteOperationError",
    "RouteResult",
    "add_route",
    "delete_route",
    "host_address_source",
    "open_route_manager",
]
