"""Catalog reads behind the Subsonic lists and the JSON API's browsing: folders of the real library
tree, genres, random picks, album lists in every order, starred items and paged search.

Each read costs about the page it answers, whatever the size of the library: it walks an index
(schema 7, media.catalog) from where the page starts, seeks rather than scans, and leaves the
listener's stars, ratings and plays to media.annotated for the rows of the page only. What needs a
pass over the library (the genre and year groups, the folders) is made by `stats` and `folder_dirs`
once per catalog change and kept by the caller.
"""

from __future__ import annotations

import array
import calendar
import dataclasses
import itertools
import random
import re
import time
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import sqlite_utils

from media import annotated, one_step, track_json
from media.catalog import (ALBUM_FIELDS, ALBUM_REALS, ARTIST_ALBUM_ORDER, ARTIST_ALBUMS, ARTIST_FIELDS,
                           DISC_ORDER, TRACK_COLUMNS, TRACK_REALS, Bookmarks, client_album, client_track,
                           fts_query, page_rowids, track_rowid, tracks_where)
from media.errors import NotFound
from media.library_paths import is_library_relpath

ROOT_DIR = "."  # the `dir` of a track at the top of the library (media.catalog.effective)
IGNORED_ARTICLES = ("The", "El", "La", "Los", "Las", "Le", "Les")
_LAST = "\U0010ffff"  # sorts after any folder name
_WORD = re.compile(r"\w+", re.UNICODE)


# --- folders ---------------------------------------------------------------------------------

def folder_dirs(db: sqlite_utils.Database) -> set[str]:
    """Every folder of the library that holds music, and every folder above one (not the root)."""
    found: set[str] = set()
    for (folder,) in db.execute("SELECT DISTINCT dir FROM tracks"):
        while folder and folder != ROOT_DIR and folder not in found:
            found.add(folder)
            folder = folder.rpartition("/")[0]
    return found


def subfolders(db: sqlite_utils.Database, folder: str) -> list[str]:
    """The names of a folder's folders, by seeking along the index on `dir`: one seek per
    subfolder (and one per subfolder holding deeper ones), never a pass over the library."""
    prefix = "" if folder == ROOT_DIR else folder + "/"
    end = prefix[:-1] + "0" if prefix else _LAST  # "0" follows "/": past everything under folder
    names: dict[str, None] = {}
    cursor, inclusive = prefix, False
    while True:
        op = ">=" if inclusive else ">"
        row = db.execute(f"SELECT dir FROM tracks WHERE dir {op} ? AND dir < ? ORDER BY dir LIMIT 1",
                         [cursor, end]).fetchone()
        if row is None:
            return sorted(names, key=str.casefold)
        rest = row[0][len(prefix):]
        name = rest.split("/", 1)[0]
        if row[0] != ROOT_DIR:
            names[name] = None
        if rest == name:  # this folder's own tracks: step past them
            cursor, inclusive = row[0], False
        else:  # a folder inside it: skip everything under it
            cursor, inclusive = prefix + name + "0", True


def first_track_under(db: sqlite_utils.Database, folder: str) -> dict[str, Any] | None:
    """A track in this folder or below it (for the folder's cover art)."""
    for sql, args in (("dir = ?", [folder]), ("dir > ? AND dir < ?", [folder + "/", folder + "0"])):
        row = db.execute(f"SELECT id, album_id, album, artist, has_art FROM tracks WHERE {sql} ORDER BY dir LIMIT 1",
                         args).fetchone()
        if row is not None:
            return dict(zip(("id", "album_id", "album", "artist", "has_art"), row))
    return None


def folder_songs(db: sqlite_utils.Database, user_id: str, folder: str) -> list[dict[str, Any]]:
    return annotated.songs(db, user_id, "t.dir = :dir", {"dir": folder}, order=DISC_ORDER)


def folder(db: sqlite_utils.Database, path: str) -> dict[str, Any]:
    """A folder of the library by its path inside it ("" is the library itself), as a client
    browses it: its folders (each with its path) and its own tracks in disc and track order. A
    path that is not a plain relative one, or names no folder holding music, is NotFound. Seeks
    along the index on `dir` (see subfolders), never the files."""
    if path and (not is_library_relpath(path) or first_track_under(db, path) is None):
        raise NotFound(f"no folder {path[:200]!r} in the library")
    at = path or ROOT_DIR
    prefix = path + "/" if path else ""
    parent, _, name = path.rpartition("/")
    return {"path": path, "name": name, "parent": parent if path else None,
            "folders": [{"name": sub, "path": prefix + sub} for sub in subfolders(db, at)],
            "tracks": tracks_where(db, "t.dir = ?", [at], DISC_ORDER)}


