"""Tracks, albums and artists as one listener sees them: with when they starred each, their rating,
and how often and when they last played it. What the Subsonic API answers with every item.

Each reader takes an SQL condition on the item's own table (aliased `t`, `a` or `r`) so callers
choose what to list; the per-user columns are correlated subqueries that use the indexes on
(user_id, ...) and the play totals (media.listeners), so a page costs the same however much a
user has played.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlite_utils

from media import one_step
from media.catalog import ALBUM_FIELDS, ALBUM_REALS, ARTIST_FIELDS, TRACK_COLUMNS, TRACK_REALS

# A track's own columns (with its gain's), plus where its file is (for `path`, `suffix` and its folder).
SONG_COLUMNS = (*TRACK_COLUMNS, "album_artist_id", "path", "dir", "mbid")


def _rating(kind: str, item: str) -> str:
    """The listener's rating of the item, looked up only if they rated any of its kind (SQLite
    works an uncorrelated subquery out once a statement): most listeners never rate, and the
    lookup was one of the four seeks of each song a page reads."""
    return (f"CASE WHEN (SELECT 1 FROM ratings WHERE user_id = :user AND kind = '{kind}' LIMIT 1) THEN "
            f"(SELECT rating FROM ratings WHERE user_id = :user AND kind = '{kind}' AND item_id = {item}) END")


_SONG = (", ".join(f"t.{c}" for c in SONG_COLUMNS) + ", "
         "(SELECT created_at FROM favorites WHERE user_id = :user AND kind = 'tracks' AND item_id = t.id) AS starred, "
         f"{_rating('tracks', 't.id')} AS user_rating, "
         # The listener's play totals (media.listeners): one row per track played, both figures
         # from one seek (_SONG_FROM).
         "coalesce(p.plays, 0) AS play_count, p.last_played AS played")
_PLAYS_JOIN = "LEFT JOIN play_totals p ON p.user_id = :user AND p.track_id = t.id"  # after the tracks (`t`)
_SONG_FROM = f"tracks t {_PLAYS_JOIN}"
_SONG_NAMES = (*SONG_COLUMNS, "starred", "user_rating", "play_count", "played")  # _SONG's columns
_ALBUM = (", ".join(f"a.{c}" for c in ALBUM_FIELDS) + ", "
          "(SELECT created_at FROM favorites WHERE user_id = :user AND kind = 'albums' AND item_id = a.id) AS starred, "
          f"{_rating('albums', 'a.id')} AS user_rating, "
          # The listener's totals per album (media.listeners keeps them with the plays, and again
          # after every regroup): one seek, where summing the album's tracks' totals took one per
          # track. Both figures at once, "COUNT LAST" (_unpacked).
          "(SELECT p.plays || ' ' || coalesce(p.last_played, '') FROM album_plays p "
          "WHERE p.user_id = :user AND p.album_id = a.id) AS plays_packed")
_ALBUM_NAMES = (*ALBUM_FIELDS, "starred", "user_rating", "plays_packed")  # _ALBUM's columns
_ARTIST = (", ".join(f"r.{c}" for c in ARTIST_FIELDS) + ", "
           "(SELECT created_at FROM favorites WHERE user_id = :user AND kind = 'artists' AND item_id = r.id) AS starred, "
           f"{_rating('artists', 'r.id')} AS user_rating")


def songs(db: sqlite_utils.Database, user_id: str, where: str = "1", params: dict[str, Any] | None = None,
          order: str = "t.rowid", limit: int = -1, offset: int = 0, source: str = "tracks t") -> list[dict[str, Any]]:
    """Tracks (`t`, from `source`) matching `where` (named parameters in `params`), in `order`,
    read in one step (media.one_step)."""
    rows = one_step.rows(db, f"SELECT {_SONG} FROM {source} {_PLAYS_JOIN} WHERE {where} ORDER BY {order} "
                             "LIMIT :limit OFFSET :offset",
                         {**(params or {}), "user": user_id, "limit": limit, "offset": offset}, _SONG_NAMES,
                         TRACK_REALS)
    return [dict(zip(_SONG_NAMES, row)) for row in rows]


def albums(db: sqlite_utils.Database, user_id: str, where: str = "1", params: dict[str, Any] | None = None,
           order: str = "a.rowid", limit: int = -1, offset: int = 0, source: str = "albums a") -> list[dict[str, Any]]:
    """Albums (`a`, from `source`) matching `where`, in `order`, read in one step (media.one_step:
    a cursor hands the GIL over at every row of a list)."""
    rows = one_step.rows(db, f"SELECT {_ALBUM} FROM {source} WHERE {where} ORDER BY {order} LIMIT :limit OFFSET :offset",
                         {**(params or {}), "user": user_id, "limit": limit, "offset": offset}, _ALBUM_NAMES,
                         ALBUM_REALS)
    return [_unpacked(dict(zip(_ALBUM_NAMES, row))) for row in rows]


def _unpacked(row: dict[str, Any]) -> dict[str, Any]:
    """An album row with its play_count and when last `played`, from the packed pair."""
    packed = row.pop("plays_packed")
    count, _, last = packed.partition(" ") if packed else ("0", "", None)
    row["play_count"], row["played"] = int(count), last or None
    return row


def artists(db: sqlite_utils.Database, user_id: str, where: str = "1", params: dict[str, Any] | None = None,
            order: str = "r.rowid", limit: int = -1, offset: int = 0, source: str = "artists r") -> list[dict[str, Any]]:
    """Artists (`r`, from `source`) matching `where`, in `order`."""
    return _select(db, f"SELECT {_ARTIST} FROM {source} WHERE {where} ORDER BY {order} LIMIT :limit OFFSET :offset",
                   user_id, params, limit, offset)


# The rows of a list of ids, in its order (the *_by_id readers): the ids as a JSON array, each row
# found by its id, sorted by its place in the array. (A list of `?` holds at most SQLite's limit of
# them, and the rows were put in order again in Python: a third of a page's cost in the reader.)
def _ids(ids: Iterable[str]) -> str:
    """The ids as one JSON array; an id holding a NUL is left out, as missing: json_each ends a
    text at its first NUL (an id asked as "ID\\0more" found ID), and no catalog id holds one."""
    return one_step.array(i for i in ids if "\0" not in i)


def songs_by_id(db: sqlite_utils.Database, user_id: str, track_ids: Iterable[str]) -> list[dict[str, Any]]:
    """These tracks in the order given (a playlist's, a queue's; an id twice, twice); ids no longer
    in the catalog are left out."""
    return songs(db, user_id, params={"ids": _ids(track_ids)}, order="j.key",
                 source="json_each(:ids) j JOIN tracks t ON t.id = j.value")


def _select(db: sqlite_utils.Database, sql: str, user_id: str, params: dict[str, Any] | None, limit: int,
            offset: int) -> list[dict[str, Any]]:
    cursor = db.execute(sql, {**(params or {}), "user": user_id, "limit": limit, "offset": offset})
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def albums_by_id(db: sqlite_utils.Database, user_id: str, album_ids: Iterable[str]) -> list[dict[str, Any]]:
    """These albums in the order given; ids not in the catalog are left out."""
    return albums(db, user_id, params={"ids": _ids(album_ids)}, order="j.key",
                  source="json_each(:ids) j JOIN albums a ON a.id = j.value")


def artists_by_id(db: sqlite_utils.Database, user_id: str, artist_ids: Iterable[str]) -> list[dict[str, Any]]:
    """These artists in the order given; ids not in the catalog are left out."""
    return artists(db, user_id, params={"ids": _ids(artist_ids)}, order="j.key",
                   source="json_each(:ids) j JOIN artists r ON r.id = j.value")
