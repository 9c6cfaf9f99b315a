"""Lab fixture: a dmnc setup image made from this machine's own binaries (there is no registry in the lab).

Holds what dmnc/vm/setup.sh needs, in this lab: dash as /bin/sh (busybox's sh would run its own `ip`
applet, which lacks WireGuard, before PATH), iproute2's `ip`, `wg`, `wireguard-go`, `getent`, both iptables
flavours (`xtables-nft-multi` / `xtables-legacy-multi` under their iptables/ip6tables names, the xtables extension
directory and /etc/protocols), `nft` (for Docker's nftables firewall backend), the shared libraries `ldd` lists for
all of them, and busybox-static for the small utilities (uname, sleep, mkdir, ...) plus `httpd`/`nc` for test
servers. Imported through the Engine API in about a second; tests pass it to dmnc as `--setup-image`.

    image = import_setup_image(engine.socket_path)      # -> LAB_SETUP_IMAGE
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.lab.dockerd import BUSYBOX_PATH, rootfs_tar

LAB_SETUP_IMAGE = "dmnc-test/setup:lab"
XTABLES_DIRECTORY = Path("/usr/lib/x86_64-linux-gnu/xtables")
# The tools of the image and where they go; all but the xtables multi-binaries are copied under their own name.
TOOLS = {
    "dash": "/bin/sh",
    "ip": "/usr/sbin/ip",
    "wg": "/usr/bin/wg",
    "wireguard-go": "/usr/bin/wireguard-go",
    "getent": "/usr/bin/getent",
    "xtables-nft-multi": "/usr/sbin/xtables-nft-multi",
    "xtables-legacy-multi": "/usr/sbin/xtables-legacy-multi",
    "nft": "/usr/sbin/nft",
}
# xtables-*-multi pick their personality from argv[0]; Debian's `iptables` is the nft flavour.
XTABLES_NAMES = {
    "xtables-nft-multi": [
        f"{family}{flavour}{suffix}"
        for family in ("iptables", "ip6tables")
        for flavour in ("-nft", "")
        for suffix in ("", "-save", "-restore")
    ],
    "xtables-legacy-multi": [
        f"{family}-legacy{suffix}" for family in ("iptables", "ip6tables") for suffix in ("", "-save", "-restore")
    ],
}
# glibc's default without this file is "dns files": with no DNS server in the lab every lookup would wait first.
NSSWITCH = b"hosts: files dns\n"


class SetupImageBuildError(RuntimeError):
    """A host binary the lab setup image needs is missing, or `ldd` failed on one."""


def host_binary(name: str) -> Path:
    found = shutil.which(name)
    if found is None:
        raise SetupImageBuildError(f"`{name}` is not installed (tests/lab/install.sh installs the lab tools)")
    return Path(found).resolve()


def shared_libraries(binary: Path) -> set[str]:
    """Absolute paths of the libraries (and the loader) `binary` loads, as `ldd` prints them."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SetupImageBuildError(f"ldd {binary} failed: {result.stderr.strip()}")
    libraries = set()
    for line in result.stdout.splitlines():
        for word in line.split():
            if word.startswith("/"):
                libraries.add(word)
    return libraries


@functools.cache
def setup_rootfs_tar() -> bytes:
    """The image's root filesystem as a tar (built once per test session)."""
    files: dict[str, Path | bytes] = {}
    symlinks: dict[str, str] = {}
    binaries: list[Path] = []
    for name, image_path in TOOLS.items():
        binary = host_binary(name)
        files[image_path] = binary
        binaries.append(binary)
    for multi, names in XTABLES_NAMES.items():
        for name in names:
            symlinks[f"/usr/sbin/{name}"] = multi
    for extension in sorted(XTABLES_DIRECTORY.glob("*.so")):
        files[str(extension)] = extension
        binaries.append(extension)
    for binary in binaries:
        for library in shared_libraries(binary):
            files.setdefault(library, Path(library).resolve())
    files["/etc/protocols"] = Path("/etc/protocols")
    files["/etc/nsswitch.conf"] = NSSWITCH
    files["/bin/busybox"] = BUSYBOX_PATH
    applets = subprocess.run([str(BUSYBOX_PATH), "--list"], capture_output=True, text=True, check=True).stdout.split()
    provided = {Path(path).name for path in files} | {Path(path).name for path in symlinks}
    for applet in applets:
        if applet not in provided and applet != "busybox":
            symlinks[f"/bin/{applet}"] = "busybox"
    return rootfs_tar(files, symlinks)


def import_setup_image(socket_path: Path, reference: str = LAB_SETUP_IMAGE) -> str:
    """Import the lab setup image into the engine at `socket_path` as `reference`; return its image id.

    Works with dockerd and Podman: Podman 4.3's import ignores the tag (it names the image docker.io/REPO:latest),
    so the imported image is tagged explicitly afterwards."""
    repository, _, tag = reference.rpartition(":")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://docker") as client:
        response = client.post(
            "/images/create",
            params={"fromSrc": "-", "repo": repository, "tag": tag},
            content=setup_rootfs_tar(),
            headers={"Content-Type": "application/x-tar"},
            timeout=120.0,
        )
        response.raise_for_status()
        # Both engines answer with progress JSON lines whose last `status` is the new image's ID.
        last = json.loads(response.text.strip().splitlines()[-1])
        image_id = str(last["status"])
        if not image_id.startswith("sha256:"):
            raise SetupImageBuildError(f"image import answered {response.text[:300]!r}")
        client.post(f"/images/{image_id}/tag", params={"repo": repository, "tag": tag}, timeout=30.0).raise_for_status()
        return image_id
