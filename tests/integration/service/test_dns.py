"""Containers by name end to end: the real `dmnc`, a real dockerd, and `dig` asking the host's tunnel address.

dig talks to dmnc's DNS server directly (`@10.33.33.1`), the way the per-domain resolver configuration makes the
system resolver do; curl then fetches the page from the address dig got, through the tunnel.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import require_tools
from tests.lab.dockerd import BUSYBOX_REFERENCE
from tests.lab.service_lab import (
    PAGE,
    ServiceLab,
    create_network,
    running_dmnc,
    status_json,
)
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

TUNNEL_ADDRESS = "10.33.33.1"
DOMAIN = "dmnc.internal"
# The promise: a removed container's name is gone within 2 s.
REMOVED_NAME_GONE_S = 2.0
# Start of dmnc to the first answer: VM setup and the first route, on a loaded 2-core machine.
FIRST_ANSWER_TIMEOUT_S = 90.0


@pytest.fixture
def dns_lab(service_lab: ServiceLab) -> ServiceLab:
    """The module's shared service lab, with `dig` for asking dmnc's DNS server."""
    require_tools("dig")
    return service_lab


@dataclass(frozen=True)
class Dig:
    status: str
    answers: list[str]  # the A/AAAA data of the answer section
    authority_types: list[str]


def dig(dns_lab: ServiceLab, name: str, rdtype: str = "A", *, tcp: bool = False, port: int = 53) -> Dig:
    argv = ["dig", f"@{TUNNEL_ADDRESS}", "-p", str(port), "+norecurse", "+time=2", "+tries=1", name, rdtype]
    if tcp:
        argv.insert(2, "+tcp")
    output = dns_lab.host.run(argv, check=False).stdout
    status = re.search(r"status: (\w+)", output)
    sections: dict[str, list[list[str]]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith(";; ") and line.endswith("SECTION:"):
            current = line.split()[1]
        elif line and not line.startswith(";") and current:
            sections.setdefault(current, []).append(line.split())
    return Dig(
        status=status.group(1) if status else f"no answer: {output.strip()[-200:]}",
        answers=[fields[4] for fields in sections.get("ANSWER", []) if fields[3] in {"A", "AAAA"}],
        authority_types=[fields[3] for fields in sections.get("AUTHORITY", [])],
    )


def start_named_web(dns_lab: ServiceLab, name: str, network: str, labels: dict[str, str] | None = None) -> str:
    """A busybox httpd serving PAGE, named `name`, on `network`; returns its IPv4 address."""
    command = f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www"
    body: dict[str, Any] = {
        "Image": BUSYBOX_REFERENCE,
        "Cmd": ["sh", "-c", command],
        "Labels": labels or {},
        "HostConfig": {"NetworkMode": network},
    }
    created = dns_lab.engine_request("POST", "/containers/create", params={"name": name}, json=body).json()
    dns_lab.engine_request("POST", f"/containers/{created['Id']}/start")
    settings = dns_lab.engine_request("GET", f"/containers/{created['Id']}/json").json()["NetworkSettings"]
    address: str = settings["Networks"][network]["IPAddress"]
    return address


def test_containers_by_name_over_udp_and_tcp_and_gone_after_removal(dns_lab: ServiceLab) -> None:
    create_network(dns_lab, "e2e-dns", "172.31.9.0/24")
    web_address = start_named_web(dns_lab, "webdns", "e2e-dns")
    api_address = start_named_web(
        dns_lab, "shop-api-1", "bridge", {"com.docker.compose.project": "shop", "com.docker.compose.service": "api"}
    )
    with running_dmnc(dns_lab, "--path", "tunnel") as dmnc:
        started = time.monotonic()
        wait_until(
            lambda: dig(dns_lab, f"webdns.{DOMAIN}").answers == [web_address],
            FIRST_ANSWER_TIMEOUT_S,
            "webdns resolved through dmnc",
        )
        print(f"start to first DNS answer: {time.monotonic() - started:.1f} s")

        assert dig(dns_lab, f"webdns.e2e-dns.{DOMAIN}").answers == [web_address]
        # Asked again in other letter case: answered from the answer cache, the question echoed as asked.
        assert dig(dns_lab, f"WebDNS.{DOMAIN.upper()}").answers == [web_address]
        wait_until(lambda: dig(dns_lab, f"api.shop.{DOMAIN}").answers == [api_address], 30, "api.shop resolved")
        over_tcp = dig(dns_lab, f"api.shop.{DOMAIN}", tcp=True)
        assert (over_tcp.status, over_tcp.answers) == ("NOERROR", [api_address])

        nosuch = dig(dns_lab, f"nosuch.{DOMAIN}")
        assert (nosuch.status, nosuch.authority_types) == ("NXDOMAIN", ["SOA"])
        assert dig(dns_lab, "example.com").status == "REFUSED"
        assert dig(dns_lab, "2.9.31.172.in-addr.arpa", "PTR").status == "REFUSED"
        nodata = dig(dns_lab, f"webdns.{DOMAIN}", "AAAA")
        assert (nodata.status, nodata.answers, nodata.authority_types) == ("NOERROR", [], ["SOA"])

        # curl of the name: the address comes from dmnc's DNS, the page through the tunnel.
        (resolved,) = dig(dns_lab, f"webdns.{DOMAIN}").answers
        page = dns_lab.host.run(["curl", "-s", "--max-time", "10", f"http://{resolved}/"], check=False)
        assert PAGE in page.stdout

        status = status_json(dns_lab)["dns"]
        assert status["domain"] == DOMAIN
        assert status["port"] == 53
        assert TUNNEL_ADDRESS in status["addresses"]
        assert status["records"] >= 4  # webdns, webdns.e2e-dns, shop-api-1(.bridge), api.shop
        assert status["last_update_age_s"] is not None

        dns_lab.engine_request("DELETE", "/containers/webdns", params={"force": "true"})
        removed = time.monotonic()
        wait_until(
            lambda: dig(dns_lab, f"webdns.{DOMAIN}").status == "NXDOMAIN",
            REMOVED_NAME_GONE_S,
            "NXDOMAIN for the removed container",
        )
        print(f"docker rm -f to NXDOMAIN: {time.monotonic() - removed:.2f} s")

        assert dmnc.stop(signal.SIGTERM) == 0
    assert "Traceback" not in dmnc.log()


def test_port_53_taken_falls_back_to_another_port_and_no_dns_turns_it_off(dns_lab: ServiceLab) -> None:
    # Port 53 on every address of the host namespace: dmnc's bind to the tunnel address then fails (EADDRINUSE).
    holder = (
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53)); "
        "print('bound', flush=True); sys.stdin.read()"
    )
    blocker = subprocess.Popen(
        dns_lab.host.command([sys.executable, "-c", holder]), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert blocker.stdout is not None
        assert blocker.stdout.readline().strip() == "bound"
        create_network(dns_lab, "e2e-dns", "172.31.9.0/24")
        web_address = start_named_web(dns_lab, "webdns", "e2e-dns")
        with running_dmnc(dns_lab, "--path", "tunnel") as dmnc:
            dmnc.wait_for_log("running; Ctrl-C or SIGTERM stops it")
            port: int = status_json(dns_lab)["dns"]["port"]
            assert port != 53
            assert "port 53 is taken" in dmnc.log()
            wait_until(
                lambda: dig(dns_lab, f"webdns.{DOMAIN}", port=port).answers == [web_address],
                FIRST_ANSWER_TIMEOUT_S,
                "webdns resolved on the fallback port",
            )
            assert dmnc.stop(signal.SIGTERM) == 0
    finally:
        blocker.kill()
        blocker.wait()
    with running_dmnc(dns_lab, "--path", "tunnel", "--no-dns") as dmnc:
        dmnc.wait_for_log("running; Ctrl-C or SIGTERM stops it")
        assert status_json(dns_lab)["dns"] is None
        assert dmnc.stop(signal.SIGTERM) == 0
