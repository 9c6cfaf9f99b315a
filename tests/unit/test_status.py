from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.control.messages import (
    SCHEMA_VERSION,
    DnsStatus,
    DockerStatus,
    PathStatus,
    RouteStatus,
    StatusEvent,
    StatusFormatError,
    StatusSnapshot,
    TunnelStatus,
    VmStatus,
    decode_event_untrusted,
    decode_snapshot_untrusted,
)

# Property tests check behaviour, not speed: a loaded machine must not fail them (no per-example deadline).
untimed = settings(deadline=None)

PUBLIC_KEY = base64.b64encode(bytes(range(32))).decode()


def full_snapshot() -> StatusSnapshot:
    return StatusSnapshot(
        version="0.1.0",
        tunnel=TunnelStatus(
            interface="utun4",
            listen="0.0.0.0:3333",
            last_handshake_age_s=12.5,
            endpoint="192.168.65.3:51820",
            rx_bytes=1024,
            tx_bytes=2048,
            drops={"replayed_counter": 1, "invalid_mac1": 3},
        ),
        docker=DockerStatus(
            host="unix:///var/run/docker.sock", runtime="Docker Desktop", api_version="1.41", connected=True
        ),
        vm=VmStatus(mode="kernel", public_key=PUBLIC_KEY),
        routes=(
            RouteStatus(ipaddress.ip_network("172.17.0.0/16"), "bridge", installed=True, decision="routed"),
            RouteStatus(
                ipaddress.ip_network("fd00:5::/64"),
                "proj_v6",
                installed=False,
                reason="overlaps fd00::/8",
                decision="overlap",
            ),
        ),
    )


def snapshot_object() -> dict[str, Any]:
    return full_snapshot().to_json_object()


def test_snapshot_json_has_the_contract_fields() -> None:
    encoded = json.loads(full_snapshot().to_json())
    assert set(encoded) >= {"schema", "version", "tunnel", "docker", "vm", "routes"}
    assert encoded["schema"] == SCHEMA_VERSION == 4  # 2 added routes[].decision, 3 standby, 4 paths
    assert set(encoded["tunnel"]) == {
        "interface",
        "listen",
        "last_handshake_age_s",
        "endpoint",
        "rx_bytes",
        "tx_bytes",
        "drops",
    }
    assert set(encoded["docker"]) == {"host", "runtime", "api_version", "connected"}
    assert set(encoded["vm"]) == {"mode", "public_key"}
    assert encoded["routes"][0] == {
        "subnet": "172.17.0.0/16",
        "network": "bridge",
        "installed": True,
        "reason": None,
        "decision": "routed",
    }
    assert encoded["tunnel"]["drops"] == {"replayed_counter": 1, "invalid_mac1": 3}


def test_snapshot_round_trips() -> None:
    assert decode_snapshot_untrusted(full_snapshot().to_json()) == full_snapshot()
    assert decode_snapshot_untrusted(full_snapshot().to_json().encode()) == full_snapshot()


def test_fresh_snapshot_uses_null_for_unknown_values() -> None:
    encoded = json.loads(StatusSnapshot(version="0.1.0").to_json())
    assert encoded["tunnel"]["last_handshake_age_s"] is None
    assert encoded["vm"] == {"mode": None, "public_key": None}
    assert encoded["docker"]["connected"] is False
    assert decode_snapshot_untrusted(json.dumps(encoded)) == StatusSnapshot(version="0.1.0")


def test_route_reason_may_be_absent_as_from_an_older_dmnc() -> None:
    encoded = snapshot_object()
    for route in encoded["routes"]:
        del route["reason"]
    assert [route.reason for route in decode_snapshot_untrusted(json.dumps(encoded)).routes] == [None, None]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    encoded = snapshot_object()
    encoded["uptime_s"] = 5
    encoded["tunnel"]["mtu"] = 1420
    assert decode_snapshot_untrusted(json.dumps(encoded)) == full_snapshot()


def test_a_snapshot_or_event_without_schema_is_read_as_the_0_1_format() -> None:
    encoded = snapshot_object()
    del encoded["schema"]
    for route in encoded["routes"]:
        del route["reason"]  # added after 0.1
    decoded = decode_snapshot_untrusted(json.dumps(encoded))
    assert decoded.tunnel == full_snapshot().tunnel
    assert [route.reason for route in decoded.routes] == [None, None]
    event = StatusEvent(1.0, "tunnel.up", "tunnel up", {"n": 1})
    without_schema = event.to_json_object()
    del without_schema["schema"]
    assert decode_event_untrusted(json.dumps(without_schema)) == event


