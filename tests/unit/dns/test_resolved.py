"""Which PropertiesChanged values of resolved's link undo dmnc's settings, and the link's object path."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st

from dmnc.dns.resolved import link_object_path, link_rewritten

DOMAIN = "dmnc.internal"
ADDRESSES = ("10.33.33.1", "fd33:33:33::1")
V4 = (socket.AF_INET, bytes([10, 33, 33, 1]))
V6 = (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "fd33:33:33::1"))


def test_the_link_path_escapes_the_leading_digit_as_systemd_does() -> None:
    assert link_object_path(3) == "/org/freedesktop/resolve1/link/_33"
    assert link_object_path(12) == "/org/freedesktop/resolve1/link/_312"


def test_dmncs_own_settings_echoed_back_are_no_rewrite() -> None:
    echo = {
        "Domains": ("a(sb)", [(DOMAIN, True)]),
        "DefaultRoute": ("b", False),
        "DNSEx": ("a(iayqs)", [(*V4, 5354, ""), (*V6, 5354, "")]),
        "DNS": ("a(iay)", [V4, V6]),
        "ScopesMask": ("t", 1),
    }
    assert not link_rewritten(echo, DOMAIN, ADDRESSES)
    assert not link_rewritten({}, DOMAIN, ADDRESSES)


def test_a_lost_domain_server_or_a_default_route_is_a_rewrite() -> None:
    assert link_rewritten({"Domains": ("a(sb)", [])}, DOMAIN, ADDRESSES)
    assert link_rewritten({"Domains": ("a(sb)", [(DOMAIN, False)])}, DOMAIN, ADDRESSES)
    assert link_rewritten({"DefaultRoute": ("b", True)}, DOMAIN, ADDRESSES)
    assert link_rewritten({"DNSEx": ("a(iayqs)", [(*V4, 53, "")])}, DOMAIN, ADDRESSES)
    assert link_rewritten({"DNS": ("a(iay)", [])}, DOMAIN, ADDRESSES)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner),
    max_leaves=8,
)


@given(
    changed=st.dictionaries(
        st.sampled_from(["Domains", "DefaultRoute", "DNS", "DNSEx", "Other"]), st.tuples(st.text(max_size=4), values)
    )
)
def test_any_values_a_sender_puts_in_the_signal_give_an_answer(changed: dict[str, tuple[str, object]]) -> None:
    assert isinstance(link_rewritten(changed, DOMAIN, ADDRESSES), bool)


def test_a_server_entry_whose_family_is_a_list_is_no_server_of_ours() -> None:
    # jeepney decodes by the signal's own signature: a sender can put a list where the family goes.
    assert link_rewritten({"DNS": ("a(aiay)", [([2], b"\x7f\0\0\1")])}, DOMAIN, ADDRESSES)
