"""Docker Engine 29's nftables firewall backend, emulated with `nft` in a lab namespace.

The lab's engine (20.10) cannot run that backend, so its drop rules are added by hand, as the lab adds Docker 28's raw
drops with iptables: a table `ip docker-bridges` (or `ip6`) whose forward chain sends packets towards a bridge into a
per-bridge chain that accepts replies, the accepted mark when the daemon has one, traffic from the bridge itself, and
drops the rest ("UNPUBLISHED PORT DROP"), as moby's nftablesdoc shows it. An iptables ACCEPT does not override that
drop: only the mark does.
"""

from __future__ import annotations

from pathlib import Path

from tests.lab.netns import Netns

# Docker 29's rule for `--bridge-accept-fwmark=0x2/0x3`, with a mask so that dmnc's mark must keep the other bits.
ACCEPT_MARK_RULE = 'meta mark & 0x00000003 == 0x00000002 counter accept comment "ALLOW FW MARK"'
DROP_COMMENT = "UNPUBLISHED PORT DROP"
DOCKER_RULES = """table {family} docker-bridges {{
  chain filter-FORWARD {{
    type filter hook forward priority filter; policy accept;
    oifname "{bridge}" jump filter-forward-in__{bridge}
  }}
  chain filter-forward-in__{bridge} {{
    ct state established,related counter accept
    {accept_mark}
    iifname "{bridge}" counter accept comment "ICC"
    counter drop comment "{drop_comment}"
  }}
}}
"""


def docker_rules(bridge: str, *, accept_mark: bool, family: str = "ip") -> str:
    """Docker 29's nftables rules for one bridge (moby's nftablesdoc), with or without an accepted mark."""
    return DOCKER_RULES.format(
        family=family, bridge=bridge, accept_mark=ACCEPT_MARK_RULE if accept_mark else "", drop_comment=DROP_COMMENT
    )


def load_docker_rules(
    namespace: Netns, workdir: Path, bridge: str, *, accept_mark: bool, families: tuple[str, ...] = ("ip",)
) -> None:
    """Load Docker's emulated tables for `bridge` into `namespace` (unload with unload_docker_rules)."""
    for family in families:
        rules = workdir / f"docker-bridges-{family}.nft"
        rules.write_text(docker_rules(bridge, accept_mark=accept_mark, family=family), encoding="utf-8")
        namespace.run(["nft", "-f", str(rules)])


def unload_docker_rules(namespace: Netns, families: tuple[str, ...] = ("ip",)) -> None:
    for family in families:
        namespace.run(["nft", "delete", "table", family, "docker-bridges"], check=False)


def rule_counter(namespace: Netns, family: str, bridge: str, marker: str) -> int:
    """The packet counter of the rule containing `marker` in Docker's per-bridge chain."""
    chain = namespace.run(["nft", "list", "chain", family, "docker-bridges", f"filter-forward-in__{bridge}"]).stdout
    line = next(line for line in chain.splitlines() if marker in line)
    words = line.split()
    return int(words[words.index("packets") + 1])
