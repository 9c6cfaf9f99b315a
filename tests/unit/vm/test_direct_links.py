"""The direct path's part of the VM setup: the host addresses dmnc passes (`--direct-host`) and the links the script
reports back (`direct=IF/VMADDR/HOSTADDR,...`, untrusted)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.vm import SetupResult, SetupResultError, parse_result_line_untrusted
from dmnc.vm.errors import SetupParamsError
from dmnc.vm.params import MAX_DIRECT_HOSTS, ScriptMode, SetupParams, script_arguments
from dmnc.vm.result import MAX_DIRECT_LINKS, MAX_RESULT_LINE, DirectLink, parse_direct_links_untrusted
from tests.unit.vm.test_result import KERNEL_LINE, NONCE

# MAX_REPORTED_SHIMS in dmnc/vm/setup.sh.
MAX_REPORTED_SHIMS = 40

untimed = settings(deadline=None)
ip = ipaddress.ip_address


def test_a_setup_result_lists_the_links_it_opened_for_the_direct_path() -> None:
    line = f"{KERNEL_LINE} direct=col0/192.168.106.2/192.168.106.1,eth1/fd10::2/fd10::1"
    result = parse_result_line_untrusted(line, nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert result.direct_links == (
        DirectLink("col0", ip("192.168.106.2"), ip("192.168.106.1")),
        DirectLink("eth1", ip("fd10::2"), ip("fd10::1")),
    )
    plain = parse_result_line_untrusted(KERNEL_LINE, nonce=NONCE)
    assert isinstance(plain, SetupResult)
    assert plain.direct_links == ()


@pytest.mark.parametrize(
    "field",
    [
        "col0/192.168.106.2",  # no host address
        "col0/192.168.106.2/fd10::1",  # two families
        "col0/192.168.106.2/192.168.106.2",  # the same address
        "-x/192.168.106.2/192.168.106.1",  # not an interface name
        "col0/127.0.0.1/192.168.106.1",  # loopback
        "col0/fe80::2/fe80::1",  # link-local: needs a zone the host cannot use
        "col0/224.0.0.1/192.168.106.1",  # multicast
        "col0/0.0.0.0/192.168.106.1",
        "col0/::ffff:10.0.0.2/::ffff:10.0.0.1",  # IPv4-mapped
        "col0/fd10::2%eth0/fd10::1",  # a zone
        "col0/10.0.0.2/10.0.0.1,col0/10.0.0.2/10.0.0.1",  # twice
        ",".join(f"e{n}/10.0.{n}.2/10.0.{n}.1" for n in range(MAX_DIRECT_LINKS + 1)),  # too many
    ],
)
def test_a_malformed_direct_field_is_refused(field: str) -> None:
    with pytest.raises(SetupResultError, match="direct"):
        parse_result_line_untrusted(f"{KERNEL_LINE} direct={field}", nonce=NONCE)


def test_a_direct_field_on_a_result_without_a_tunnel_is_refused() -> None:
    with pytest.raises(SetupResultError):
        parse_result_line_untrusted(
            f"dmnc-setup-result v1 nonce={NONCE} mode=removed kernel=6.1 direct=a/10.0.0.2/10.0.0.1", nonce=NONCE
        )


@untimed
@given(st.text(max_size=200))
def test_any_direct_field_parses_into_valid_links_or_raises_result_error(text: str) -> None:
    try:
        links = parse_direct_links_untrusted(text)
    except SetupResultError:
        return
    assert len(links) <= MAX_DIRECT_LINKS
    assert len(set(links)) == len(links)
    for link in links:
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", link.vm_interface)
        assert link.vm_address.version == link.host_address.version
        assert link.vm_address != link.host_address


def test_the_longest_line_the_script_prints_fits_the_result_line_bound() -> None:
    longest_ipv6 = "1111:2222:3333:4444:5555:6666:7777:8888"
    direct = ",".join(f"{'e' * 14}{n}/{longest_ipv6[:-1]}{n}/{longest_ipv6}" for n in range(MAX_DIRECT_LINKS))
    shims = ",".join(f"dmncm{n:09d}" for n in range(MAX_REPORTED_SHIMS))
    line = f"{KERNEL_LINE} shims-failed={shims} direct={direct}"
    assert len(line) <= MAX_RESULT_LINE
    result = parse_result_line_untrusted(line, nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert len(result.direct_links) == MAX_DIRECT_LINKS


@untimed
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", fullmatch=True),
            st.ip_addresses(v=6, network="2000::/3"),
            st.ip_addresses(v=6, network="fc00::/7"),
        ),
        min_size=1,
        max_size=MAX_DIRECT_LINKS,
        unique_by=lambda link: link[0],
    )
)
def test_direct_links_round_trip_through_the_result_line(
    links: list[tuple[str, ipaddress.IPv6Address, ipaddress.IPv6Address]],
) -> None:
    field = ",".join(f"{name}/{vm}/{host}" for name, vm, host in links)
    result = parse_result_line_untrusted(f"{KERNEL_LINE} direct={field}", nonce=NONCE)
    assert isinstance(result, SetupResult)
    assert [(link.vm_interface, link.vm_address, link.host_address) for link in result.direct_links] == links


def test_the_host_addresses_go_to_the_script_as_direct_host_options() -> None:
    params = SetupParams(host_public_key=bytes(32), port=51820, direct_hosts=(ip("192.168.106.1"), ip("fd10::1")))
    arguments = script_arguments(params, ScriptMode.SETUP, nonce=NONCE)
    assert arguments[-4:] == ["--direct-host", "192.168.106.1", "--direct-host", "fd10::1"]


@pytest.mark.parametrize(
    "hosts",
    [
        (ip("127.0.0.1"),),
        (ip("fe80::1"),),
        (ip("10.33.33.1"),),  # the tunnel's own host address
        (ip("224.0.0.1"),),
        (ipaddress.IPv6Address("fd10::1%en0"),),
        tuple(ip(f"10.1.0.{n}") for n in range(1, MAX_DIRECT_HOSTS + 2)),
    ],
)
def test_host_addresses_a_direct_path_cannot_use_are_refused(
    hosts: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...],
) -> None:
    with pytest.raises(SetupParamsError):
        SetupParams(host_public_key=bytes(32), port=51820, direct_hosts=hosts)
