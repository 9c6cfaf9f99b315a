"""`dmnc wg up CONFIG`, `dmnc wg genkey`, `dmnc wg pubkey`: dmnc's WireGuard peer on its own, like wireguard-go.

`wg up` runs the tunnel from a standard WireGuard config file (see dmnc.wireguard.conffile) until SIGTERM/SIGINT, so
dmnc can be checked against any WireGuard peer and benchmarked with identical configs. It prints one `ready` line once
the interface is up and the UDP port bound; SIGUSR1 prints the per-peer counters, the device's and the I/O layer's
drops and the flow filter's (null without one) as one JSON line; SIGHUP re-reads the file's peers like `wg syncconf`
(a `reloaded ...` line; [Interface] changes need a restart).
`--rekey-after-time SECONDS` shortens REKEY_AFTER_TIME (whitepaper 6.1, 120 s) so tests and experiments see a rekey
in seconds; it must lie in (0, REJECT_AFTER_TIME]. A bad value exits 2 with one line, like any usage error.
`genkey` and `pubkey` behave like wg(8): pubkey reads a private key on stdin.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from dmnc.errors import leaf_exceptions
from dmnc.routes import Destination, RouteError, RouteManager, open_route_manager
from dmnc.tun import TunAddress, TunDevice, TunError, open_tun
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.udp import UdpEndpoint, UdpError
from dmnc.wireguard import (
    Device,
    KeyFormatError,
    PeerConfig,
    PeerConfigError,
    Timing,
    decode_key,
    encode_key,
    generate_private_key,
    public_key,
)
from dmnc.wireguard.conffile import ConfFileError, PeerSection, WireGuardConfig, load_conffile
from dmnc.wireguard.constants import DEFAULT_MTU

EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's status for a bad command line, which a bad flag value is


class WgUpError(Exception):
    """`wg up` cannot start; the message is the one line shown to the user."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("wg", help="run dmnc's WireGuard peer from a standard config file; key tools")
    actions = parser.add_subparsers(dest="wg_command", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="bring up a tunnel from a WireGuard config file and run until stopped")
    up.add_argument("config", help="WireGuard config file ([Interface] and [Peer] sections)")
    up.add_argument("--interface", help="TUN interface name (Linux: may contain %%d; macOS: utunN)")
    up.add_argument(
        "--rekey-after-time",
        metavar="SECONDS",
        help=(
            "start a new handshake once a session is this old; default REKEY_AFTER_TIME"
            f" ({Timing().rekey_after_time:g}), allowed (0, REJECT_AFTER_TIME = {Timing().reject_after_time:g}]."
            " For tests that want to see a rekey"
        ),
    )
    up.set_defaults(handler=run_up)
    genkey = actions.add_parser("genkey", help="print a new private key (base64)")
    genkey.set_defaults(handler=run_genkey)
    pubkey = actions.add_parser("pubkey", help="read a private key on stdin, print its public key")
    pubkey.set_defaults(handler=run_pubkey)


def run_genkey(args: argparse.Namespace) -> int:
    print(encode_key(generate_private_key(os.urandom)))
    return 0


