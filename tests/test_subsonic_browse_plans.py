"""The Subsonic lists cost their page at any library size: the query plans SQLite makes for them
(with no ANALYZE, as a node runs) seek along indexes instead of reading whole tables or all of a
listener's plays. Measured at 200,000 tracks and 50,000 plays when written (see the issue note)."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from media import annotated, catalog


@pytest.fixture
def db(tmp_path) -> sqlite_utils.Database:
    database = sqlite_utils.Database(sqlite3.connect(tmp_path / "catalog.db"))
    catalog.migrate(database)
    return database


def plan(db: sqlite_utils.Database, sql: str, params=None) -> list[str]:
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params or {"user": "u", "artist": "r"})]


PAGES = {
    "folders": ("SELECT dir FROM tracks WHERE dir > 'a' AND dir < 'b' ORDER BY dir LIMIT 1", "tracks_dir"),
    "random": ("SELECT rowid FROM tracks WHERE genre IS 'x' AND year IS 1 AND rowid >= 5 ORDER BY rowid LIMIT 1",
               "tracks_genre_year"),
    "by genre": ("SELECT id FROM tracks t WHERE t.genre = 'x' ORDER BY t.year, t.rowid LIMIT 5", "tracks_genre_year"),
    "newest": ("SELECT id FROM albums a ORDER BY a.added_at DESC, a.id DESC LIMIT 5", "albums_added_at_id"),
    "by name": ("SELECT id FROM albums a ORDER BY a.title COLLATE NOCASE, a.id LIMIT 5", "albums_title_id"),
    "by artist": ("SELECT id FROM albums a ORDER BY a.artist COLLATE NOCASE, a.title COLLATE NOCASE, a.id LIMIT 5",
                  "albums_artist_title_id"),
    "by year": ("SELECT id FROM albums a WHERE a.year BETWEEN 1 AND 2 ORDER BY a.year DESC, a.id DESC LIMIT 5",
                "albums_year_id"),
    "album genre": ("SELECT id FROM albums a WHERE a.genre = 'x' ORDER BY a.id LIMIT 5", "albums_genre_id"),
    "an artist's albums": (f"SELECT a.id, a.title, a.duration FROM albums a WHERE {catalog.ARTIST_ALBUMS['albums']} "
                           f"ORDER BY {catalog.ARTIST_ALBUM_ORDER}", "albums_artist_id_year_title_id"),
    "sync": ("SELECT id FROM tracks ORDER BY id LIMIT 500 OFFSET 1000", "sqlite_autoindex_tracks_1"),
    "modified": ("SELECT MAX(updated_at) FROM tracks", "tracks_updated_at"),
    "recent": (("SELECT x.album_id FROM plays p CROSS JOIN tracks x ON x.id = p.track_id WHERE p.user_id = 'u' "
                "ORDER BY p.played_at DESC"), "idx_plays_user_id_played_at"),
}


@pytest.mark.parametrize("name", PAGES)
def test_each_list_walks_an_index_in_its_order(db, name):
    sql, index = PAGES[name]
    steps = plan(db, sql)
    assert any(index in step for step in steps), steps
    assert not any("TEMP B-TREE" in step for step in steps), steps  # no sort of everything that matched


def test_a_listener_s_columns_seek_per_item_not_per_play(db):
    """Each album's plays are one seek by (user_id, album_id), each song's by (user_id, track_id)."""
    album_steps = plan(db, f"SELECT {annotated._ALBUM} FROM albums a LIMIT 5")
    song_steps = plan(db, f"SELECT {annotated._SONG} FROM {annotated._SONG_FROM} LIMIT 5")
    assert any(step.startswith("SEARCH p USING PRIMARY KEY (user_id=? AND album_id=?)") for step in album_steps), \
        album_steps
    assert not any("tracks" in step or "SCAN p" in step for step in album_steps), album_steps
    plays = [step for step in song_steps if step.startswith("SEARCH p ")]  # the play totals, joined
    assert plays and all("PRIMARY KEY (user_id=? AND track_id=?)" in step for step in plays), song_steps


def test_ratings_are_looked_up_only_for_a_listener_who_rated_that_kind(db):
    db.execute("INSERT INTO artists (id, name, album_count, track_count) VALUES ('r1', 'One', 0, 0), "
               "('r2', 'Two', 0, 0)")
    db.execute("INSERT INTO ratings (user_id, kind, item_id, rating, updated_at) VALUES "
               "('u', 'artists', 'r2', 4, 'now'), ('u', 'albums', 'r1', 5, 'now')")
    found = {r["id"]: r["user_rating"] for r in annotated.artists(db, "u")}
    assert found == {"r1": None, "r2": 4}  # an album's rating with the same id is not the artist's
    assert {r["user_rating"] for r in annotated.artists(db, "someone else")} == {None}
    steps = plan(db, f"SELECT {annotated._SONG} FROM {annotated._SONG_FROM} LIMIT 5")
    assert any(step.startswith("SCALAR SUBQUERY") for step in steps), steps  # once a statement


def test_items_by_id_come_in_the_order_asked_however_many(db):
    """A playlist or a starred list of any length: each item in its place (twice if asked twice),
    ids not in the catalog left out (one holding a NUL too); one JSON array holds more ids than
    SQLite takes `?` marks."""
    for n in range(2100):
        db.execute("INSERT OR IGNORE INTO albums (id, title) VALUES (?, ?)", [f"al{n}", f"T{n}"])
        db.execute("INSERT OR IGNORE INTO artists (id, name, album_count, track_count) VALUES (?, ?, 0, 0)",
                   [f"ar{n}", f"N{n}"])
    wanted = [f"al{n}" for n in range(2099, -1, -1)] + ["al7", "gone", "al7", "al7\0more"]
    assert [a["id"] for a in annotated.albums_by_id(db, "u", wanted)] == wanted[:-3] + ["al7"]
    artists = ["ar5", "gone", "ar3", "ar5"]
    assert [a["id"] for a in annotated.artists_by_id(db, "u", artists)] == ["ar5", "ar3", "ar5"]
    assert annotated.albums_by_id(db, "u", []) == [] == annotated.songs_by_id(db, "u", ["gone"])
    # json_each ends a text at a NUL: "ar5\0more" is not ar5
    assert annotated.artists_by_id(db, "u", ["ar5\0more", "ar5\0"]) == []
