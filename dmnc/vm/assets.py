"""The VM-side files shipped inside the dmnc package (and inside the frozen binary as package data)."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def setup_script() -> str:
    """The POSIX sh setup script (dmnc/vm/setup.sh), passed verbatim to `sh -c` in the setup container."""
    return resources.files(__package__).joinpath("setup.sh").read_text(encoding="utf-8")


@functools.cache
def dockerfile() -> str:
    """The recipe of the default setup image (dmnc/vm/Dockerfile), built through the Engine API when missing."""
    return resources.files(__package__).joinpath("Dockerfile").read_text(encoding="utf-8")