def run_pubkey(args: argparse.Namespace) -> int:
    try:
        private_key = decode_key(sys.stdin.read())
    except (KeyFormatError, UnicodeDecodeError) as error:
        print(f"dmnc wg pubkey: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(encode_key(public_key(private_key)))
    return 0


def run_up(args: argparse.Namespace) -> int:
    try:
        timing = timing_from_flag(args.rekey_after_time)
    except WgUpError as error:
        print(f"dmnc wg up: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_conffile(args.config)
        peers = [peer_config(peer, args.config) for peer in config.peers]
    except (ConfFileError, WgUpError) as error:
        print(f"dmnc wg up: {error}", file=sys.stderr)
        return EXIT_FAILURE
    for key in config.ignored_keys:
        print(f"dmnc wg up: ignoring wg-quick setting `{key}`", file=sys.stderr)
    failures: list[BaseException] = []
    try:
        trio.run(_serve, config, peers, timing, args.interface, args.config)
    except* (TunError, UdpError, WgUpError) as group:
        # Raised inside the tunnel's nurseries they arrive grouped (trio's strict exception groups).
        failures.extend(leaf_exceptions(group))
    for failure in failures:
        print(f"dmnc wg up: {failure}", file=sys.stderr)
    return EXIT_FAILURE if failures else 0


def timing_from_flag(rekey_after_time: str | None) -> Timing:
    """The core's Timing for `--rekey-after-time` (None: the protocol's defaults). Raises WgUpError."""
    if rekey_after_time is None:
        return Timing()
    try:
        seconds = float(rekey_after_time)
    except ValueError:
        raise WgUpError(f"--rekey-after-time {rekey_after_time!r} is not a number of seconds") from None
    limit = Timing().reject_after_time
    # The comparison is False for NaN, so NaN is refused too; inf is above the limit.
    if not 0 < seconds <= limit:
        raise WgUpError(f"--rekey-after-time must be in (0, {limit:g}] seconds, got {rekey_after_time}")
    return Timing(rekey_after_time=seconds)


def peer_config(peer: PeerSection, filename: str) -> PeerConfig:
    """The core's PeerConfig for a [Peer] section, its Endpoint host resolved (the first address, like wg(8))."""
    endpoint = None
    if peer.endpoint is not None:
        host, port = peer.endpoint
        try:
            resolved = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as error:
            raise ConfFileError(filename, peer.line, f"Endpoint {host!r} does not resolve: {error.strerror}") from None
        address = ipaddress.ip_address(str(resolved[0][4][0]).split("%", 1)[0])
        endpoint = (str(address), port)
    return PeerConfig(
        public_key=peer.public_key,
        preshared_key=peer.preshared_key,
        allowed_ips=peer.allowed_ips,
        endpoint=endpoint,
        persistent_keepalive=peer.persistent_keepalive,
    )


def status_line(tunnel: Tunnel, tun: TunDevice) -> str:
    """Per-peer counters as one JSON object (keys base64), for SIGUSR1 and tests. `filter_drops` holds the flow
    filter's drops by reason, named in lower case as `dmnc status` shows them, or null when the tunnel runs without
    a filter (plain `wg up` has none)."""
    peers = {
        encode_key(key): {
            "endpoint": list(stats.endpoint) if stats.endpoint is not None else None,
            "rx_bytes": stats.rx_bytes,
            "tx_bytes": stats.tx_bytes,
            "rx_packets": stats.rx_packets,
            "tx_packets": stats.tx_packets,
            "handshakes": stats.handshakes,
            "last_handshake_age": (
                None if stats.last_handshake is None else round(trio.current_time() - stats.last_handshake, 3)
            ),
            "drops": {reason.name: count for reason, count in stats.drops.items()},
        }
        for key, stats in tunnel.device.peer_stats().items()
    }
    counters = tunnel.counters
    return json.dumps(
        {
            "interface": tun.name,
            "port": tunnel.udp.port,
            "peers": peers,
            "device_drops": {reason.name: count for reason, count in tunnel.device.drops.items()},
            "io_drops": {
                "udp_send_failed": counters.udp_send_failed,
                "udp_receive_errors": counters.udp_receive_errors,
                "tun_write_failed": counters.tun_write_failed,
                "handshake_queue_full": counters.handshake_queue_full,
            },
            "filter_drops": (
                None
                if tunnel.flow_filter is None
                else {reason.name.lower(): count for reason, count in tunnel.flow_filter.drops.items()}
            ),
        }
    )


def reload_peers(device: Device, current: Sequence[PeerConfig], wanted: Sequence[PeerConfig]) -> list[str]:
    """Make the device's peers `wanted`, like `wg syncconf`: unchanged peers keep their sessions, changed ones are
    re-added (sessions lost), missing ones removed. Returns what changed, one line per peer."""
    if any(peer.public_key == device.public_key for peer in wanted):
        raise PeerConfigError("a peer cannot have the device's own public key")
    wanted_by_key = {peer.public_key: peer for peer in wanted}
    current_by_key = {peer.public_key: peer for peer in current}
    changes = []
    for key, peer in current_by_key.items():
        if wanted_by_key.get(key) != peer:
            device.remove_peer(key)
            changes.append(f"{'changed' if key in wanted_by_key else 'removed'} peer {encode_key(key)}")
    for key, peer in wanted_by_key.items():
        if current_by_key.get(key) != peer:
            device.add_peer(peer)
            if key not in current_by_key:
                changes.append(f"added peer {encode_key(key)}")
    return changes


def load_peers_for_reload(path: str, running: WireGuardConfig) -> list[PeerConfig]:
    """The peers of the config file at `path` (blocking: resolves host names). Raises ConfFileError."""
    config = load_conffile(path)
    if config.interface != running.interface:
        raise ConfFileError(path, None, "[Interface] changed: restart to apply it (peers were not reloaded)")
    return [peer_config(peer, path) for peer in config.peers]


async def _reload(path: str, running: WireGuardConfig, device: Device, current: list[PeerConfig]) -> None:
    try:
        wanted = await trio.to_thread.run_sync(load_peers_for_reload, path, running)
        changes = reload_peers(device, current, wanted)
    except (ConfFileError, PeerConfigError) as error:
        print(f"dmnc wg up: reload: {error}", file=sys.stderr, flush=True)
        return
    current[:] = wanted
    print(f"reloaded {'; '.join(changes) or 'no changes'}", flush=True)


def interface_routes(config: WireGuardConfig) -> list[Destination]:
    """The routes `wg up` adds through the utun on macOS, as wg-quick does there (wireguard-tools
    src/wg-quick/darwin.bash, `route -q -n add -inet X -interface utunN`): the network of each IPv4 address and
    every peer's AllowedIPs, each once.

    IPv6 address networks are left out: xnu routes them itself, even on a point-to-point interface
    (bsd/netinet6/in6.c, nd6_prefix_onlink). A /0 is left out too: wg-quick replaces the default route with two /1
    halves plus a route to each endpoint outside the tunnel, which is more than `wg up` takes on; `wg up` says so.
    """
    wanted: list[Destination] = [
        address.network
        for address in config.interface.addresses
        if address.version == 4 and address.network.prefixlen < address.max_prefixlen
    ]
    wanted += [network for peer in config.peers for network in peer.allowed_ips if network.prefixlen > 0]
    return list(dict.fromkeys(wanted))


@asynccontextmanager
async def interface_routes_installed(manager: RouteManager, destinations: Sequence[Destination]) -> AsyncIterator[None]:
    """Add `destinations` through the manager's interface, each failure one line, and remove what was added on exit."""
    added: list[Destination] = []
    for result in await manager.add_many(destinations):
        if result.error is None:
            added.append(result.destination)
        else:
            print(f"dmnc wg up: no route to {result.destination}: {result.error}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            for result in await manager.delete_many(added):
                if result.error is not None:
                    print(f"dmnc wg up: route to {result.destination} not removed: {result.error}", file=sys.stderr)


@asynccontextmanager
async def _platform_routes(
    config: WireGuardConfig, interface: str, platform: str = sys.platform
) -> AsyncIterator[None]:
    """On macOS, the interface routes wg-quick adds (`interface_routes`); Linux routes an address's network itself
    and `wg up` leaves AllowedIPs routing to the caller there, as before."""
    if platform != "darwin":
        yield
        return
    if any(network.prefixlen == 0 for peer in config.peers for network in peer.allowed_ips):
        print("dmnc wg up: AllowedIPs /0 gets no route (wg up does not replace the default route)", flush=True)
    try:
        async with (
            open_route_manager(interface) as manager,
            interface_routes_installed(manager, interface_routes(config)),
        ):
            yield
    except RouteError as error:
        raise WgUpError(f"routes through {interface}: {error}") from None


async def _serve(
    config: WireGuardConfig, peers: Sequence[PeerConfig], timing: Timing, name: str | None, path: str
) -> None:
    mtu = config.interface.mtu or DEFAULT_MTU
    device = Device(
        config.interface.private_key, rng=os.urandom, wall_offset=Tunnel.wall_offset(), timing=timing, mtu=mtu
    )
    try:
        for peer in peers:
            device.add_peer(peer)
    except PeerConfigError as error:
        raise WgUpError(str(error)) from None
    tun = open_tun(name, mtu=mtu, addresses=[TunAddress(address) for address in config.interface.addresses])
    try:
        udp = UdpEndpoint.open(config.interface.listen_port or 0)
        try:
            tunnel = Tunnel(device, tun, udp)
            current = list(peers)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP) as signals:
                async with _platform_routes(config, tun.name), trio.open_nursery() as nursery:
                    await nursery.start(tunnel.run)
                    print(f"ready interface={tun.name} port={udp.port}", flush=True)
                    async for signal_number in signals:
                        if signal_number == signal.SIGUSR1:
                            print(status_line(tunnel, tun), flush=True)
                        elif signal_number == signal.SIGHUP:
                            await _reload(path, config, device, current)
                        else:
                            nursery.cancel_scope.cancel()
                            break
        finally:
            udp.close()
    finally:
        tun.close()
