"""Search ranks its tracks with the index alone (media.catalog._best_tracks): the same tracks, in
the same order, as ranking only the tracks that are there; also while a scan has removed tracks
that the index, rebuilt at the next regroup, still holds. A text that matches more tracks than it
ranks shows the first in the index's order: fewest words first, then as added. It finds artists
by a text anywhere in their name in the names kept in one text (media.catalog.ArtistNames), as
LIKE finds them."""

from __future__ import annotations

import random

import pytest
import sqlite_utils

from media import catalog
from media.catalog import fts_query, track_rowid
from media.errors import InvalidData
from tests.conftest import catalog_of

WORDS = [f"{a}{b}{c}" for a in ("ra", "ro", "lu") for b in ("n", "s", "ka") for c in ("", "a", "ne", "mira")]


def _track(n: int, rng: random.Random) -> dict:
    def words(most: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, most)))
    return {"id": f"{n:016x}", "path": f"d{n % 13}/{n}.flac", "size": 1, "mtime_ns": n, "title": words(4),
            "tag_artist": words(2), "tag_album": words(3), "album_artist_tag": None, "compilation": 0,
            "track_number": n % 12, "disc_number": 1, "year": 2000, "genre": rng.choice(WORDS),
            "duration": 60.0, "codec": "flac", "container": "flac", "bitrate": 900, "sample_rate": 44100,
            "channels": 2, "has_art": 0, "fingerprint": "f", "tags_read": 2}


@pytest.fixture
def db(tmp_path) -> sqlite_utils.Database:
    rng = random.Random(15)
    return catalog_of(tmp_path / "catalog.db", [_track(n, rng) for n in range(1500)])


def _joined(db: sqlite_utils.Database, q: str, limit: int) -> list[int]:
    """The ranking of the tracks that are there: each match joined to its track, then ranked (ties
    in the index's order)."""
    return [r for (r,) in db.execute(f"SELECT t.rowid FROM tracks_fts f JOIN tracks t ON t.rowid = "
                                     f"{track_rowid('f.rowid')} WHERE tracks_fts MATCH ? "
                                     "ORDER BY bm25(tracks_fts), f.rowid LIMIT ?", [fts_query(q), limit])]


def _words(row: dict) -> int:
    return sum(len(row[c].split(" ")) for c in catalog.SEARCHED if row[c])


def _fewest_words_first(db: sqlite_utils.Database, q: str) -> list[int]:
    """The tracks `q` matches, fewest words in their searched tags first, then as added."""
    matched = {r for (r,) in db.execute(f"SELECT {track_rowid('rowid')} FROM tracks_fts WHERE tracks_fts MATCH ?",
                                        [fts_query(q)])}
    rows = db.query(f"SELECT rowid, {', '.join(catalog.SEARCHED)} FROM tracks")
    return [row["rowid"] for row in sorted((r for r in rows if r["rowid"] in matched),
                                           key=lambda r: (_words(r), r["rowid"]))]


QUERIES = ["r", "ra", "ran", "rosmira", "lu ka", "luka ra", "ro s", "nothing", "ranemira lu", "rosmira lukane",
           "lukamira rana rona"]


@pytest.mark.parametrize("limit", [1, 20, 100])
def test_the_index_ranks_as_the_tracks_there_are_ranked(db, limit):
    for q in QUERIES:
        assert catalog.search_ids(db, q, limit, ranked_at_most=10**9)["tracks"] == _joined(db, q, limit), q


@pytest.mark.parametrize("most", [0, 50, 400])
def test_a_text_matching_more_than_are_ranked_shows_the_fewest_words_first(db, most):
    for q in QUERIES:
        matched = _fewest_words_first(db, q)
        found = catalog.search_ids(db, q, 20, ranked_at_most=most)["tracks"]
        assert found == (matched[:20] if len(matched) > most else _joined(db, q, 20)), q
    assert any(len(_fewest_words_first(db, q)) > 400 for q in QUERIES)
    assert any(0 < len(_fewest_words_first(db, q)) <= 50 for q in QUERIES)


def test_tracks_removed_before_the_regroup_are_not_found(db):
    best = _joined(db, "ra", 20)
    gone = [row["path"] for row in db.query(f"SELECT path FROM tracks WHERE rowid IN ({', '.join(map(str, best[::3]))})")]
    catalog.save_scanned(db, [], gone)  # a scan's save; its regroup (which rebuilds the index) comes later
    stale = [r for (r,) in db.execute(f"SELECT {track_rowid('rowid')} FROM tracks_fts WHERE tracks_fts MATCH ? "
                                      "ORDER BY bm25(tracks_fts), rowid LIMIT 20", [fts_query("ra")])]
    assert set(best[::3]) <= set(stale)  # the index alone would still find them
    for q in QUERIES:
        found = catalog.search_ids(db, q, 20, ranked_at_most=10**9)["tracks"]
        assert found == _joined(db, q, 20), q
        assert not set(found) & set(best[::3])
    assert len(catalog.search_ids(db, "ra", 20)["tracks"]) == 20


NAMES = ["The Beatles", "BEYONCÉ", "Beyoncé", "Émile", "émile", "50% off", "a_b", "back\\slash", "two\nlines",
         "Ünïcode ß", "beat it", "", "x", "before\0after nul"]
