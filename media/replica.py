"""Applying the master's change log to a replica of its catalog.

Each change row is applied as what it says happened (the full resulting state, so applying one
twice is harmless), and then copied into the replica's own change log with the master's sequence
number: a replica promoted to master serves the same feed on. The replica's position is the last
sequence in its change log. An operation this program does not know stops the replica rather
than let it drift from the master.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from media import catalog, json_text, listeners, loudness
from media.errors import MediaError
from media.ids import new_id
from media.library_paths import is_library_relpath

log = logging.getLogger(__name__)


class UnknownChange(MediaError):
    """A change-log operation this program cannot apply (the master runs a newer version)."""


def position(db: sqlite_utils.Database) -> int:
    """The sequence of the last change this replica holds."""
    return db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]


def lineage(db: sqlite_utils.Database) -> list[list]:
    """This catalog's history: [[id, from sequence], ...], the current one last ([] if none yet)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'lineage'").fetchone()
    return json.loads(row[0]) if row else []


def _set_lineage(db: sqlite_utils.Database, history: list[list]) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('lineage', ?)", [json.dumps(history)])


def start_lineage(db: sqlite_utils.Database) -> list[list]:
    """A master's lineage, made when it first serves as one."""
    history = lineage(db)
    if not history:
        history = [[new_id(), 0]]
        _set_lineage(db, history)
    return history


def branch(db: sqlite_utils.Database) -> list[list]:
    """A replica promoted to master: its history goes on under a new id from its position."""
    history = [*lineage(db), [new_id(), position(db)]]
    _set_lineage(db, history)
    return history


def continues(history: list[list], follower_lineage: str, since: int) -> bool:
    """Whether a follower at `since` on `follower_lineage` holds a prefix of `history`."""
    for i, (lineage_id, _) in enumerate(history):
        if lineage_id == follower_lineage:
            return i == len(history) - 1 or since <= history[i + 1][1]
    return False


