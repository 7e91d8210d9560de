"""The one way a path from the catalog becomes a file to open: inside the library, or refused.

Catalog paths are relative, "/"-separated, and come from a scan of the library, an upload, or a
master's change feed. The last two are input: a row naming `/etc/passwd`, `../data/secret.key`
or a symlink's way out must never be opened. Lexically, a path must be relative with no `.`,
`..` or empty parts and no NUL; then, resolved with its symlinks, it must still lie inside the
library (as the scanner already refuses symlinks that lead out).
"""

from __future__ import annotations

import os
from pathlib import Path

from media.errors import NotFound


class OutsideLibrary(NotFound):
    """A catalog path that would open something outside the library."""


def is_library_relpath(relpath: object) -> bool:
    """Whether `relpath` is a plain relative path, lexically inside whatever root it is joined to."""
    if not isinstance(relpath, str) or not relpath or "\x00" in relpath or relpath.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in relpath.split("/"))


def library_file(library: Path | str, relpath: object) -> str:
    """The absolute path of `relpath` inside `library`; OutsideLibrary when it would lead out."""
    if not is_library_relpath(relpath):
        raise OutsideLibrary(f"the path {str(relpath)[:200]!r} is not a relative path inside the library")
    root = os.path.realpath(library)
    path = os.path.realpath(os.path.join(root, relpath))
    if not path.startswith(root.rstrip("/") + "/"):
        raise OutsideLibrary(f"the path {relpath[:200]!r} leads outside the library (a symlink)")
    return path
