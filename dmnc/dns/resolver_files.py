"""macOS: `/etc/resolver/<domain>` makes the system resolver ask dmnc for every name under the domain.

The file format is resolver(5): `nameserver ADDRESS` lines and an optional `port`. The file is written atomically
(a temporary file in the same folder, then rename(2)), mode 0644 owned by root, and carries a marker line so that
dmnc removes only a file it wrote. `root` is "/" in the service and a temporary folder in tests.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import dns.name
import trio

from dmnc.dns.server import DNS_PORT
from dmnc.dns.service import HostResolverError

RESOLVER_DIR = Path("etc/resolver")
MARKER = "# written by dmnc while it runs; removed when it stops (`dmnc uninstall` removes a leftover)"
FILE_MODE = 0o644
DIR_MODE = 0o755


def resolver_file_text(addresses: Sequence[str], port: int) -> str:
    lines = [MARKER, *(f"nameserver {address}" for address in addresses)]
    if port != DNS_PORT:
        lines.append(f"port {port}")
    return "\n".join(lines) + "\n"


def resolver_path(root: Path, domain: dns.name.Name) -> Path:
    return root / RESOLVER_DIR / domain.to_text(omit_final_dot=True)


def write_resolver_file(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0644; the folder is created when missing."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            os.fchmod(file.fileno(), FILE_MODE)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def is_ours(path: Path) -> bool:
    try:
        return path.read_text().startswith(MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def remove_resolver_file(path: Path) -> bool:
    """Remove `path` if dmnc wrote it; True when something was removed."""
    if not is_ours(path):
        return False
    path.unlink(missing_ok=True)
    return True


def leftover_resolver_files(root: Path) -> list[Path]:
    """Files dmnc wrote that are still there (for doctor and uninstall, when dmnc is not running)."""
    folder = root / RESOLVER_DIR
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_file() and is_ours(path))


class ResolverFile:
    """The `HostResolver` for macOS."""

    def __init__(self, root: Path = Path("/")) -> None:
        self._root = root
        self._path: Path | None = None

    async def apply(self, domain: dns.name.Name, addresses: Sequence[str], port: int) -> str:
        path = resolver_path(self._root, domain)
        try:
            write_resolver_file(path, resolver_file_text(addresses, port))
        except OSError as error:
            raise HostResolverError(f"cannot write {path}: {error.strerror}") from error
        self._path = path
        return f"{path}"

    async def watch(self) -> None:
        """Nothing to follow: the file stays until `remove`."""
        await trio.sleep_forever()

    async def remove(self) -> None:
        if self._path is not None:
            try:
                remove_resolver_file(self._path)
            except OSError as error:
                raise HostResolverError(f"cannot remove {self._path}: {error.strerror}") from error
