"""The catalog: artists, albums and tracks in SQLite (sqlite-utils), with FTS5 search.

Tracks hold the tags as read (`tag_*`) and the effective, displayed values (artist, album, album
artist and their ids). The effective values depend on a track's siblings (a folder of one album with
many artists is a compilation), so after every scan that changed something `regroup()` derives them,
the albums and artists tables and the search index, from the tracks in one pass.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import collections
import contextlib
import dataclasses
import functools
import json
import logging
import math
import re
import string
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlite_utils

from media import ids, listeners, one_step
from media.database import Database, keep_private
from media.errors import InvalidData, InvalidQuery, NotFound
from media.tags import TAGS_VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 15
VARIOUS_ARTISTS = "Various Artists"
UNKNOWN_ARTIST = "Unknown Artist"
UNKNOWN_ALBUM = "Unknown Album"

# Columns a client sees for a track (the file path and scan bookkeeping stay inside).
TRACK_FIELDS = ("id", "title", "artist", "artist_id", "album", "album_id", "album_artist",
                "track_number", "disc_number", "year", "genre", "duration", "codec", "container",
                "bitrate", "sample_rate", "channels", "size", "has_art", "added_at")
ALBUM_FIELDS = ("id", "title", "artist", "artist_id", "year", "genre", "track_count",
                "disc_count", "duration", "compilation", "has_cover", "added_at")
ARTIST_FIELDS = ("id", "name", "album_count", "track_count")
ALBUM_REALS = frozenset({"duration"})  # the fields of ALBUM_FIELDS that hold floats (media.one_step)

# A track's ReplayGain as its file's tags hold it (media.tags), and the EBU R128 loudness the server
# measured (media.loudness): read with every track, answered as one `gain` object (see gain()).
TAGGED_GAIN = {"track": "rg_track_gain", "track_peak": "rg_track_peak", "album": "rg_album_gain",
               "album_peak": "rg_album_peak"}
MEASURED_LOUDNESS = {"track": "loudness", "track_peak": "loudness_peak", "album": "album_loudness",
                     "album_peak": "album_loudness_peak"}
GAIN_COLUMNS = (*TAGGED_GAIN.values(), *MEASURED_LOUDNESS.values())
TRACK_COLUMNS = (*TRACK_FIELDS, *GAIN_COLUMNS)  # what a track read selects; client_track shapes it
TRACK_REALS = frozenset({"duration", *GAIN_COLUMNS})  # the columns of TRACK_COLUMNS that hold floats
REFERENCE_LUFS = -18.0  # ReplayGain 2.0's reference level
DISC_ORDER = "t.disc_number, t.track_number, t.title COLLATE NOCASE, t.id"  # an album's or a folder's tracks

# Scanner-provided columns of a track (tags as read plus file facts).
SCANNED_FIELDS = ("id", "path", "size", "mtime_ns", "title", "tag_artist", "tag_album",
                  "album_artist_tag", "compilation", "track_number", "disc_number", "year", "genre",
                  "duration", "codec", "container", "bitrate", "sample_rate", "channels", "has_art", "fingerprint",
                  "rg_track_gain", "rg_track_peak", "rg_album_gain", "rg_album_peak", "mbid", "tags_read")


def clean_float(value: Any) -> Any:
    """A float as the catalog keeps it: at most 15 significant digits, so that SQLite's JSON, which
    writes a float with 15, reads back as the float kept (media.track_json). Durations (3 decimals),
    measured loudness (2) and peaks (3) already are; a ReplayGain tag written with more digits moves
    by less than 1e-15 of its value. Anything else (None, an integer, text, an infinity, a float so
    near the largest that 15 digits would overflow) as it is."""
    if not (isinstance(value, float) and math.isfinite(value)):
        return value
    cleaned = float(f"{value:.15g}")
    return cleaned if math.isfinite(cleaned) else value


_SCANNED_FLOATS = [SCANNED_FIELDS.index(f) for f in ("duration", "rg_track_gain", "rg_track_peak", "rg_album_gain",
                                                      "rg_album_peak")]

# Each order ends with the id (media.catalog adds it): a total order, so pages never repeat or skip a
# row, and the descending order is the ascending one backwards. Each has an index (schema 10).
_TRACK_SORTS = {
    "default": "album_artist COLLATE NOCASE, album COLLATE NOCASE, disc_number, track_number, title",
    "title": "title COLLATE NOCASE",
    "artist": "artist COLLATE NOCASE, album COLLATE NOCASE, disc_number, track_number",
    "album": "album COLLATE NOCASE, disc_number, track_number",
    "track": "disc_number, track_number, title COLLATE NOCASE",
    "year": "year",
    "duration": "duration",
    "added": "added_at",
}
_ALBUM_SORTS = {
    "default": "artist COLLATE NOCASE, year, title COLLATE NOCASE",
    "title": "title COLLATE NOCASE",
    "artist": "artist COLLATE NOCASE, year, title COLLATE NOCASE",
    "year": "year",
    "added": "added_at",
}
_ARTIST_SORTS = {"default": "name COLLATE NOCASE", "name": "name COLLATE NOCASE"}
_WORD = re.compile(r"\w+", re.UNICODE)
NOCASE = " COLLATE NOCASE"


# --- schema and migrations -------------------------------------------------------------------

def _migrate_1(db: sqlite_utils.Database) -> None:
    db["tracks"].create({
        "id": str, "path": str, "size": int, "mtime_ns": int,
        "title": str, "artist": str, "artist_id": str, "album": str, "album_id": str,
        "album_artist": str, "album_artist_id": str, "dir": str,
        "tag_artist": str, "tag_album": str, "album_artist_tag": str,
        "compilation": int, "track_number": int, "disc_number": int, "year": int, "genre": str,
        "duration": float, "codec": str, "container": str, "bitrate": int, "sample_rate": int,
        "channels": int, "has_art": int, "added_at": str, "updated_at": str,
    }, pk="id", not_null={"path", "size", "mtime_ns", "title", "duration", "codec", "container"},
        defaults={"artist": "", "artist_id": "", "album": "", "album_id": "", "album_artist": "",
                  "album_artist_id": "", "dir": "", "compilation": 0, "has_art": 0})
    db["tracks"].create_index(["path"], unique=True)
    db["tracks"].create_index(["album_id"])
    db["tracks"].create_index(["artist_id"])
    db["albums"].create({
        "id": str, "title": str, "artist": str, "artist_id": str, "year": int, "genre": str,
        "track_count": int, "disc_count": int, "duration": float, "compilation": int,
        "cover_path": str, "cover_track_id": str, "has_cover": int, "added_at": str,
    }, pk="id")
    db["albums"].create_index(["artist_id"])
    db["artists"].create({"id": str, "name": str, "album_count": int, "track_count": int}, pk="id")
    db["folder_images"].create({"dir": str, "path": str}, pk="dir")
    # No triggers: the search index is derived data, rebuilt in one pass by regroup() after a
    # batch of changes (per-row triggers made bulk inserts three times slower).
    db["tracks"].enable_fts(["title", "artist", "album", "album_artist", "genre"],
                            create_triggers=False, tokenize="unicode61 remove_diacritics 2")


def _migrate_3(db: sqlite_utils.Database) -> None:
    """Content fingerprints (media.fingerprint): the next scan reads the files that lack one."""
    db.execute("ALTER TABLE tracks ADD COLUMN fingerprint TEXT")


def _migrate_4(db: sqlite_utils.Database) -> None:
    """Opus tracks decode at 48 kHz (they had no sample rate); Vorbis tracks show their average
    bitrate, not the header's nominal one (media.tags). Both follow from stored columns, so
    no file is read again, and every node (a region never scans) corrects its own copy alike."""
    db.execute("UPDATE tracks SET sample_rate = 48000 WHERE codec = 'opus' AND sample_rate IS NULL")
    db.execute("UPDATE tracks SET bitrate = CAST(ROUND(CAST(size * 8 / duration AS INTEGER) / 1000.0) AS INTEGER) "
               "WHERE codec = 'vorbis' AND duration > 0")


def _migrate_5(db: sqlite_utils.Database) -> None:
    """Idempotency answers expire (listeners.expire_answers): found by their age."""
    db.execute("CREATE INDEX IF NOT EXISTS idempotency_created_at ON idempotency (created_at)")


def _migrate_7(db: sqlite_utils.Database) -> None:
    """Indexes for the Subsonic lists (media.browse), so a page costs the page, not the library:
    folders by path, songs by genre and year (and the random picks within them), albums in each
    order a list asks for (the id last: a stable order, the same on every node), artists by name,
    the catalog's last change (getIndexes' lastModified)."""
    for sql in ("tracks (dir)", "tracks (genre, year)", "tracks (updated_at)", "albums (added_at, id)",
                "albums (title COLLATE NOCASE, id)", "albums (artist COLLATE NOCASE, title COLLATE NOCASE, id)",
                "albums (year, id)", "albums (genre, id)", "artists (name COLLATE NOCASE)", "changes (op)"):
        table, columns = sql.split(" ", 1)
        name = table + "_" + "_".join(re.findall(r"(\w+)(?: COLLATE NOCASE)?[,)]", columns))
        db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {sql}")


def _migrate_8(db: sqlite_utils.Database) -> None:
    """ReplayGain values and the MusicBrainz id of each track (media.tags), and which version of
    the tag reader read it: the next scan reads every file again, once (file_index)."""
    for column, kind in (("rg_track_gain", "REAL"), ("rg_track_peak", "REAL"), ("rg_album_gain", "REAL"),
                         ("rg_album_peak", "REAL"), ("mbid", "TEXT"), ("tags_read", "INTEGER")):
        if column not in db["tracks"].columns_dict:
            db.execute(f"ALTER TABLE tracks ADD COLUMN {column} {kind}")


def _migrate_9(db: sqlite_utils.Database) -> None:
    """EBU R128 loudness measured by the server (media.loudness): each track's, the file version
    it was measured on, and its album's (on the track: the albums table is rebuilt by regroup)."""
    for column, kind in (("loudness", "REAL"), ("loudness_peak", "REAL"), ("loudness_of", "TEXT"),
                         ("album_loudness", "REAL"), ("album_loudness_peak", "REAL")):
        if column not in db["tracks"].columns_dict:
            db.execute(f"ALTER TABLE tracks ADD COLUMN {column} {kind}")


