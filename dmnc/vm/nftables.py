"""Docker's nftables firewall backend as dmnc meets it in the VM, and what to tell the user about it (pure).

Docker Engine 29 can keep its firewall in nftables (`firewall-backend: nftables`, experimental there): its drop rules
live in base chains of its own tables (`ip docker-bridges`, `ip6 docker-bridges`), there is no DOCKER-USER chain,
and an accept in another table does not override them (Docker docs, "Docker with nftables", migrating DOCKER-USER).
Two daemon and network settings let packets through (the same page, and Docker's "Packet filtering and firewalls"):
- the daemon option `bridge-accept-fwmark`: Docker accepts forwarded packets carrying that mark; the setup script
  reads the mark from Docker's rules and sets it on what arrives through chip0 (and from the host's address on a
  direct link), in its own table `inet dmnc`;
- the network option `com.docker.network.bridge.trusted_host_interfaces`: Docker's raw-PREROUTING rule that drops
  direct access to containers with published ports (on gateway mode `nat`) spares these interfaces. No mark lifts it.
"""

from __future__ import annotations

import enum

# A single bit outside the marks other VM software is known to use (kube-proxy 0x4000/0x8000, Tailscale 0xff0000);
# any free mark works, the setup script takes whatever the daemon names.
SUGGESTED_ACCEPT_FWMARK = "0x1000000/0x1000000"
DAEMON_SETTING = f'"bridge-accept-fwmark": "{SUGGESTED_ACCEPT_FWMARK}"'
TRUSTED_INTERFACES_OPTION = "com.docker.network.bridge.trusted_host_interfaces"
# Where the daemon's settings live (Docker Desktop: Settings > Docker Engine; Colima: its config's `docker:` map,
# which becomes daemon.json; a plain engine: dockerd(8)'s default --config-file).
DAEMON_SETTINGS_PLACES = (
    "Docker Desktop: Settings > Docker Engine; Colima: `colima start --edit`, under `docker:`;"
    " a plain engine: /etc/docker/daemon.json"
)


class DockerNftables(enum.Enum):
    """The VM's Docker runs its nftables firewall backend."""

    MARKED = "marked"
    """The daemon accepts a firewall mark (`bridge-accept-fwmark`): dmnc marks the tunnel's packets with it (and the
    host's on a direct link)."""
    UNMARKED = "unmarked"
    """No mark is accepted: Docker's rules drop the tunnel's packets to containers on bridge networks."""


def published_ports_note(interface: str) -> str:
    return (
        f"containers with published ports also need `-o {TRUSTED_INTERFACES_OPTION}={interface}` on their network"
        " (Docker drops direct access to them before any mark counts)"
    )


def unmarked_problem() -> str:
    return (
        "the VM's Docker runs its nftables firewall (firewall-backend: nftables) without bridge-accept-fwmark: its"
        " rules drop what the tunnel forwards to containers on bridge networks"
    )


def unmarked_fix(interface: str) -> str:
    return (
        f"add {DAEMON_SETTING} to the Docker daemon's settings and restart Docker ({DAEMON_SETTINGS_PLACES});"
        f" dmnc then marks the tunnel's packets with it. {published_ports_note(interface).capitalize()}"
    )
