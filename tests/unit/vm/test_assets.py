"""The embedded files: the image recipe provides every tool the script calls."""

from __future__ import annotations

import re

from dmnc.vm.assets import dockerfile, setup_script


def dockerfile_checked_tools() -> set[str]:
    """The tools the recipe's build-time check requires (the `for tool in ...; do` list)."""
    match = re.search(r"for tool in (.*?); do", dockerfile(), re.DOTALL)
    assert match is not None
    return set(match.group(1).replace("\\", " ").split())


def test_the_image_check_covers_every_tool_the_script_requires() -> None:
    required = set(re.findall(r"require_tool ([a-z][a-z0-9-]*)", setup_script()))
    assert required == {"ip", "wg", "wireguard-go"}
    # iptables tools are chosen at run time (backend x family, and -save for teardown); getent resolves endpoints.
    chosen = {
        f"{family}-{backend}{suffix}"
        for family in ("iptables", "ip6tables")
        for backend in ("nft", "legacy")
        for suffix in ("", "-save")
    }
    assert required | chosen | {"getent"} <= dockerfile_checked_tools()


def test_the_recipe_builds_from_a_pinned_alpine_release() -> None:
    assert re.search(r"^FROM alpine:3\.\d+$", dockerfile(), re.MULTILINE)