def _migrate_10(db: sqlite_utils.Database) -> None:
    """An index for each order a whole list is paged in (each ending with the id, see _columns), so
    a page at any offset is a seek (Bookmarks); and the listener's play totals (media.listeners)."""
    for table, sorts in (("tracks", _TRACK_SORTS), ("albums", _ALBUM_SORTS), ("artists", _ARTIST_SORTS)):
        for sort in sorts:
            columns, _ = _columns(sorts, sort)
            name = f"{table}_" + "_".join(column for column, _ in columns)  # as _migrate_7 names them
            db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({_order_by(columns)})")
    db.execute("DROP INDEX IF EXISTS artists_name")  # artists_name_id begins with it
    # An album's track ids from the index alone, without reading the tracks' rows (made for a
    # listener's plays of an album, which media.annotated now reads from album_plays).
    db.execute("DROP INDEX IF EXISTS idx_tracks_album_id")
    db.execute("CREATE INDEX idx_tracks_album_id ON tracks (album_id, id)")
    listeners.migrate_10(db)


def _migrate_11(db: sqlite_utils.Database) -> None:
    """Every float of the tracks at 15 significant digits at most (clean_float), as every write
    keeps them from now on: what media.track_json's answers rest on. Each node corrects its own
    copy alike (a ReplayGain tag with more digits is the only value that moves)."""
    reals = [name for name, kind in db["tracks"].columns_dict.items() if kind is float]
    if not reals:
        return
    changed = []
    for rowid, *values in db.execute(f"SELECT rowid, {', '.join(reals)} FROM tracks WHERE "
                                     + " OR ".join(f"{c} IS NOT NULL" for c in reals)):
        cleaned = [clean_float(v) for v in values]
        if cleaned != values:
            changed.append([*cleaned, rowid])
    db.conn.executemany(f"UPDATE tracks SET {', '.join(c + ' = ?' for c in reals)} WHERE rowid = ?", changed)


def _migrate_12(db: sqlite_utils.Database) -> None:
    """The tracks' index on artist_id holds their album_id too, so an artist's albums among other
    artists' (get_artist's appears_on, Subsonic's getArtist) come from the index alone: 0.6 ms
    for the artist with 2,000 tracks at 200,000 tracks, against 1.6 with a row read per track."""
    db.execute("DROP INDEX IF EXISTS idx_tracks_artist_id")
    db.execute("CREATE INDEX IF NOT EXISTS idx_tracks_artist_id_album_id ON tracks (artist_id, album_id)")


def _migrate_13(db: sqlite_utils.Database) -> None:
    """The tracks' index on artist_id holds their album artist's id before the album's, so the
    albums an artist plays on among others' (APPEARS_ON) are two ranges of it, around the
    artist's own id, which hold only those tracks: the artist's tracks on its own albums (most of
    them) are not read."""
    db.execute("DROP INDEX IF EXISTS idx_tracks_artist_id_album_id")
    db.execute("CREATE INDEX IF NOT EXISTS idx_tracks_artist_album_artist_album "
               "ON tracks (artist_id, album_artist_id, album_id)")


def _migrate_14(db: sqlite_utils.Database) -> None:
    """The search index reads the tracks through tracks_search, whose key lists them fewest words
    first (SEARCH_KEY): a text that matches many tracks shows the first of them in that order
    without ranking them all (_best_tracks)."""
    db.execute("DROP TABLE IF EXISTS tracks_fts")
    db.execute("DROP VIEW IF EXISTS tracks_search")
    # The index gives the rebuild (regroup) the tracks in the key's order; a sort took 1 s more at
    # 200,000 tracks, and FTS5 builds from rows out of order slower still. Never read a column, or
    # highlight() or snippet(), from tracks_fts: FTS5 would look each row up in the view by its
    # key, a scan of the tracks each (tests/test_query_plans.py would see it).
    db.execute(f"CREATE INDEX IF NOT EXISTS idx_tracks_search_words ON tracks (({_WORDS_HIGH}))")
    db.execute(f"CREATE VIEW tracks_search AS SELECT {SEARCH_KEY} AS search_key, {', '.join(SEARCHED)} "
               f"FROM tracks ORDER BY {_WORDS_HIGH}, rowid")
    # Its prefix index serves the first keystrokes of a search as one types (two to four letters:
    # the texts that match most), each read as one list instead of merging every word's.
    db.execute(f"CREATE VIRTUAL TABLE tracks_fts USING fts5({', '.join(SEARCHED)}, content='tracks_search', "
               "content_rowid='search_key', prefix='2 3 4', tokenize='unicode61 remove_diacritics 2')")
    db.execute("INSERT INTO tracks_fts(tracks_fts) VALUES('rebuild')")


def _migrate_15(db: sqlite_utils.Database) -> None:
    """An artist's albums come from an index in the order they are shown (ARTIST_ALBUM_ORDER),
    not sorted at each read (an artist's page, Subsonic's getArtist: 185 albums for the artist
    with 2,000 tracks of bench/scale_bench.py, 12% of the page's read). It serves every lookup of
    albums by artist_id, so the index on artist_id alone goes."""
    db.execute("CREATE INDEX IF NOT EXISTS albums_artist_id_year_title_id ON albums "
               "(artist_id, year, title COLLATE NOCASE, id)")
    db.execute("DROP INDEX IF EXISTS idx_albums_artist_id")