def row_digest(db: sqlite_utils.Database, seq: int) -> str | None:
    """A digest of change-log row `seq` as it says what happened (None if not kept), compared by
    master and follower: the same sequence number holding another change means the follower's
    log is not the master's (a master restored from a backup, say), whatever the lineage says."""
    row = db.execute("SELECT at, user_id, op, data FROM changes WHERE seq = ?", [seq]).fetchone()
    if row is None:
        return None
    canonical = json.dumps([row[0], row[1], row[2], json.loads(row[3])], sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()[:20]


def apply_changes(db: sqlite_utils.Database, changes: list[dict[str, Any]],
                  history: list[list] | None = None) -> int:
    """Apply the rows (in order; those already held are skipped), and take the master's lineage
    (`history`) in the same transaction; returns the new position."""
    if history and history != lineage(db):
        _set_lineage(db, history)
    held = position(db)
    for change in changes:
        if change["seq"] <= held:
            continue
        _apply(db, change["op"], change["data"], change["at"])
        db.execute("INSERT INTO changes (seq, at, user_id, op, data) VALUES (?, ?, ?, ?, ?)",
                   [change["seq"], change["at"], change["user_id"], change["op"],
                    json_text.dumps(change["data"]).decode()])
        held = change["seq"]
    return held


def snapshot(source: Path, destination: Path) -> int:
    """A copy of the catalog at `source` for a follower to start from, as of one moment (SQLite's
    online backup, in one step), in one file; the sequence it holds. Not checked page by page as a
    backup is (media.backup): the follower's copy arrives under checksums (gzip's CRCs, zstd's
    frame checksums: streamer.cluster.packing) and media.replica.prepare_snapshot checks what it
    holds; at 200,000 tracks the page check cost about a second. (The change log's history stays:
    a region promoted later serves it to followers, from the first row.)"""
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(str(destination))
    try:
        src.backup(copy, pages=-1)
        copy.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        return copy.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
    finally:
        copy.close()
        src.close()


class BadSnapshot(MediaError):
    """A snapshot file that is not the catalog its master said it sent."""


def prepare_snapshot(copy: Path, sequence: int) -> None:
    """Ready a follower's snapshot file before it takes the catalog's place (Catalog.replace_file):
    it must be a catalog holding `sequence`, the master's word for it; its paths are input
    (refuse_outside_paths), indexes a first scan left to come are built, and a master of an older
    version's schema is brought to this one's (what this program's reads rest on, as at a start).
    BadSnapshot if not, or if the master's schema is newer than this program's."""
    try:
        with contextlib.closing(sqlite3.connect(str(copy))) as conn:
            db = sqlite_utils.Database(conn)
            held = position(db)
            if held != sequence:
                raise BadSnapshot(f"the snapshot holds the change log up to {held}, its master said {sequence}")
            with conn:
                catalog.build_deferred_indexes(db)
                try:
                    catalog.migrate(db)
                except RuntimeError as exc:  # newer than this program: update this node
                    raise BadSnapshot(f"the snapshot cannot be used: {exc}") from None
                refuse_outside_paths(db)
    except sqlite3.Error as exc:
        raise BadSnapshot(f"the snapshot is not a catalog: {exc}") from None


def _inside(relpath: object, what: str) -> bool:
    """A replicated path is input: one that could lead outside the library is refused (and logged)."""
    if is_library_relpath(relpath):
        return True
    log.warning("replica: refused a %s whose path %r is not a relative path inside the library", what,
                str(relpath)[:200])
    return False


# Paths that might not be plain relative ones (media.library_paths): every path that is not has an
# empty, "." or ".." part or a NUL, so it is among these; is_library_relpath judges each of them.
# A pass in SQL rather than Python over every track: 0.3-0.5 s at 200,000 tracks.
_DOUBTFUL = ("typeof({c}) != 'text' OR {c} = '' OR substr({c}, 1, 1) IN ('/', '.') OR substr({c}, -1) = '/' "
             "OR instr({c}, '/.') OR instr({c}, '//') OR instr(CAST({c} AS BLOB), x'00')")


def refuse_outside_paths(db: sqlite_utils.Database) -> int:
    """After a snapshot (rows as the master sent them): drop tracks and folder images whose path
    could lead outside the library, as _apply refuses them from the feed; how many went."""
    tracks = [r[0] for r in db.execute(f"SELECT id, path FROM tracks WHERE {_DOUBTFUL.format(c='path')}")
              if not _inside(r[1], "track")]
    images = [r[0] for r in db.execute(f"SELECT dir, path FROM folder_images WHERE {_DOUBTFUL.format(c='path')}")
              if not _inside(r[1], "folder image")]
    for track_id in tracks:
        db.execute("DELETE FROM tracks WHERE id = ?", [track_id])
    for folder in images:
        db.execute("DELETE FROM folder_images WHERE dir = ?", [folder])
    if tracks or images:
        catalog.regroup(db)
    return len(tracks) + len(images)


def _apply(db: sqlite_utils.Database, op: str, data: dict[str, Any], at: str) -> None:
    if not (_apply_to_catalog(db, op, data, at) or _apply_to_listener_data(db, op, data)):
        raise UnknownChange(f"change-log operation {op!r} is unknown to this version")
    record = data.get("idempotency")
    if record is not None:  # the key the master applied: a promoted replica applies it once too
        db.execute("INSERT OR REPLACE INTO idempotency (user_id, key, fingerprint, status, body, created_at) "
                   "VALUES (:user_id, :key, :fingerprint, :status, :body, :created_at)", record)


CATALOG_OPS = frozenset({"tracks.put", "tracks.delete", "loudness.put", "catalog.regroup"})  # _apply_to_catalog's


def changes_catalog(changes: list[dict[str, Any]]) -> bool:
    """Whether applying these rows changes the catalog (not only listener data): what is kept per
    catalog generation (orders' bookmarks, searches, genres) stays good through a page of plays."""
    return any(change["op"] in CATALOG_OPS for change in changes)


def _apply_to_catalog(db: sqlite_utils.Database, op: str, data: dict[str, Any], at: str) -> bool:
    """Apply a change of the scanned catalog; False for an operation of another kind."""
    if op == "tracks.put":
        catalog.save_scanned(db, [t for t in data["tracks"] if _inside(t.get("path"), "track")], [], at=at,
                             log=False)
    elif op == "tracks.delete":
        catalog.save_scanned(db, [], data["paths"], log=False)
    elif op == "loudness.put":  # measured by the master (media.loudness): a region never measures
        loudness.save(db, data["tracks"], log_change=False)
    elif op == "catalog.regroup":
        if data.get("folder_images") is not None:
            catalog.save_folder_images(db, {folder: image for folder, image in data["folder_images"].items()
                                            if _inside(image, "folder image")})
        catalog.regroup(db)
    else:
        return False
    return True


def _apply_to_listener_data(db: sqlite_utils.Database, op: str, data: dict[str, Any]) -> bool:
    """Apply a change of accounts, playlists, favorites, plays, ratings or play queues; False for
    an operation of another kind."""
    apply = _LISTENER_CHANGES.get(op)
    if apply is None:
        return False
    apply(db, data)
    return True


def _put_user(db: sqlite_utils.Database, data: dict[str, Any]) -> None:
    # A row from an older master has no passwords.
    db.execute("INSERT INTO users (id, name, role, token_hash, created_at, password_hash, password_sealed) "
               "VALUES (:id, :name, :role, :token_hash, :created_at, :password_hash, :password_sealed) "
               "ON CONFLICT(id) DO UPDATE SET name = excluded.name, role = excluded.role, "
               "token_hash = excluded.token_hash, password_hash = excluded.password_hash, "
               "password_sealed = excluded.password_sealed",
               {"password_hash": None, "password_sealed": None, **data})


def _delete_user(db: sqlite_utils.Database, data: dict[str, Any]) -> None:
    for table in listeners.USER_TABLES:
        db.execute(f"DELETE FROM {table} WHERE user_id = ?", [data["id"]])
    db.execute("DELETE FROM users WHERE id = ?", [data["id"]])


def _put_playlist(db: sqlite_utils.Database, data: dict[str, Any]) -> None:
    # A row from an older master has no comment and is not public.
    db.execute("INSERT OR REPLACE INTO playlists (id, user_id, name, track_ids, created_at, updated_at, comment, "
               "public) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               [data["id"], data["user_id"], data["name"], json.dumps(data["track_ids"]), data["created_at"],
                data["updated_at"], data.get("comment"), int(bool(data.get("public")))])


