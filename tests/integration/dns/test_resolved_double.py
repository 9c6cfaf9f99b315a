"""dmnc's systemd-resolved integration against a D-Bus double, on a private dbus-daemon bus.

Not a real systemd-resolved: resolved needs systemd as PID 1 (or at least its own /run and the netlink state of
its links) and the lab has neither; installing the Debian package would replace /etc/resolv.conf on this machine.
The double is a small jeepney service that owns org.freedesktop.resolve1 and records the Manager calls, with the
argument types of org.freedesktop.resolve1(5). It checks what dmnc sends, that it falls back from SetLinkDNSEx to
SetLinkDNS on an older resolved, that it applies everything again when resolved restarts (NameOwnerChanged) and
when another program rewrites the link (PropertiesChanged on the link object, sent by the double as resolved
would), and that RevertLink takes it back at stop.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import dns.name
import pytest
import trio
from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageType,
    message_bus,
    new_error,
    new_method_return,
    new_signal,
)
from jeepney.io.trio import DBusConnection, open_dbus_connection, open_dbus_router
from jeepney.wrappers import unwrap_msg

from dmnc.dns.resolved import (
    LINK_INTERFACE,
    PROPERTIES_INTERFACE,
    RESOLVE1_NAME,
    UNKNOWN_METHOD,
    ResolvedLink,
    link_object_path,
)
from dmnc.dns.service import HostResolverError
from tests.conftest import require_tools
from tests.lab.wait import wait_until_async

pytestmark = pytest.mark.lab

LOOPBACK = "lo"  # an interface every host has: the double only checks its index
Call = tuple[str, tuple[object, ...]]


@contextmanager
def private_bus() -> Iterator[str]:
    require_tools("dbus-daemon")
    with tempfile.TemporaryDirectory(prefix="dmnc-dbus-") as folder:
        address = f"unix:path={Path(folder) / 'bus'}"
        daemon = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={address}", "--print-address"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert daemon.stdout is not None
            daemon.stdout.readline()  # printed once the bus listens
            yield address
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


@asynccontextmanager
async def resolved_double(address: str, calls: list[Call], *, extended: bool = True) -> AsyncIterator[DBusConnection]:
    """Owns org.freedesktop.resolve1 on `address` while the block runs; records each Manager call. Yields its
    connection, for signals resolved would emit."""
    connection = await open_dbus_connection(address)
    async with connection:
        await connection.send(message_bus.RequestName(RESOLVE1_NAME))
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                while True:
                    message = await connection.receive()
                    if message.header.message_type != MessageType.method_call:
                        continue
                    member = str(message.header.fields[HeaderFields.member])
                    if member == "SetLinkDNSEx" and not extended:
                        await connection.send(new_error(message, UNKNOWN_METHOD, "s", ("no such method",)))
                        continue
                    calls.append((member, tuple(message.body)))
                    await connection.send(new_method_return(message))

            nursery.start_soon(serve)

            async def owned() -> bool:
                return await name_owner(address) is not None

            await wait_until_async(owned, 10, "the double owning org.freedesktop.resolve1")
            yield connection
            nursery.cancel_scope.cancel()


async def name_owner(address: str) -> str | None:
    async with open_dbus_router(address) as router:
        reply = await router.send_and_get_reply(message_bus.GetNameOwner(RESOLVE1_NAME))
        if reply.header.message_type == MessageType.error:
            return None
        owner = unwrap_msg(reply)[0]
        return str(owner)


DOMAIN = dns.name.from_text("dmnc.internal")
LO_INDEX = socket.if_nametoindex(LOOPBACK)


async def test_per_link_dns_routing_domain_and_default_route_off_then_revert() -> None:
    with private_bus() as address:
        calls: list[Call] = []
        async with resolved_double(address, calls):
            link = ResolvedLink(LOOPBACK, bus=address)
            how = await link.apply(DOMAIN, ["10.33.33.1", "fd33:33:33::1"], 5353)
            assert "~dmnc.internal" in how
            assert calls == [
                (
                    "SetLinkDNSEx",
                    (
                        LO_INDEX,
                        [
                            (socket.AF_INET, bytes([10, 33, 33, 1]), 5353, ""),
                            (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "fd33:33:33::1"), 5353, ""),
                        ],
                    ),
                ),
                ("SetLinkDomains", (LO_INDEX, [("dmnc.internal", True)])),
                ("SetLinkDefaultRoute", (LO_INDEX, False)),
            ]
            await link.remove()
            assert calls[-1] == ("RevertLink", (LO_INDEX,))


async def test_an_older_resolved_gets_set_link_dns_for_port_53_only() -> None:
    with private_bus() as address:
        calls: list[Call] = []
        async with resolved_double(address, calls, extended=False):
            link = ResolvedLink(LOOPBACK, bus=address)
            await link.apply(DOMAIN, ["10.33.33.1"], 53)
            assert calls[0] == ("SetLinkDNS", (LO_INDEX, [(socket.AF_INET, bytes([10, 33, 33, 1]))]))
            with pytest.raises(HostResolverError, match="UnknownMethod"):
                await link.apply(DOMAIN, ["10.33.33.1"], 5353)


async def test_a_restarted_resolved_is_configured_again() -> None:
    with private_bus() as address:
        first: list[Call] = []
        link = ResolvedLink(LOOPBACK, bus=address)
        async with trio.open_nursery() as nursery:
            async with resolved_double(address, first):
                await link.apply(DOMAIN, ["10.33.33.1"], 53)
                await nursery.start(link.watch)
            again: list[Call] = []
            async with resolved_double(address, again):

                async def reapplied() -> bool:
                    return [member for member, _ in again][:3] == [
                        "SetLinkDNSEx",
                        "SetLinkDomains",
                        "SetLinkDefaultRoute",
                    ]

                await wait_until_async(reapplied, 10, "the link configured again after the restart")
            nursery.cancel_scope.cancel()


async def test_no_resolved_on_the_bus_is_a_clear_error() -> None:
    with private_bus() as address:
        link = ResolvedLink(LOOPBACK, bus=address)
        with pytest.raises(HostResolverError, match="systemd-resolved"):
            await link.apply(DOMAIN, ["10.33.33.1"], 53)
    with pytest.raises(HostResolverError, match="not reachable"):
        await ResolvedLink(LOOPBACK, bus="unix:path=/nonexistent/bus").apply(DOMAIN, ["10.33.33.1"], 53)


def link_properties_changed(changed: dict[str, tuple[str, object]]) -> Message:
    """The signal resolved emits when a link's settings change (org.freedesktop.DBus.Properties)."""
    link = DBusAddress(link_object_path(LO_INDEX), interface=PROPERTIES_INTERFACE)
    return new_signal(link, "PropertiesChanged", "sa{sv}as", (LINK_INTERFACE, changed, []))


async def test_a_link_rewritten_by_another_program_is_configured_again() -> None:
    with private_bus() as address:
        calls: list[Call] = []
        link = ResolvedLink(LOOPBACK, bus=address)
        async with trio.open_nursery() as nursery, resolved_double(address, calls) as resolved:
            await link.apply(DOMAIN, ["10.33.33.1"], 53)
            await nursery.start(link.watch)
            applied = len(calls)
            # Another program (`resolvectl domain lo ''`) empties the domains: dmnc sets them again.
            await resolved.send(link_properties_changed({"Domains": ("a(sb)", [])}))

            async def reapplied() -> bool:
                return len(calls) >= 2 * applied

            # That dmnc's own settings echoed back are no rewrite (no loop) is tests/unit/dns/test_resolved.py's.
            await wait_until_async(reapplied, 10, "the link configured again after the rewrite")
            assert [member for member, _ in calls[applied:]] == [
                "SetLinkDNSEx",
                "SetLinkDomains",
                "SetLinkDefaultRoute",
            ]
            nursery.cancel_scope.cancel()
