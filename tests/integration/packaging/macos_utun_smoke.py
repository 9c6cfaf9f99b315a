"""macOS smoke test of what dmnc asks of the kernel: a utun device, an address on it, a route through it.

Run as root on macOS (CI's macOS job: `sudo python tests/integration/packaging/macos_utun_smoke.py`). It follows xnu's
utun interface (bsd/net/if_utun.h, bsd/sys/kern_control.h) with the system tools for configuration, so a failure points
at the platform (permissions, SIP, runner image) rather than at dmnc's own encoders, which are unit-tested on Linux.
Uses the TEST-NET-2 range (RFC 5737), which nothing on a CI machine routes. Exits 0 and prints what it saw, or 1 with
why.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys

# xnu bsd/sys/socket.h, bsd/sys/sys_domain.h, bsd/net/if_utun.h .
PF_SYSTEM = 32
SYSPROTO_CONTROL = 2
UTUN_CONTROL_NAME = "com.apple.net.utun_control"
UTUN_OPT_IFNAME = 2
LOCAL_ADDRESS = "198.51.100.1"
PEER_ADDRESS = "198.51.100.2"
ROUTED_SUBNET = "198.51.100.128/25"
PROBE_ADDRESS = "198.51.100.200"


def run(*argv: str) -> str:
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed.stdout


def main() -> int:
    if platform.system() != "Darwin":  # checked at run time: mypy would skip the rest on Linux
        print("macos_utun_smoke: macOS only", file=sys.stderr)
        return 1
    control = socket.socket(PF_SYSTEM, socket.SOCK_DGRAM, SYSPROTO_CONTROL)
    try:
        # CPython resolves the control name itself (CTLIOCGINFO) and lets the kernel pick a free unit.
        control.connect(UTUN_CONTROL_NAME)
        name = control.getsockopt(SYSPROTO_CONTROL, UTUN_OPT_IFNAME, 64).split(b"\0")[0].decode()
        print(f"opened {name}")
        run("ifconfig", name, "inet", LOCAL_ADDRESS, PEER_ADDRESS, "mtu", "1420", "up")
        print(run("ifconfig", name).strip())
        run("route", "-q", "-n", "add", "-inet", ROUTED_SUBNET, "-interface", name)
        try:
            route = run("route", "-n", "get", PROBE_ADDRESS)
            print(route.strip())
            if f"interface: {name}" not in route:
                raise RuntimeError(f"{PROBE_ADDRESS} is not routed through {name}")
        finally:
            run("route", "-q", "-n", "delete", "-inet", ROUTED_SUBNET)
    except (OSError, RuntimeError) as error:
        print(f"macos_utun_smoke: {error}", file=sys.stderr)
        return 1
    finally:
        control.close()
    print("utun and route: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