def _put_favorite(db: sqlite_utils.Database, data: dict[str, Any]) -> None:
    db.execute("INSERT OR REPLACE INTO favorites (user_id, kind, item_id, created_at) VALUES (?, ?, ?, ?)",
               [data["user_id"], data["kind"], data["item_id"], data["created_at"]])


def _add_plays(db: sqlite_utils.Database, data: dict[str, Any]) -> None:
    listeners.insert_plays(db, data["plays"])


def _put_rating(db: sqlite_utils.Database, data: dict[str, Any]) -> None:
    db.execute("INSERT OR REPLACE INTO ratings (user_id, kind, item_id, rating, updated_at) "
               "VALUES (:user_id, :kind, :item_id, :rating, :updated_at)", data)


def _put_play_queue(db: sqlite_utils.Database, data: dict[str, Any]) -> None:
    db.execute("INSERT OR REPLACE INTO play_queues (user_id, track_ids, current, current_index, position_ms, "
               "changed_at, changed_by) VALUES (:user_id, :track_ids, :current, :current_index, :position_ms, "
               ":changed_at, :changed_by)", data)


_LISTENER_CHANGES = {
    "user.put": _put_user,
    "user.delete": _delete_user,
    "playlist.put": _put_playlist,
    "playlist.delete": lambda db, data: db.execute("DELETE FROM playlists WHERE id = ?", [data["id"]]),
    "favorite.put": _put_favorite,
    "favorite.delete": lambda db, data: db.execute(
        "DELETE FROM favorites WHERE user_id = ? AND kind = ? AND item_id = ?",
        [data["user_id"], data["kind"], data["item_id"]]),
    "plays.add": _add_plays,
    "rating.put": _put_rating,
    "rating.delete": lambda db, data: db.execute(
        "DELETE FROM ratings WHERE user_id = ? AND kind = ? AND item_id = ?",
        [data["user_id"], data["kind"], data["item_id"]]),
    "playqueue.put": _put_play_queue,
    "playqueue.delete": lambda db, data: db.execute("DELETE FROM play_queues WHERE user_id = ?", [data["user_id"]]),
}
