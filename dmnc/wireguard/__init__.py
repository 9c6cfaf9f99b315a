"""WireGuard protocol core, sans-I/O: no sockets, no clock, no global randomness (`now` and an RNG are arguments)."""

from dmnc.wireguard.config import PeerConfig, PeerStats, Timing
from dmnc.wireguard.device import Device, PeerConfigError
from dmnc.wireguard.keys import KeyFormatError, decode_key, encode_key, generate_private_key, public_key
from dmnc.wireguard.messages import MessageError
from dmnc.wireguard.outputs import Drop, DropReason, Endpoint, Output, SendDatagram, WriteTunnel

__all__ = [
    "Device",
    "Drop",
    "DropReason",
    "Endpoint",
    "KeyFormatError",
    "MessageError",
    "Output",
    "PeerConfig",
    "PeerConfigError",
    "PeerStats",
    "SendDatagram",
    "Timing",
    "WriteTunnel",
    "decode_key",
    "encode_key",
    "generate_private_key",
    "public_key",
]
