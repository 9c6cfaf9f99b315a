"""Whether a file a root process acts on could have been changed by someone other than root.

dmnc runs as root: the code its service executes and the config file it reads must be root's alone. A file is
root's when root owns it and neither its group nor others may write it; every folder above it must be too, or a
non-root user could rename a file of theirs into its place. The one exception is a root-owned folder with the
sticky bit (/tmp): there only an entry's owner may rename or remove it (chmod(2), S_ISVTX; sticky(7) on macOS).

`write_access_problem` is the pure policy over stat results; `untrusted_path` walks a path on disk.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

ROOT_UID = 0


def write_access_problem(st: os.stat_result, *, folder: bool) -> str | None:
    """Why someone other than root may change the file or folder `st` describes, or None when only root may."""
    if st.st_uid != ROOT_UID:
        return f"owned by uid {st.st_uid}, not root"
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not writable:
        return None
    if folder and st.st_mode & stat.S_ISVTX:
        return None
    who = (
        "group- and world-writable"
        if writable == stat.S_IWGRP | stat.S_IWOTH
        else ("group-writable" if writable == stat.S_IWGRP else "world-writable")
    )
    return f"{who} (mode {stat.S_IMODE(st.st_mode):04o})"


def untrusted_path(path: Path) -> tuple[Path, str] | None:
    """The first of `path`, the folders above it, and (through symlinks) the file it resolves to and its folders,
    that someone other than root may change, with the reason; None when root alone controls all of them.

    OSError (a missing path, no permission) is the caller's to translate.
    """
    absolute = Path(os.path.abspath(path))
    resolved = absolute.resolve(strict=True)
    for candidate in (absolute, resolved):
        for folder in reversed(candidate.parents):
            problem = write_access_problem(os.stat(folder), folder=True)
            if problem is not None:
                return folder, problem
    problem = write_access_problem(os.stat(resolved), folder=resolved.is_dir())
    return None if problem is None else (resolved, problem)