MIGRATIONS = {1: _migrate_1, 2: listeners.migrate, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5,
              6: listeners.migrate_6, 7: _migrate_7, 8: _migrate_8, 9: _migrate_9, 10: _migrate_10,
              11: _migrate_11, 12: _migrate_12, 13: _migrate_13,
              14: _migrate_14, 15: _migrate_15}


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema to SCHEMA_VERSION, one numbered step at a time; returns the version found."""
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise RuntimeError(f"catalog schema {found} is newer than this program ({SCHEMA_VERSION})")
    for version in range(found + 1, SCHEMA_VERSION + 1):
        log.info("catalog: migrating schema to version %d", version)
        MIGRATIONS[version](db)
        db["meta"].upsert({"key": "schema_version", "value": str(version)}, pk="key")
    return found


# --- reads -----------------------------------------------------------------------------------

def _columns(sorts: dict[str, str], sort: str | None) -> tuple[tuple[tuple[str, str], ...], bool]:
    """The columns of a sort ((name, " COLLATE NOCASE" or ""), ..., the id last) and whether it is
    descending; InvalidQuery for a sort the table does not have."""
    key = sort or "default"
    desc = key.startswith("-")
    spec = sorts.get(key[1:] if desc else key)
    if spec is None:
        names = ", ".join(k for k in sorts if k != "default")
        raise InvalidQuery(f"sort must be one of {names} (prefix - for descending), not {sort!r}")
    columns = [(part.removesuffix(NOCASE), NOCASE if part.endswith(NOCASE) else "") for part in spec.split(", ")]
    return (*columns, ("id", "")), desc


def _order(sorts: dict[str, str], sort: str | None) -> str:
    columns, desc = _columns(sorts, sort)
    return _order_by(columns, desc)


def _order_by(columns: tuple[tuple[str, str], ...], desc: bool = False) -> str:
    return ", ".join(name + collate + (" DESC" if desc else "") for name, collate in columns)


# --- pages of a whole table in one of its orders, at any depth -----------------------------------

BOOKMARK_EVERY = 256  # rows between two bookmarks: a page reads at most this many more index entries


@dataclasses.dataclass(frozen=True)
class Bookmarks:
    """A table in one order (`columns`, the id last), as its pages are found: how many rows it has
    and the sort key of every BOOKMARK_EVERY-th row from the first. Made by one walk along the
    order's index (`bookmarks`), kept by the Catalog until the catalog changes; with them a page
    at any offset costs a seek and at most BOOKMARK_EVERY index entries more than the page, where
    OFFSET walks every row before it."""
    table: str
    columns: tuple[tuple[str, str], ...]
    count: int
    keys: list[tuple]


def bookmarks(db: sqlite_utils.Database, table: str, columns: tuple[tuple[str, str], ...]) -> Bookmarks:
    """One walk along the order's index, reading rowids only (what a row costs in Python is most of
    the walk's time), then the sort keys of the bookmarked rows."""
    cursor = db.execute(f"SELECT rowid FROM {table} ORDER BY {_order_by(columns)}")
    marked: list[int] = []
    count = 0
    while rows := cursor.fetchmany(16384):
        marked += [r for (r,) in rows[-count % BOOKMARK_EVERY::BOOKMARK_EVERY]]
        count += len(rows)
    keys: dict[int, tuple] = {}
    names = ", ".join(name for name, _ in columns)
    for start in range(0, len(marked), 500):
        chunk = marked[start:start + 500]
        keys.update((row[0], row[1:]) for row in db.execute(
            f"SELECT rowid, {names} FROM {table} WHERE rowid IN ({', '.join('?' * len(chunk))})", chunk))
    return Bookmarks(table, columns, count, [keys[r] for r in marked])


def _from_key(db: sqlite_utils.Database, marks: Bookmarks, key: tuple, count: int) -> list[int]:
    """The rowids of `count` rows in the order, from the row whose sort key is `key` on: the rows
    sharing all but the last column of the key first, then all but two, ..., each block one seek
    along the order's index (a row value comparison would not do: NULLs sort first but compare to
    nothing). The blocks are one query (UNION ALL, which SQLite runs block after block, up to the
    LIMIT), read in one step (media.one_step)."""
    blocks, params = [], []
    order = _order_by(marks.columns)
    for level in range(len(marks.columns) - 1, -1, -1):
        where = []
        for (name, collate), value in zip(marks.columns[:level], key[:level]):
            where.append(f"{name} IS NULL" if value is None else f"{name} = ?{collate}")
            params += [] if value is None else [value]
        (name, collate), value = marks.columns[level], key[level]
        op = ">=" if level == len(marks.columns) - 1 else ">"  # the id: the bookmarked row itself too
        where.append(f"{name} IS NOT NULL" if value is None else f"{name} {op} ?{collate}")
        params += [] if value is None else [value]
        blocks.append(f"SELECT rowid_ FROM (SELECT rowid AS rowid_ FROM {marks.table} WHERE {' AND '.join(where)} "
                      f"ORDER BY {order} LIMIT ?)")
        params.append(count)
    return one_step.column(db, " UNION ALL ".join(blocks) + " LIMIT ?", [*params, count], "rowid_")


def page_rowids(db: sqlite_utils.Database, marks: Bookmarks, desc: bool, limit: int, offset: int) -> list[int]:
    """The rowids of the page at `offset` of the order (backwards when `desc`)."""
    count = min(limit, marks.count - offset)
    if count <= 0:
        return []
    start = marks.count - offset - count if desc else offset  # the page's first row going forwards
    mark = start // BOOKMARK_EVERY
    rowids = _from_key(db, marks, marks.keys[mark], start - mark * BOOKMARK_EVERY + count)
    page = rowids[start - mark * BOOKMARK_EVERY:]
    return page[::-1] if desc else page


def _rows_by_rowid(db: sqlite_utils.Database, table: str, columns: tuple[str, ...], reals: frozenset[str],
                   rowids: list[int]) -> list[dict[str, Any]]:
    """Rows of `table` (their `columns`, `reals` those that hold floats) in the order of `rowids`."""
    if not rowids:
        return []
    by_rowid = {row[0]: dict(zip(columns, row[1:])) for row in one_step.rows(
        db, f"SELECT rowid AS rowid_, {', '.join(columns)} FROM {table} WHERE rowid IN ({', '.join('?' * len(rowids))})",
        rowids, ("rowid_", *columns), reals)}
    return [by_rowid[r] for r in rowids if r in by_rowid]


# The search index (tracks_fts) reads the tracks through the view tracks_search, keyed by
# SEARCH_KEY: a track's rowid (its low 40 bits: track_rowid) under the number of words of its
# searched tags (spaces counted: a cheap stand-in for the index's tokens). The index lists the
# tracks in that order, fewest words first: the order bm25 ranks the tracks a word matches once.
# A text that matches more than RANKED_AT_MOST tracks shows the first of them in it: ranking every
# match grew with the library (a prefix matching 72,000 of 200,000 tracks took 86 ms).
SEARCHED = ("title", "artist", "album", "album_artist", "genre")
RANKED_AT_MOST = 1000
_ROWID_BITS = 40
_ROWID_MASK = (1 << _ROWID_BITS) - 1
_WORDS = " + ".join(f"coalesce(length({c}) - length(replace({c}, ' ', '')) + ({c} != ''), 0)" for c in SEARCHED)
_WORDS_HIGH = f"min({_WORDS}, {(1 << (63 - _ROWID_BITS)) - 1}) << {_ROWID_BITS}"  # indexed: the order without a sort
SEARCH_KEY = f"({_WORDS_HIGH}) | rowid"


def track_rowid(key: str) -> str:
    """SQL: the track's rowid in a search index rowid (`key`, SQL too)."""
    return f"({key} & {(1 << _ROWID_BITS) - 1})"


def fts_query(text: str) -> str | None:
    """User text -> a safe FTS5 query: every word must match, each as a prefix."""
    words = _WORD.findall(text)
    return " ".join(f'"{w}"*' for w in words[:16]) if words else None


