"""`GET /containers/json` entries as the name table reads them (untrusted daemon JSON)."""

from __future__ import annotations

import ipaddress

import pytest

from dmnc.docker.errors import BadResponse
from dmnc.docker.models import ContainerSummary


def test_names_labels_and_addresses_per_network() -> None:
    summary = ContainerSummary.from_json_untrusted(
        {
            "Id": "abc",
            "Names": ["/shop-api-1"],
            "State": "running",
            "Labels": {"com.docker.compose.project": "shop"},
            "NetworkSettings": {
                "Networks": {
                    "shop_default": {"IPAddress": "172.20.0.2", "GlobalIPv6Address": "fd00:1::2"},
                    "host": {"IPAddress": "", "GlobalIPv6Address": ""},
                }
            },
        }
    )
    assert summary.name == "shop-api-1"
    assert summary.labels == {"com.docker.compose.project": "shop"}
    assert summary.networks == {
        "shop_default": (ipaddress.IPv4Address("172.20.0.2"), ipaddress.IPv6Address("fd00:1::2")),
        "host": (),
    }


def test_podman_nulls_read_as_empty() -> None:
    summary = ContainerSummary.from_json_untrusted({"Id": "x", "Names": None, "Labels": None, "NetworkSettings": None})
    assert (summary.name, summary.labels, summary.networks) == ("", {}, {})


@pytest.mark.parametrize(
    "value",
    [
        {"Names": ["/a"]},
        {"Id": "x", "NetworkSettings": {"Networks": {"n": {"IPAddress": "not an address"}}}},
        {"Id": "x", "NetworkSettings": {"Networks": {"n": "text"}}},
        ["not an object"],
    ],
)
def test_bad_entries_are_bad_responses(value: object) -> None:
    with pytest.raises(BadResponse):
        ContainerSummary.from_json_untrusted(value)