@pytest.mark.parametrize("schema", [-1, 1.5, "1", True, None, [1], {}])
def test_a_schema_that_is_not_a_non_negative_integer_is_malformed(schema: object) -> None:
    encoded = snapshot_object()
    encoded["schema"] = schema
    with pytest.raises(StatusFormatError, match=r"^schema: expected a non-negative integer"):
        decode_snapshot_untrusted(json.dumps(encoded))
    event = StatusEvent(1.0, "tunnel.up", "tunnel up").to_json_object()
    event["schema"] = schema
    with pytest.raises(StatusFormatError, match=r"^schema: expected a non-negative integer"):
        decode_event_untrusted(json.dumps(event))


def mutate(path: str, value: object) -> str:
    encoded = snapshot_object()
    *parents, last = path.split(".")
    node: Any = encoded
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return json.dumps(encoded)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not JSON (Expecting value at line 1 column 1)"),
        ("[]", "expected an object, got an array"),
        (b"\xff\xfe{", "not"),
        ('{"version": NaN}', "NaN is not a number JSON allows"),
        ("[" * 100_000, "JSON nested too deeply"),
        ('{"version": ' + "9" * 5000 + "}", "unreadable JSON value"),
        (mutate("version", KeyError), "version: missing"),
        (mutate("tunnel", "up"), "tunnel: expected an object, got a string"),
        (mutate("tunnel.rx_bytes", -1), "tunnel.rx_bytes: expected a non-negative integer, got an integer -1"),
        (mutate("tunnel.tx_bytes", 1.5), "tunnel.tx_bytes: expected a non-negative integer, got a number 1.5"),
        (mutate("tunnel.tx_bytes", True), "tunnel.tx_bytes: expected a non-negative integer, got a boolean True"),
        (
            mutate("tunnel.drops", {"replayed_counter": "1"}),
            "tunnel.drops.replayed_counter: expected a non-negative integer",
        ),
        (mutate("tunnel.last_handshake_age_s", -2), "tunnel.last_handshake_age_s: expected a non-negative number"),
        (
            mutate("tunnel.last_handshake_age_s", 0.125).replace("0.125", "1e400"),
            "tunnel.last_handshake_age_s: expected a non-negative number",
        ),
        (mutate("tunnel.interface", 7), "tunnel.interface: expected a string, got an integer"),
        (mutate("docker.connected", "yes"), "docker.connected: expected true or false, got a string"),
        (mutate("vm.public_key", "abc"), "vm.public_key: 'abc' is not the base64 of a 32-byte public key"),
        (mutate("vm.public_key", "!" * 44), "vm.public_key: '" + "!" * 44 + "' is not the base64"),
        (mutate("routes", {}), "routes: expected an array, got an object"),
        (mutate("routes.1.subnet", "10.0.0.1/8"), "routes[1].subnet: '10.0.0.1/8' is not a subnet in CIDR notation"),
        (mutate("routes.0.installed", KeyError), "routes[0].installed: missing"),
        (mutate("routes.1.reason", 3), "routes[1].reason: expected a string, got an integer"),
    ],
)
def test_malformed_snapshots_name_the_field(text: str | bytes, message: str) -> None:
    with pytest.raises(StatusFormatError) as raised:
        decode_snapshot_untrusted(text)
    assert message in str(raised.value)


def test_event_round_trips() -> None:
    event = StatusEvent(1795000000.25, "docker.connected", "connected (API 1.41)", {"api_version": "1.41", "n": 2})
    assert json.loads(event.to_json()) == {
        "schema": SCHEMA_VERSION,
        "time": 1795000000.25,
        "kind": "docker.connected",
        "message": "connected (API 1.41)",
        "details": {"api_version": "1.41", "n": 2},
    }
    assert decode_event_untrusted(event.to_json()) == event


def test_event_kind_must_be_area_dot_what() -> None:
    with pytest.raises(ValueError, match=r"is not 'area\.what'"):
        StatusEvent(0.0, "Connected", "x")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"time": 1, "kind": "docker", "message": "", "details": {}}, "kind: 'docker' is not 'area.what'"),
        ({"time": -1, "kind": "a.b", "message": "", "details": {}}, "time: expected a non-negative number"),
        ({"time": 1, "kind": "a.b", "message": None, "details": {}}, "message: expected a string, got null"),
        ({"time": 1, "kind": "a.b", "message": "", "details": {"x": [1]}}, "details.x: expected a string, number"),
        ({"time": 1, "kind": "a.b", "message": ""}, "details: missing"),
    ],
)
def test_malformed_events_name_the_field(event: dict[str, object], message: str) -> None:
    with pytest.raises(StatusFormatError) as raised:
        decode_event_untrusted(json.dumps(event))
    assert message in str(raised.value)