def _rows(db: sqlite_utils.Database, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    cursor = db.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def gain(row: dict[str, Any]) -> dict[str, Any]:
    """A track's gain, the one rule of every door (the JSON API's `gain`, Subsonic's replayGain):
    `track` and `album` in dB, `track_peak` and `album_peak` linear, and their `source`. The values
    the file's tags hold ("tags"); for a file with none, the server's EBU R128 measurement
    ("measured") as ReplayGain 2.0 has it: gain = -18 LUFS - loudness; else nothing (None). Tags
    win as a whole: a tagged gain is never mixed with a measured one, whose reference may differ
    (ReplayGain 1's is about -14)."""
    return _gain(*(row.get(column) for column in GAIN_COLUMNS))


def _gain(track: Any, track_peak: Any, album: Any, album_peak: Any, loudness: Any, loudness_peak: Any,
          album_loudness: Any, album_loudness_peak: Any) -> dict[str, Any]:
    """gain() of a row's GAIN_COLUMNS in their order (written out: it runs for every track answered)."""
    if track is not None or track_peak is not None or album is not None or album_peak is not None:
        return {"track": track, "track_peak": track_peak, "album": album, "album_peak": album_peak, "source": "tags"}
    measured = not (loudness is None and loudness_peak is None and album_loudness is None
                    and album_loudness_peak is None)
    return {"track": None if loudness is None else round(REFERENCE_LUFS - loudness, 2), "track_peak": loudness_peak,
            "album": None if album_loudness is None else round(REFERENCE_LUFS - album_loudness, 2),
            "album_peak": album_loudness_peak, "source": "measured" if measured else None}


def tracks_select(alias: str = "") -> str:
    """The columns of TRACK_COLUMNS for a SELECT, of the table named `alias` if given."""
    return ", ".join(alias + "." + c if alias else c for c in TRACK_COLUMNS)


def client_track(row: dict[str, Any]) -> dict[str, Any]:
    """A track row (TRACK_COLUMNS, maybe more) as a client sees it: TRACK_FIELDS and its `gain`."""
    out = {field: row[field] for field in TRACK_FIELDS}
    out["has_art"] = bool(out["has_art"])
    out["gain"] = gain(row)
    return out


_HAS_ART = TRACK_FIELDS.index("has_art")
_ROWID_AND_TRACK = ("rowid_", *TRACK_COLUMNS)


def client_tracks_by_rowid(db: sqlite_utils.Database, rowids: list[int]) -> list[dict[str, Any]]:
    """These tracks (by rowid, in that order) as client_track shows them, made straight from the
    rows' tuples (a page of tracks: this is most of its cost)."""
    if not rowids:
        return []
    found = {}
    fields = len(TRACK_FIELDS)
    for row in one_step.rows(db, f"SELECT rowid AS rowid_, {tracks_select()} FROM tracks WHERE rowid IN "
                                 f"({', '.join('?' * len(rowids))})", rowids, _ROWID_AND_TRACK, TRACK_REALS):
        out = dict(zip(TRACK_FIELDS, row[1:fields + 1]))
        out["has_art"] = bool(row[_HAS_ART + 1])
        out["gain"] = _gain(*row[fields + 1:])
        found[row[0]] = out
    return [found[r] for r in rowids if r in found]


def tracks_where(db: sqlite_utils.Database, where: str, params: Iterable[Any], order: str) -> list[dict[str, Any]]:
    """Tracks (`t`) matching `where`, in `order`, as a client sees them."""
    return [client_track(r) for r in _rows(db, f"SELECT {tracks_select('t')} FROM tracks t WHERE {where} "
                                               f"ORDER BY {order}", params)]


def get_track(db: sqlite_utils.Database, track_id: str) -> dict[str, Any]:
    rows = _rows(db, f"SELECT {tracks_select()} FROM tracks WHERE id = ?", [track_id])
    if not rows:
        raise NotFound(f"no track {track_id!r}")
    return client_track(rows[0])


def _track_filter(q: str | None, artist: str | None, album: str | None) -> tuple[str, list[Any]] | None:
    """The WHERE clause (" WHERE ..." or "") of a track list's filters and its parameters; None
    when nothing can match (a search text with no word in it)."""
    where, params = [], []
    if q:
        match = fts_query(q)
        if match is None:
            return None
        where.append(f"rowid IN (SELECT {track_rowid('rowid')} FROM tracks_fts WHERE tracks_fts MATCH ?)")
        params.append(match)
    if artist:
        where.append("(artist_id = ? OR artist = ? COLLATE NOCASE OR album_artist = ? COLLATE NOCASE)")
        params += [artist, artist, artist]
    if album:
        where.append("(album_id = ? OR album = ? COLLATE NOCASE)")
        params += [album, album]
    return (" WHERE " + " AND ".join(where) if where else ""), params


MATCHES_KEPT = 5000  # a filtered list this long or shorter is kept in order (the Catalog's matches)


def matching_tracks(db: sqlite_utils.Database, q: str | None, artist: str | None, album: str | None,
                    sort: str | None) -> array.array | None:
    """The rowids of the tracks a filtered list holds, in its order; None when there are more than
    MATCHES_KEPT (each page is then found on its own)."""
    found = _track_filter(q, artist, album)
    if found is None:
        return array.array("q")
    clause, params = found
    rowids = array.array("q", (r for (r,) in db.execute(
        f"SELECT rowid FROM tracks{clause} ORDER BY {_order(_TRACK_SORTS, sort)} LIMIT ?",
        [*params, MATCHES_KEPT + 1])))
    return rowids if len(rowids) <= MATCHES_KEPT else None


def list_tracks(db: sqlite_utils.Database, *, q: str | None = None, artist: str | None = None,
                album: str | None = None, sort: str | None = None, limit: int = 50, offset: int = 0,
                marks: Bookmarks | None = None, matches: array.array | None = None) -> tuple[list[dict[str, Any]], int]:
    """A page of tracks as client_track shows them, and how many match (see track_page)."""
    rowids, total = track_page(db, q=q, artist=artist, album=album, sort=sort, limit=limit, offset=offset,
                               marks=marks, matches=matches)
    return client_tracks_by_rowid(db, rowids), total


def track_page(db: sqlite_utils.Database, *, q: str | None = None, artist: str | None = None,
               album: str | None = None, sort: str | None = None, limit: int = 50, offset: int = 0,
               marks: Bookmarks | None = None, matches: array.array | None = None) -> tuple[list[int], int]:
    """The rowids of a page of tracks and how many match. With no filter and the order's `marks`,
    found from the bookmark before it; with the `matches` of a filtered list (matching_tracks), a
    slice of them: either way the page costs the same at any depth."""
    if marks is not None and not (q or artist or album):
        return page_rowids(db, marks, _columns(_TRACK_SORTS, sort)[1], limit, offset), marks.count
    if matches is not None:
        return list(matches[offset:offset + limit]), len(matches)
    found = _track_filter(q, artist, album)
    if found is None:
        return [], 0
    clause, params = found
    total = db.execute(f"SELECT count(*) FROM tracks{clause}", params).fetchone()[0]
    return one_step.column(db, f"SELECT rowid AS rowid_ FROM tracks{clause} ORDER BY {_order(_TRACK_SORTS, sort)} "
                               "LIMIT ? OFFSET ?", [*params, limit, offset], "rowid_"), total


def client_album(row: dict[str, Any]) -> dict[str, Any]:
    row["compilation"] = bool(row["compilation"])
    row["has_cover"] = bool(row["has_cover"])
    return row


def get_album(db: sqlite_utils.Database, album_id: str) -> dict[str, Any]:
    rows = _rows(db, f"SELECT {', '.join(ALBUM_FIELDS)} FROM albums WHERE id = ?", [album_id])
    if not rows:
        raise NotFound(f"no album {album_id!r}")
    album = client_album(rows[0])
    album["tracks"] = tracks_where(db, "t.album_id = ?", [album_id], DISC_ORDER)
    return album


def list_albums(db: sqlite_utils.Database, *, q: str | None = None, artist: str | None = None,
                genres: list[str] | None = None, sort: str | None = None, limit: int = 50,
                offset: int = 0, marks: Bookmarks | None = None) -> tuple[list[dict[str, Any]], int]:
    """A page of albums and how many match. `genres`: the exact spellings of a genre (any of
    them; none: no album), so the index on (genre, id) finds them, case aside
    (media.browse.genre_spellings). With no filter and the order's `marks`: from its bookmark."""
    if marks is not None and not (q or artist) and genres is None:
        rowids = page_rowids(db, marks, _columns(_ALBUM_SORTS, sort)[1], limit, offset)
        return [client_album(r) for r in _rows_by_rowid(db, "albums", ALBUM_FIELDS, ALBUM_REALS, rowids)], marks.count
    where, params = [], []
    if genres is not None:
        if not genres:
            return [], 0
        where.append(f"genre IN ({', '.join('?' * len(genres))})")
        params += genres
    if q:
        where.append("(title LIKE ? ESCAPE '\\' OR artist LIKE ? ESCAPE '\\')")
        params += [_like(q)] * 2
    if artist:
        where.append("(artist_id = ? OR artist = ? COLLATE NOCASE)")
        params += [artist, artist]
    clause = " WHERE " + " AND ".join(where) if where else ""
    total = db.execute(f"SELECT count(*) FROM albums{clause}", params).fetchone()[0]
    items = _rows(db, f"SELECT {', '.join(ALBUM_FIELDS)} FROM albums{clause} "
                      f"ORDER BY {_order(_ALBUM_SORTS, sort)} LIMIT ? OFFSET ?",
                  [*params, limit, offset])
    return [client_album(r) for r in items], total


# The albums of others that an artist plays on (compilations, features), a condition on the albums
# (`a`) with the artist's id as :artist. An album's tracks share its album artist (its id is made
# from it: media.ids), so those albums are the ones of the artist's tracks whose album artist is
# another: two ranges of the tracks' index around the artist's own id (migration 13), and NULL.
APPEARS_ON = ("a.artist_id != :artist AND a.id IN (SELECT album_id FROM tracks WHERE artist_id = :artist "
              "AND album_artist_id < :artist UNION ALL SELECT album_id FROM tracks WHERE artist_id = :artist "
              "AND album_artist_id > :artist UNION ALL SELECT album_id FROM tracks WHERE artist_id = :artist "
              "AND album_artist_id IS NULL)")
# An artist's albums, and those it appears on: conditions on the albums, and their order.
ARTIST_ALBUMS = {"albums": "a.artist_id = :artist", "appears_on": APPEARS_ON}
ARTIST_ALBUM_ORDER = "a.year, a.title COLLATE NOCASE, a.id"


def get_artist(db: sqlite_utils.Database, artist_id: str,
               albums: Callable[[sqlite_utils.Database, str, dict[str, Any], str], list[Any]] | None = None,
               ) -> dict[str, Any]:
    """An artist with its albums and those it appears on, each read by `albums` (the database, a
    condition, its parameters, an order): as client_album shows them unless given."""
    rows = _rows(db, f"SELECT {', '.join(ARTIST_FIELDS)} FROM artists WHERE id = ?", [artist_id])
    if not rows:
        raise NotFound(f"no artist {artist_id!r}")
    artist = rows[0]
    for key, where in ARTIST_ALBUMS.items():
        artist[key] = (albums or _albums_where)(db, where, {"artist": artist_id}, ARTIST_ALBUM_ORDER)
    return artist


def _albums_where(db: sqlite_utils.Database, where: str, params: dict[str, Any], order: str) -> list[dict[str, Any]]:
    """The albums (`a`) matching `where`, in `order`, as a client sees them, read in one step (an
    artist may have hundreds)."""
    return [client_album(dict(zip(ALBUM_FIELDS, row)))
            for row in one_step.rows(db, f"SELECT {', '.join('a.' + f for f in ALBUM_FIELDS)} FROM albums a "
                                         f"WHERE {where} ORDER BY {order}", params, ALBUM_FIELDS, ALBUM_REALS)]


def list_artists(db: sqlite_utils.Database, *, q: str | None = None, sort: str | None = None,
                 limit: int = 50, offset: int = 0, marks: Bookmarks | None = None) -> tuple[list[dict[str, Any]], int]:
    if marks is not None and not q:
        rowids = page_rowids(db, marks, _columns(_ARTIST_SORTS, sort)[1], limit, offset)
        return _rows_by_rowid(db, "artists", ARTIST_FIELDS, frozenset(), rowids), marks.count
    where, params = "", []
    if q:
        where, params = " WHERE name LIKE ? ESCAPE '\\'", [_like(q)]
    total = db.execute(f"SELECT count(*) FROM artists{where}", params).fetchone()[0]
    items = _rows(db, f"SELECT {', '.join(ARTIST_FIELDS)} FROM artists{where} "
                      f"ORDER BY {_order(_ARTIST_SORTS, sort)} LIMIT ? OFFSET ?",
                  [*params, limit, offset])
    return items, total


class ArtistNames:
    """Every artist's name, folded as SQLite's LIKE folds (ASCII letters only): the artists whose
    name holds a text anywhere. `name LIKE '%text%'` read every artist's row: 0.3 ms of a search
    at 200,000 tracks (2,800 artists), growing with them; so did str.find over all the names (50
    us, holding the GIL). A text of three letters or more is looked for only in the names holding
    its rarest three letters (by_trigram); a shorter one in all of them, in one text. Read once
    per catalog generation (Catalog.kept)."""

    _FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

    def __init__(self, db: sqlite_utils.Database) -> None:
        rows = db.execute("SELECT id, name FROM artists WHERE name IS NOT NULL").fetchall()
        self.ids = [artist_id for artist_id, _ in rows]
        # LIKE reads a text up to its first NUL (a tag may hold one): so do these.
        self.names = [name.partition("\0")[0].translate(self._FOLD) for _, name in rows]
        self.by_trigram: dict[str, list[int]] = {}  # three letters -> the names holding them, in order
        for n, name in enumerate(self.names):
            for gram in {name[i:i + 3] for i in range(len(name) - 2)}:
                self.by_trigram.setdefault(gram, []).append(n)
        self.text = "\n".join(self.names)
        self.ends, end = [], -1
        for name in self.names:
            end += len(name) + 1
            self.ends.append(end)  # where each name ends (its separator) in `text`

    def holding(self, q: str, most: int) -> list[str] | None:
        """The ids of the artists whose name holds `q`, as `name LIKE '%q%'` finds them; None if
        more than `most` do."""
        needle, found = q.translate(self._FOLD), []
        if len(needle) >= 3:
            for n in min((self.by_trigram.get(needle[i:i + 3], ()) for i in range(len(needle) - 2)), key=len):
                if needle in self.names[n]:
                    if len(found) == most:
                        return None
                    found.append(self.ids[n])
            return found
        at = 0
        while (at := self.text.find(needle, at)) >= 0:
            n = bisect.bisect_left(self.ends, at)  # the name this match starts in
            if at + len(needle) <= self.ends[n]:  # and ends in (not across a separator)
                if len(found) == most:
                    return None
                found.append(self.ids[n])
                at = self.ends[n] + 1  # one match a name
            else:
                at += 1
        return found


def search_ids(db: sqlite_utils.Database, q: str, limit: int, names: ArtistNames | None = None,
               ranked_at_most: int = RANKED_AT_MOST) -> dict[str, list[Any]]:
    """What a search finds, in the order it is shown: its tracks' rowids (best ranked first, or
    fewest words first for a text matching more than `ranked_at_most`: _best_tracks), its albums'
    and artists' ids (by title, by name; `names`, if given, finds the names holding `q`). The
    ranking is the cost; the rows are read after (Catalog.search_texts; search_rows as dicts)."""
    match = fts_query(q)
    if match is None:
        return {"tracks": [], "albums": [], "artists": []}
    tracks = _best_tracks(db, match, limit, ranked_at_most)
    # Albums and artists match when any of their tracks matches on album or artist words.
    matching = (f"SELECT * FROM (SELECT DISTINCT t.{{}} FROM tracks_fts f JOIN tracks t "
                f"ON t.rowid = {track_rowid('f.rowid')} WHERE tracks_fts MATCH ? LIMIT ?)")
    albums = one_step.column(db, f"SELECT id FROM albums WHERE id IN ({matching.format('album_id')}) "
                              "ORDER BY title COLLATE NOCASE", [f"{{album album_artist}} : {match}", limit], "id")
    by_tracks = [f"{{artist album_artist}} : {match}", limit]
    holding = names.holding(q, 500) if names is not None and "\0" not in q else None
    if holding is not None:
        artists = one_step.column(db, f"SELECT id FROM artists WHERE id IN ({matching.format('artist_id')} UNION ALL "
                                   "SELECT value FROM json_each(?)) ORDER BY name COLLATE NOCASE LIMIT ?",
                               [*by_tracks, one_step.array(holding), limit], "id")
    else:  # a text that many names hold: reading the artists in order costs no more
        artists = one_step.column(db, f"SELECT id FROM artists WHERE id IN ({matching.format('artist_id')}) OR "
                                   "name LIKE ? ESCAPE '\\' ORDER BY name COLLATE NOCASE LIMIT ?",
                               [*by_tracks, _like(q), limit], "id")
    return {"tracks": tracks, "albums": albums, "artists": artists}


def _best_tracks(db: sqlite_utils.Database, match: str, limit: int,
                 ranked_at_most: int = RANKED_AT_MOST) -> list[int]:
    """The rowids of the `limit` tracks best ranked for `match`: by bm25 when it matches at most
    `ranked_at_most` tracks, else the first in the index's order (SEARCH_KEY). The index ranks
    alone: joining each match to its track before the ranking cost a lookup per match (a third
    of a cold search's SQL at 200,000 tracks). The index is rebuilt at each regroup, so during a
    scan it may still hold a removed track: when one of the best is gone, the tracks that are
    there are ranked instead."""
    many = db.execute("SELECT 1 FROM tracks_fts WHERE tracks_fts MATCH ? ORDER BY rowid LIMIT 1 OFFSET ?",
                      [match, ranked_at_most]).fetchone()
    order = "f.rowid" if many else "bm25(tracks_fts), f.rowid"
    # In one step (media.one_step), and whether each of the best is there (20 lookups, not 1,000).
    best = orjson.loads(db.execute(
        f"SELECT json_group_array(json_array(key, EXISTS (SELECT 1 FROM tracks WHERE rowid = {track_rowid('key')}))) "
        f"FROM (SELECT f.rowid AS key FROM tracks_fts f WHERE tracks_fts MATCH ? ORDER BY {order} LIMIT ?)",
        [match, limit]).fetchone()[0])
    ranked = [key & _ROWID_MASK for key, _ in best]
    if all(present for _, present in best):
        return ranked
    return [r for (r,) in db.execute(f"SELECT t.rowid FROM tracks_fts f JOIN tracks t ON t.rowid = "
                                     f"{track_rowid('f.rowid')} WHERE tracks_fts MATCH ? ORDER BY {order} LIMIT ?",
                                     [match, limit])]


def search_rows(db: sqlite_utils.Database, found: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of what search_ids found, as a client sees them, in its order, as Python dicts
    (Catalog.search; the answers' texts are written by SQLite, search_texts, and tests hold the
    two equal)."""
    return {"tracks": client_tracks_by_rowid(db, found["tracks"]),
            "albums": [client_album(r) for r in _rows_by_id(db, "albums", ALBUM_FIELDS, found["albums"])],
            "artists": _rows_by_id(db, "artists", ARTIST_FIELDS, found["artists"])}


def _rows_by_id(db: sqlite_utils.Database, table: str, columns: Iterable[str], ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    by_id = {row["id"]: row for row in _rows(db, f"SELECT {', '.join(columns)} FROM {table} "
                                                 f"WHERE id IN ({', '.join('?' * len(ids))})", ids)}
    return [by_id[i] for i in ids if i in by_id]


def track_file(db: sqlite_utils.Database, track_id: str) -> tuple[str, str]:
    """(relative path, container) of a track's file."""
    row = db.execute("SELECT path, container FROM tracks WHERE id = ?", [track_id]).fetchone()
    if row is None:
        raise NotFound(f"no track {track_id!r}")
    return row[0], row[1]


def track_source(db: sqlite_utils.Database, track_id: str) -> dict[str, Any]:
    """What transcoding needs of a track: its file, that file's identity, and its stream facts."""
    rows = _rows(db, "SELECT path, container, size, mtime_ns, fingerprint, duration, codec, sample_rate, "
                     "bitrate FROM tracks WHERE id = ?", [track_id])
    if not rows:
        raise NotFound(f"no track {track_id!r}")
    return rows[0]


def album_cover(db: sqlite_utils.Database, album_id: str) -> tuple[str, str] | None:
    """Where an album's cover is: ("folder", image path) or ("embedded", audio path), or None."""
    row = db.execute("SELECT cover_path, cover_track_id FROM albums WHERE id = ?", [album_id]).fetchone()
    if row is None:
        raise NotFound(f"no album {album_id!r}")
    if row[0]:
        return "folder", row[0]
    if row[1]:
        found = db.execute("SELECT path FROM tracks WHERE id = ?", [row[1]]).fetchone()
        if found:
            return "embedded", found[0]
    return None


def counts(db: sqlite_utils.Database) -> dict[str, int]:
    return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("tracks", "albums", "artists")}


def file_index(db: sqlite_utils.Database) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns): what the scanner compares the folder with. A track without a
    content fingerprint (scanned before they existed), or read by an older tag reader, shows no
    mtime, so it is read again."""
    return {p: (s, m if f is not None and (v or 0) >= TAGS_VERSION else -1) for p, s, m, f, v in
            db.execute("SELECT path, size, mtime_ns, fingerprint, tags_read FROM tracks")}


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# --- writes (run in the writer thread, inside one transaction) -------------------------------

EFFECTIVE_FIELDS = ("artist", "artist_id", "album", "album_id", "album_artist", "album_artist_id", "dir")
_WRITTEN = (*SCANNED_FIELDS, *EFFECTIVE_FIELDS)
_UPSERT = (
    f"INSERT INTO tracks ({', '.join(_WRITTEN)}, added_at, updated_at) "
    f"VALUES ({', '.join('?' * len(_WRITTEN))}, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{f} = excluded.{f}" for f in _WRITTEN if f != "id")
    + ", updated_at = excluded.updated_at"
)


def effective(t: dict[str, Any], folder_has_many_artists: bool = False) -> tuple[str, ...]:
    """What a track shows, as EFFECTIVE_FIELDS, from its tags, its folder, and whether its
    folder's album has several artists (a compilation without tags)."""
    artist = t["tag_artist"] or UNKNOWN_ARTIST
    folder = t["path"].rpartition("/")[0] or "."  # string work: pathlib is slow per track
    album = t["tag_album"] or (folder.rpartition("/")[2] if folder != "." else UNKNOWN_ALBUM)
    if t["album_artist_tag"]:
        album_artist = t["album_artist_tag"]
    elif t["compilation"] or folder_has_many_artists:
        album_artist = VARIOUS_ARTISTS
    else:
        album_artist = artist
    return (artist, ids.artist_id(artist), album, ids.album_id(album_artist, album), album_artist,
            ids.artist_id(album_artist), folder)


