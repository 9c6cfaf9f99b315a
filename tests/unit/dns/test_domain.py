"""The configured domain: refused names, warnings for names that may exist publicly."""

from __future__ import annotations

import pytest

from dmnc.dns.domain import DomainError, domain_warning, parse_domain


@pytest.mark.parametrize("text", ["dmnc.internal", "DMNC.Internal.", "docker.test", "containers.home.arpa"])
def test_private_use_domains_are_accepted_without_warning(text: str) -> None:
    name = parse_domain(text)
    assert name.is_absolute()
    assert name.to_text() == text.lower().rstrip(".") + "."
    assert domain_warning(name) is None


@pytest.mark.parametrize(
    "text", ["local", "web.local", "localhost", "x.localhost", "arpa", "in-addr.arpa", "10.in-addr.arpa", "", " . "]
)
def test_names_other_resolvers_own_are_refused(text: str) -> None:
    with pytest.raises(DomainError):
        parse_domain(text)


def test_a_malformed_or_too_long_name_is_refused() -> None:
    for text in ("a..b", "x" * 64 + ".internal", ".".join(["abcdefgh"] * 20)):
        with pytest.raises(DomainError):
            parse_domain(text)


def test_a_public_looking_domain_is_accepted_with_a_warning() -> None:
    warning = domain_warning(parse_domain("docker.example.com"))
    assert warning is not None
    assert "docker.example.com" in warning
