"""Keep the daemon's secrets out of core dumps: called first thing in `dmnc run`, before the host key exists.

The process holds the host's WireGuard private key; a core file (written as root, maybe into a world-readable
crash directory) or a debugger attached by a less privileged process would hand it out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

# prctl(2), <linux/prctl.h>: PR_SET_DUMPABLE 0 forbids core dumps and ptrace attaches by anything but a process
# with CAP_SYS_PTRACE, and makes /proc/<pid> files root-owned.
PR_SET_DUMPABLE = 4
SUID_DUMP_DISABLE = 0


class HardeningError(Exception):
    """The process could not be made non-dumpable; the message says which step failed."""


def forbid_core_dumps(platform: str = sys.platform) -> None:
    """Set RLIMIT_CORE to 0 (soft and hard, so nothing in the process can raise it again) and, on Linux, mark the
    process non-dumpable."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as error:
        raise HardeningError(f"cannot turn core dumps off (setrlimit RLIMIT_CORE): {error}") from None
    if platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, SUID_DUMP_DISABLE, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise HardeningError(f"cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE): errno {errno}")
