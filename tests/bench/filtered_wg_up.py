"""`dmnc wg up` with the one-way door, for benchmarks: the same command, its Tunnel given a FlowFilter.

The service (dmnc.supervisor) builds its Tunnel with a FlowFilter for the host's tunnel addresses; `dmnc wg up`
builds one without. This runner makes `wg up` build it the service's way, for the [Interface] addresses of its
config file, so a benchmark can compare the data path with and without the filter and nothing else different.
The product has no switch for this: the substitution happens here, in the benchmark's own process. SIGUSR1's status
line shows the filter's drops (`filter_drops`).

Run as `python -m tests.bench.filtered_wg_up wg up CONFIG [wg up flags]`, from the repository root.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from dmnc import cli
from dmnc.commands import wg
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.flowfilter import FlowFilter
from dmnc.wireguard.conffile import load_conffile

# What runs `wg up` this way, in place of `dmnc_command()` (tests/integration/tunnel/peers.py `dmnc_runner`).
FILTERED_WG_UP = (sys.executable, "-m", "tests.bench.filtered_wg_up")


def filtered_tunnel_class(host_addresses: Sequence[bytes]) -> type[Tunnel]:
    class FilteredTunnel(Tunnel):
        """A Tunnel with a fresh FlowFilter for `host_addresses`, as the service builds it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, flow_filter=FlowFilter(host_addresses), **kwargs)

    return FilteredTunnel


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or list(argv[:2]) != ["wg", "up"]:
        print("usage: python -m tests.bench.filtered_wg_up wg up CONFIG [flags]", file=sys.stderr)
        return 2
    config = load_conffile(argv[2])
    wg.Tunnel = filtered_tunnel_class([address.ip.packed for address in config.interface.addresses])  # type: ignore[attr-defined]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