def album_dirs(db: sqlite_utils.Database, album_ids: list[str]) -> dict[str, str]:
    """A folder of each album (where its first track is): albums as folders."""
    found = {}
    for album_id in dict.fromkeys(album_ids):
        row = db.execute("SELECT dir FROM tracks WHERE album_id = ? ORDER BY dir LIMIT 1", [album_id]).fetchone()
        if row is not None:
            found[album_id] = row[0]
    return found


def last_modified_ms(db: sqlite_utils.Database) -> int:
    """When the catalog last changed (a track saved, removed, or the albums regrouped), in ms."""
    stamps = [db.execute("SELECT MAX(updated_at) FROM tracks").fetchone()[0],
              db.execute("SELECT at FROM changes WHERE seq = (SELECT MAX(seq) FROM changes "
                         "WHERE op IN ('catalog.regroup', 'tracks.delete'))").fetchone()]
    stamps[1] = stamps[1][0] if stamps[1] else None
    best = 0
    for stamp in stamps:
        try:
            best = max(best, calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) * 1000)
        except (TypeError, ValueError):
            continue
    return best


# --- genre and year groups, random picks -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Group:
    """The tracks of one genre and year: how many, and the span of their rowids (to pick from)."""
    genre: str | None
    year: int | None
    count: int
    low: int
    high: int


@dataclasses.dataclass(frozen=True)
class Stats:
    groups: list[Group]
    genres: list[dict[str, Any]]  # {"value", "songCount", "albumCount"}, by name


def stats(db: sqlite_utils.Database) -> Stats:
    """One pass over the index on (genre, year), and one over albums by genre."""
    groups = [Group(*row) for row in db.execute(
        "SELECT genre, year, count(*), min(rowid), max(rowid) FROM tracks GROUP BY genre, year")]
    songs: dict[str, int] = {}
    for group in groups:
        if group.genre:
            songs[group.genre] = songs.get(group.genre, 0) + group.count
    albums = dict(db.execute("SELECT genre, count(*) FROM albums WHERE genre IS NOT NULL GROUP BY genre").fetchall())
    genres = [{"value": name, "songCount": count, "albumCount": albums.get(name, 0)}
              for name, count in sorted(songs.items(), key=lambda item: item[0].casefold())]
    return Stats(groups, genres)


def genre_spellings(stats: Stats, name: str) -> list[str]:
    """A genre's names as the library spells them, case aside ("rock" finds "Rock" and "ROCK")."""
    wanted = name.casefold()
    return [genre["value"] for genre in stats.genres if genre["value"].casefold() == wanted]


def random_track_rowids(db: sqlite_utils.Database, groups: list[Group], size: int, genre: str | None = None,
                        years: tuple[int, int] | None = None, rng: random.Random | None = None) -> list[int]:
    """Up to `size` different tracks at random, of a genre and years if asked: a group drawn by its
    size, then a seek to a random rowid inside it, never ORDER BY RANDOM() over the table."""
    rng = rng or random.Random()
    eligible = [g for g in groups if (genre is None or g.genre == genre)
                and (years is None or (g.year is not None and years[0] <= g.year <= years[1]))]
    total = sum(g.count for g in eligible)
    if total <= size * 2:  # few enough to take them all and shuffle
        rowids = [r for g in eligible for (r,) in db.execute(
            "SELECT rowid FROM tracks WHERE genre IS ? AND year IS ?", [g.genre, g.year])]
        rng.shuffle(rowids)
        return rowids[:size]
    picked: dict[int, None] = {}
    cumulative = list(itertools.accumulate(g.count for g in eligible))  # once, not per pick
    for _ in range(size * 4):
        if len(picked) >= size:
            break
        group = rng.choices(eligible, cum_weights=cumulative)[0]
        row = db.execute("SELECT rowid FROM tracks WHERE genre IS ? AND year IS ? AND rowid >= ? ORDER BY rowid "
                         "LIMIT 1", [group.genre, group.year, rng.randint(group.low, group.high)]).fetchone()
        if row is not None:
            picked[row[0]] = None
    return list(picked)


