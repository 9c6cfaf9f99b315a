"""The data path: the protocol core (`dmnc.wireguard.Device`) pumped between a TUN device and UDP sockets by trio.

Tasks in one nursery:
- tun->udp: read IP packets from the TUN, encapsulate, send.
- udp->tun: one receiver per UDP socket (the listeners and each socket connected to a peer); data messages are
  decapsulated in place, handshake messages go to a bounded queue.
- handshake: decapsulates handshake and cookie messages from that queue. X25519 costs ~100 data packets, so a flood
  of initiations must never stall the data path: when the queue is full, or at least an eighth full (wireguard-go's
  threshold, device/receive.go), the core is told it is under load and answers without a valid mac2 with cookies.
- timers: sleeps until `device.next_deadline()`, then ticks. The pumps pull its wakeup earlier when their work made
  a deadline appear (a handshake started, a session came up).

Per wakeup each pump drains at most `batch` packets from its non-blocking fd, then yields with a checkpoint (more
data queued) or `wait_readable` (fd empty): never an await per packet (one checkpoint costs ~10 us, the budget of a
whole packet), never an unbounded drain that would starve the timers and the other direction.

With a `FlowFilter` (dmnc.tunnel.flowfilter) the tunnel is a one-way door: packets read from the TUN register
their flows before encryption (host multicast is dropped there), and decrypted packets from the VM reach the TUN
only as part of such a flow. A new flow the VM tries towards a host port is logged once per port.

The pumps never touch a socket: they send with `UdpEndpoint.send` and receive through `UdpReceiver`s, which own
the sockets, GSO and the one rule for which socket errors are transient (dmnc.tunnel.udp). They hand what a batch
produced to two offload threads (`OffloadThread`): one writes packets to the TUN, one sends runs of datagrams to
one connected peer (as UDP GSO sends where Linux allows). Those syscalls carry the kernel's per-packet work
and release the GIL, so it overlaps with the crypto of the next batch. Everything else, the core included, stays in
the trio thread. The I/O drop counters are plain integers bumped from both sides, so they are exact only to within
a rare lost update.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from dmnc.tun import TunDevice, TunError
from dmnc.tunnel.flowfilter import FlowFilter
from dmnc.tunnel.udp import UdpEndpoint, UdpError, UdpReceiver
from dmnc.wireguard import Device, SendDatagram, WriteTunnel
from dmnc.wireguard.outputs import Endpoint, Output

logger = logging.getLogger("dmnc.tunnel")

DEFAULT_BATCH = 128
DEFAULT_HANDSHAKE_QUEUE = 256
# wireguard-go device/receive.go: under load once the handshake queue is an eighth full.
UNDER_LOAD_FRACTION = 8
MAX_PENDING_BATCHES = 64
# Batches this small are written or sent inline when the offload thread is idle (see OffloadThread.submit).
INLINE_BATCH = 2
_Batch = TypeVar("_Batch")
# A run of datagrams to one connected peer, sent by the sender thread.
SendJob = tuple[Endpoint, list[bytes]]


def endpoint_run_end(datagrams: list[SendDatagram], start: int) -> int:
    """End (exclusive) of the run of datagrams from `start` that go to the same endpoint: one `UdpEndpoint.send`."""
    endpoint = datagrams[start].endpoint
    end, count = start + 1, len(datagrams)
    while end < count and datagrams[end].endpoint == endpoint:
        end += 1
    return end


@dataclass(slots=True)
class TunnelCounters:
    """Drops the I/O layer itself makes (the core counts its own in PeerStats and Device.drops)."""

    udp_send_failed: int = 0
    udp_receive_errors: int = 0
    tun_write_failed: int = 0
    handshake_queue_full: int = 0


class OffloadThread(Generic[_Batch]):
    """Runs `handle(batch)` for each submitted batch in a thread of its own, in submission order.

    TUN writes and UDP sends carry the kernel's per-packet work (a TUN write runs the whole receive path: IP, TCP,
    waking the reader; a UDP send runs segmentation, the veth and the receiving socket): about half the cost of a
    packet (py-spy). The syscalls release the GIL, so in a thread that work overlaps with decrypting and encrypting
    the next packets on the other core, as wireguard-go's goroutines do. Batches are handed over whole (one queue
    operation per batch); when the thread falls `MAX_PENDING_BATCHES` behind, `overflow(batch)` counts the drop,
    as a full device queue would drop it. A TunError or UdpError in the thread is re-raised in trio by `watch`.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[_Batch], None],
        overflow: Callable[[_Batch], None],
        trio_token: trio.lowlevel.TrioToken,
    ) -> None:
        self._handle = handle
        self._overflow = overflow
        self._token = trio_token
        # SimpleQueue: put and get are C calls with no Condition in Python (queue.Queue's notify was ~10 % of the
        # trio thread's samples, tests/bench/README.md); the bound is kept by submit, the only producer.
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._failed = trio.Event()
        self._error: TunError | UdpError | None = None
        # Counters each written by one thread only (reading an int is atomic under the GIL): batches queued (by
        # submit), taken from the queue and finished (by the thread). A flag set after `get()` left a window in
        # which submit saw an empty queue and an idle thread while the thread held a batch: the small batch then
        # ran inline beside it, out of order and concurrently.
        self._queued = 0
        self._taken = 0
        self._finished = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: _Batch, *, small: bool = False) -> None:
        """Queue `batch`; a `small` one is handled right here when the thread is idle.

        Waking the thread costs more than a packet (futex wake, a halted vCPU on VMs): a ping or a lone ACK goes
        faster inline. Only when idle, so batches still leave in submission order.
        """
        if small and self._finished == self._queued:
            self._handle(batch)
        elif self._queued - self._taken < MAX_PENDING_BATCHES:
            self._queued += 1
            self._queue.put(batch)
        else:
            self._overflow(batch)

    async def watch(self) -> None:
        """Raise the thread's error in trio, where the tunnel's callers see it."""
        await self._failed.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        handle = self._handle
        while (batch := self._queue.get()) is not None:
            self._taken += 1
            try:
                handle(batch)
            except (TunError, UdpError) as error:
                self._error = error
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(self._failed.set)
                return
            finally:
                self._finished += 1


