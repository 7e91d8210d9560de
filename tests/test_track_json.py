"""Tracks written as JSON by SQLite (media.track_json) are the objects media.catalog.client_track
and the door's links make, key for key, in order, value for value (floats to the last bit); and
the catalog keeps every float at 15 significant digits at most, which that rests on."""

from __future__ import annotations

import json
import math
import random
import sqlite3

import orjson
import pytest
import sqlite_utils

from media import browse, catalog, loudness, track_json
from streamer.api.catalog import ALBUM_LINKS, TRACK_LINKS, album_out, track_out
from tests.conftest import catalog_of

BASE = "http://host:8080/under 'quotes'"
TEXTS = ["plain", "Beyoncé — 東京 🎵", 'quote " backslash \\ slash /', "tab\tnew\nline\x01\x1f\x7f", "", "\u2028"]


def _track(n: int, rng: random.Random) -> dict:
    gains = rng.random() < 0.3
    return {"id": f"{n:016x}", "path": f"d{n % 7}/{n}.flac", "size": rng.randrange(10 ** 10), "mtime_ns": n,
            "title": rng.choice(TEXTS), "tag_artist": rng.choice(TEXTS + [None]), "tag_album": rng.choice(TEXTS),
            "album_artist_tag": rng.choice([None, "Various"]), "compilation": rng.choice([0, 1]),
            "track_number": rng.choice([None, 0, 7, 2 ** 31]), "disc_number": rng.choice([None, 1]),
            "year": rng.choice([None, 1999]), "genre": rng.choice(TEXTS + [None]),
            "duration": rng.choice([round(rng.uniform(0.001, 40000), 3), 0.1 + 0.2, 1e-7, 123456.789]),
            "codec": "flac", "container": "flac", "bitrate": rng.choice([None, 900]), "sample_rate": 44100,
            "channels": rng.choice([None, 2]), "has_art": rng.choice([0, 1, None]), "fingerprint": "f", "tags_read": 2,
            # A tag's text may carry any number of digits (media.tags reads it with float()).
            "rg_track_gain": rng.uniform(-20, 20) if gains else None,
            "rg_track_peak": rng.choice([None, rng.uniform(0, 1.5), 3e-5]) if gains else None,
            "rg_album_gain": rng.choice([None, round(rng.uniform(-20, 20), 2)]) if gains else None,
            "rg_album_peak": None}


@pytest.fixture
def db(tmp_path) -> sqlite_utils.Database:
    rng = random.Random(22)
    tracks = [_track(n, rng) for n in range(600)]
    database = catalog_of(tmp_path / "catalog.db", tracks)
    measured = [{"id": t["id"], "loudness": rng.choice([round(rng.uniform(-40, -3), 2), -70.0, math.inf]),
                 "loudness_peak": rng.choice([round(rng.uniform(0, 2), 3), None, -math.inf]),
                 "album_loudness": rng.choice([None, round(rng.uniform(-30, -5), 2)]),
                 "album_loudness_peak": rng.choice([None, 0.999])}
                for t in tracks if rng.random() < 0.5]
    loudness.save(database, measured, log_change=False)
    return database


def _pairs(text: bytes) -> str:
    """The JSON text with each object as its (key, value) pairs in order, written again by Python
    (so true is not 1, 1 is not 1.0 and -0.0 is not 0.0; a number's spelling aside)."""
    return json.dumps(json.loads(text, object_pairs_hook=list))


def test_every_track_is_the_object_python_makes(db):
    rowids = [r for (r,) in db.execute("SELECT rowid FROM tracks ORDER BY random()")]
    assert len(rowids) == 600
    written = orjson.dumps(track_json.tracks_by_rowid(db, rowids + [10 ** 9], TRACK_LINKS, BASE))
    made = orjson.dumps([track_out(t, BASE) for t in catalog.client_tracks_by_rowid(db, rowids)])
    assert _pairs(written) == _pairs(made)
    kinds = {json.dumps(t["gain"]["source"]) for t in json.loads(made)}
    assert kinds == {'"tags"', '"measured"', "null"}  # every branch of the gain was compared


def test_floats_read_back_to_the_last_bit(db):
    written = json.loads(orjson.dumps(track_json.tracks_by_rowid(
        db, [r for (r,) in db.execute("SELECT rowid FROM tracks")], TRACK_LINKS, BASE)))
    kept = dict(db.execute("SELECT id, duration FROM tracks"))
    assert all(t["duration"] == kept[t["id"]] and type(t["duration"]) is float for t in written)
    assert any(t["duration"] == 0.3 for t in written)  # 0.1 + 0.2 given (17 digits): kept at 15