def _scanned_row(track: dict[str, Any]) -> list[Any]:
    row = [track.get(f) for f in SCANNED_FIELDS]
    for i in _SCANNED_FLOATS:
        row[i] = clean_float(row[i])
    return row


def save_scanned(db: sqlite_utils.Database, tracks: list[dict[str, Any]], removed: list[str], *,
                 at: str | None = None, log: bool = True) -> None:
    """Upsert scanned tracks (keeping their added_at) and drop tracks whose files are gone.

    Effective values are set right away from each track's own tags, so the catalog reads well
    while a scan is still running; regroup() later corrects untagged compilations. A replica
    applying the master's change passes its time (`at`) and `log=False` (it copies the row).
    The change log gets the tracks in rows of 500: a row's JSON is written in one call that holds
    the GIL (2,000 tracks: 40 ms the event loop could not run), and a scan saves more at once."""
    now = at or _now()
    # .get: a master of an earlier version sends no fingerprint
    db.conn.executemany(_UPSERT, [_scanned_row(t) + list(effective(t)) + [now, now] for t in tracks])
    for start in range(0, len(tracks) if log else 0, 500):  # in the change log like every write
        listeners.append_change(db, None, "tracks.put", {"tracks": [{f: t.get(f) for f in SCANNED_FIELDS}
                                                                    for t in tracks[start:start + 500]]}, at=now)
    if removed:
        db.conn.executemany("DELETE FROM tracks WHERE path = ?", [(p,) for p in removed])
        if log:
            listeners.append_change(db, None, "tracks.delete", {"paths": removed})