class Tunnel:
    """Runs `device` between `tun` and `udp` until cancelled. Start with `await nursery.start(tunnel.run)`."""

    def __init__(
        self,
        device: Device,
        tun: TunDevice,
        udp: UdpEndpoint,
        *,
        batch: int = DEFAULT_BATCH,
        handshake_queue: int = DEFAULT_HANDSHAKE_QUEUE,
        flow_filter: FlowFilter | None = None,
    ) -> None:
        """Without `flow_filter` every packet passes both ways (`dmnc wg up`, benchmarks of the bare path)."""
        self.device = device
        self.flow_filter = flow_filter
        self.tun = tun
        self.udp = udp
        self.batch = batch
        self.counters = TunnelCounters()
        self._handshake_capacity = handshake_queue
        self._handshake_send, self._handshake_receive = trio.open_memory_channel[tuple[bytes, Endpoint]](
            handshake_queue
        )
        self._timer_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        # Created by run(): they report errors through the running trio loop.
        self._tun_writer: OffloadThread[list[bytes]]
        self._udp_sender: OffloadThread[SendJob]

    @staticmethod
    def wall_offset() -> float:
        """What to add to `trio.current_time()` to get UNIX time: the core's `wall_offset`."""
        return time.time() - trio.current_time()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        self._tun_writer = OffloadThread(f"dmnc-tun-write-{self.tun.name}", self._write_packets, self._lost, token)
        self._udp_sender = OffloadThread(f"dmnc-udp-send-{self.udp.port}", self._send_job, self._lost_job, token)
        self._tun_writer.start()
        self._udp_sender.start()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._tun_writer.watch)
                nursery.start_soon(self._udp_sender.watch)
                nursery.start_soon(self._tun_to_udp)
                for receiver in self.udp.receivers():
                    nursery.start_soon(self._udp_to_tun, receiver)
                nursery.start_soon(self._handshakes)
                nursery.start_soon(self._timers)
                task_status.started()
        finally:
            self._tun_writer.stop()
            self._udp_sender.stop()

    # -- work done in the offload threads ---------------------------------------------------------------------------

    def _write_packets(self, packets: list[bytes]) -> None:
        write_packet, counters = self.tun.write_packet, self.counters
        for packet in packets:
            if not write_packet(packet):
                counters.tun_write_failed += 1

    def _lost(self, packets: list[bytes]) -> None:
        self.counters.tun_write_failed += len(packets)

    def _send_job(self, job: SendJob) -> None:
        endpoint, datagrams = job
        self.counters.udp_send_failed += self.udp.send(endpoint, datagrams)

    def _lost_job(self, job: SendJob) -> None:
        self.counters.udp_send_failed += len(job[1])

    # -- outputs ---------------------------------------------------------------------------------------------------

    def _dispatch(self, outputs: list[Output]) -> None:
        for output in outputs:
            if type(output) is SendDatagram:
                self._send(output.data, output.endpoint)
            elif (
                type(output) is WriteTunnel and self._admit(output.packet) and not self.tun.write_packet(output.packet)
            ):
                self.counters.tun_write_failed += 1
            # Drop: already counted by the core.

    def _admit(self, packet: bytes) -> bool:
        """The flow filter's verdict on one packet from the VM (True without a filter)."""
        flow_filter = self.flow_filter
        if flow_filter is None:
            return True
        admitted = flow_filter.inbound(packet, trio.current_time())
        if flow_filter.newly_refused:
            self._log_refused(flow_filter)
        return admitted

    @staticmethod
    def _log_refused(flow_filter: FlowFilter) -> None:
        for port in flow_filter.newly_refused:
            logger.warning(
                "container→host connection to port %s dropped; use `--allow-inbound %s` or host.docker.internal",
                port,
                port,
            )
        flow_filter.newly_refused.clear()

    def _send(self, data: bytes, endpoint: Endpoint) -> None:
        connected = self.udp.is_connected(endpoint)
        self.counters.udp_send_failed += self.udp.send(endpoint, (data,))
        if not connected:
            self._connect_if_peer(endpoint)

    def _connect_if_peer(self, endpoint: Endpoint) -> None:
        """Connect a socket to `endpoint` if it is a peer's current endpoint, and retire sockets of old endpoints.

        Only peers' authenticated endpoints get one: cookie replies go to unauthenticated sources, and a socket per
        such source would let anyone make us open sockets.
        """
        current = {stats.endpoint for stats in self.device.peer_stats().values() if stats.endpoint is not None}
        if endpoint not in current or self._nursery is None:
            return
        self.udp.keep_connected(current)
        receiver = self.udp.connect(endpoint)
        if receiver is not None:
            self._nursery.start_soon(self._udp_to_tun, receiver)

    def _reschedule_timers(self) -> None:
        deadline = self.device.next_deadline()
        if deadline is not None and deadline < self._timer_scope.deadline:
            self._timer_scope.deadline = deadline

    # -- tasks -----------------------------------------------------------------------------------------------------

    async def _pump(self, handle_batch: Callable[[], int]) -> bool:
        """Call `handle_batch` until its fd runs empty (True) or is closed (False), yielding between full batches.

        `handle_batch` returns how many packets it handled (fewer than `batch`: the fd ran empty), -1 once closed.
        """
        while True:
            handled = handle_batch()
            if handled < 0:
                return False
            if handled:
                self._reschedule_timers()
            if handled < self.batch:
                return True
            await trio.lowlevel.checkpoint()

    async def _tun_to_udp(self) -> None:
        fd = self.tun.fileno()
        while True:
            await trio.lowlevel.wait_readable(fd)
            await self._pump(self._tun_batch)

    def _tun_batch(self) -> int:
        """Encapsulate up to `batch` packets from the TUN, then send the datagrams (see `_send_many`)."""
        tun, device, flow_filter = self.tun, self.device, self.flow_filter
        now = trio.current_time()
        datagrams: list[SendDatagram] = []
        handled = 0
        while handled < self.batch:
            packet = tun.read_packet()
            if packet is None:
                break
            handled += 1
            if flow_filter is not None and not flow_filter.outbound(packet, now):
                continue
            for output in device.encapsulate(packet, now):
                if type(output) is SendDatagram:
                    datagrams.append(output)
                # Nothing else comes out of encapsulate but drops, already counted.
        if datagrams:
            self._send_many(datagrams)
        return handled

    def _send_many(self, datagrams: list[SendDatagram]) -> None:
        """Send in order: runs to one connected endpoint go to the sender thread, the rest inline (see `_send`)."""
        start, count = 0, len(datagrams)
        while start < count:
            endpoint = datagrams[start].endpoint
            if not self.udp.is_connected(endpoint):
                self._send(datagrams[start].data, endpoint)  # connects the socket once the endpoint is a peer's
                start += 1
                continue
            end = endpoint_run_end(datagrams, start)
            self._udp_sender.submit(
                (endpoint, [datagram.data for datagram in datagrams[start:end]]), small=end - start <= INLINE_BATCH
            )
            start = end

    async def _udp_to_tun(self, receiver: UdpReceiver) -> None:
        """Receive on one socket until it is retired (its peer roamed)."""

        def handle_batch() -> int:
            return self._receive_batch(receiver)

        while await receiver.wait_readable():
            if not await self._pump(handle_batch):
                return

    def _receive_batch(self, receiver: UdpReceiver) -> int:
        """Handle up to `batch` datagrams waiting on `receiver`: how many, or -1 once its socket is closed.

        Data messages are decapsulated here and the packets go to the TUN writer in one batch; handshake messages
        go to the handshake queue.
        """
        received = receiver.receive(self.batch)
        if received is None:
            return -1
        self.counters.udp_receive_errors += received.errors
        device, flow_filter, now = self.device, self.flow_filter, trio.current_time()
        is_handshake_message = Device.is_handshake_message
        packets: list[bytes] = []
        try:
            for datagram, source in received.datagrams:
                if is_handshake_message(datagram):
                    self._enqueue_handshake(datagram, source, now)
                    continue
                for output in device.decapsulate(datagram, source, now):
                    if type(output) is WriteTunnel:
                        if flow_filter is None or flow_filter.inbound(output.packet, now):
                            packets.append(output.packet)
                    elif type(output) is SendDatagram:
                        self._send(output.data, output.endpoint)
        finally:
            if packets:
                self._tun_writer.submit(packets, small=len(packets) <= INLINE_BATCH)
            if flow_filter is not None and flow_filter.newly_refused:
                self._log_refused(flow_filter)
        return len(received.datagrams) + received.errors if received.drained else self.batch

    def _enqueue_handshake(self, datagram: bytes, source: Endpoint, now: float) -> None:
        try:
            self._handshake_send.send_nowait((datagram, source))
        except trio.WouldBlock:
            # Queue full: answer here, cheaply, as the core does under load (a cookie reply unless mac2 is valid).
            self.counters.handshake_queue_full += 1
            self._dispatch(self.device.decapsulate(datagram, source, now, under_load=True))

    async def _handshakes(self) -> None:
        threshold = max(1, self._handshake_capacity // UNDER_LOAD_FRACTION)
        async for datagram, source in self._handshake_receive:
            under_load = self._handshake_receive.statistics().current_buffer_used >= threshold
            now = trio.current_time()
            self._dispatch(self.device.decapsulate(datagram, source, now, under_load=under_load))
            self._reschedule_timers()

    def answer_recent_initiation(self) -> bool:
        """Call right after adding a peer: the core answers the initiation it kept from that peer's key, if recent
        (`Device.answer_unmatched_initiation`). True if one was answered."""
        outputs = self.device.answer_unmatched_initiation(trio.current_time())
        self._dispatch(outputs)
        self._reschedule_timers()
        return bool(outputs)

    async def _timers(self) -> None:
        while True:
            deadline = self.device.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._dispatch(self.device.tick(trio.current_time()))