def songs_by_rowid(db: sqlite_utils.Database, user_id: str, rowids: list[int]) -> list[dict[str, Any]]:
    """These tracks (by rowid) in the order given."""
    ids = []
    for rowid in rowids:
        row = db.execute("SELECT id FROM tracks WHERE rowid = ?", [rowid]).fetchone()
        if row is not None:
            ids.append(row[0])
    return annotated.songs_by_id(db, user_id, ids)


def random_albums(db: sqlite_utils.Database, user_id: str, size: int,
                  rng: random.Random | None = None) -> list[dict[str, Any]]:
    """Albums at random, with the listener's annotations."""
    return annotated.albums_by_id(db, user_id, random_album_ids(db, size, rng))


def random_album_ids(db: sqlite_utils.Database, size: int, rng: random.Random | None = None) -> list[str]:
    """Album ids at random, by seeks to random rowids (the albums table is rebuilt whole: few gaps)."""
    rng = rng or random.Random()
    # Two subqueries: each is one seek to an end of the table; min() and max() together read it all.
    low, high = db.execute("SELECT (SELECT min(rowid) FROM albums), (SELECT max(rowid) FROM albums)").fetchone()
    if low is None:
        return []
    if high - low < size * 2:
        ids = [r for (r,) in db.execute("SELECT id FROM albums")]
        rng.shuffle(ids)
        return ids[:size]
    picked: dict[str, None] = {}
    for _ in range(size * 4):
        if len(picked) >= size:
            break
        row = db.execute("SELECT id FROM albums WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                         [rng.randint(low, high)]).fetchone()
        if row is not None:
            picked[row[0]] = None
    return list(picked)


def similar_songs(db: sqlite_utils.Database, user_id: str, groups: list[Group], artist_ids: list[str],
                  genre: str | None, exclude: str, count: int, rng: random.Random | None = None) -> list[dict[str, Any]]:
    """Songs like a seed: half of them by its artists, the rest of its genre, at random."""
    rng = rng or random.Random()
    marks = ", ".join("?" * len(artist_ids))
    own = [r for (r,) in db.execute(f"SELECT rowid FROM tracks WHERE artist_id IN ({marks}) AND id != ?",
                                    [*artist_ids, exclude])] if artist_ids else []
    rng.shuffle(own)
    picked = dict.fromkeys(own[:max(count // 2, count - _genre_size(groups, genre))])
    if genre:
        for rowid in random_track_rowids(db, groups, count, genre, rng=rng):
            if len(picked) >= count:
                break
            picked.setdefault(rowid, None)
    found = [song for song in songs_by_rowid(db, user_id, list(picked)) if song["id"] != exclude]
    rng.shuffle(found)
    return found[:count]


def _genre_size(groups: list[Group], genre: str | None) -> int:
    return sum(g.count for g in groups if genre and g.genre == genre)


def top_songs(db: sqlite_utils.Database, user_id: str, name: str, count: int) -> list[dict[str, Any]]:
    """An artist's songs (by name), those this listener played most first, then by album order."""
    ids = [r for (r,) in db.execute("SELECT id FROM artists WHERE name = ? COLLATE NOCASE", [name])]
    if not ids or not count:
        return []
    marks = ", ".join(f":a{i}" for i in range(len(ids)))
    return annotated.songs(db, user_id, f"t.artist_id IN ({marks})", {f"a{i}": v for i, v in enumerate(ids)},
                           "play_count DESC, t.year, t.album COLLATE NOCASE, t.album_id, t.disc_number, "
                           "t.track_number, t.id", count)


# --- album lists -----------------------------------------------------------------------------

# Lists in an order of the albums table: (condition, order), each served by an index of schema 7.
_ALBUM_ORDERS = {
    "newest": ("1", "a.added_at DESC, a.id DESC"),
    "alphabeticalByName": ("1", "a.title COLLATE NOCASE, a.id"),
    "alphabeticalByArtist": ("1", "a.artist COLLATE NOCASE, a.title COLLATE NOCASE, a.id"),
    "byGenre": ("a.genre = :genre", "a.id"),
    "byYear": ("a.year BETWEEN :low AND :high", "a.year, a.id"),
}
# Lists in an order of the listener's own data: the ids of a page (`id`), read in one step
# (media.one_step: a cursor hands the GIL over at every row).
_ALBUM_IDS = {
    "starred": "SELECT f.item_id AS id FROM favorites f JOIN albums a ON a.id = f.item_id WHERE f.user_id = :user "
               "AND f.kind = 'albums' ORDER BY f.created_at DESC, f.item_id LIMIT :limit OFFSET :offset",
    "highest": "SELECT r.item_id AS id FROM ratings r JOIN albums a ON a.id = r.item_id WHERE r.user_id = :user "
               "AND r.kind = 'albums' ORDER BY r.rating DESC, r.updated_at DESC, r.item_id "
               "LIMIT :limit OFFSET :offset",
    # The listener's totals per album (media.listeners), most played first: the page, however much
    # was played (counting the plays per request took 150-290 ms at 44,000 tracks played). The
    # index alone (see before _recent_album_ids).
    "frequent": "SELECT album_id AS id FROM album_plays WHERE user_id = :user ORDER BY plays DESC, album_id "
                "LIMIT :limit OFFSET :offset",
}
ALBUM_LISTS = ("random", "recent", *_ALBUM_ORDERS, *_ALBUM_IDS)


def album_list(db: sqlite_utils.Database, user_id: str, kind: str, size: int, offset: int, genre: str | None = None,
               years: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """A page of albums of one of ALBUM_LISTS (`years` may run backwards: newest first then)."""
    if kind == "random":
        return random_albums(db, user_id, size)
    if kind == "recent":
        return annotated.albums_by_id(db, user_id, _recent_album_ids(db, user_id, size, offset))
    if kind in _ALBUM_IDS:
        page = {"user": user_id, "limit": size, "offset": offset}
        return annotated.albums_by_id(db, user_id, one_step.column(db, _ALBUM_IDS[kind], page, "id"))
    where, order = _ALBUM_ORDERS[kind]
    params: dict[str, Any] = {"genre": genre}
    if years is not None:
        params.update(low=min(years), high=max(years))
        if years[0] > years[1]:
            order = "a.year DESC, a.id DESC"
    return annotated.albums(db, user_id, where, params, order, size, offset)


def played_albums(db: sqlite_utils.Database, user_id: str, kind: str, size: int, offset: int) -> list[dict[str, Any]]:
    """A page of the listener's most played albums ("frequent") or the albums of their latest plays
    ("recent"), as a client sees an album, with its `play_count` and when last `played`."""
    return [{**client_album({field: row[field] for field in ALBUM_FIELDS}), "play_count": row["play_count"],
             "played": row["played"]} for row in album_list(db, user_id, kind, size, offset)]


# The listeners' totals per album are paged on their index alone: joined to the albums, a page
# deep in the list looked up every album before it (0.45 of 1.0 ms at offset 950). After a regroup
# every album they name is in the catalog; between a rescan's save and its regroup (up to 10 s),
# a play of a track moved to a new album names an album not there yet, which a page leaves out
# (annotated.albums_by_id) until the regroup, as it shows the albums' other facts as of then.
def _recent_album_ids(db: sqlite_utils.Database, user_id: str, size: int, offset: int) -> list[str]:
    """The albums of the listener's latest plays, the last played first: their totals per album
    (media.listeners) by when each was last played, a page of the index on it."""
    return one_step.column(db, "SELECT album_id FROM album_plays WHERE user_id = ? ORDER BY last_played DESC, "
                               "album_id LIMIT ? OFFSET ?", [user_id, size, offset], "album_id")


def songs_by_genre(db: sqlite_utils.Database, user_id: str, genre: str, count: int,
                   offset: int) -> list[dict[str, Any]]:
    """A page of a genre's songs, by year, in the order of the index on (genre, year)."""
    return annotated.songs(db, user_id, "t.genre = :genre", {"genre": genre}, "t.year, t.rowid", count, offset)


def starred_ids(db: sqlite_utils.Database, user_id: str, kind: str) -> list[str]:
    """What this listener starred of a kind (tracks, albums, artists), newest first."""
    return [r for (r,) in db.execute("SELECT item_id FROM favorites WHERE user_id = ? AND kind = ? "
                                     "ORDER BY created_at DESC, item_id", [user_id, kind])]


# What a kind of favorite is: its table, the columns a client sees, and how a row is shown.
_STARRED = {"tracks": ("tracks", TRACK_COLUMNS, TRACK_REALS, client_track),
            "albums": ("albums", ALBUM_FIELDS, ALBUM_REALS, client_album),
            "artists": ("artists", ARTIST_FIELDS, frozenset(), dict)}


def starred_entries(db: sqlite_utils.Database, user_id: str, kind: str) -> array.array:
    """What this listener starred of a kind and the catalog still holds, newest first: the rowids of
    their favorites (a pass over what they starred: kept by the caller until something is written)."""
    table = _STARRED[kind][0]
    return array.array("q", (r for (r,) in db.execute(
        f"SELECT f.rowid FROM favorites f CROSS JOIN {table} x ON x.id = f.item_id WHERE f.user_id = ? AND f.kind = ? "
        "ORDER BY f.created_at DESC, f.item_id", [user_id, kind])))


def starred_page(db: sqlite_utils.Database, user_id: str, kind: str, size: int, offset: int,
                 entries: array.array | None = None) -> tuple[list[dict[str, Any]], int]:
    """A page of what this listener starred of a kind, newest first, each as a client sees it with
    when (`starred_at`), and how many there are; items gone from the catalog are left out. From
    the listener's `entries` (starred_entries, made here when not given): one seek per item of
    the page, at any offset."""
    entries = starred_entries(db, user_id, kind) if entries is None else entries
    table, columns, reals, shown = _STARRED[kind]
    page = list(entries[offset:offset + size])
    if not page:
        return [], len(entries)
    rows = {row[0]: row[1:] for row in one_step.rows(
        db, f"SELECT f.rowid AS rowid_, {', '.join('x.' + c for c in columns)}, f.created_at FROM favorites f "
            f"CROSS JOIN {table} x ON x.id = f.item_id WHERE f.rowid IN ({', '.join('?' * len(page))})", page,
        ("rowid_", *columns, "created_at"), reals)}
    return [{**shown(dict(zip(columns, rows[r]))), "starred_at": rows[r][-1]} for r in page if r in rows], len(entries)


def starred_tracks_page(db: sqlite_utils.Database, user_id: str, size: int, offset: int, entries: array.array,
                        links: Mapping[str, str], base: str) -> tuple[list[orjson.Fragment], int]:
    """starred_page of tracks, each written as JSON by SQLite with its `links` (media.track_json)."""
    shown = track_json.track_object(links, "x", {"starred_at": "f.created_at"})
    return track_json.texts_in_order(db, "f.rowid", shown, "favorites f CROSS JOIN tracks x ON x.id = f.item_id "
                                     "WHERE f.rowid IN", base, list(entries[offset:offset + size])), len(entries)


# --- search ----------------------------------------------------------------------------------

def _by_id(db: sqlite_utils.Database, table: str, count: int, offset: int, marks: Bookmarks | None) -> list[str]:
    """A page of a table's ids in order: from the bookmark before it when the `marks` of the table
    by id are given (a client syncing the library pages on to its end), else by OFFSET."""
    if marks is None:
        return [r for (r,) in db.execute(f"SELECT id FROM {table} ORDER BY id LIMIT ? OFFSET ?", [count, offset])]
    rowids = page_rowids(db, marks, False, count, offset)
    found = dict(one_step.rows(db, f"SELECT rowid AS rowid_, id FROM {table} WHERE rowid IN "
                                   f"({', '.join('?' * len(rowids))})", rowids, ("rowid_", "id")))
    return [found[r] for r in rowids if r in found]


def search_songs(db: sqlite_utils.Database, user_id: str, query: str, count: int,
                 offset: int, marks: Bookmarks | None = None) -> list[dict[str, Any]]:
    """Songs whose words start with the query's, in the search index's order (fewest words first:
    media.catalog.SEARCH_KEY), or every song by id when it has none; either order is total, so
    pages do not overlap nor miss one while the catalog stays as it is (a client syncs the library
    with empty-query pages; `marks`: the tracks by id, see _by_id). A regroup may put a new or
    retagged track among the pages already read of a search."""
    if not count:
        return []
    match = fts_query(query)
    if match is None:
        return annotated.songs_by_id(db, user_id, _by_id(db, "tracks", count, offset, marks))
    rowids = [r for (r,) in db.execute(f"SELECT {track_rowid('rowid')} FROM tracks_fts WHERE tracks_fts MATCH ? "
                                       "ORDER BY rowid LIMIT ? OFFSET ?", [match, count, offset])]
    return songs_by_rowid(db, user_id, rowids)


def search_albums(db: sqlite_utils.Database, user_id: str, query: str, count: int,
                  offset: int, marks: Bookmarks | None = None) -> list[dict[str, Any]]:
    """Albums whose title and artist hold the query's words (all albums by id when there are none)."""
    if not count:
        return []
    match = fts_query(query)
    if match is None:
        ids = _by_id(db, "albums", count, offset, marks)
    else:
        rows = db.execute(f"SELECT t.album_id FROM tracks_fts f JOIN tracks t ON t.rowid = {track_rowid('f.rowid')} "
                          "WHERE tracks_fts MATCH ? ORDER BY f.rowid", [f"{{album album_artist}} : ({match})"])
        ids = _distinct_page((album_id for (album_id,) in rows), count, offset)
    return annotated.albums_by_id(db, user_id, ids)


def search_artists(db: sqlite_utils.Database, user_id: str, query: str, count: int,
                   offset: int, marks: Bookmarks | None = None) -> list[dict[str, Any]]:
    """Artists whose name holds the query's words (all artists by id when there are none)."""
    if not count:
        return []
    match = fts_query(query)
    if match is None:
        ids = _by_id(db, "artists", count, offset, marks)
    else:
        words = [_fold(w) for w in _WORD.findall(query)]
        rows = db.execute("SELECT t.artist_id, t.artist, t.album_artist_id, t.album_artist FROM tracks_fts f "
                          f"JOIN tracks t ON t.rowid = {track_rowid('f.rowid')} WHERE tracks_fts MATCH ? ORDER BY f.rowid",
                          [f"{{artist album_artist}} : ({match})"])
        ids = _distinct_page(_named(rows, words), count, offset)
    return annotated.artists_by_id(db, user_id, ids)


def _named(rows, words: list[str]) -> Iterator[str]:
    """The track's artist and album artist whose own name holds every word (not one word each)."""
    for artist_id, artist, album_artist_id, album_artist in rows:
        for item_id, name in ((artist_id, artist), (album_artist_id, album_artist)):
            if item_id and name and _has_words(name, words):
                yield item_id


def _has_words(name: str, words: list[str]) -> bool:
    own = [_fold(w) for w in _WORD.findall(name)]
    return all(any(o.startswith(w) for o in own) for w in words)


def _fold(word: str) -> str:
    """As the search index compares words: case and diacritics aside."""
    return "".join(c for c in unicodedata.normalize("NFKD", word.casefold()) if not unicodedata.combining(c))


def _distinct_page(items: Iterator[str], count: int, offset: int) -> list[str]:
    """The page of the distinct items, read no further than its end."""
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
        if len(seen) >= offset + count:
            break
    return list(seen)[offset:offset + count]


# --- artists ---------------------------------------------------------------------------------

def index_name(name: str) -> str:
    """The index letter an artist (or a folder) is listed under, its leading article aside."""
    key = sort_name(name)
    first = key[:1].upper()
    return first if first.isalpha() else "#"


def sort_name(name: str) -> str:
    for article in IGNORED_ARTICLES:
        if name[:len(article) + 1].casefold() == article.casefold() + " " and len(name) > len(article) + 1:
            return name[len(article) + 1:]
    return name


def similar_artist_ids(db: sqlite_utils.Database, artist_id: str, count: int) -> list[str]:
    """Other artists with albums in the genres of this artist's albums."""
    genres = [g for (g,) in db.execute("SELECT DISTINCT genre FROM albums WHERE artist_id = ? AND genre IS NOT NULL",
                                       [artist_id])]
    if not genres or not count:
        return []
    marks = ", ".join("?" * len(genres))
    rows = db.execute(f"SELECT artist_id FROM albums WHERE genre IN ({marks}) AND artist_id != ? "
                      "ORDER BY genre, id", [*genres, artist_id])
    return _distinct_page((r for (r,) in rows if r), count, 0)


def artist_albums(db: sqlite_utils.Database, user_id: str, artist_id: str) -> list[dict[str, Any]]:
    """An artist's own albums by year, then the albums of others they play on."""
    return [album for where in ARTIST_ALBUMS.values()
            for album in annotated.albums(db, user_id, where, {"artist": artist_id}, ARTIST_ALBUM_ORDER)]


def album_songs(db: sqlite_utils.Database, user_id: str, album_id: str) -> list[dict[str, Any]]:
    return annotated.songs(db, user_id, "t.album_id = :id", {"id": album_id}, DISC_ORDER)