# A first scan's indexes: dropped while an empty catalog fills, built once it is full. A saved track
# then costs its row and not 14 index updates (20 instead of 36-57 us of the writer a track, which
# shares the cores with the tag readers), and each index is built after in one sort (8-10 us a
# track). Readers meanwhile read without them: slower pages while the library first fills.
_DEFERRED_INDEXES = "deferred indexes"  # meta: their definitions, until they are built again


def defer_indexes(db: sqlite_utils.Database) -> int:
    """Drop the tracks' secondary indexes (not the unique ones) if the table is empty, keeping their
    definitions in meta, so that a scan cut short (a crash) finds them built at the next open;
    how many were dropped."""
    if db.execute("SELECT 1 FROM tracks LIMIT 1").fetchone() is not None:
        return 0
    found = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tracks' "
                       "AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%'").fetchall()
    if found:
        waiting = db.execute("SELECT value FROM meta WHERE key = ?", [_DEFERRED_INDEXES]).fetchone()
        definitions = (json.loads(waiting[0]) if waiting else []) + [sql for _, sql in found]
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [_DEFERRED_INDEXES, json.dumps(definitions)])
        for name, _ in found:
            db.execute(f'DROP INDEX "{name}"')
    return len(found)


def build_deferred_indexes(db: sqlite_utils.Database) -> int:
    """Build the indexes defer_indexes dropped, if any wait; how many."""
    if "meta" not in db.table_names():  # a new catalog
        return 0
    waiting = db.execute("SELECT value FROM meta WHERE key = ?", [_DEFERRED_INDEXES]).fetchone()
    if waiting is None:
        return 0
    definitions = json.loads(waiting[0])
    for sql in definitions:
        db.execute(re.sub(r"^CREATE INDEX (?!IF NOT EXISTS)", "CREATE INDEX IF NOT EXISTS ", sql))
    db.execute("DELETE FROM meta WHERE key = ?", [_DEFERRED_INDEXES])
    return len(definitions)


def save_folder_images(db: sqlite_utils.Database, images: dict[str, str]) -> None:
    db.execute("DELETE FROM folder_images")
    db.conn.executemany("INSERT INTO folder_images (dir, path) VALUES (?, ?)", images.items())


