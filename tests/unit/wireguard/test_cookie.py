"""mac1/mac2 and cookies between a CookieGenerator (sender) and a CookieChecker (receiver), whitepaper 5.4.7."""

from __future__ import annotations

import pytest

from dmnc.wireguard import DropReason
from dmnc.wireguard.cookie import CookieChecker, CookieError, CookieGenerator
from dmnc.wireguard.keys import generate_private_key, public_key
from dmnc.wireguard.messages import Initiation
from tests.fakes.wireguard_network import SeededRandom

SOURCE = ("192.0.2.1", 51820)


def setup() -> tuple[CookieGenerator, CookieChecker, bytes]:
    rng = SeededRandom(3)
    receiver_public = public_key(generate_private_key(rng))
    message = Initiation(9, bytes(32), bytes(48), bytes(28)).pack()
    return CookieGenerator(receiver_public), CookieChecker(receiver_public, rng), message


def test_mac1_binds_the_message_to_the_receivers_public_key() -> None:
    generator, checker, message = setup()
    sealed = generator.seal(message, 0.0)
    assert checker.check_mac1(sealed)
    assert not checker.check_mac1(sealed[:10] + b"\xff" + sealed[11:])
    other = CookieChecker(public_key(generate_private_key(SeededRandom(4))), SeededRandom(5))
    assert not other.check_mac1(sealed)


def test_no_mac2_until_a_cookie_arrives_then_mac2_checks_for_that_source_only() -> None:
    generator, checker, message = setup()
    sealed = generator.seal(message, 0.0)
    assert sealed[-16:] == bytes(16)
    assert not checker.check_mac2(sealed, SOURCE, 0.0)
    generator.consume_reply(checker.create_reply(sealed, 9, SOURCE, 0.0), 0.0)
    resealed = generator.seal(message, 1.0)
    assert checker.check_mac2(resealed, SOURCE, 1.0)
    assert not checker.check_mac2(resealed, ("192.0.2.1", 51821), 1.0)


def test_cookie_secret_rotates_after_two_minutes_and_old_cookies_stop_working() -> None:
    generator, checker, message = setup()
    generator.consume_reply(checker.create_reply(generator.seal(message, 0.0), 9, SOURCE, 0.0), 0.0)
    resealed = generator.seal(message, 100.0)
    assert checker.check_mac2(resealed, SOURCE, 100.0)
    assert not checker.check_mac2(resealed, SOURCE, 121.0)  # the secret is older than COOKIE_REFRESH_TIME
    # A new reply after rotation carries a cookie made with a fresh secret.
    generator.consume_reply(checker.create_reply(generator.seal(message, 121.0), 9, SOURCE, 121.0), 121.0)
    assert checker.check_mac2(generator.seal(message, 122.0), SOURCE, 122.0)


def test_sender_stops_using_a_cookie_after_two_minutes() -> None:
    generator, checker, message = setup()
    generator.consume_reply(checker.create_reply(generator.seal(message, 0.0), 9, SOURCE, 0.0), 0.0)
    assert generator.seal(message, 119.0)[-16:] != bytes(16)
    assert generator.seal(message, 120.0)[-16:] == bytes(16)


def test_cookie_reply_is_bound_to_the_mac1_it_answers() -> None:
    generator, checker, message = setup()
    first = generator.seal(message, 0.0)
    reply = checker.create_reply(first, 9, SOURCE, 0.0)
    generator.seal(Initiation(10, bytes(32), bytes(48), bytes(28)).pack(), 0.0)  # a newer message: new mac1
    with pytest.raises(CookieError) as error:
        generator.consume_reply(reply, 0.0)
    assert error.value.reason is DropReason.DECRYPT_FAILED


def test_cookie_reply_without_a_message_sent_is_unexpected() -> None:
    generator, checker, message = setup()
    reply = checker.create_reply(CookieGenerator(bytes(32)).seal(message, 0.0), 9, SOURCE, 0.0)
    with pytest.raises(CookieError) as error:
        generator.consume_reply(reply, 0.0)
    assert error.value.reason is DropReason.UNEXPECTED_MESSAGE
