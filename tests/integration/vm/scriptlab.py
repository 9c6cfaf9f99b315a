"""Helpers for running dmnc's VM-side setup script directly inside lab network namespaces.

The "VM" is a namespace where the script runs as root (the same commands a setup container would run), the "host"
is a second namespace with a wireguard-go peer. This kernel has no WireGuard, so the script's kernel path reports
`kernel-missing` and the userspace entry (wireguard-go) carries the tunnel.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from dmnc.vm import ScriptMode, ScriptOutcome, SetupParams, outcome_from_output_untrusted, script_command
from tests.lab.netns import Netns, stop_process

RESULT_TIMEOUT_SECONDS = 15.0
# The run nonce of every script run in the lab: dmnc draws a fresh one per container (new_run_nonce); a test runs and
# parses one script at a time, so a fixed value serves and keeps the argv reproducible.
LAB_NONCE = "0123456789abcdef" * 2
# A complete final line: the result or the script's own error, newline included.
_FINAL_MARKERS = (b"dmnc-setup-result", b"dmnc-setup: error")


def script_argv(
    params: SetupParams, mode: ScriptMode, *, extra: Sequence[str] = (), path_prefix: Path | None = None
) -> list[str]:
    """The setup command dmnc would give the container, optionally with a PATH that finds fake tools first."""
    environment = [f"PATH={path_prefix}:{os.environ['PATH']}"] if path_prefix is not None else []
    return ["env", *environment, *script_command(params, mode, nonce=LAB_NONCE), *extra]


def run_script(
    namespace: Netns,
    params: SetupParams,
    mode: ScriptMode,
    *,
    extra: Sequence[str] = (),
    path_prefix: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot mode (setup, teardown) to completion inside `namespace`."""
    return namespace.run(script_argv(params, mode, extra=extra, path_prefix=path_prefix), check=False, timeout=60)


def start_userspace(
    namespace: Netns,
    params: SetupParams,
    state_dir: Path,
    *,
    path_prefix: Path | None = None,
) -> tuple[subprocess.Popen[bytes], ScriptOutcome, str]:
    """Start the userspace entry (long-running); return it with its parsed result and the output read so far."""
    argv = script_argv(params, ScriptMode.USERSPACE, extra=["--state-dir", str(state_dir)], path_prefix=path_prefix)
    process = namespace.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = b""
    deadline = time.monotonic() + RESULT_TIMEOUT_SECONDS
    while not _has_final_line(output):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if readable:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
    return (
        process,
        outcome_from_output_untrusted(output, process.poll(), nonce=LAB_NONCE),
        output.decode(errors="replace"),
    )


def _has_final_line(output: bytes) -> bool:
    return any(
        line.endswith(b"\n") and any(marker in line for marker in _FINAL_MARKERS)
        for line in output.splitlines(keepends=True)
    )


def stop_userspace(namespace: Netns, process: subprocess.Popen[bytes]) -> None:
    stop_process(process)
    if process in namespace.processes:
        namespace.processes.remove(process)


def rule_lines(namespace: Netns, save_tool: str) -> list[str]:
    """The `-A ...` lines of `save_tool` (iptables-nft-save, ip6tables-legacy-save, ...) in the namespace."""
    saved = namespace.run([save_tool]).stdout
    return [line for line in saved.splitlines() if line.startswith("-A ")]


def fake_getent(directory: Path, answers: Mapping[str, str]) -> Path:
    """A `getent` that resolves only the names in `answers` (name -> address), like `getent ahostsv4` prints."""
    cases = "".join(f'    {name}) echo "{address}      STREAM {name}" ;;\n' for name, address in answers.items())
    script = f'#!/bin/sh\ncase "$2" in\n{cases}    *) exit 2 ;;\nesac\n'
    path = directory / "getent"
    path.write_text(script)
    path.chmod(0o755)
    return directory