def regroup(db: sqlite_utils.Database) -> None:
    """Correct untagged compilations, then rebuild albums, artists and the search index from
    the tracks. Tracks already carry their effective values (set when saved), so only tracks
    without an album artist tag can change here, and the rest is aggregation done by SQLite."""
    _derive_compilations(db)
    _rebuild_albums(db)
    _rebuild_artists(db)  # counts albums too: after them
    _check_search_keys(db)
    db.execute("INSERT INTO tracks_fts(tracks_fts) VALUES('rebuild')")
    listeners.rebuild_album_plays(db)  # a track's album may have changed


def _check_search_keys(db: sqlite_utils.Database) -> None:
    """The search index's keys hold a track's rowid in their low bits (SEARCH_KEY): a rowid out of
    them (SQLite numbers the tracks from 1; only a catalog edited by hand holds another) would
    find another track."""
    low, high = db.execute("SELECT min(rowid), max(rowid) FROM tracks").fetchone()
    if low is not None and (low < 0 or high >= 1 << _ROWID_BITS):
        raise InvalidData("tracks", f"a track's rowid ({low if low < 0 else high}) is outside 0 to "
                                    f"{(1 << _ROWID_BITS) - 1}: the search index cannot hold it")


def _derive_compilations(db: sqlite_utils.Database) -> None:
    """Derive again the effective values of untagged tracks whose folder's verdict (compilation
    or not) changed."""
    # Only folders where it may change: with two track artists at least (SQL's exact distinct is
    # never fewer than casefold's), or showing a compilation now. A library's other folders (most
    # of them) stay in SQLite: turning every untagged track into a dict cost a tenth of a scan's writer.
    untagged = _rows(db, "SELECT id, path, tag_artist, tag_album, album_artist_tag, compilation, "
                         f"{', '.join(EFFECTIVE_FIELDS)} FROM tracks "
                         "WHERE album_artist_tag IS NULL AND compilation = 0 AND dir IN ("
                         "SELECT dir FROM tracks WHERE album_artist_tag IS NULL AND compilation = 0 "
                         "GROUP BY dir HAVING count(DISTINCT artist) > 1 OR max(album_artist = ?))",
                     [VARIOUS_ARTISTS])
    # A folder's album with several track artists and no album artist tag is a compilation.
    # Tracks were saved with their own values, so only those whose folder verdict differs from
    # what they show now need deriving again.
    artists_in: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in untagged:
        artists_in[(r["dir"], r["album"].casefold())].add(r["artist"].casefold())
    changed = []
    for r in untagged:
        compilation = len(artists_in[(r["dir"], r["album"].casefold())]) > 1
        if compilation != (r["album_artist"] == VARIOUS_ARTISTS):
            changed.append((*effective(r, compilation), r["id"]))
    if changed:
        db.conn.executemany(f"UPDATE tracks SET {', '.join(f + ' = ?' for f in EFFECTIVE_FIELDS)} "
                            "WHERE id = ?", changed)


def _rebuild_albums(db: sqlite_utils.Database) -> None:
    """One album row per album_id, aggregated from its tracks, with its folder's image if any."""
    db.execute("DELETE FROM albums")
    db.execute(f"""
        INSERT INTO albums (id, title, artist, artist_id, year, genre, track_count, disc_count,
                            duration, compilation, cover_path, cover_track_id, has_cover, added_at)
        SELECT a.id, a.title, a.artist, a.artist_id, a.year, a.genre, a.track_count, a.disc_count,
               a.duration, a.artist = '{VARIOUS_ARTISTS}', f.path, a.cover_track_id,
               f.path IS NOT NULL OR a.cover_track_id IS NOT NULL, a.added_at
        FROM (SELECT album_id AS id, min(album) AS title, min(album_artist) AS artist,
                     min(album_artist_id) AS artist_id, max(year) AS year, max(genre) AS genre,
                     count(*) AS track_count, count(DISTINCT coalesce(disc_number, 1)) AS disc_count,
                     round(sum(duration), 3) AS duration, min(dir) AS dir,
                     min(CASE WHEN has_art THEN id END) AS cover_track_id, min(added_at) AS added_at
              FROM tracks GROUP BY album_id) a
        LEFT JOIN folder_images f ON f.dir = a.dir""")


def _rebuild_artists(db: sqlite_utils.Database) -> None:
    """One artist row per artist_id, of tracks or of albums, with both counts."""
    db.execute("DELETE FROM artists")
    db.execute("""
        INSERT INTO artists (id, name, album_count, track_count)
        SELECT id, min(name), sum(albums), sum(tracks) FROM (
            SELECT artist_id AS id, artist AS name, 0 AS albums, 1 AS tracks FROM tracks
            UNION ALL
            SELECT artist_id, artist, 1, 0 FROM albums
        ) GROUP BY id""")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- the async face ----------------------------------------------------------------------------

