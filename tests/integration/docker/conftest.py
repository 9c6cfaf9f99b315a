"""Real engines for the client tests: Debian's dockerd (API 1.41) and Podman's Docker-compatible service.

`engine` is module-scoped and parametrized over both engines, each in its own network namespace with a busybox
image imported (tests/lab/dockerd.py); a test that needs a feature one engine lacks uses `dockerd_engine`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_lab, require_root, require_tools
from tests.lab.dockerd import (
    BUSYBOX_PATH,
    BUSYBOX_REFERENCE,
    EngineProcess,
    import_busybox_image,
    running_dockerd,
    running_podman,
)

ENGINE_TOOLS = {"dockerd": "dockerd", "podman": "podman"}


def require_engine(kind: str) -> None:
    require_root()
    require_tools("ip", ENGINE_TOOLS[kind])
    require_lab(BUSYBOX_PATH.exists(), f"{BUSYBOX_PATH} (busybox-static)")


def start_engine(kind: str) -> Iterator[EngineProcess]:
    require_engine(kind)
    starter = running_dockerd if kind == "dockerd" else running_podman
    with starter() as engine:
        import_busybox_image(engine.socket_path)
        yield engine


@pytest.fixture(scope="module", params=["dockerd", "podman"])
def engine(request: pytest.FixtureRequest) -> Iterator[EngineProcess]:
    yield from start_engine(request.param)


@pytest.fixture(scope="module")
def dockerd_engine() -> Iterator[EngineProcess]:
    yield from start_engine("dockerd")


@pytest.fixture
def busybox() -> str:
    return BUSYBOX_REFERENCE
