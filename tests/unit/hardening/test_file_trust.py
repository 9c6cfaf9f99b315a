"""The root-only write policy (file_trust): pure verdicts on stat results, and the walk over real paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.hardening.file_trust import untrusted_path, write_access_problem

# The walk over real paths judges tmp_path's folders, which are root's only when the tests run as root.
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="tmp_path is root's only when run as root")


def stat_result(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@given(mode=st.integers(0, 0o7777), uid=st.integers(0, 2**32 - 1), folder=st.booleans())
def test_only_root_owned_files_no_one_else_may_write_are_trusted(mode: int, uid: int, folder: bool) -> None:
    kind = stat.S_IFDIR if folder else stat.S_IFREG
    problem = write_access_problem(stat_result(kind | mode, uid), folder=folder)
    others_may_write = uid != 0 or (mode & 0o022 != 0 and not (folder and mode & stat.S_ISVTX))
    assert (problem is not None) == others_may_write


def test_reasons_name_the_owner_or_the_mode() -> None:
    assert write_access_problem(stat_result(stat.S_IFREG | 0o644, 501), folder=False) == "owned by uid 501, not root"
    assert write_access_problem(stat_result(stat.S_IFREG | 0o664, 0), folder=False) == "group-writable (mode 0664)"
    assert write_access_problem(stat_result(stat.S_IFDIR | 0o777, 0), folder=True) == (
        "group- and world-writable (mode 0777)"
    )
    assert write_access_problem(stat_result(stat.S_IFREG | 0o1777, 0), folder=False) == (
        "group- and world-writable (mode 1777)"
    )


@as_root
def test_a_world_writable_folder_above_a_root_file_is_found(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "bin").mkdir(parents=True)
    target = shared / "bin" / "dmnc"
    target.write_text("")
    shared.chmod(0o777)
    assert untrusted_path(target) == (shared, "group- and world-writable (mode 0777)")
    shared.chmod(0o1777)  # sticky, as /tmp: no one can rename bin away
    assert untrusted_path(target) is None


@as_root
def test_a_symlink_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    writable = tmp_path / "writable"
    writable.mkdir()
    (writable / "dmnc").write_text("")
    writable.chmod(0o757)
    (tmp_path / "dmnc").symlink_to(writable / "dmnc")
    assert untrusted_path(tmp_path / "dmnc") == (writable, "world-writable (mode 0757)")


@as_root
def test_a_file_a_user_owns_is_found(tmp_path: Path) -> None:
    owned = tmp_path / "config.toml"
    owned.write_text("")
    os.chown(owned, 1000, 1000)
    assert untrusted_path(owned) == (owned, "owned by uid 1000, not root")
