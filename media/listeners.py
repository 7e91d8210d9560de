"""Listeners and their data: accounts, playlists, favorites and plays, and the change log.

Every write is one operation, applied in one SQLite transaction together with its change-log row
and, when the client sent an Idempotency-Key, the answer it got: the same key is applied once
and answers the same again. What writes create (playlists, plays) gets an id made where the
write is accepted (`ids.new_id`), not a rowid, so a node can hand it out before the master has
seen the write. The change log (`changes`) is what replicas follow: a sequence number, the
operation and the full resulting state of what changed, so applying a row twice is harmless.

Writes use plain SQL, not sqlite-utils' row methods: those commit on their own, which would
break a write's all-or-nothing transaction (see media.database).

Tokens are `USERID.SECRET`; only SHA-256 of the secret is stored (the secret is 256 random bits,
so a slow hash adds nothing), and it is compared in constant time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils

from media import json_text
from media.errors import InvalidData, NotFound
from media.ids import new_id
from media.passwords import MAX_PASSWORD, hash_password, password_matches, seal, unseal

ROLES = ("admin", "listener")
FAVORITE_KINDS = {"tracks": "tracks", "albums": "albums", "artists": "artists"}
MAX_PLAYLIST_TRACKS = 10_000
USER_TABLES = ("playlists", "favorites", "plays", "idempotency", "ratings", "play_queues", "play_totals",
               "album_plays")  # a user's own rows


def migrate(db: sqlite_utils.Database) -> None:
    """Schema 2: accounts, listener data, idempotency answers and the change log."""
    db["users"].create({"id": str, "name": str, "role": str, "token_hash": str, "created_at": str},
                       pk="id", not_null={"name", "role"})
    db["users"].create_index(["name"], unique=True)
    db["playlists"].create({"id": str, "user_id": str, "name": str, "track_ids": str,
                            "created_at": str, "updated_at": str}, pk="id")
    db["playlists"].create_index(["user_id", "updated_at"])
    db["favorites"].create({"user_id": str, "kind": str, "item_id": str, "created_at": str},
                           pk=("user_id", "kind", "item_id"))
    db["plays"].create({"id": str, "user_id": str, "track_id": str, "played_at": str, "seconds": float},
                       pk="id")
    db["plays"].create_index(["user_id", "played_at"])
    db["plays"].create_index(["user_id", "track_id"])
    db["idempotency"].create({"user_id": str, "key": str, "fingerprint": str, "status": int,
                              "body": str, "created_at": str}, pk=("user_id", "key"))
    db.execute("CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, "
               "user_id TEXT, op TEXT NOT NULL, data TEXT NOT NULL)")


def migrate_6(db: sqlite_utils.Database) -> None:
    """Schema 6: passwords (media.passwords: a hash to check, a sealed copy for token sign-in),
    ratings of tracks, albums and artists (1 to 5), each user's play queue (the tracks, the
    current one, by id and by index since a queue may hold a track twice, and the position in
    it, resumed on another device), and a playlist's comment and whether other users see it."""
    # Each step may have run already: a catalog set back to an older version number migrates again.
    for column in {"password_hash", "password_sealed"} - set(db["users"].columns_dict):
        db.execute(f"ALTER TABLE users ADD COLUMN {column} TEXT")
    db["ratings"].create({"user_id": str, "kind": str, "item_id": str, "rating": int, "updated_at": str},
                         pk=("user_id", "kind", "item_id"), if_not_exists=True)
    db["play_queues"].create({"user_id": str, "track_ids": str, "current": str, "current_index": int,
                              "position_ms": int, "changed_at": str, "changed_by": str}, pk="user_id",
                             if_not_exists=True)
    if "current_index" not in db["play_queues"].columns_dict:
        db.execute("ALTER TABLE play_queues ADD COLUMN current_index INTEGER")
    for column, kind in (("comment", "TEXT"), ("public", "INTEGER NOT NULL DEFAULT 0")):
        if column not in db["playlists"].columns_dict:
            db.execute(f"ALTER TABLE playlists ADD COLUMN {column} {kind}")
    db["favorites"].create_index(["user_id", "kind", "created_at"], if_not_exists=True)


