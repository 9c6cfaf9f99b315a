"""`forbid_core_dumps`, run in a child interpreter: it cannot be undone in the process that calls it."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import ctypes, ctypes.util, resource
from dmnc.hardening.process import forbid_core_dumps
forbid_core_dumps()
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
PR_GET_DUMPABLE = 3
print(resource.getrlimit(resource.RLIMIT_CORE), libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_DUMPABLE is Linux's")
def test_the_process_has_no_core_limit_left_and_is_not_dumpable() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["(0,", "0)", "0"]
