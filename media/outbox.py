"""A region's durable outbox: writes the master could not take yet, kept in order in their own
SQLite file (not in the replicated catalog, which a snapshot replaces) until they are sent.

Each entry is a whole HTTP request (method, path, the headers that matter, body) with its
idempotency key, so sending it again after a crash or a lost answer applies it once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from media.database import keep_private
from media.errors import MediaError


class OutboxFull(MediaError):
    """The outbox holds its most: a write is refused rather than kept past the bound."""


class Outbox:
    def __init__(self, path: Path, max_bytes: int = 2**62) -> None:
        keep_private(path.parent)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        keep_private(path)  # users' writes, waiting
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # a 202 promises the write survives a crash
        self._conn.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                           "method TEXT NOT NULL, path TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, "
                           "queued_at REAL NOT NULL)")
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.bytes = self._conn.execute("SELECT COALESCE(SUM(length(body) + length(headers) + length(path)), 0) "
                                        "FROM outbox").fetchone()[0]

    def add(self, method: str, path: str, headers: dict[str, str], body: bytes, queued_at: float) -> int:
        """Raises OutboxFull when the entry would take the outbox past max_bytes."""
        encoded = json.dumps(headers)
        size = len(body) + len(encoded) + len(path)
        with self._lock:
            if self.bytes + size > self.max_bytes:
                raise OutboxFull(f"the outbox holds {self.bytes} bytes of writes for the master, its most")
            entry = self._conn.execute("INSERT INTO outbox (method, path, headers, body, queued_at) "
                                       "VALUES (?, ?, ?, ?, ?)", [method, path, encoded, body, queued_at]).lastrowid
            self.bytes += size
            return entry

    def first(self) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT id, method, path, headers, body, queued_at FROM outbox "
                                     "ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return {"id": row[0], "method": row[1], "path": row[2], "headers": json.loads(row[3]), "body": row[4],
                "queued_at": row[5]}

    def remove(self, entry_id: int) -> None:
        with self._lock:
            row = self._conn.execute("DELETE FROM outbox WHERE id = ? RETURNING length(body) + length(headers) + "
                                     "length(path)", [entry_id]).fetchone()
            self.bytes -= row[0] if row else 0

    def depth(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