# Each listener's plays counted per track and per album, so a list of the most played, or an item's
# count, costs its rows, not the plays behind them. The server inserts plays through insert_plays (an
# API write, a region applying the master's log, a promoted region's replay), which counts a batch
# at once, in the same transaction; a play inserted any other way is counted by the trigger, which
# stands aside while insert_plays counts (the 'plays counted' row of meta). Counting per row in the
# trigger alone cost 60-90% more CPU per play than the batch. (With a trigger, every insert of a play
# keeps a statement journal: why the writer's are files, media.database.connect.) The albums' totals
# follow the tracks' albums, which a rescan may change: regroup (media.catalog) makes them again
# (rebuild_album_plays).
_PLAY_TOTALS = (
    "CREATE TABLE IF NOT EXISTS play_totals (user_id TEXT NOT NULL, track_id TEXT NOT NULL, plays INTEGER NOT NULL, "
    "last_played TEXT, PRIMARY KEY (user_id, track_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS play_totals_by_plays ON play_totals (user_id, plays DESC, last_played DESC, track_id)",
    "CREATE TABLE IF NOT EXISTS album_plays (user_id TEXT NOT NULL, album_id TEXT NOT NULL, plays INTEGER NOT NULL, "
    "last_played TEXT, PRIMARY KEY (user_id, album_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS album_plays_by_plays ON album_plays (user_id, plays DESC, album_id)",
    "CREATE INDEX IF NOT EXISTS album_plays_by_time ON album_plays (user_id, last_played DESC, album_id)",
    "CREATE TRIGGER IF NOT EXISTS plays_counted AFTER INSERT ON plays "
    "WHEN NOT EXISTS (SELECT 1 FROM meta WHERE key = 'plays counted') BEGIN "
    "INSERT INTO play_totals (user_id, track_id, plays, last_played) VALUES (new.user_id, new.track_id, 1, "
    "new.played_at) ON CONFLICT (user_id, track_id) DO UPDATE SET plays = plays + 1, "
    "last_played = max(coalesce(last_played, excluded.last_played), excluded.last_played); "
    "INSERT INTO album_plays (user_id, album_id, plays, last_played) SELECT new.user_id, album_id, 1, new.played_at "
    "FROM tracks WHERE id = new.track_id ON CONFLICT (user_id, album_id) DO UPDATE SET plays = plays + 1, "
    "last_played = max(coalesce(last_played, excluded.last_played), excluded.last_played); END",
)
_ADD_TO = ("INSERT INTO {table} (user_id, {item}, plays, last_played) VALUES (?, ?, ?, ?) ON CONFLICT (user_id, {item}) "
           "DO UPDATE SET plays = plays + excluded.plays, "
           "last_played = max(coalesce(last_played, excluded.last_played), excluded.last_played)")


