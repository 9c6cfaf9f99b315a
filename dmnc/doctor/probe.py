"""`dmnc doctor --probe IMAGE`: a throwaway network and container in the VM, reached by IP from this host.

The probe proves the whole chain at once: dmnc notices the new network, installs its route, and a packet crosses the
tunnel to the container and back. Everything it creates carries the label PROBE_LABEL and is removed again.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
import socket
import time
from collections.abc import Collection, Sequence

import trio

from dmnc.docker.client import ContainerSpec, DockerClient
from dmnc.docker.errors import DockerError, NotFound
from dmnc.docker.models import Network
from dmnc.doctor.checks import CheckResult, Verdict, skipped
from dmnc.routes import InstalledRoute
from dmnc.routes.policy import NetworkInfo, PolicyConfig, evaluate

DEFAULT_PROBE_TIMEOUT_S = 30.0
PROBE_CONNECT_TIMEOUT_S = 1.0
CLEANUP_TIMEOUT_S = 15.0

# The probe reaches the container on the TCP discard port (RFC 863): nothing listens there in a test container, so
# the container's kernel answers with a reset, which proves the path both ways without any server in the image.
PROBE_PORT = 9
PROBE_LABEL = "dev.dmnc.role"
PROBE_LABEL_VALUE = "doctor-probe"
# Small subnets for the probe network, in a corner of RFC 1918 space few setups use; the first one that overlaps
# neither a Docker network nor a host route is taken.
PROBE_SUBNETS = tuple(ipaddress.IPv4Network(f"172.30.253.{16 * index}/28") for index in range(16))
# Docker's default IPAM gives a new network's gateway the first address and its first container the second.
PROBE_CONTAINER_OFFSET = 2


def choose_probe_subnet(
    taken: Collection[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> ipaddress.IPv4Network | None:
    """The first PROBE_SUBNETS entry that overlaps nothing in `taken` (Docker subnets and non-default routes)."""
    for candidate in PROBE_SUBNETS:
        if not any(other.version == 4 and candidate.overlaps(other) for other in taken if other.prefixlen > 0):
            return candidate
    return None


async def probe_check(
    docker: DockerClient,
    image: str,
    networks: Sequence[Network],
    routes: Sequence[InstalledRoute],
    *,
    route_policy: PolicyConfig,
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
) -> CheckResult:
    """Create a test network on a free subnet and a container from `image` on it, and reach that container from
    this host within `timeout_s` of the network's creation; remove both again, also on failure or cancellation."""
    taken = [subnet for network in networks for subnet in network.subnets]
    taken += [route.destination for route in routes]
    subnet = choose_probe_subnet(taken)
    if subnet is None:
        return CheckResult("probe", Verdict.FAIL, "every probe subnet (172.30.253.0/24) is in use on this host")
    resources = _ProbeResources(f"dmnc-doctor-{secrets.token_hex(3)}")
    probe_network = NetworkInfo(
        name=resources.network, id="", driver="bridge", scope="local", internal=False, labels={}, subnets=(subnet,)
    )
    if subnet not in evaluate([probe_network], route_policy).desired:
        return skipped("probe", f"dmnc's route selection (--route-include/--route-exclude) would not route {subnet}")
    try:
        result = await _run_probe(docker, image, resources, subnet, timeout_s)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT_S) as cleanup:
            await _remove_probe(docker, resources)
        if cleanup.cancelled_caught:
            resources.leftovers.append(f"{resources.network} (Docker did not answer within {CLEANUP_TIMEOUT_S:g} s)")
    if resources.leftovers:
        return CheckResult(
            "probe",
            Verdict.FAIL,
            f"{result.detail}; could not remove {', '.join(resources.leftovers)}",
            fix=f"docker rm -f {resources.network}; docker network rm {resources.network}",
        )
    return result


@dataclasses.dataclass
class _ProbeResources:
    """What the probe created in the VM, so cleanup removes exactly that; `leftovers` are what it could not."""

    network: str
    network_created: bool = False
    container_id: str | None = None
    leftovers: list[str] = dataclasses.field(default_factory=list)


async def _run_probe(
    docker: DockerClient, image: str, resources: _ProbeResources, subnet: ipaddress.IPv4Network, timeout_s: float
) -> CheckResult:
    address = subnet.network_address + PROBE_CONTAINER_OFFSET
    # Timed from the network's creation: that includes dmnc noticing the network and installing its route.
    started = time.monotonic()
    with trio.move_on_after(timeout_s):
        try:
            labels = {PROBE_LABEL: PROBE_LABEL_VALUE}
            await docker.create_network(resources.network, subnets=[str(subnet)], labels=labels)
            resources.network_created = True
            spec = ContainerSpec(image=image, command=["sleep", "120"], network_mode=resources.network, labels=labels)
            resources.container_id = (await docker.create_container(spec, name=resources.network)).id
            await docker.start_container(resources.container_id)
        except DockerError as error:
            return CheckResult(
                "probe",
                Verdict.FAIL,
                f"cannot start a probe container from {image} on a test network: {error}",
                fix="pass --probe with an image present in the VM that has `sleep` (docker image ls)",
            )
        while True:
            if await _answers(address, PROBE_PORT):
                break
            await trio.sleep(0.2)
        return CheckResult(
            "probe",
            Verdict.PASS,
            f"reached a container at {address} on the new network {resources.network} ({subnet}) from this host,"
            f" {time.monotonic() - started:.1f} s after creating the network",
        )
    if resources.container_id is None:
        return CheckResult("probe", Verdict.FAIL, f"the probe container did not start within {timeout_s:g} s")
    return CheckResult(
        "probe",
        Verdict.FAIL,
        f"the container at {address} on the new network {resources.network} ({subnet}) did not answer from this"
        f" host within {time.monotonic() - started:.0f} s of creating the network",
        fix="run `dmnc status`: is the route of the new network installed, and the last handshake recent?",
    )


async def _answers(address: ipaddress.IPv4Address, port: int) -> bool:
    """Whether a TCP connection attempt gets any answer: accepted or reset both prove the path both ways."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(PROBE_CONNECT_TIMEOUT_S):
            await sock.connect((str(address), port))
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        # No route yet (dmnc adds it about a second after the network appears) or unreachable: the caller retries.
        return False
    finally:
        sock.close()
    return False


async def _remove_probe(docker: DockerClient, resources: _ProbeResources) -> None:
    if resources.container_id is not None:
        try:
            await docker.remove_container(resources.container_id, force=True)
        except NotFound:
            pass
        except DockerError as error:
            resources.leftovers.append(f"container {resources.network} ({error})")
    if resources.network_created:
        try:
            await docker.remove_network(resources.network)
        except NotFound:
            pass
        except DockerError as error:
            resources.leftovers.append(f"network {resources.network} ({error})")