NEEDLES = ["beat", "BEAT", "eat", "é", "É", "émile", "ÉMILE", "%", "50%", "_", "a_b", "\\", "\n", "o\nl", "s\nb",
           "ß", "SS", "x", "les", "The Beatles", "the beatles ", "n", "e", "nothing", "s\nB", "after", "fore"]


def test_artist_names_hold_a_text_as_like_finds_it(db):
    db.execute("DELETE FROM artists")
    db.conn.executemany("INSERT INTO artists (id, name, album_count, track_count) VALUES (?, ?, 0, 0)",
                        [(f"a{n}", name) for n, name in enumerate(NAMES)] + [("null", None)])
    names = catalog.ArtistNames(db)
    for needle in NEEDLES:
        like = {r for (r,) in db.execute("SELECT id FROM artists WHERE name LIKE ? ESCAPE '\\'",
                                         [catalog._like(needle)])}
        assert set(names.holding(needle, 99)) == like, repr(needle)
        assert len(names.holding(needle, 99)) == len(like)  # each name once
    assert set(names.holding("é", 99)) == {"a2", "a4"}  # LIKE folds ASCII letters only
    assert names.holding("o\nl", 99) == ["a8"] and names.holding("s\nb", 99) == []  # never across two names


def test_artist_names_hold_random_texts_as_like_finds_them_short_or_long_and_up_to_most(db):
    rng = random.Random(4)
    letters = "abAB é_%"
    made = ["".join(rng.choice(letters) for _ in range(rng.randint(0, 9))) for _ in range(300)]
    db.execute("DELETE FROM artists")
    db.conn.executemany("INSERT INTO artists (id, name, album_count, track_count) VALUES (?, ?, 0, 0)",
                        [(f"a{n}", name) for n, name in enumerate(made)])
    names = catalog.ArtistNames(db)
    for needle in ["".join(rng.choice(letters) for _ in range(rng.randint(1, 5))) for _ in range(400)]:
        like = sorted((r for (r,) in db.execute("SELECT id FROM artists WHERE name LIKE ? ESCAPE '\\'",
                                                [catalog._like(needle)])), key=names.ids.index)
        assert names.holding(needle, 300) == like, repr(needle)  # in the names' order, each once
        assert names.holding(needle, len(like)) == like
        assert len(like) == 0 or names.holding(needle, len(like) - 1) is None


@pytest.mark.parametrize("q", ["Beat", "é", "50%", "a_b", "ra", "lu ka", "o l"])
def test_search_finds_the_same_artists_with_the_names_kept(db, q):
    db.conn.executemany("INSERT INTO artists (id, name, album_count, track_count) VALUES (?, ?, 0, 0)",
                        [(f"a{n}", name) for n, name in enumerate(NAMES)])
    found = catalog.search_ids(db, q, 20, catalog.ArtistNames(db))
    assert found == catalog.search_ids(db, q, 20)
    if q in ("Beat", "é", "50%"):  # names no track's words hold: found by the kept names alone
        assert found["artists"]


def test_a_text_many_names_hold_is_left_to_like(db):
    db.execute("DELETE FROM artists")
    db.conn.executemany("INSERT INTO artists (id, name, album_count, track_count) VALUES (?, ?, 0, 0)",
                        [(f"a{n}", f"name {n}") for n in range(30)])
    names = catalog.ArtistNames(db)
    assert len(names.holding("name", 30)) == 30 and names.holding("name", 29) is None
    assert names.holding("name 2", 29) == ["a2", "a20", "a21", "a22", "a23", "a24", "a25", "a26", "a27", "a28", "a29"]


def test_a_catalog_of_schema_13_gets_the_search_index_in_fewest_words_order(db):
    best = catalog.search_ids(db, "ra", 20)["tracks"]
    db.execute("DROP TABLE tracks_fts")  # as schema 13 had it: the tracks in rowid order
    db.execute("DROP VIEW tracks_search")
    db["tracks"].enable_fts(list(catalog.SEARCHED), create_triggers=False, tokenize="unicode61 remove_diacritics 2")
    db.execute("INSERT INTO tracks_fts(tracks_fts) VALUES('rebuild')")
    db.execute("UPDATE meta SET value = '13' WHERE key = 'schema_version'")
    assert catalog.migrate(db) == 13
    assert catalog.search_ids(db, "ra", 20)["tracks"] == best == _fewest_words_first(db, "ra")[:20]
    keys = [r for (r,) in db.execute("SELECT rowid FROM tracks_fts WHERE tracks_fts MATCH ?", [fts_query("r")])]
    assert len(keys) == 1500 and keys == sorted(keys)


def test_the_index_is_rebuilt_from_the_tracks_in_its_order_without_a_sort(db):
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN SELECT * FROM tracks_search")]
    assert plan == ["SCAN tracks USING INDEX idx_tracks_search_words"]
    keys = [r for (r,) in db.execute("SELECT search_key FROM tracks_search")]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 1500


@pytest.mark.parametrize("rowid", [1 << 40, -1])
def test_a_track_rowid_the_index_keys_cannot_hold_is_refused_by_the_regroup(db, rowid):
    db.execute("UPDATE tracks SET rowid = ? WHERE rowid = 7", [rowid])
    with pytest.raises(InvalidData, match=r"rowid \(" + str(rowid)):
        catalog.regroup(db)
    db.execute("UPDATE tracks SET rowid = 7 WHERE rowid = ?", [rowid])
    catalog.regroup(db)  # and takes the catalog again once it is back in range