def test_event_details_must_be_finite() -> None:
    text = '{"time": 1, "kind": "a.b", "message": "", "details": {"x": 1e400}}'
    with pytest.raises(StatusFormatError, match=r"details\.x: not a finite number"):
        decode_event_untrusted(text)


# --- property tests ---------------------------------------------------------------------------------------------------

optional_text = st.one_of(st.none(), st.text(max_size=20))
counts = st.integers(min_value=0, max_value=2**64)
seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
networks = st.one_of(
    st.builds(
        lambda address, prefix: ipaddress.ip_network(f"{address}/{prefix}", strict=False),
        st.ip_addresses(v=4),
        st.integers(0, 32),
    ),
    st.builds(
        lambda address, prefix: ipaddress.ip_network(f"{address}/{prefix}", strict=False),
        st.ip_addresses(v=6),
        st.integers(0, 128),
    ),
)
snapshots = st.builds(
    StatusSnapshot,
    version=st.text(max_size=10),
    tunnel=st.builds(
        TunnelStatus,
        interface=optional_text,
        listen=optional_text,
        last_handshake_age_s=st.one_of(st.none(), seconds),
        endpoint=optional_text,
        rx_bytes=counts,
        tx_bytes=counts,
        drops=st.dictionaries(st.text(max_size=10), counts, max_size=4),
    ),
    docker=st.builds(
        DockerStatus, host=optional_text, runtime=optional_text, api_version=optional_text, connected=st.booleans()
    ),
    vm=st.builds(
        VmStatus,
        mode=optional_text,
        public_key=st.one_of(
            st.none(), st.binary(min_size=32, max_size=32).map(lambda key: base64.b64encode(key).decode())
        ),
    ),
    routes=st.lists(
        st.builds(
            RouteStatus, subnet=networks, network=st.text(max_size=10), installed=st.booleans(), reason=optional_text
        ),
        max_size=5,
    ).map(tuple),
)


@untimed
@given(snapshots)
def test_any_snapshot_round_trips(snapshot: StatusSnapshot) -> None:
    assert decode_snapshot_untrusted(snapshot.to_json()) == snapshot


# Valid JSON only: NaN and infinities are not JSON (json.dumps writes them anyway); their rejection is tested above.
json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@untimed
@given(st.one_of(st.binary(max_size=100), st.text(max_size=100), json_values.map(json.dumps)))
def test_decoders_raise_only_status_format_error(data: str | bytes) -> None:
    for decode in (decode_snapshot_untrusted, decode_event_untrusted):
        try:
            decode(data)
        except StatusFormatError:
            continue


@untimed
@given(snapshots, st.sampled_from(["schema", "tunnel", "docker", "vm", "routes", "version"]), json_values)
def test_snapshot_with_any_section_replaced_decodes_or_names_a_field(
    snapshot: StatusSnapshot, section: str, replacement: object
) -> None:
    encoded = snapshot.to_json_object()
    encoded[section] = replacement
    try:
        decode_snapshot_untrusted(json.dumps(encoded))
    except StatusFormatError as error:
        blamed = error.where
    else:
        blamed = section
    assert blamed.startswith(section)


# A newer schema only adds fields (dmnc.control.messages): whatever it adds, where, a reader gets the fields it knows.
newer_schemas = st.integers(min_value=SCHEMA_VERSION, max_value=2**64)
added_fields = st.dictionaries(st.text(max_size=8).map(lambda name: f"new_{name}"), json_values, max_size=3)


@untimed
@given(snapshots, newer_schemas, added_fields, st.sampled_from(["", "tunnel", "docker", "vm"]))
def test_a_newer_schema_is_read_leniently_for_the_fields_this_reader_knows(
    snapshot: StatusSnapshot, schema: int, added: dict[str, object], section: str
) -> None:
    encoded = snapshot.to_json_object()
    encoded["schema"] = schema
    target: Any = encoded if not section else encoded[section]
    target.update(added)
    decoded = decode_snapshot_untrusted(json.dumps(encoded))
    assert decoded == snapshot
    assert json.loads(decoded.to_json())["schema"] == SCHEMA_VERSION  # re-encoded in the reader's own schema


