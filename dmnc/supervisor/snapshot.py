"""The status snapshot (`dmnc status`) built from the running parts; the drop names are the ones
dmnc/control/messages.py documents."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import trio

from dmnc import __version__
from dmnc.config import Config, ListenAddress, format_host_port
from dmnc.control import EventBroadcaster
from dmnc.control.messages import (
    DnsStatus,
    DockerStatus,
    PathStatus,
    RouteStatus,
    StatusSnapshot,
    TunnelStatus,
    VmStatus,
)
from dmnc.dns.service import DnsService, DnsState
from dmnc.routes.reconcile import ReconcilerStatus
from dmnc.supervisor.docker_watch import DockerState, DockerWatch
from dmnc.supervisor.parts import RunningParts
from dmnc.supervisor.path_keeper import PathKeeper
from dmnc.supervisor.vm_keeper import VmKeeper, VmSide
from dmnc.tunnel.datapath import TunnelCounters
from dmnc.tunnel.flowfilter import FilterDrop
from dmnc.wireguard import Device, DropReason, PeerStats, encode_key


def drop_counts(
    device: Device,
    vm_peer: PeerStats | None,
    counters: TunnelCounters,
    filter_drops: Mapping[FilterDrop, int] | None = None,
) -> dict[str, int]:
    """Discarded packets by reason: the core's `DropReason` names in lower case (device-wide and the VM peer's,
    added up), the flow filter's `FilterDrop` names in lower case, then the data path's own `TunnelCounters`
    fields that are not zero."""
    drops: dict[str, int] = {}
    sources: tuple[Mapping[DropReason, int] | Mapping[FilterDrop, int], ...] = (
        device.drops,
        {} if vm_peer is None else vm_peer.drops,
        filter_drops or {},
    )
    for source in sources:
        for reason, count in source.items():
            if count:
                name = reason.name.lower()
                drops[name] = drops.get(name, 0) + count
    for name, count in dataclasses.asdict(counters).items():
        if count:
            drops[name] = count
    return drops


def build_snapshot(
    *,
    now: float,
    interface: str,
    listen: ListenAddress,
    device: Device,
    counters: TunnelCounters,
    filter_drops: Mapping[FilterDrop, int] | None = None,
    vm: VmSide | None,
    docker: DockerState,
    routes: ReconcilerStatus,
    dns: DnsStatus | None = None,
    standby: str | None = None,
    paths: tuple[PathStatus, ...] = (),
) -> StatusSnapshot:
    peer = None if vm is None else vm.peer
    tunnel = TunnelStatus(
        interface=interface,
        listen=str(listen),
        last_handshake_age_s=(
            None if peer is None or peer.last_handshake is None else max(0.0, now - peer.last_handshake)
        ),
        endpoint=None if peer is None or peer.endpoint is None else format_host_port(*peer.endpoint),
        rx_bytes=0 if peer is None else peer.rx_bytes,
        tx_bytes=0 if peer is None else peer.tx_bytes,
        drops=drop_counts(device, peer, counters, filter_drops),
    )
    return StatusSnapshot(
        version=__version__,
        tunnel=tunnel,
        docker=DockerStatus(
            host=docker.host, runtime=docker.runtime, api_version=docker.api_version, connected=docker.connected
        ),
        vm=VmStatus(mode=None if vm is None else vm.mode, public_key=None if vm is None else encode_key(vm.public_key)),
        routes=tuple(
            RouteStatus(
                subnet=subnet.subnet,
                network=subnet.network,
                installed=subnet.installed,
                reason=subnet.reason,
                decision=subnet.decision,
            )
            for subnet in routes.subnets
        ),
        dns=dns,
        standby=standby,
        paths=paths,
    )


def dns_status(state: DnsState, drops: dict[str, int], now: float) -> DnsStatus:
    return DnsStatus(
        domain=state.domain,
        port=state.port,
        addresses=state.addresses,
        records=state.records,
        last_update_age_s=None if state.last_update is None else max(0.0, now - state.last_update),
        problem=state.problem,
        host_resolver=state.host_resolver,
        drops=drops,
    )


class ServiceStatus:
    """What the control socket serves (a `dmnc.control.StatusSource`): snapshots of the running parts, the feed."""

    def __init__(
        self,
        parts: RunningParts,
        docker: DockerWatch,
        vm: VmKeeper,
        config: Callable[[], Config],
        events: EventBroadcaster,
        *,
        names: DnsService | None = None,
        paths: PathKeeper | None = None,
    ) -> None:
        self._names = names
        self._paths = paths
        self._parts = parts
        self._docker = docker
        self._vm = vm
        self._config = config
        self._events = events

    @property
    def events(self) -> EventBroadcaster:
        return self._events

    def snapshot(self) -> StatusSnapshot:
        parts = self._parts
        now = trio.current_time()
        names = self._names
        return build_snapshot(
            now=now,
            interface=parts.tun.name,
            listen=ListenAddress(self._config().listen.host, parts.udp.port, port_explicit=True),
            device=parts.device,
            counters=parts.tunnel.counters,
            filter_drops=None if parts.tunnel.flow_filter is None else parts.tunnel.flow_filter.drops,
            vm=self._vm.side,
            docker=self._docker.state,
            routes=parts.routes.status(),
            dns=None if names is None else dns_status(names.state, names.drops(), now),
            standby=self._vm.standby,
            paths=() if self._paths is None else self._paths.status(),
        )