def test_the_catalog_keeps_floats_at_15_digits(db):
    reals = [c for c, kind in db["tracks"].columns_dict.items() if kind is float]
    values = [v for row in db.execute(f"SELECT {', '.join(reals)} FROM tracks") for v in row if v is not None]
    assert values and all(math.isinf(v) or float(f"{v:.15g}") == v for v in values)
    assert any(math.isinf(v) for v in values)


def test_the_migration_keeps_older_floats_at_15_digits(tmp_path):
    database = sqlite_utils.Database(sqlite3.connect(tmp_path / "old.db"))
    catalog.migrate(database)
    catalog.save_scanned(database, [_track(1, random.Random(1))], [])
    database.execute("UPDATE tracks SET duration = ?, rg_track_gain = ?, loudness = ?", [0.1 + 0.2, -7.123456789012345678,
                                                                                         math.inf])
    database.execute("UPDATE meta SET value = '10' WHERE key = 'schema_version'")
    assert catalog.migrate(database) == 10
    assert database.execute("SELECT duration, rg_track_gain, loudness FROM tracks").fetchone() == (
        0.3, float("-7.12345678901235"), math.inf)


async def test_search_answers_are_the_objects_python_makes(tmp_path):
    found = catalog.Catalog(tmp_path / "catalog.db")
    try:
        rng = random.Random(9)
        await found.db.write(lambda db: catalog.save_scanned(db, [_track(n, rng) for n in range(300)], []))
        await found.db.write(catalog.regroup)
        for q in ("plain", "quote", "Beyoncé", "東京", "nothing-matches"):
            texts, rows = await found.search_texts(q, TRACK_LINKS, ALBUM_LINKS, BASE), await found.search(q)
            assert _pairs(orjson.dumps(texts["albums"])) == _pairs(orjson.dumps([album_out(a, BASE)
                                                                                  for a in rows["albums"]]))
            assert orjson.loads(orjson.dumps(texts["artists"])) == rows["artists"]
            assert (len(texts["albums"]) > 0) == (len(texts["artists"]) > 0) == (q != "nothing-matches")
            assert _pairs(orjson.dumps(texts["tracks"])) == _pairs(orjson.dumps([track_out(t, BASE)
                                                                                  for t in rows["tracks"]]))
            assert (len(texts["tracks"]) > 0) == (q != "nothing-matches")
    finally:
        found.close()


def test_links_repeat_the_id_and_may_not_hide_a_field(db):
    links = {"twice": "/a/{id}/b/{id}.m3u8", "none": "/static"}
    (written,) = track_json.tracks_by_rowid(db, [1], links, BASE)
    track = json.loads(orjson.dumps(written))
    assert track["twice"] == f"{BASE}/a/{track['id']}/b/{track['id']}.m3u8" and track["none"] == BASE + "/static"
    assert json.loads(orjson.dumps(track_json.tracks_by_rowid(db, [1], {}, BASE)))[0]["id"] == track["id"]
    with pytest.raises(ValueError):
        track_json.track_object({"title": "/x/{id}"})


def test_no_track_no_text(db):
    assert track_json.tracks_by_rowid(db, [], TRACK_LINKS, BASE) == []
    assert track_json.tracks_by_rowid(db, [10 ** 9], TRACK_LINKS, BASE) == []


def test_favorites_pages_are_the_objects_python_makes(db):
    rng = random.Random(5)
    starred = rng.sample([r for (r,) in db.execute("SELECT id FROM tracks")], 120)
    db.conn.executemany("INSERT INTO favorites (user_id, kind, item_id, created_at) VALUES ('u', 'tracks', ?, ?)",
                        [(track_id, f"2026-11-{1 + n % 28:02d}T10:{n % 60:02d}:00Z") for n, track_id in enumerate(starred)])
    entries = browse.starred_entries(db, "u", "tracks")
    for offset in (0, 50, 100, 200):
        written, total = browse.starred_tracks_page(db, "u", 50, offset, entries, TRACK_LINKS, BASE)
        made, made_total = browse.starred_page(db, "u", "tracks", 50, offset, entries)
        assert total == made_total == 120
        assert _pairs(orjson.dumps(written)) == _pairs(orjson.dumps([track_out(t, BASE) for t in made]))
        assert len(written) == max(0, min(50, 120 - offset))
