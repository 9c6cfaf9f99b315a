"""macOS /etc/resolver/<domain>: content, mode, atomic replace and removal, against a temporary root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dmnc.dns.domain import parse_domain
from dmnc.dns.resolver_files import (
    MARKER,
    ResolverFile,
    leftover_resolver_files,
    remove_resolver_file,
    resolver_file_text,
    resolver_path,
    write_resolver_file,
)

DOMAIN = parse_domain("dmnc.internal")
ADDRESSES = ("10.33.33.1", "fd33:33:33::1")


def test_content_names_every_server_and_the_port_only_when_not_53() -> None:
    assert resolver_file_text(ADDRESSES, 53) == f"{MARKER}\nnameserver 10.33.33.1\nnameserver fd33:33:33::1\n"
    assert resolver_file_text(ADDRESSES[:1], 5353).splitlines()[1:] == ["nameserver 10.33.33.1", "port 5353"]


async def test_the_folder_is_created_and_the_file_is_0644(tmp_path: Path) -> None:
    resolver = ResolverFile(tmp_path)
    how = await resolver.apply(DOMAIN, ADDRESSES, 53)
    path = tmp_path / "etc/resolver/dmnc.internal"
    assert how == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert path.stat().st_uid == os.geteuid()
    assert path.read_text() == resolver_file_text(ADDRESSES, 53)
    await resolver.remove()
    assert not path.exists()


def test_a_replace_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = resolver_path(tmp_path, DOMAIN)
    write_resolver_file(path, resolver_file_text(ADDRESSES, 53))
    inode_before = path.stat().st_ino
    write_resolver_file(path, resolver_file_text(ADDRESSES, 5353))
    # rename(2) put a new file in place: readers see the old or the new one, never a half-written one.
    assert path.stat().st_ino != inode_before
    assert path.read_text().endswith("port 5353\n")
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["dmnc.internal"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = resolver_path(tmp_path, DOMAIN)
    write_resolver_file(path, "old\n")

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        write_resolver_file(path, "new\n")
    assert path.read_text() == "old\n"
    assert [entry.name for entry in path.parent.iterdir()] == ["dmnc.internal"]


def test_only_files_dmnc_wrote_are_removed_or_reported(tmp_path: Path) -> None:
    ours = resolver_path(tmp_path, DOMAIN)
    write_resolver_file(ours, resolver_file_text(ADDRESSES, 53))
    theirs = tmp_path / "etc/resolver/corp.example"
    theirs.write_text("nameserver 192.0.2.1\n")
    assert leftover_resolver_files(tmp_path) == [ours]
    assert not remove_resolver_file(theirs)
    assert theirs.exists()
    assert remove_resolver_file(ours)
    assert leftover_resolver_files(tmp_path) == []
    assert leftover_resolver_files(tmp_path / "nowhere") == []


def test_uninstall_removes_a_leftover_file_of_a_killed_dmnc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dmnc.commands.uninstall import remove_resolver_leftovers  # noqa: PLC0415

    write_resolver_file(resolver_path(tmp_path, DOMAIN), resolver_file_text(ADDRESSES, 53))
    assert remove_resolver_leftovers(tmp_path) == 0
    assert leftover_resolver_files(tmp_path) == []
    assert "resolver file: removed the stale" in capsys.readouterr().out
