"""What a signed-in session (a browser's) depends on: the user, and a stamp that changes when their
token or password does, so either change ends every session made before it."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlite_utils


def user_and_stamp(db: sqlite_utils.Database, user_id: str) -> tuple[dict[str, Any], str] | None:
    row = db.execute("SELECT id, name, role, token_hash, password_hash FROM users WHERE id = ?", [user_id]).fetchone()
    if row is None:
        return None
    stamp = hashlib.sha256(f"{row[3]}\n{row[4] or ''}".encode()).hexdigest()[:16]
    return {"id": row[0], "name": row[1], "role": row[2], "stamp": row[3][:16]}, stamp
