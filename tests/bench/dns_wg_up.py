"""`dmnc wg up` with dmnc's DNS server beside the data path, for benchmarks: one process, one trio run, one thread.

The service (dmnc.supervisor) runs its DNS server as a task of the same trio run as the tunnel; `dmnc wg up` has
none. This runner makes `wg up` start one the service's way (its Responder with the answer cache, its QueryLimiter
with the product's rate limits) on the IPv4 [Interface] address of the config file, port 53, answering the names of
tests/bench/bench_dns.py's synthetic containers. A benchmark can then flood that server and see what the flood
costs the tunnel. The product has no switch for this: the substitution happens here, in the benchmark's process.

Run as `python -m tests.bench.dns_wg_up wg up CONFIG [wg up flags]`, from the repository root. At the end it prints
the DNS outcomes, drops and cache hits to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import trio

from dmnc import cli
from dmnc.commands import wg
from dmnc.dns.answer import Responder, Zone
from dmnc.dns.names import build_table
from dmnc.dns.ratelimit import QueryLimiter, RateLimits
from dmnc.dns.server import DNS_PORT, DnsServer, open_listeners
from dmnc.tunnel.datapath import Tunnel
from dmnc.wireguard.conffile import load_conffile
from tests.bench.bench_dns import DOMAIN, REACHABLE, containers


def tunnel_with_dns_class(dns_address: str) -> type[Tunnel]:
    class TunnelWithDns(Tunnel):
        """A Tunnel that also serves DNS on `dns_address` in its own trio run, as the service's supervisor does."""

        async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            responder = Responder(Zone(DOMAIN, build_table(containers(), REACHABLE)))
            limiter = QueryLimiter(RateLimits(), trio.current_time())
            listeners = await open_listeners([dns_address], DNS_PORT)
            server = DnsServer(responder, limiter, listeners)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.serve)
                    await super().run(task_status=task_status)
            finally:
                listeners.close()
                drops = {"per_source": limiter.dropped_per_source, "global": limiter.dropped_global}
                cache = {"hits": responder.cache.hits, "misses": responder.cache.misses}
                print(
                    f"dns_wg_up: outcomes {dict(responder.outcomes)} rate-limit drops {drops} cache {cache}",
                    file=sys.stderr,
                )

    return TunnelWithDns


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or list(argv[:2]) != ["wg", "up"]:
        print("usage: python -m tests.bench.dns_wg_up wg up CONFIG [flags]", file=sys.stderr)
        return 2
    config = load_conffile(argv[2])
    (address,) = [str(address.ip) for address in config.interface.addresses if address.version == 4]
    wg.Tunnel = tunnel_with_dns_class(address)  # type: ignore[attr-defined]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
