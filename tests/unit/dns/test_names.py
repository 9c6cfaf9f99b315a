"""The name table: forms, precedence, label mapping, reachability."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.dns.names import (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    ContainerEndpoints,
    Reachability,
    build_table,
    name_label,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
ROUTED = Reachability(
    frozenset({ipaddress.ip_network("172.16.0.0/12"), ipaddress.ip_network("fd00:1::/64")}), ipv6=True
)


def compose(project: str, service: str) -> dict[str, str]:
    return {COMPOSE_PROJECT_LABEL: project, COMPOSE_SERVICE_LABEL: service}


def test_a_container_is_found_by_name_and_by_name_on_each_network() -> None:
    web = ContainerEndpoints(
        "1", "web", networks={"front": (V4("172.18.0.2"),), "back": (V4("172.19.0.2"), V6("fd00:1::2"))}
    )
    table = build_table([web], ROUTED)
    assert table.lookup((b"web",)) == (V4("172.18.0.2"), V4("172.19.0.2"), V6("fd00:1::2"))
    assert table.lookup((b"web", b"front")) == (V4("172.18.0.2"),)
    assert table.lookup((b"web", b"back")) == (V4("172.19.0.2"), V6("fd00:1::2"))
    assert len(table) == 3


def test_names_match_case_insensitively() -> None:
    table = build_table([ContainerEndpoints("1", "WebApp", networks={"Front": (V4("172.18.0.2"),)})], ROUTED)
    assert table.lookup((b"webapp",)) == (V4("172.18.0.2"),)
    assert table.lookup((b"WEBAPP", b"fRoNt")) == (V4("172.18.0.2"),)


def test_every_running_container_of_a_compose_service_answers_for_it() -> None:
    replicas = [
        ContainerEndpoints(str(index), f"shop-api-{index}", compose("shop", "api"), {"shop_default": (V4(address),)})
        for index, address in ((1, "172.20.0.3"), (2, "172.20.0.2"))
    ]
    table = build_table(replicas, ROUTED)
    assert table.lookup((b"api", b"shop")) == (V4("172.20.0.2"), V4("172.20.0.3"))
    # Compose's project network `shop_default` is a name too.
    assert table.lookup((b"shop-api-1", b"shop-default")) == (V4("172.20.0.3"),)


def test_container_on_network_wins_over_a_compose_service_of_the_same_shape() -> None:
    """Precedence (dmnc/dns/names.py): `api.shop` means container `api` on network `shop` when that exists."""
    on_network = ContainerEndpoints("1", "api", networks={"shop": (V4("172.21.0.9"),)})
    compose_api = ContainerEndpoints("2", "shop-api-1", compose("shop", "api"), {"shop_default": (V4("172.20.0.2"),)})
    table = build_table([on_network, compose_api], ROUTED)
    assert table.lookup((b"api", b"shop")) == (V4("172.21.0.9"),)
    # Without the colliding container the Compose meaning answers.
    assert build_table([compose_api], ROUTED).lookup((b"api", b"shop")) == (V4("172.20.0.2"),)


def test_underscore_and_dot_become_hyphens_in_names_and_in_queries() -> None:
    table = build_table([ContainerEndpoints("1", "my_app.v2", networks={"proj_default": (V4("172.18.0.5"),)})], ROUTED)
    for query in ((b"my-app-v2",), (b"my_app-v2",), (b"my_app.v2",), (b"MY_APP_V2",)):
        assert table.lookup(query) == (V4("172.18.0.5"),)
    assert table.lookup((b"my-app-v2", b"proj_default")) == (V4("172.18.0.5"),)
    assert table.lookup((b"my", b"app")) is None


def test_names_that_map_to_the_same_label_answer_all_their_addresses() -> None:
    table = build_table(
        [
            ContainerEndpoints("1", "a_b", networks={"n": (V4("172.18.0.2"),)}),
            ContainerEndpoints("2", "a-b", networks={"n": (V4("172.18.0.3"),)}),
        ],
        ROUTED,
    )
    assert table.lookup((b"a-b",)) == (V4("172.18.0.2"), V4("172.18.0.3"))


@pytest.mark.parametrize("name", ["", "x" * 64, "caf\u00e9", "a b", "semi;colon"])
def test_names_that_cannot_be_a_label_get_no_record(name: str) -> None:
    assert name_label(name) is None
    table = build_table([ContainerEndpoints("1", name, networks={"n": (V4("172.18.0.2"),)})], ROUTED)
    assert len(table) == 0


def test_only_routed_addresses_and_no_ipv6_when_the_tunnel_has_none() -> None:
    container = ContainerEndpoints(
        "1", "web", networks={"lan": (V4("192.168.5.2"),), "front": (V4("172.18.0.2"), V6("fd00:1::2"))}
    )
    v4_only = Reachability(ROUTED.routed, ipv6=False)
    table = build_table([container], v4_only)
    assert table.lookup((b"web",)) == (V4("172.18.0.2"),)
    assert table.lookup((b"web", b"lan")) is None
    unrouted = build_table([ContainerEndpoints("2", "db", networks={"lan": (V4("192.168.5.3"),)})], ROUTED)
    assert unrouted.lookup((b"db",)) is None


def test_a_parent_of_a_name_exists_without_addresses() -> None:
    table = build_table([ContainerEndpoints("1", "web", networks={"front": (V4("172.18.0.2"),)})], ROUTED)
    assert table.lookup((b"front",)) == ()
    assert table.lookup(()) == ()
    assert table.lookup((b"nosuch",)) is None
    assert table.lookup((b"x", b"web", b"front")) is None


names = st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=70)


@given(st.lists(st.tuples(names, names, st.booleans()), max_size=8))
def test_every_record_is_a_routed_address_under_valid_labels(rows: list[tuple[str, str, bool]]) -> None:
    containers = [
        ContainerEndpoints(
            str(index),
            name,
            compose(network, name) if as_compose else {},
            {network: (V4(f"172.18.0.{index + 2}"), V4(f"10.9.0.{index + 2}"))},
        )
        for index, (name, network, as_compose) in enumerate(rows)
    ]
    table = build_table(containers, ROUTED)
    for labels, addresses in table.records.items():
        assert addresses
        assert all(ROUTED.allows(address) for address in addresses)
        assert all(0 < len(label) <= 63 and label == label.lower() for label in labels)
        assert table.lookup(labels) == addresses