def insert_plays(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> None:
    """Insert the plays (id, user_id, track_id, played_at, seconds) not already kept (by id: a row
    applied twice is harmless) and add them to the listeners' totals per track and per album."""
    ids = [row["id"] for row in rows]
    kept: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        kept.update(r for (r,) in db.execute(f"SELECT id FROM plays WHERE id IN ({','.join('?' * len(chunk))})", chunk))
    new: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["id"] not in kept:
            new.setdefault(row["id"], row)  # the first of an id, as INSERT OR IGNORE would
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('plays counted', 'here')")  # the trigger stands aside
    db.conn.executemany("INSERT OR IGNORE INTO plays (id, user_id, track_id, played_at, seconds) "
                        "VALUES (:id, :user_id, :track_id, :played_at, :seconds)", new.values())
    db.execute("DELETE FROM meta WHERE key = 'plays counted'")
    per_track = _totals((row["user_id"], row["track_id"], 1, row["played_at"]) for row in new.values())
    _add_to(db, "play_totals", "track_id", per_track)
    albums = _album_of(db, list({track for _, track, _, _ in per_track}))
    _add_to(db, "album_plays", "album_id", _totals((user, albums[track], n, last) for user, track, n, last in per_track
                                                   if track in albums))


def _add_to(db: sqlite_utils.Database, table: str, item: str, totals: list[tuple[str, str, int, str]]) -> None:
    db.conn.executemany(_ADD_TO.format(table=table, item=item), totals)


def _totals(plays) -> list[tuple[str, str, int, str]]:
    """(user, item, count, last played) summed per (user, item)."""
    found: dict[tuple[str, str], list] = {}
    for user, item, count, at in plays:
        total = found.get((user, item))
        if total is None:
            found[(user, item)] = [count, at]
        else:
            total[0] += count
            total[1] = max(total[1], at)
    return [(user, item, count, at) for (user, item), (count, at) in found.items()]


def _album_of(db: sqlite_utils.Database, track_ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(track_ids), 500):
        chunk = track_ids[start:start + 500]
        found.update(db.execute(f"SELECT id, album_id FROM tracks WHERE id IN ({','.join('?' * len(chunk))})", chunk))
    return found


def migrate_10(db: sqlite_utils.Database) -> None:
    """Schema 10: play totals (above), counted once from the plays already kept (then the index on
    plays by (user, track) goes); favorites by (user, kind, newest first, id) and by (user, when,
    id), the orders they are listed in."""
    for sql in _PLAY_TOTALS:
        db.execute(sql)
    db.execute("DELETE FROM play_totals")
    db.execute("INSERT INTO play_totals (user_id, track_id, plays, last_played) SELECT user_id, track_id, count(*), "
               "max(played_at) FROM plays GROUP BY user_id, track_id")
    rebuild_album_plays(db)
    # Every count of a track's plays is in play_totals now: the index behind those counts went
    # (63 MiB at 1,000,000 plays, and its upkeep on every play).
    db.execute("DROP INDEX IF EXISTS idx_plays_user_id_track_id")
    db.execute("DROP INDEX IF EXISTS idx_favorites_user_id_kind_created_at")
    db.execute("CREATE INDEX IF NOT EXISTS favorites_by_kind ON favorites (user_id, kind, created_at DESC, item_id)")
    db.execute("CREATE INDEX IF NOT EXISTS favorites_by_time ON favorites (user_id, created_at, item_id, kind)")


def rebuild_album_plays(db: sqlite_utils.Database) -> None:
    """Each listener's plays per album, from their plays per track and the tracks' albums now."""
    db.execute("DELETE FROM album_plays")
    db.execute("INSERT INTO album_plays (user_id, album_id, plays, last_played) SELECT p.user_id, x.album_id, "
               "sum(p.plays), max(p.last_played) FROM play_totals p CROSS JOIN tracks x ON x.id = p.track_id "
               "GROUP BY p.user_id, x.album_id")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- accounts ---------------------------------------------------------------------------------

def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add_user(db: sqlite_utils.Database, name: str, role: str) -> tuple[dict[str, Any], str]:
    """A new user and its token (shown once: only its hash is kept)."""
    if role not in ROLES:
        raise InvalidData("role", f"must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64 or not name.isprintable() or name != name.strip():
        raise InvalidData("name", "1 to 64 printable characters, no leading or trailing spaces")
    if db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
        raise InvalidData("name", f"a user named {name!r} exists")
    user = {"id": new_id(), "name": name, "role": role, "created_at": now()}
    secret = secrets.token_urlsafe(32)
    db.execute("INSERT INTO users (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
               [user["id"], name, role, _hash(secret), user["created_at"]])
    append_change(db, None, "user.put", _user_row(db, user["id"]))
    return user, f"{user['id']}.{secret}"


def new_token(db: sqlite_utils.Database, name: str) -> str:
    """Replace the user's token: the old one stops working at once."""
    user = user_by_name(db, name)
    secret = secrets.token_urlsafe(32)
    db.execute("UPDATE users SET token_hash = ? WHERE id = ?", [_hash(secret), user["id"]])
    append_change(db, None, "user.put", _user_row(db, user["id"]))
    return f"{user['id']}.{secret}"


def set_password(db: sqlite_utils.Database, name: str, password: str, key: bytes) -> dict[str, Any]:
    """Give the user a password (hashed, and sealed with `key`: media.passwords)."""
    if not isinstance(password, str) or not 1 <= len(password) <= MAX_PASSWORD or not password.isprintable():
        raise InvalidData("password", f"1 to {MAX_PASSWORD} printable characters")
    user = user_by_name(db, name)
    db.execute("UPDATE users SET password_hash = ?, password_sealed = ? WHERE id = ?",
               [hash_password(password), seal(key, password), user["id"]])
    append_change(db, None, "user.put", _user_row(db, user["id"]))
    return user


def user_for_password(db: sqlite_utils.Database, name: str, password: str) -> dict[str, Any] | None:
    """The user with this name and password, or None (slow on purpose: scrypt)."""
    row = db.execute("SELECT id, name, role, token_hash, password_hash FROM users WHERE name = ?",
                     [name]).fetchone()
    # An unknown name costs a hash too, so timing tells nothing.
    if not password_matches(password, row[4] if row else _nobody()) or row is None:
        return None
    return {"id": row[0], "name": row[1], "role": row[2], "stamp": row[3][:16]}


def user_and_password(db: sqlite_utils.Database, name: str, key: bytes) -> tuple[dict[str, Any], str | None] | None:
    """The user with this name and its password unsealed (None without one), or None."""
    row = db.execute("SELECT id, name, role, token_hash, password_sealed FROM users WHERE name = ?",
                     [name]).fetchone()
    if row is None:
        return None
    return {"id": row[0], "name": row[1], "role": row[2], "stamp": row[3][:16]}, unseal(key, row[4])


@functools.cache
def _nobody() -> str:
    """A hash compared when the name is unknown (made once, when first needed)."""
    return hash_password(secrets.token_urlsafe(16))


def _user_row(db: sqlite_utils.Database, user_id: str) -> dict[str, Any]:
    """The whole row, as the change log carries it (regions check passwords and tokens too)."""
    columns = ("id", "name", "role", "token_hash", "created_at", "password_hash", "password_sealed")
    row = db.execute(f"SELECT {', '.join(columns)} FROM users WHERE id = ?", [user_id]).fetchone()
    return dict(zip(columns, row))


def remove_user(db: sqlite_utils.Database, name: str) -> None:
    user = user_by_name(db, name)
    for table in USER_TABLES:
        db.execute(f"DELETE FROM {table} WHERE user_id = ?", [user["id"]])
    db.execute("DELETE FROM users WHERE id = ?", [user["id"]])
    append_change(db, None, "user.delete", {"id": user["id"]})


def user_by_name(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    row = db.execute("SELECT id, name, role, created_at FROM users WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"no user named {name!r}")
    return dict(zip(("id", "name", "role", "created_at"), row))


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return [dict(zip(("id", "name", "role", "created_at"), row))
            for row in db.execute("SELECT id, name, role, created_at FROM users ORDER BY name")]


def user_for_token(db: sqlite_utils.Database, token: str) -> dict[str, Any] | None:
    """The user a token belongs to, or None."""
    user_id, _, secret = token.partition(".")
    row = db.execute("SELECT id, name, role, token_hash FROM users WHERE id = ?", [user_id]).fetchone()
    # Compared in constant time; an unknown user is compared too, so timing tells nothing.
    stored = row[3] if row else "0" * 64
    if not hmac.compare_digest(stored, _hash(secret)) or row is None:
        return None
    return {"id": row[0], "name": row[1], "role": row[2], "stamp": row[3][:16]}


def user_by_id(db: sqlite_utils.Database, user_id: str) -> dict[str, Any] | None:
    row = db.execute("SELECT id, name, role, token_hash FROM users WHERE id = ?", [user_id]).fetchone()
    return {"id": row[0], "name": row[1], "role": row[2], "stamp": row[3][:16]} if row else None


# --- the change log ---------------------------------------------------------------------------

def append_change(db: sqlite_utils.Database, user_id: str | None, op: str, data: dict[str, Any],
                  at: str | None = None) -> int:
    cursor = db.execute("INSERT INTO changes (at, user_id, op, data) VALUES (?, ?, ?, ?)",
                        [at or now(), user_id, op, json_text.dumps(data).decode()])
    return cursor.lastrowid


def changes_since(db: sqlite_utils.Database, since: int, limit: int = 1000,
                  max_bytes: int = 4 * 1024 * 1024) -> list[dict[str, Any]]:
    """The rows after `since`, in order: at most `limit`, and no more than `max_bytes` of data
    (but always the first, whatever its size)."""
    rows, total = [], 0
    for seq, at, user, op, data in db.execute(
            "SELECT seq, at, user_id, op, data FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", [since, limit]):
        total += len(data)
        if rows and total > max_bytes:
            break
        rows.append({"seq": seq, "at": at, "user_id": user, "op": op, "data": json.loads(data)})
    return rows


def changes_json(db: sqlite_utils.Database, since: int, limit: int = 1000,
                 max_bytes: int = 4 * 1024 * 1024) -> tuple[list[str], int]:
    """The rows changes_since gives, each as the JSON text of its object, its data as stored (it is
    JSON already: a page is not decoded and encoded again), and the last one's sequence (0: none)."""
    texts, total, last = [], 0, 0
    for seq, at, user, op, data in db.execute(
            "SELECT seq, at, user_id, op, data FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", [since, limit]):
        total += len(data)
        if texts and total > max_bytes:
            break
        texts.append(f'{{"seq":{seq},"at":{json.dumps(at)},"user_id":{json.dumps(user)},"op":{json.dumps(op)},'
                     f'"data":{data}}}')
        last = seq
    return texts, last


def last_sequence(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]


def compact_changes(db: sqlite_utils.Database, older_than: str, keep_rows: int, keep_bytes: int = 2**62) -> int:
    """Drop change rows older than `older_than` (ISO time), beyond the newest `keep_rows`, or
    beyond the newest `keep_bytes` of data; the newest row always stays, so sequence numbers
    never restart. A follower behind what is left is told to take a snapshot. Returns how many
    rows went."""
    dropped = db.execute("DELETE FROM changes WHERE seq < (SELECT MAX(seq) FROM changes) AND "
                         "(at < ? OR seq <= (SELECT MAX(seq) FROM changes) - ?)", [older_than, keep_rows]).rowcount
    over = db.execute("SELECT MAX(seq) FROM (SELECT seq, SUM(length(data)) OVER (ORDER BY seq DESC) AS newer "
                      "FROM changes) WHERE newer > ?", [keep_bytes]).fetchone()[0]
    if over is not None:
        dropped += db.execute("DELETE FROM changes WHERE seq <= ? AND seq < (SELECT MAX(seq) FROM changes)",
                              [over]).rowcount
    return dropped


def expire_answers(db: sqlite_utils.Database, older_than: str) -> int:
    """Forget idempotency answers older than `older_than`: a retry that late is a new request."""
    return db.execute("DELETE FROM idempotency WHERE created_at < ?", [older_than]).rowcount


def first_sequence(db: sqlite_utils.Database) -> int:
    """The oldest change still kept (0 when none is): a follower behind it needs a snapshot."""
    return db.execute("SELECT COALESCE(MIN(seq), 0) FROM changes").fetchone()[0]


# --- writes, with idempotency -----------------------------------------------------------------

# An operation: (db, user, payload) -> (HTTP status, answer, change-log op, change-log data).
Operation = Callable[[sqlite_utils.Database, dict[str, Any], dict[str, Any]], tuple[int, Any, str, dict[str, Any]]]


def fingerprint_of(op: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([op, payload], sort_keys=True).encode()).hexdigest()


def remembered(db: sqlite_utils.Database, user_id: str, key: str, fingerprint: str) -> tuple[int, Any] | None:
    """The answer a key already got, or None; a key used for another request is refused."""
    row = db.execute("SELECT fingerprint, status, body FROM idempotency WHERE user_id = ? AND key = ?",
                     [user_id, key]).fetchone()
    if row is None:
        return None
    if row[0] != fingerprint:
        raise InvalidData("Idempotency-Key", "this key was used for a different request")
    return row[1], json.loads(row[2])

def apply(db: sqlite_utils.Database, user: dict[str, Any], op: str, payload: dict[str, Any],
          key: str | None, made: dict[str, Any] | None = None, run: Operation | None = None) -> tuple[int, Any]:
    """Apply one write for `user`: (HTTP status, answer). `made` holds what the accepting node
    made for it (new ids), which a repeat of the request does not share. With an idempotency
    key, a repeat of the same request answers what the first got; the key reused for another
    request is refused. `run` does the write when it is not one of OPERATIONS (catalog edits)."""
    fingerprint = fingerprint_of(op, payload)
    if key is not None:
        earlier = remembered(db, user["id"], key, fingerprint)
        if earlier is not None:
            return earlier
    status, answer, change, data = (run or OPERATIONS[op])(db, user, {**payload, **(made or {})})
    if key is not None:
        record = {"user_id": user["id"], "key": key, "fingerprint": fingerprint, "status": status,
                  "body": json.dumps(answer), "created_at": now()}
        db.execute("INSERT INTO idempotency (user_id, key, fingerprint, status, body, created_at) "
                   "VALUES (:user_id, :key, :fingerprint, :status, :body, :created_at)", record)
        # Replicas learn the applied key with the write: a promoted node applies it once too.
        data = {**data, "idempotency": record}
    append_change(db, user["id"], change, data)
    return status, answer


def apply_many(db: sqlite_utils.Database, user: dict[str, Any], writes: list[tuple[str, dict[str, Any]]],
               key: str | None) -> list[tuple[int, Any]]:
    """Several operations as one write (all or none: one transaction), each with its own change-log
    row; with a key, each remembers its answer under `KEY#N`, so a repeat applies none again."""
    return [apply(db, user, op, payload, None if key is None else f"{key}#{n}")
            for n, (op, payload) in enumerate(writes)]


def _found_tracks(db: sqlite_utils.Database, track_ids: list[str]) -> set[str]:
    """Which of these ids the catalog holds."""
    found: set[str] = set()
    ordered = list(set(track_ids))
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in db.execute(f"SELECT id FROM tracks WHERE id IN ({marks})", chunk))
    return found


def _check_tracks(db: sqlite_utils.Database, track_ids: list[str], field: str) -> None:
    missing = set(track_ids) - _found_tracks(db, track_ids)
    if missing:
        raise InvalidData(field, f"no track {min(missing)!r} in the catalog")


def _playlist_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "name", "created_at", "updated_at")}
    out["track_ids"] = json.loads(row["track_ids"])
    out["track_count"] = len(out["track_ids"])
    return out


def _own_playlist(db: sqlite_utils.Database, user: dict[str, Any], playlist_id: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM playlists WHERE id = ? AND user_id = ?", [playlist_id, user["id"]]))
    if not rows:
        raise NotFound(f"no playlist {playlist_id!r}")
    return rows[0]


def _playlist_change(row: dict[str, Any]) -> dict[str, Any]:
    """A playlist as the change log carries it: what the API shows, its owner, comment and public."""
    return {**_playlist_out(row), "user_id": row["user_id"], "comment": row.get("comment"),
            "public": bool(row.get("public"))}


def _create_playlist(db, user, p):
    _check_tracks(db, p["track_ids"], "track_ids")
    stamp = now()
    row = {"id": p["id"], "user_id": user["id"], "name": p["name"], "track_ids": json.dumps(p["track_ids"]),
           "created_at": stamp, "updated_at": stamp, "comment": p.get("comment"), "public": int(p.get("public", 0))}
    if db.execute("SELECT 1 FROM playlists WHERE id = ?", [p["id"]]).fetchone():
        raise InvalidData("id", "a playlist with this id exists")
    db.execute("INSERT INTO playlists (id, user_id, name, track_ids, created_at, updated_at, comment, public) "
               "VALUES (:id, :user_id, :name, :track_ids, :created_at, :updated_at, :comment, :public)", row)
    return 201, _playlist_out(row), "playlist.put", _playlist_change(row)


def _update_playlist(db, user, p):
    row = _own_playlist(db, user, p["id"])
    track_ids = json.loads(row["track_ids"])
    if "track_ids" in p:
        track_ids = p["track_ids"]
    before = set(track_ids)
    track_ids = track_ids + p.get("append", [])
    for position in sorted(set(p.get("remove_positions", [])), reverse=True):
        if position >= len(track_ids):
            raise InvalidData("remove_positions", f"no position {position}: the playlist has {len(track_ids)}")
        del track_ids[position]
    if len(track_ids) > MAX_PLAYLIST_TRACKS:
        raise InvalidData("track_ids", f"at most {MAX_PLAYLIST_TRACKS} tracks")
    _check_tracks(db, list(set(track_ids) - before), "track_ids")  # what it had may have left the library
    row.update(name=p.get("name", row["name"]), track_ids=json.dumps(track_ids), updated_at=now(),
               comment=p.get("comment", row["comment"]), public=int(p.get("public", row["public"])))
    db.execute("UPDATE playlists SET name = ?, track_ids = ?, updated_at = ?, comment = ?, public = ? WHERE id = ?",
               [row["name"], row["track_ids"], row["updated_at"], row["comment"], row["public"], row["id"]])
    return 200, _playlist_out(row), "playlist.put", _playlist_change(row)


def _delete_playlist(db, user, p):
    row = _own_playlist(db, user, p["id"])
    db.execute("DELETE FROM playlists WHERE id = ?", [row["id"]])
    return 204, None, "playlist.delete", {"id": row["id"]}


def _set_favorite(db, user, p):
    table = FAVORITE_KINDS[p["kind"]]
    data = {"user_id": user["id"], "kind": p["kind"], "item_id": p["item_id"]}
    if p["on"]:
        if not db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [p["item_id"]]).fetchone():
            raise NotFound(f"no {p['kind'][:-1]} {p['item_id']!r}")
        db.execute("INSERT OR IGNORE INTO favorites (user_id, kind, item_id, created_at) VALUES (?, ?, ?, ?)",
                   [user["id"], p["kind"], p["item_id"], now()])
        data["created_at"] = db.execute("SELECT created_at FROM favorites WHERE user_id = ? AND kind = ? "
                                        "AND item_id = ?", [user["id"], p["kind"], p["item_id"]]).fetchone()[0]
        return 204, None, "favorite.put", data
    db.execute("DELETE FROM favorites WHERE user_id = ? AND kind = ? AND item_id = ?",
               [user["id"], p["kind"], p["item_id"]])
    return 204, None, "favorite.delete", data


def _add_plays(db, user, p):
    plays = p["plays"]
    _check_tracks(db, [play["track_id"] for play in plays], "track_id")
    rows = [{"id": play_id, "user_id": user["id"], "track_id": play["track_id"],
             "played_at": play["played_at"], "seconds": play["seconds"]} for play, play_id in zip(plays, p["ids"])]
    insert_plays(db, rows)
    return 201, {"ids": [r["id"] for r in rows]}, "plays.add", {"plays": rows}


def _known(db: sqlite_utils.Database, kind: str, item_id: str) -> None:
    if not db.execute(f"SELECT 1 FROM {FAVORITE_KINDS[kind]} WHERE id = ?", [item_id]).fetchone():
        raise NotFound(f"no {kind[:-1]} {item_id!r}")


def _set_rating(db, user, p):
    """A rating of 1 to 5 stars, or 0: none (the row goes)."""
    data = {"user_id": user["id"], "kind": p["kind"], "item_id": p["item_id"]}
    if p["rating"] == 0:
        db.execute("DELETE FROM ratings WHERE user_id = ? AND kind = ? AND item_id = ?",
                   [user["id"], p["kind"], p["item_id"]])
        return 204, None, "rating.delete", data
    _known(db, p["kind"], p["item_id"])
    data.update(rating=p["rating"], updated_at=now())
    db.execute("INSERT OR REPLACE INTO ratings (user_id, kind, item_id, rating, updated_at) "
               "VALUES (:user_id, :kind, :item_id, :rating, :updated_at)", data)
    return 204, None, "rating.put", data


def _save_play_queue(db, user, p):
    """The user's play queue as one row, replaced whole; an empty queue clears it."""
    if not p["track_ids"]:
        db.execute("DELETE FROM play_queues WHERE user_id = ?", [user["id"]])
        return 204, None, "playqueue.delete", {"user_id": user["id"]}
    missing = set(p["track_ids"]) - _found_tracks(db, p["track_ids"])
    if missing:
        raise NotFound(f"no track {min(missing)!r}")
    index = p["current_index"]
    row = {"user_id": user["id"], "track_ids": json.dumps(p["track_ids"]),
           "current": p["track_ids"][index] if index is not None else None, "current_index": index,
           "position_ms": p["position_ms"], "changed_at": now(), "changed_by": p["changed_by"]}
    db.execute("INSERT OR REPLACE INTO play_queues (user_id, track_ids, current, current_index, position_ms, "
               "changed_at, changed_by) VALUES (:user_id, :track_ids, :current, :current_index, :position_ms, "
               ":changed_at, :changed_by)", row)
    return 204, None, "playqueue.put", row


OPERATIONS = {
    "playlist.create": _create_playlist,
    "playlist.update": _update_playlist,
    "playlist.delete": _delete_playlist,
    "favorite.set": _set_favorite,
    "plays.add": _add_plays,
    "rating.set": _set_rating,
    "playqueue.save": _save_play_queue,
}


# --- reads ------------------------------------------------------------------------------------

def get_playlist(db: sqlite_utils.Database, user_id: str, playlist_id: str) -> dict[str, Any]:
    return _playlist_out(_own_playlist(db, {"id": user_id}, playlist_id))


def list_playlists(db: sqlite_utils.Database, user_id: str, limit: int, offset: int) -> tuple[list, int]:
    total = db.execute("SELECT COUNT(*) FROM playlists WHERE user_id = ?", [user_id]).fetchone()[0]
    rows = db.query("SELECT * FROM playlists WHERE user_id = ? ORDER BY updated_at DESC, id LIMIT ? OFFSET ?",
                    [user_id, limit, offset])
    return [_playlist_out(r) for r in rows], total


def list_favorites(db: sqlite_utils.Database, user_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {kind: [] for kind in FAVORITE_KINDS}
    for kind, item in db.execute("SELECT kind, item_id FROM favorites WHERE user_id = ? ORDER BY created_at, item_id",
                                 [user_id]):
        out[kind].append(item)
    return out


def play_counts(db: sqlite_utils.Database, user_id: str, limit: int) -> list[dict[str, Any]]:
    """The listener's most played tracks (the last played first among equals), from their totals."""
    return [{"track_id": t, "plays": n, "last_played_at": last} for t, n, last in db.execute(
        "SELECT track_id, plays, last_played FROM play_totals WHERE user_id = ? "
        "ORDER BY plays DESC, last_played DESC, track_id LIMIT ?", [user_id, limit])]


def recent_plays(db: sqlite_utils.Database, user_id: str, limit: int) -> list[dict[str, Any]]:
    return [{"id": i, "track_id": t, "played_at": at, "seconds": s} for i, t, at, s in db.execute(
        "SELECT id, track_id, played_at, seconds FROM plays WHERE user_id = ? ORDER BY played_at DESC, id DESC "
        "LIMIT ?", [user_id, limit])]


# --- reads for the Subsonic API ---------------------------------------------------------------

def item_kind(db: sqlite_utils.Database, item_id: str) -> str | None:
    """What an id names: "tracks", "albums" or "artists" (media.ids hashes the kind into each id,
    so they never collide), or None."""
    for kind, table in FAVORITE_KINDS.items():
        if db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [item_id]).fetchone():
            return kind
    return None


# A playlist with its owner's name and what it holds now: tracks that left the library are not counted.
_PLAYLIST_HEAD = (
    "SELECT p.id, p.name, p.comment, p.public, p.created_at, p.updated_at, p.user_id, p.track_ids, "
    "u.name AS owner, "
    "(SELECT COUNT(*) FROM json_each(p.track_ids) j JOIN tracks t ON t.id = j.value) AS song_count, "
    "(SELECT COALESCE(SUM(t.duration), 0) FROM json_each(p.track_ids) j JOIN tracks t ON t.id = j.value) AS duration, "
    "(SELECT t.album_id FROM json_each(p.track_ids) j JOIN tracks t ON t.id = j.value ORDER BY j.key LIMIT 1) "
    "AS first_album_id FROM playlists p JOIN users u ON u.id = p.user_id")


def visible_playlists(db: sqlite_utils.Database, viewer_id: str, owner_id: str | None = None) -> list[dict[str, Any]]:
    """The viewer's own playlists and the public ones of others, by name; or only `owner_id`'s
    (for an admin who asks by user name)."""
    where, params = ("p.user_id = ?", [owner_id]) if owner_id else ("(p.user_id = ? OR p.public = 1)", [viewer_id])
    rows = db.query(f"{_PLAYLIST_HEAD} WHERE {where} ORDER BY p.name COLLATE NOCASE, p.id", params)
    return [{**row, "track_ids": json.loads(row["track_ids"])} for row in rows]


def visible_playlist(db: sqlite_utils.Database, viewer: dict[str, Any], playlist_id: str) -> dict[str, Any]:
    """One playlist its owner, anyone when it is public, or an admin may read; NotFound otherwise."""
    rows = list(db.query(f"{_PLAYLIST_HEAD} WHERE p.id = ?", [playlist_id]))
    if not rows or not (rows[0]["user_id"] == viewer["id"] or rows[0]["public"] or viewer["role"] == "admin"):
        raise NotFound(f"no playlist {playlist_id!r}")
    return {**rows[0], "track_ids": json.loads(rows[0]["track_ids"])}


def play_queue(db: sqlite_utils.Database, user_id: str) -> dict[str, Any] | None:
    """The user's saved play queue, or None."""
    rows = list(db.query("SELECT * FROM play_queues WHERE user_id = ?", [user_id]))
    return {**rows[0], "track_ids": json.loads(rows[0]["track_ids"])} if rows else None
