"""Albums written as JSON by SQLite (media.album_json) are the objects media.catalog.client_album
and the door's links make, key for key, in order, value for value: on every artist's page."""

from __future__ import annotations

import functools
import json
import random

import orjson
import pytest

from media import album_json, catalog
from streamer.api.catalog import ALBUM_LINKS, album_out
from tests.conftest import catalog_of
from tests.test_track_json import BASE, _pairs, _track


@pytest.fixture
def db(tmp_path):
    """600 varied tracks (tests/test_track_json.py): compilations, covers or none, odd texts."""
    rng = random.Random(22)
    return catalog_of(tmp_path / "catalog.db", [_track(n, rng) for n in range(600)])


def _made(db, artist_id: str) -> dict:
    artist = catalog.get_artist(db, artist_id)
    for key in catalog.ARTIST_ALBUMS:
        artist[key] = [album_out(a, BASE) for a in artist[key]]
    return artist


def _written(db, artist_id: str) -> dict:
    return catalog.get_artist(db, artist_id, functools.partial(album_json.albums_where, links=ALBUM_LINKS,
                                                                base=BASE))


def test_every_artist_page_is_the_one_python_makes(db):
    db.execute("UPDATE albums SET year = NULL, genre = NULL WHERE rowid % 5 = 0")
    db.execute("UPDATE albums SET duration = NULL WHERE rowid % 7 = 0")
    artists = [r for (r,) in db.execute("SELECT id FROM artists")]
    assert len(artists) > 5
    seen = []
    for artist_id in artists:
        made = orjson.dumps(_made(db, artist_id))
        assert _pairs(orjson.dumps(_written(db, artist_id))) == _pairs(made), artist_id
        seen.append(json.loads(made))
    albums = [a for artist in seen for a in artist["albums"]]
    # Every branch was compared: flags both ways, covers with and without, absent values.
    assert {(a["compilation"], a["has_cover"]) for a in albums} == {(c, h) for c in (True, False) for h in (True, False)}
    assert {a["cover_url"] is None for a in albums} == {True, False}
    assert any(a["year"] is None for a in albums) and any(a["duration"] is None for a in albums)
    assert any(type(a["duration"]) is float for a in albums)
    assert any(artist["appears_on"] for artist in seen)


def test_an_artist_without_albums_and_no_artist(db):
    db.execute("INSERT INTO artists (id, name, album_count, track_count) VALUES ('lonely', 'Nobody', 0, 0)")
    assert _written(db, "lonely") == {"id": "lonely", "name": "Nobody", "album_count": 0, "track_count": 0,
                                      "albums": [], "appears_on": []}
    with pytest.raises(catalog.NotFound):
        _written(db, "no such artist")


def test_links_may_not_hide_a_field_nor_depend_on_a_missing_one():
    with pytest.raises(ValueError):
        album_json.album_object({"title": ("/x/{id}", None)})
    with pytest.raises(ValueError):
        album_json.album_object({"cover": ("/x/{id}", "no_such_field")})


def test_appears_on_reads_the_index_around_the_artist_and_finds_what_the_tracks_say(db):
    plain = "a.artist_id != :artist AND a.id IN (SELECT album_id FROM tracks WHERE artist_id = :artist)"
    found = {}
    for (artist_id,) in db.execute("SELECT id FROM artists").fetchall():
        ids = [db.execute(f"SELECT a.id FROM albums a WHERE {where} ORDER BY a.id", {"artist": artist_id}).fetchall()
               for where in (plain, catalog.APPEARS_ON)]
        assert ids[0] == ids[1], artist_id
        found[artist_id] = ids[0]
    assert any(found.values())
    plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN SELECT a.id FROM albums a WHERE "
                                                 f"{catalog.APPEARS_ON}", {"artist": "x"}))
    assert "album_artist_id<?" in plan and "album_artist_id>?" in plan
