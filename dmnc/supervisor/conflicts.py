"""What keeps dmnc from taking the tunnel over, and whether it runs under a service manager.

Another program may already hold what dmnc needs: docker-mac-net-connect (the tool dmnc replaces) uses the same
point-to-point pair 10.33.33.1/.2 and the same VM interface `chip0`, and Homebrew's dmnc service may be installed
beside dmnc's own. Its port is ephemeral in current versions, so the UDP port tells nothing. Found here, on the host:

- another interface holding a host tunnel address (`host_address_conflicts`: a bind(2) to the address succeeds
  only when an interface of this host holds it; EADDRNOTAVAIL otherwise, ip(7), ipv6(7));
- on macOS, the `homebrew.mxcl.docker-mac-net-connect` launchd daemon (its plist in /Library/LaunchDaemons, or the
  label loaded in launchd's system domain: `launchctl print system/<label>`, launchctl(1)).

Both dmnc daemons installed (io.github.dmnc and homebrew.mxcl.dmnc) is not a conflict of this kind: whichever
claims the control socket first runs, the other waits in standby (see Supervisor) and `dmnc doctor` flags the pair.
A foreign `chip0` in the VM is found by the VM setup itself (dmnc.vm.errors.ForeignInterfaceError).

In the foreground dmnc refuses to start when one is found; as a service (`running_as_service`) it waits in standby
and checks again every STANDBY_RECHECK_S, since exiting would only make the service manager restart it forever.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dmnc.control import EventBroadcaster
from dmnc.logsetup import printable
from dmnc.routes.policy import HostNetwork
from dmnc.supervisor.log import announce
from dmnc.system_service import HOMEBREW_LAUNCHD_PLIST_PATH, LAUNCHD_PLIST_PATH

# A bind and a few stats: cheap enough to repeat this often, and a stopped neighbour is noticed within it.
STANDBY_RECHECK_S = 15.0
DOCKER_MAC_NET_CONNECT_LABEL = "homebrew.mxcl.docker-mac-net-connect"
LAUNCH_DAEMONS = Path("/Library/LaunchDaemons")
STOP_DOCKER_MAC_NET_CONNECT = "sudo brew services stop docker-mac-net-connect"
LAUNCHCTL_TIMEOUT_S = 10.0
# launchd puts the job's label into XPC_SERVICE_NAME of every process it starts (a Terminal session has "0");
# systemd sets INVOCATION_ID for every unit it runs (systemd.exec(5), "Environment Variables in Spawned Processes").
_LAUNCHD_VARIABLE = "XPC_SERVICE_NAME"
_LAUNCHD_NO_SERVICE = ("", "0")
_SYSTEMD_VARIABLE = "INVOCATION_ID"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LaunchctlPrint = Callable[[str], bool]
"""Whether `launchctl print system/<label>` finds the label loaded."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """Something another program holds that dmnc needs: what was found, and how to stop it (one line each)."""

    found: str
    remedy: str

    def describe(self) -> str:
        return f"{self.found}: {self.remedy}"


class StandbyReport:
    """Why a service waits instead of running (None while it runs), announced once per reason on the feed."""

    def __init__(self, events: EventBroadcaster, recheck_s: float) -> None:
        self._events = events
        self._recheck_s = recheck_s
        self.reason: str | None = None

    def enter(self, reason: str) -> None:
        if reason != self.reason:
            announce(
                self._events,
                "service.standby",
                f"standby: {reason} (checking again every {self._recheck_s:g} s)",
                logging.WARNING,
            )
        self.reason = reason

    def leave(self, message: str) -> None:
        """The wait is over: `message` says so, when there was one."""
        if self.reason is not None:
            announce(self._events, "service.active", message)
        self.reason = None


def running_as_service(environ: Mapping[str, str]) -> bool:
    """dmnc was started by launchd or systemd, not from a shell."""
    return environ.get(_LAUNCHD_VARIABLE, "") not in _LAUNCHD_NO_SERVICE or bool(environ.get(_SYSTEMD_VARIABLE))


def address_is_local(address: IPAddress) -> bool:
    """An interface of this host holds `address` (a UDP bind to it succeeds, to port 0: nothing is reserved)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def host_address_conflicts(
    addresses: Iterable[IPAddress], *, is_local: Callable[[IPAddress], bool] = address_is_local
) -> list[Conflict]:
    """The tunnel's host addresses that an interface already holds (before dmnc created its own)."""
    return [_tunnel_address_conflict("another interface", address) for address in addresses if is_local(address)]


def interface_address_conflicts(networks: Iterable[HostNetwork], addresses: Iterable[IPAddress]) -> list[Conflict]:
    """The tunnel's host addresses on an interface in `networks`, naming it: `networks` are the host's interface
    addresses with dmnc's own TUN left out (dmnc.routes.host_address_source), so a running dmnc is no conflict."""
    wanted = [ipaddress.ip_network(address) for address in addresses]
    return [
        _tunnel_address_conflict(f"interface {printable(network.interface)}", network.network.network_address)
        for network in networks
        if network.network in wanted
    ]


def _tunnel_address_conflict(holder: str, address: IPAddress) -> Conflict:
    return Conflict(
        f"{holder} already holds the tunnel address {address}: another dmnc (with a control socket of its own) or"
        " docker-mac-net-connect",
        f"stop that program first ({STOP_DOCKER_MAC_NET_CONNECT}, or `ip addr` / `ifconfig` shows which)",
    )


def launchctl_finds(label: str) -> bool:
    """`launchctl print system/<label>` finds the label loaded in launchd's system domain."""
    try:
        completed = subprocess.run(
            ["launchctl", "print", f"system/{label}"],
            capture_output=True,
            timeout=LAUNCHCTL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def launchd_conflicts(daemons: Path = LAUNCH_DAEMONS, *, loaded: LaunchctlPrint = launchctl_finds) -> list[Conflict]:
    """macOS: docker-mac-net-connect installed or loaded as a launchd daemon."""
    plist = daemons / f"{DOCKER_MAC_NET_CONNECT_LABEL}.plist"
    if plist.exists() or loaded(DOCKER_MAC_NET_CONNECT_LABEL):
        return [
            Conflict(
                f"docker-mac-net-connect runs as a launchd service ({DOCKER_MAC_NET_CONNECT_LABEL})",
                f"stop it first: {STOP_DOCKER_MAC_NET_CONNECT}",
            )
        ]
    return []


def both_dmnc_daemons(daemons_root: Path = Path("/")) -> bool:
    """dmnc's own launchd daemon and Homebrew's are both installed (only one should be)."""
    return all(
        daemons_root.joinpath(*path.parts[1:]).exists() for path in (LAUNCHD_PLIST_PATH, HOMEBREW_LAUNCHD_PLIST_PATH)
    )


def find_conflicts(addresses: Iterable[IPAddress], *, platform: str = sys.platform) -> list[Conflict]:
    """Everything on this host that keeps dmnc from starting its tunnel now (blocking: run it in a thread)."""
    conflicts = host_address_conflicts(addresses)
    if platform == "darwin":
        conflicts += launchd_conflicts()
    return conflicts
