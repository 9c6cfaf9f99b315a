"""Our Noise_IKpsk2 against the independent PyPI `noiseprotocol` implementation.

WireGuard's handshake is exactly Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with the identifier as prologue, the TAI64N
timestamp as the initiation payload and an all-zero psk when none is configured (whitepaper 5.4). Given the same
static and ephemeral keys, both implementations must produce the same message bodies, handshake hash and
transport keys, whichever side is ours.
"""

from __future__ import annotations

import warnings

from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair as NoiseKeypair
from noise.connection import NoiseConnection

from dmnc.wireguard import constants, crypto, noise
from dmnc.wireguard.keys import generate_private_key, public_key
from dmnc.wireguard.messages import Initiation, Response

NOISE_NAME = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"

private_keys = st.binary(min_size=32, max_size=32).map(lambda raw: generate_private_key(lambda _size: raw))
preshared_keys = st.one_of(st.none(), st.binary(min_size=32, max_size=32))
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False).map(crypto.tai64n)


def reference(
    *, initiator: bool, static: bytes, remote_static: bytes | None, ephemeral: bytes, psk: bytes | None
) -> NoiseConnection:
    connection = NoiseConnection.from_name(NOISE_NAME)
    if initiator:
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.set_prologue(constants.IDENTIFIER)
    connection.set_psks(psk or bytes(32))
    connection.set_keypair_from_private_bytes(NoiseKeypair.STATIC, static)
    if remote_static is not None:
        connection.set_keypair_from_public_bytes(NoiseKeypair.REMOTE_STATIC, remote_static)
    connection.set_keypair_from_private_bytes(NoiseKeypair.EPHEMERAL, ephemeral)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns that fixed ephemerals are for testing only: they are
        connection.start_handshake()
    return connection


@settings(max_examples=25, deadline=None)
@given(
    initiator_static=private_keys,
    responder_static=private_keys,
    initiator_ephemeral=private_keys,
    responder_ephemeral=private_keys,
    psk=preshared_keys,
    timestamp=timestamps,
)
def test_our_initiator_against_reference_responder_gives_identical_transcript_and_keys(
    *,
    initiator_static: bytes,
    responder_static: bytes,
    initiator_ephemeral: bytes,
    responder_ephemeral: bytes,
    psk: bytes | None,
    timestamp: bytes,
) -> None:
    local = noise.LocalIdentity(initiator_static, public_key(initiator_static))
    handshake = noise.Handshake.for_peer(local, public_key(responder_static), psk)
    initiation = noise.create_initiation(handshake, local, initiator_ephemeral, timestamp, sender_index=1)

    theirs = reference(
        initiator=False, static=responder_static, remote_static=None, ephemeral=responder_ephemeral, psk=psk
    )
    payload = theirs.read_message(initiation.ephemeral + initiation.encrypted_static + initiation.encrypted_timestamp)
    assert bytes(payload) == timestamp
    assert theirs.noise_protocol.symmetric_state.h == handshake.hash
    body = bytes(theirs.write_message(b""))

    response = Response(sender=2, receiver=1, ephemeral=body[:32], encrypted_nothing=body[32:])
    noise.consume_response(handshake, local, response)
    assert theirs.get_handshake_hash() == handshake.hash
    session = noise.derive_session(handshake)
    assert session.send_key == theirs.noise_protocol.cipher_state_decrypt.k
    assert session.receive_key == theirs.noise_protocol.cipher_state_encrypt.k


@settings(max_examples=25, deadline=None)
@given(
    initiator_static=private_keys,
    responder_static=private_keys,
    initiator_ephemeral=private_keys,
    responder_ephemeral=private_keys,
    psk=preshared_keys,
    timestamp=timestamps,
)
def test_reference_initiator_against_our_responder_gives_identical_transcript_and_keys(
    *,
    initiator_static: bytes,
    responder_static: bytes,
    initiator_ephemeral: bytes,
    responder_ephemeral: bytes,
    psk: bytes | None,
    timestamp: bytes,
) -> None:
    theirs = reference(
        initiator=True,
        static=initiator_static,
        remote_static=public_key(responder_static),
        ephemeral=initiator_ephemeral,
        psk=psk,
    )
    body = bytes(theirs.write_message(timestamp))
    local = noise.LocalIdentity(responder_static, public_key(responder_static))
    initiation = Initiation(sender=5, ephemeral=body[:32], encrypted_static=body[32:80], encrypted_timestamp=body[80:])
    opened = noise.open_initiation(local, initiation)
    assert opened.remote_static == public_key(initiator_static)
    handshake = noise.Handshake.for_peer(local, opened.remote_static, psk)
    noise.consume_initiation(handshake, opened, now=0.0)
    assert handshake.hash == theirs.noise_protocol.symmetric_state.h

    response = noise.create_response(handshake, responder_ephemeral, sender_index=6)
    assert theirs.read_message(response.ephemeral + response.encrypted_nothing) == b""
    assert theirs.get_handshake_hash() == handshake.hash
    session = noise.derive_session(handshake)
    assert session.send_key == theirs.noise_protocol.cipher_state_decrypt.k
    assert session.receive_key == theirs.noise_protocol.cipher_state_encrypt.k
