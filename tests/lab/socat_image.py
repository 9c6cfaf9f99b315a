"""Lab fixture: the busybox test image plus socat, for UDP in containers (busybox's `nc` has no UDP mode).

socat and the shared libraries `ldd` lists for it are copied from the host (package `socat`, installed by
tests/lab/install.sh), next to busybox-static and its applets, so a container of this image runs the same shell
scripts as the plain busybox image and also:

    socat -T 1 UDP6-RECVFROM:7,fork,ipv6only=0 PIPE        # a UDP echo service on IPv4 and IPv6 (socat(1))
    echo probe | socat -t 3 -T 3 - UDP4:ADDRESS:PORT       # one datagram out, the answer (if any) on stdout

    image = import_socat_image(engine.socket_path)          # -> SOCAT_IMAGE
"""

from __future__ import annotations

import functools
from pathlib import Path

from tests.lab.dockerd import busybox_rootfs_tar, import_image
from tests.lab.setup_image import host_binary, shared_libraries

SOCAT_IMAGE = "dmnc-test/socat:lab"


@functools.cache
def socat_rootfs_tar() -> bytes:
    """The image's root filesystem as a tar (built once per test session)."""
    socat = host_binary("socat")
    files: dict[str, Path | bytes] = {"/usr/bin/socat": socat}
    for library in sorted(shared_libraries(socat)):
        files[library] = Path(library).resolve()
    return busybox_rootfs_tar(files)


def import_socat_image(socket_path: Path, reference: str = SOCAT_IMAGE) -> str:
    """Import the socat image into the engine at `socket_path` as `reference`; return its image id."""
    return import_image(socket_path, socat_rootfs_tar(), reference)
