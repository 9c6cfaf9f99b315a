"""Linux with systemd-resolved: a per-link DNS server and the routing-only domain `~<domain>` on the TUN link.

Over D-Bus with jeepney, on org.freedesktop.resolve1.Manager (org.freedesktop.resolve1(5)):
SetLinkDNSEx (a server with a port, systemd >= 246; SetLinkDNS when only port 53 is needed and Ex is unknown),
SetLinkDomains with the routing-only flag (only names under the domain go to this link's server, see
systemd-resolved.service(8) "Protocols and Routing"), SetLinkDefaultRoute(false) so no other name does, and
RevertLink at stop. resolved forgets all of it when it restarts, so `watch` applies it again on NameOwnerChanged;
and when another program (NetworkManager, a VPN client, `resolvectl`) rewrites the link, resolved emits
org.freedesktop.DBus.Properties.PropertiesChanged on the link object with the new values, and `watch` applies dmnc's
again when they differ from its own (its own apply emits matching values, so it never loops).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence

import dns.name
import trio
from jeepney import (
    DBusAddress,
    DBusErrorResponse,
    HeaderFields,
    MatchRule,
    Message,
    MessageType,
    message_bus,
    new_method_call,
)
from jeepney.io.trio import open_dbus_connection, open_dbus_router

from dmnc.dns.server import DNS_PORT
from dmnc.dns.service import HostResolverError

logger = logging.getLogger("dmnc.dns")

RESOLVE1_NAME = "org.freedesktop.resolve1"
RESOLVE1 = DBusAddress("/org/freedesktop/resolve1", bus_name=RESOLVE1_NAME, interface=f"{RESOLVE1_NAME}.Manager")
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
SYSTEM_BUS = "SYSTEM"
DBUS_NAME = "org.freedesktop.DBus"
LINK_PATH_PREFIX = "/org/freedesktop/resolve1/link"
LINK_INTERFACE = f"{RESOLVE1_NAME}.Link"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"


def link_object_path(ifindex: int) -> str:
    """resolved's object path of a link: the ifindex as a bus label (systemd's bus_label_escape: every character
    but ASCII letters and digits, and a leading digit, as `_` and two hex digits), so ifindex 3 is `.../link/_33`."""
    text = str(ifindex)
    return f"{LINK_PATH_PREFIX}/_{ord(text[0]):02x}{text[1:]}"


def link_rewritten(changed: dict[str, tuple[str, object]], domain: str, addresses: Sequence[str]) -> bool:
    """Whether a link's PropertiesChanged values undo dmnc's settings: its routing domain or DNS servers gone, or
    the link made a default route. Values equal to dmnc's own (its apply's echo) are no rewrite."""
    domains = changed.get("Domains")
    if domains is not None and (domain, True) not in _list(domains[1]):
        return True
    default_route = changed.get("DefaultRoute")
    if default_route is not None and default_route[1] is not False:
        return True
    servers = changed.get("DNSEx") or changed.get("DNS")
    if servers is None:
        return False
    ours = {_server(address) for address in addresses}
    # jeepney reads `ay` as bytes and decodes by the sender's own signature, so an entry may hold anything (a
    # list is unhashable); an entry of another shape than (int, bytes, ...) names no server of dmnc's.
    theirs = {
        (entry[0], entry[1])
        for entry in _list(servers[1])
        if isinstance(entry, tuple) and len(entry) >= 2 and isinstance(entry[0], int) and isinstance(entry[1], bytes)
    }
    return not ours <= theirs


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def set_link_dns(ifindex: int, addresses: Sequence[str], port: int, *, extended: bool) -> Message:
    servers = [_server(address) for address in addresses]
    if extended:
        return new_method_call(
            RESOLVE1, "SetLinkDNSEx", "ia(iayqs)", (ifindex, [(family, raw, port, "") for family, raw in servers])
        )
    return new_method_call(RESOLVE1, "SetLinkDNS", "ia(iay)", (ifindex, servers))


def set_link_domains(ifindex: int, domain: str) -> Message:
    return new_method_call(RESOLVE1, "SetLinkDomains", "ia(sb)", (ifindex, [(domain, True)]))


def set_link_default_route(ifindex: int, enable: bool) -> Message:
    return new_method_call(RESOLVE1, "SetLinkDefaultRoute", "ib", (ifindex, enable))


def revert_link(ifindex: int) -> Message:
    return new_method_call(RESOLVE1, "RevertLink", "i", (ifindex,))


def _server(address: str) -> tuple[int, bytes]:
    parsed = ipaddress.ip_address(address)
    return (socket.AF_INET if parsed.version == 4 else socket.AF_INET6, parsed.packed)


class ResolvedLink:
    """The `HostResolver` for Linux with systemd-resolved."""

    def __init__(self, interface: str, bus: str = SYSTEM_BUS) -> None:
        self._interface = interface
        self._bus = bus
        self._applied: tuple[str, tuple[str, ...], int] | None = None

    async def apply(self, domain: dns.name.Name, addresses: Sequence[str], port: int) -> str:
        text = domain.to_text(omit_final_dot=True)
        self._applied = (text, tuple(addresses), port)
        await self._send_all(self._applied)
        return f"systemd-resolved: DNS {', '.join(addresses)} port {port} and ~{text} on {self._interface}"

    async def remove(self) -> None:
        if self._applied is None:
            return
        self._applied = None
        await self._call([revert_link(self._ifindex())])

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply again whenever systemd-resolved (re)appears on the bus or another program rewrites the link;
        started once subscribed.

        A plain connection, read in this task, not a router with a filter: jeepney 0.9's trio router closes its
        filters' channels in a loop that awaits while the filter's own context exit removes it from the same dict,
        so cancelling the two together (dmnc stopping) raised "dictionary changed size during iteration".
        """
        rule = MatchRule(type=MessageType.signal, sender=DBUS_NAME, interface=DBUS_NAME, member="NameOwnerChanged")
        rule.add_arg_condition(0, RESOLVE1_NAME)
        subscribed = False
        try:
            link_rule = MatchRule(
                type=MessageType.signal,
                interface=PROPERTIES_INTERFACE,
                member="PropertiesChanged",
                path=link_object_path(self._ifindex()),
            )
            link_rule.add_arg_condition(0, LINK_INTERFACE)
            connection = await open_dbus_connection(self._bus)
            async with connection:
                await connection.send(message_bus.AddMatch(rule))
                await connection.send(message_bus.AddMatch(link_rule))
                task_status.started()
                subscribed = True
                while True:
                    message = await connection.receive()
                    if message.header.message_type is MessageType.error:
                        logger.warning("DNS: cannot follow systemd-resolved restarts: %s", DBusErrorResponse(message))
                        return
                    applied = self._applied
                    why = _reapply_reason(message, rule, link_rule, applied)
                    if why is None or applied is None:
                        continue
                    logger.info("DNS: %s; configuring %s again", why, self._interface)
                    try:
                        await self._send_all(applied)
                    except HostResolverError as error:
                        logger.warning("DNS: %s", error)
        except (
            OSError,
            KeyError,
            ValueError,
            HostResolverError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ) as error:
            logger.warning("DNS: cannot follow systemd-resolved restarts: %s", error)
            if not subscribed:
                task_status.started()

    def _ifindex(self) -> int:
        try:
            return socket.if_nametoindex(self._interface)
        except OSError as error:
            raise HostResolverError(f"no interface {self._interface}: {error.strerror}") from error

    async def _send_all(self, applied: tuple[str, tuple[str, ...], int]) -> None:
        domain, addresses, port = applied
        ifindex = self._ifindex()
        tail = [set_link_domains(ifindex, domain), set_link_default_route(ifindex, False)]
        try:
            await self._call([set_link_dns(ifindex, addresses, port, extended=True), *tail])
        except HostResolverError as error:
            if UNKNOWN_METHOD not in str(error) or port != DNS_PORT:
                raise
            # systemd < 246 has no SetLinkDNSEx; its SetLinkDNS has no port, which is fine for port 53.
            await self._call([set_link_dns(ifindex, addresses, port, extended=False), *tail])

    async def _call(self, messages: Sequence[Message]) -> None:
        refused: DBusErrorResponse | None = None
        try:
            async with open_dbus_router(self._bus) as router:
                # Nothing may raise inside: the router's nursery would wrap it in an exception group.
                for message in messages:
                    refused = _error_of(await router.send_and_get_reply(message))
                    if refused is not None:
                        break
        except (OSError, KeyError, ValueError, trio.BrokenResourceError) as error:
            # KeyError: no system bus address known; OSError: no bus socket (systemd-resolved not running).
            raise HostResolverError(f"systemd-resolved is not reachable on the system bus: {error}") from error
        if refused is not None:
            raise HostResolverError(f"systemd-resolved refused: {refused.name}: {refused.data}")


def _reapply_reason(
    message: Message, restarted: MatchRule, link_changed: MatchRule, applied: tuple[str, tuple[str, ...], int] | None
) -> str | None:
    """Why `message` calls for applying dmnc's link settings again, or None."""
    if applied is None:
        return None
    if restarted.matches(message) and message.body[2]:
        return "systemd-resolved restarted"
    # PropertiesChanged's signature (D-Bus specification, org.freedesktop.DBus.Properties): anything else is ignored.
    signature = message.header.fields.get(HeaderFields.signature)
    if link_changed.matches(message) and signature == "sa{sv}as" and link_rewritten(message.body[1], *applied[:2]):
        return "another program rewrote the link in systemd-resolved"
    return None


def _error_of(reply: Message) -> DBusErrorResponse | None:
    return DBusErrorResponse(reply) if reply.header.message_type == MessageType.error else None
