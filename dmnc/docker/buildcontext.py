"""In-memory build contexts for `DockerClient.build_image`: a tar made from file contents, nothing on disk.

The setup image recipe ships as package data; it is packed here with fixed metadata (mtime 0, root owner), so the
same recipe always gives the same bytes and the daemon's build cache keeps working across runs.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Collection, Mapping
from pathlib import PurePosixPath

FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755


def build_context_tar(files: Mapping[str, bytes | str], *, executable: Collection[str] = ()) -> bytes:
    """A tar of `files` (relative path -> content; str is written as UTF-8); paths in `executable` get mode 0755.

    Raises ValueError for a path that is absolute or climbs out of the context with "..".
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts or not path.parts:
                raise ValueError(f"build context path must be relative and inside the context: {name!r}")
            content = files[name]
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(str(path))
            info.size = len(data)
            info.mode = EXECUTABLE_MODE if name in executable else FILE_MODE
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
