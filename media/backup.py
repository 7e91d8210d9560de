"""A consistent copy of the catalog while the server runs: SQLite's online backup, in one step,
so the copy is the database as of one moment, whatever is being written meanwhile. The copy is
written next to its destination and renamed into place only once it has been verified."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from media.database import fsync
from media.errors import MediaError


def backup_catalog(source: Path, destination: Path) -> dict[str, Any]:
    destination = destination.resolve()
    source = source.resolve()
    if destination == source or (destination.parent == source.parent and destination.name.startswith(source.name)):
        raise MediaError(f"{destination} is the catalog itself (or its journal); choose another path")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(str(partial))
        try:
            src.backup(dst, pages=-1)  # all pages in one step: one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        finally:
            dst.close()
            src.close()
        facts = verify(partial)
        os.chmod(partial, 0o600)  # the catalog's private data, as the catalog itself
        fsync(partial)  # on disk before it takes the name: a power cut leaves the old backup or this one
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise MediaError(f"SQLite: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(destination)
    fsync(destination.parent)  # and the rename itself
    facts["bytes"] = destination.stat().st_size
    return facts


def verify(path: Path) -> dict[str, Any]:
    """Integrity check of a catalog file, and what it holds."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise MediaError(f"the copy failed its integrity check: {result}")
        return {"tracks": conn.execute("SELECT COUNT(*) FROM tracks").fetchone()[0],
                "users": conn.execute("SELECT COUNT(*) FROM users").fetchone()[0],
                "sequence": conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]}
    finally:
        conn.close()