class Memo:
    """Results worked out once for a version of what they read, and kept until it moves on: asked
    again meanwhile, even while it is still being worked out, the same result (one computation per
    key at a time, however many ask). At most `most` results; the least recently used go first."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._items: collections.OrderedDict[Hashable, tuple[Hashable, asyncio.Future]] = collections.OrderedDict()

    async def get(self, key: Hashable, version: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        item = self._items.get(key)
        if item is None or item[0] != version:
            item = (version, asyncio.ensure_future(compute()))
            item[1].add_done_callback(_retrieved)
            self._items[key] = item
            while len(self._items) > self.most:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        try:
            return await asyncio.shield(item[1])  # one asker going away does not stop it for the others
        except Exception:
            if self._items.get(key) is item:  # a failure is not kept
                del self._items[key]
            raise


def _retrieved(future: asyncio.Future) -> None:
    """Its exception is seen (and so not logged as never retrieved) when its askers went away."""
    if not future.cancelled():
        future.exception()


class Catalog:
    """The catalog as the rest of the program sees it: async reads and writes off the event loop.

    `generation` goes up after every write that changed the catalog, so caches keyed on catalog
    facts (open files, covers) know when to drop what they hold.
    """

    def __init__(self, path: Path, synchronous: str = "full") -> None:
        keep_private(path.parent)
        self.db = Database(path, synchronous=synchronous)
        self.db.write_sync(build_deferred_indexes)  # a first scan cut short: before any migration
        found = self.db.write_sync(migrate)
        keep_private(path)  # listening history and token hashes (SQLite gives its -wal/-shm the same mode)
        log.info("catalog %s opened (schema %d -> %d)", path, found, SCHEMA_VERSION)
        self._generation = 0
        self._moved = asyncio.Event()  # set (and replaced) whenever the generation moves
        self._kept = Memo(64)  # per catalog generation
        self._matches = Memo(64)  # filtered track lists (matching_tracks), per generation
        self._searches = Memo(256)  # what search() finds, as ids, per generation
        self._until_written = Memo(32)  # per generation and commit

    def close(self) -> None:
        self.db.close()

    async def kept(self, name: Hashable, fn: Callable[[sqlite_utils.Database], T], beside: bool = False) -> T:
        """fn(db), kept under `name` and worked out again only after the catalog changed (its
        generation moved on): what needs a pass over the library (media.browse.stats, the
        folders, the bookmarks of an order), shared by every door that asks for it. `beside`:
        see Database.read."""
        # The generation before reading: a change during the read makes it stale at once.
        return await self._kept.get(name, self._generation, lambda: self.db.read(fn, beside=beside))

    async def until_written(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """fn(db, *args), kept under `key` until this process commits a write or the catalog
        changes: what costs a pass over one listener's data (all their favorites, say), asked
        again and again between two writes."""
        version = (self._generation, self.db.commits)
        return await self._until_written.get(key, version, lambda: self.db.read(fn, *args))

    async def _bookmarks(self, table: str, sorts: dict[str, str], sort: str | None) -> Bookmarks:
        columns, _ = _columns(sorts, sort)  # both directions share them
        return await self.kept(("order", table, columns), lambda db: bookmarks(db, table, columns))

    async def by_id(self, table: str) -> Bookmarks:
        """The bookmarks of a table (tracks, albums, artists) in the order of its ids."""
        columns = (("id", ""),)
        return await self.kept(("order", table, columns), lambda db: bookmarks(db, table, columns))

    async def track(self, track_id: str) -> dict[str, Any]:
        return await self.db.read(get_track, track_id)

    async def tracks(self, **query: Any) -> tuple[list[dict[str, Any]], int]:
        """A page of tracks (track_page), each as client_track shows it."""
        return await self._track_page(list_tracks, query)

    async def track_texts(self, links: Mapping[str, str], base: str,
                          **query: Any) -> tuple[list[orjson.Fragment], int]:
        """The same page, each track as the JSON text of its object and `links` (media.track_json)."""
        from media import track_json  # (it reads this module's columns)

        def texts(db: sqlite_utils.Database, **page: Any) -> tuple[list[orjson.Fragment], int]:
            rowids, total = track_page(db, **page)
            return track_json.tracks_by_rowid(db, rowids, links, base), total

        return await self._track_page(texts, query)

    async def _track_page(self, reader: Callable[..., T], query: dict[str, Any]) -> T:
        filters = tuple(query.get(name) for name in ("q", "artist", "album"))
        if not any(filters):
            marks = await self._bookmarks("tracks", _TRACK_SORTS, query.get("sort"))
            return await self.db.read(lambda db: reader(db, marks=marks, **query))
        _columns(_TRACK_SORTS, query.get("sort"))  # InvalidQuery before anything is read
        matches = await self._matches.get((*filters, query.get("sort")), self._generation, lambda: self.db.read(
            matching_tracks, *filters, query.get("sort")))
        return await self.db.read(lambda db: reader(db, matches=matches, **query))

    async def album(self, album_id: str) -> dict[str, Any]:
        return await self.db.read(get_album, album_id)

    async def albums(self, **query: Any) -> tuple[list[dict[str, Any]], int]:
        whole = not (query.get("q") or query.get("artist")) and query.get("genres") is None
        marks = await self._bookmarks("albums", _ALBUM_SORTS, query.get("sort")) if whole else None
        return await self.db.read(lambda db: list_albums(db, marks=marks, **query))

    async def artist(self, artist_id: str) -> dict[str, Any]:
        return await self.db.read(get_artist, artist_id)

    async def artist_texts(self, artist_id: str, links: Mapping[str, tuple[str, str | None]],
                           base: str) -> dict[str, Any]:
        """The same artist, each album as the JSON text of its object and `links` (media.album_json)."""
        from media import album_json  # (it reads this module's columns)

        return await self.db.read(get_artist, artist_id, functools.partial(album_json.albums_where, links=links,
                                                                           base=base))

    async def artists(self, **query: Any) -> tuple[list[dict[str, Any]], int]:
        marks = None if query.get("q") else await self._bookmarks("artists", _ARTIST_SORTS, query.get("sort"))
        return await self.db.read(lambda db: list_artists(db, marks=marks, **query))

    async def search(self, q: str, limit: int = 20) -> dict[str, list[dict[str, Any]]]:
        """What a search finds is kept per catalog generation (as ids, a few KiB): a short prefix
        ("l", "lo") ranks every track it matches, 0.1-0.3 s at 200,000 tracks, and every listener
        typing in the search box asks for it. The rows are read each time."""
        return await self.db.read(search_rows, await self._found(q, limit))

    async def search_texts(self, q: str, links: Mapping[str, str], album_links: Mapping[str, tuple[str, str | None]],
                           base: str, limit: int = 20) -> dict[str, list[Any]]:
        """The same, as the JSON text of each object: tracks with `links` (media.track_json),
        albums with `album_links` (media.album_json), artists. A search not kept yet reads its
        rows in the same read as it finds them (one hand-over to a reader thread, not two)."""
        from media import album_json, track_json  # (they read this module's columns)

        def texts(db: sqlite_utils.Database, found: dict[str, list[Any]]) -> dict[str, list[Any]]:
            return {"tracks": track_json.tracks_by_rowid(db, found["tracks"], links, base),
                    "albums": album_json.albums_by_id(db, found["albums"], album_links, base),
                    "artists": album_json.artists_by_id(db, found["artists"])}

        answer: list[dict[str, list[Any]]] = []

        def then(db: sqlite_utils.Database, found: dict[str, list[Any]]) -> None:
            try:
                answer.append(texts(db, found))
            except Exception:  # this asker's own: the search is kept all the same, read again below
                log.debug("catalog: a search's rows, read again", exc_info=True)

        found = await self._found(q, limit, then)
        return answer[0] if answer else await self.db.read(texts, found)

    async def _found(self, q: str, limit: int,
                     then: Callable[[sqlite_utils.Database, dict[str, list[Any]]], None] | None = None
                     ) -> dict[str, list[Any]]:
        """What search_ids finds, kept; `then(db, found)` runs in the same read when this asker is
        the one that finds it (not when it is kept, nor while another asker is finding it)."""
        async def find() -> dict[str, list[Any]]:
            names = await self.kept("artist names", ArtistNames, beside=True)

            def read(db: sqlite_utils.Database) -> dict[str, list[Any]]:
                found = search_ids(db, q, limit, names)
                if then is not None:
                    then(db, found)
                return found

            return await self.db.read(read, beside=True)

        return await self._searches.get((q, limit), self._generation, find)

    async def track_file(self, track_id: str) -> tuple[str, str]:
        return await self.db.read(track_file, track_id)

    async def track_source(self, track_id: str) -> dict[str, Any]:
        return await self.db.read(track_source, track_id)

    async def album_cover(self, album_id: str) -> tuple[str, str] | None:
        return await self.db.read(album_cover, album_id)

    async def counts(self) -> dict[str, int]:
        """Kept per catalog generation: a count walks a whole index (/metrics asks at every scrape)."""
        return dict(await self.kept("counts", counts))

    async def file_index(self) -> dict[str, tuple[int, int]]:
        return await self.db.read(file_index)

    async def defer_indexes(self) -> bool:
        """Before a first scan: True if the catalog was empty and its indexes wait (build_indexes)."""
        return bool(await self.db.write(defer_indexes))

    async def build_indexes(self) -> None:
        await self.db.write(build_deferred_indexes)

    async def save_scan(self, tracks: list[dict[str, Any]], removed: list[str]) -> None:
        await self.db.write(save_scanned, tracks, removed)
        self.generation += 1

    async def finish_scan(self, folder_images: dict[str, str]) -> None:
        def finish(db: sqlite_utils.Database) -> None:
            save_folder_images(db, folder_images)
            regroup(db)
            listeners.append_change(db, None, "catalog.regroup", {"folder_images": folder_images})

        await self.db.write(finish)
        self.generation += 1

    async def add_track(self, record: dict[str, Any], user: dict[str, Any], key: str | None,
                        payload: dict[str, Any]) -> tuple[int, Any]:
        """A track added outside a scan (an upload) by `user`: saved, grouped, in the change log,
        once per idempotency key (`payload` is what identifies the request)."""
        def add(db: sqlite_utils.Database, _user: dict[str, Any], _payload: dict[str, Any]):
            save_scanned(db, [record], [])
            regroup(db)
            return 201, get_track(db, record["id"]), "catalog.regroup", {"folder_images": None}  # None: unchanged

        answer = await self.db.write(listeners.apply, user, "track.upload", payload, key, None, add)
        self.generation += 1
        return answer

    async def edit_track(self, track_id: str, changes: dict[str, Any], user: dict[str, Any],
                         key: str | None) -> tuple[int, Any]:
        """Change a track's catalog metadata (its tags as the catalog knows them, not the file)."""
        def edit(db: sqlite_utils.Database, _user: dict[str, Any], _payload: dict[str, Any]):
            rows = list(db.query(f"SELECT {', '.join(SCANNED_FIELDS)} FROM tracks WHERE id = ?", [track_id]))
            if not rows:
                raise NotFound(f"no track {track_id!r}")
            save_scanned(db, [{**rows[0], **changes}], [])
            regroup(db)
            return 200, get_track(db, track_id), "catalog.regroup", {"folder_images": None}

        answer = await self.db.write(listeners.apply, user, "track.edit", {"id": track_id, **changes}, key, None, edit)
        self.generation += 1
        return answer

    def bump(self) -> None:
        self.generation += 1

    async def replace_file(self, copy: Path) -> None:
        """Make the catalog file at `copy` (in this catalog's folder: a region's snapshot from its
        master, readied by media.replica.prepare_snapshot) this catalog, in place of what it held."""
        await self.db.replace_file(copy)
        self.bump()

    @property
    def generation(self) -> int:
        return self._generation

    @generation.setter
    def generation(self, value: int) -> None:
        self._generation = value
        self._moved.set()
        self._moved = asyncio.Event()

    async def changed(self, since: int, timeout: float | None = None) -> None:
        """Return once the generation is past `since`, or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            while self._generation == since:
                await asyncio.wait_for(self._moved.wait(), timeout)