events = st.builds(
    StatusEvent,
    time=seconds,
    kind=st.from_regex(r"[a-z][a-z0-9_]{0,5}(\.[a-z][a-z0-9_]{0,5}){1,2}", fullmatch=True),
    message=st.text(max_size=20),
    details=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
        max_size=4,
    ),
)


@untimed
@given(events, newer_schemas, added_fields)
def test_any_event_round_trips_and_a_newer_schema_adds_nothing_it_cannot_skip(
    event: StatusEvent, schema: int, added: dict[str, object]
) -> None:
    assert decode_event_untrusted(event.to_json()) == event
    encoded = event.to_json_object()
    encoded["schema"] = schema
    encoded.update(added)
    assert decode_event_untrusted(json.dumps(encoded)) == event


def test_a_schema_1_route_without_decision_reads_as_none() -> None:
    encoded = snapshot_object()
    encoded["schema"] = 1
    for route in encoded["routes"]:
        del route["decision"]
    decoded = decode_snapshot_untrusted(json.dumps(encoded))
    assert [route.decision for route in decoded.routes] == [None, None]
    assert [route.reason for route in decoded.routes] == [None, "overlaps fd00::/8"]


def test_dns_round_trips_and_is_none_when_absent_or_null() -> None:
    dns = DnsStatus(
        "dmnc.internal",
        port=53,
        addresses=("10.33.33.1", "fd33:33:33::1"),
        records=4,
        last_update_age_s=1.5,
        host_resolver="systemd-resolved",
        drops={"malformed": 2},
    )
    snapshot = dataclasses.replace(full_snapshot(), dns=dns)
    assert decode_snapshot_untrusted(snapshot.to_json()) == snapshot
    assert decode_snapshot_untrusted(full_snapshot().to_json()).dns is None
    older = snapshot_object()
    del older["dns"]
    assert decode_snapshot_untrusted(json.dumps(older)).dns is None
    bad: dict[str, Any] = dataclasses.replace(full_snapshot(), dns=dns).to_json_object()
    bad["dns"]["addresses"] = [1]
    with pytest.raises(StatusFormatError, match=r"dns.addresses\[0\]"):
        decode_snapshot_untrusted(json.dumps(bad))


def test_a_standby_reason_round_trips_and_an_older_service_reads_as_running() -> None:
    waiting = StatusSnapshot(version="0.2.0", standby="another interface already holds the tunnel address 10.33.33.1")
    assert decode_snapshot_untrusted(waiting.to_json()) == waiting
    encoded = json.loads(full_snapshot().to_json())
    del encoded["standby"]
    assert decode_snapshot_untrusted(json.dumps(encoded)).standby is None
    encoded["standby"] = 3
    with pytest.raises(StatusFormatError, match="standby"):
        decode_snapshot_untrusted(json.dumps(encoded))


def test_paths_round_trip_and_an_older_service_without_them_reads_as_none() -> None:
    paths = (
        PathStatus("ipv4", "direct", "the VM answers", next_hop="192.168.106.2", interface="bridge100"),
        PathStatus("ipv6", "tunnel", "--path direct, but nothing", problem=True),
    )
    snapshot = dataclasses.replace(full_snapshot(), paths=paths)
    encoded = json.loads(snapshot.to_json())
    assert encoded["paths"][0] == {
        "family": "ipv4",
        "path": "direct",
        "next_hop": "192.168.106.2",
        "interface": "bridge100",
        "reason": "the VM answers",
        "problem": False,
    }
    assert decode_snapshot_untrusted(snapshot.to_json()) == snapshot
    del encoded["paths"]
    assert decode_snapshot_untrusted(json.dumps(encoded)).paths == ()


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"family": "ipv5"}, "paths[0].family"),
        ({"path": "teleport"}, "paths[0].path"),
        ({"problem": 1}, "paths[0].problem"),
    ],
)
def test_a_malformed_path_names_its_field(change: dict[str, object], where: str) -> None:
    encoded = snapshot_object()
    encoded["paths"] = [
        {
            "family": "ipv4",
            "path": "tunnel",
            "next_hop": None,
            "interface": None,
            "reason": "x",
            "problem": False,
            **change,
        }
    ]
    with pytest.raises(StatusFormatError, match=re.escape(where)):
        decode_snapshot_untrusted(json.dumps(encoded))
