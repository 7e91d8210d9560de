"""Pages at any depth (issue 15): a whole list's pages found from bookmarks of its order, a filtered
list's from its matches kept in order, favorites from the listener's kept entries, Subsonic's
empty-query sync by id; each is the page OFFSET gives, and follows the catalog and the listener's
writes. And the listener's play totals, which the most played lists and every item's play count
read, equal a count of the plays."""

from __future__ import annotations

import random

import pytest
import sqlite_utils

from media import browse, catalog, listeners
from streamer.http.keys import CATALOG
from tests.conftest import catalog_of, make_user

GENRES = ["Rock", "rock", "Jazz", None]


def _track(n: int, rng: random.Random) -> dict:
    """A track whose sort keys repeat (titles differing in case only, albums shared, no year or no
    track number now and then), so the orders have ties and NULLs to get right."""
    album = f"Album {rng.randrange(6)}"
    return {"id": f"{n:016x}", "path": f"A{n % 5}/{album}/{n}.mp3", "size": 1000 + n, "mtime_ns": n,
            "title": rng.choice(["song", "Song", "SONG", "ballad", "Zed"]), "tag_artist": rng.choice(["Ann", "ann", "Bo"]),
            "tag_album": album, "album_artist_tag": None, "compilation": 0,
            "track_number": rng.choice([None, 1, 2, 3]), "disc_number": rng.choice([None, 1, 2]),
            "year": rng.choice([None, 1999, 2001]), "genre": rng.choice(GENRES), "duration": rng.choice([60.0, 61.5]),
            "codec": "mp3", "container": "mp3", "bitrate": 128, "sample_rate": 44100, "channels": 2, "has_art": 0,
            "fingerprint": "f", "tags_read": 2}


@pytest.fixture
def db(tmp_path) -> sqlite_utils.Database:
    rng = random.Random(15)
    return catalog_of(tmp_path / "catalog.db", [_track(n, rng) for n in range(70)])


ORDERS = [("tracks", catalog._TRACK_SORTS, catalog.list_tracks, catalog.TRACK_FIELDS),
          ("albums", catalog._ALBUM_SORTS, catalog.list_albums, catalog.ALBUM_FIELDS),
          ("artists", catalog._ARTIST_SORTS, catalog.list_artists, catalog.ARTIST_FIELDS)]


@pytest.mark.parametrize("table, sorts, lister, fields", ORDERS, ids=[o[0] for o in ORDERS])
def test_every_page_from_bookmarks_is_the_page_offset_gives(db, monkeypatch, table, sorts, lister, fields):
    monkeypatch.setattr(catalog, "BOOKMARK_EVERY", 4)  # many bookmarks, pages across them
    for sort in [s for key in sorts if key != "default" for s in (key, "-" + key)] + [None]:
        marks = catalog.bookmarks(db, table, catalog._columns(sorts, sort)[0])
        whole, total = lister(db, sort=sort, limit=500, offset=0)
        assert marks.count == total == len(whole)
        for limit in (1, 3, 7):
            for offset in range(total + 2):
                page, count = lister(db, sort=sort, limit=limit, offset=offset, marks=marks)
                assert count == total
                assert [r["id"] for r in page] == [r["id"] for r in whole[offset:offset + limit]], (sort, limit, offset)
                assert page == whole[offset:offset + limit]


def test_an_order_ends_with_the_id_so_descending_is_ascending_backwards(db):
    for sort in ("title", "year", "added", "track"):
        up = [t["id"] for t in catalog.list_tracks(db, sort=sort, limit=500)[0]]
        down = [t["id"] for t in catalog.list_tracks(db, sort="-" + sort, limit=500)[0]]
        assert down == up[::-1]


def test_a_filtered_list_from_its_matches_is_the_page_offset_gives(db):
    for query in ({"artist": "ann"}, {"album": "Album 2"}, {"q": "song"}, {"artist": "Bo", "q": "zed"}):
        for sort in (None, "title", "-year"):
            matches = catalog.matching_tracks(db, query.get("q"), query.get("artist"), query.get("album"), sort)
            whole, total = catalog.list_tracks(db, sort=sort, limit=500, **query)
            assert len(matches) == total > 0
            for offset in range(total + 1):
                page, count = catalog.list_tracks(db, sort=sort, limit=3, offset=offset, matches=matches, **query)
                assert count == total and page == whole[offset:offset + 3]


def test_too_many_matches_are_not_kept(db, monkeypatch):
    monkeypatch.setattr(catalog, "MATCHES_KEPT", 5)
    assert catalog.matching_tracks(db, None, "ann", None, None) is None
    assert list(catalog.matching_tracks(db, "nosuchword", None, None, None)) == []


async def _get(client, url: str, headers=None) -> dict:
    resp = await client.get(url, headers=headers or {})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def _all_pages(client, url: str, limit: int = 2) -> tuple[list[str], set[int]]:
    ids, totals, offset = [], set(), 0
    while True:
        body = await _get(client, f"{url}&limit={limit}&offset={offset}")
        totals.add(body["total"])
        ids += [item["id"] for item in body["items"]]
        if len(body["items"]) < limit:
            return ids, totals
        offset += limit


async def test_pages_follow_the_catalog_as_it_changes(demo_server):
    """The bookmarks are kept per catalog generation: an edit shows in the very next page."""
    whole = (await _get(demo_server, "/api/v1/tracks?sort=title&limit=500"))["items"]
    paged, totals = await _all_pages(demo_server, "/api/v1/tracks?sort=title")
    assert paged == [t["id"] for t in whole] and totals == {len(whole)}
    app = demo_server.server.app
    admin = await make_user(app, "ada", "admin")
    last = whole[-1]
    resp = await demo_server.patch(f"/api/v1/tracks/{last['id']}", json={"title": "!first now"}, headers=admin)
    assert resp.status == 200, await resp.text()
    assert (await _get(demo_server, "/api/v1/tracks?sort=title&limit=1"))["items"][0]["id"] == last["id"]
    assert (await _get(demo_server, "/api/v1/tracks?sort=-title&limit=1&offset=0"))["items"][0]["id"] == whole[-2]["id"]
    artist = whole[0]["artist"]
    by_artist, _ = await _all_pages(demo_server, f"/api/v1/tracks?artist={artist}&sort=-title")
    assert by_artist == [t["id"] for t in (await _get(demo_server, f"/api/v1/tracks?artist={artist}&sort=-title"
                                                                    "&limit=500"))["items"]]


async def test_favorites_pages_follow_the_listener_s_writes(demo_server):
    app = demo_server.server.app
    ann = await make_user(app, "ann")
    tracks = (await _get(demo_server, "/api/v1/tracks?limit=500"))["items"]
    for track in tracks[:5]:
        assert (await demo_server.put(f"/api/v1/favorites/tracks/{track['id']}", headers=ann)).status == 204
    first = await _get(demo_server, "/api/v1/favorites/tracks?limit=2&offset=1", ann)  # kept now
    assert first["total"] == 5 and len(first["items"]) == 2
    assert (await demo_server.delete(f"/api/v1/favorites/tracks/{tracks[0]['id']}", headers=ann)).status == 204
    again = await _get(demo_server, "/api/v1/favorites/tracks?limit=10", ann)
    assert again["total"] == 4 and tracks[0]["id"] not in [t["id"] for t in again["items"]]
    assert len((await _get(demo_server, "/api/v1/favorites", ann))["tracks"]) == 4


async def test_play_totals_count_every_play_once(demo_server):
    """Totals per track and per album equal a count of the plays, after a batch, a repeat of its
    rows (a region applying a change twice), a track's album changing, and a user removed."""
    app = demo_server.server.app
    db = app[CATALOG].db
    ann = await make_user(app, "ann")
    tracks = (await _get(demo_server, "/api/v1/tracks?limit=500"))["items"]
    plays = [{"track_id": tracks[n % 4]["id"], "played_at": f"2026-02-0{1 + n % 7}T00:00:00Z", "seconds": 9.0}
             for n in range(25)]
    assert (await demo_server.post("/api/v1/plays", json={"plays": plays}, headers=ann)).status == 201
    rows = await db.read(lambda d: [dict(r) for r in d.query("SELECT * FROM plays")])
    await db.write(listeners.insert_plays, rows[:10])  # already kept: nothing counted twice
    assert await db.read(_totals_differ) == (0, 0)
    user = rows[0]["user_id"]  # a play inserted some other way: the trigger counts it
    await db.write(lambda d: d.execute("INSERT INTO plays VALUES ('raw', ?, ?, '2026-03-01T00:00:00Z', 1.0)",
                                       [user, tracks[5]["id"]]))
    assert await db.read(_totals_differ) == (0, 0)
    await db.write(lambda d: d.execute("DELETE FROM plays WHERE id = 'raw'"))
    await db.write(lambda d: d.execute("DELETE FROM play_totals WHERE track_id = ?", [tracks[5]["id"]]))
    await db.write(listeners.rebuild_album_plays)
    counts = (await _get(demo_server, "/api/v1/plays/counts", ann))["items"]
    assert [c["plays"] for c in counts] == [7, 6, 6, 6] and sum(c["plays"] for c in counts) == 25
    admin = await make_user(app, "ada", "admin")
    resp = await demo_server.patch(f"/api/v1/tracks/{tracks[0]['id']}", json={"album": "Elsewhere"}, headers=admin)
    assert resp.status == 200, await resp.text()
    assert await db.read(_totals_differ) == (0, 0)  # regroup counted the albums again
    frequent = (await _get(demo_server, "/api/v1/plays/albums?order=frequent", ann))["items"]
    assert [a["play_count"] for a in frequent] == sorted((a["play_count"] for a in frequent), reverse=True)
    await db.write(listeners.remove_user, "ann")
    assert await db.read(lambda d: d.execute("SELECT count(*) FROM play_totals").fetchone()[0]) == 0


def _totals_differ(db) -> tuple[int, int]:
    per_track = db.execute("SELECT user_id, track_id, count(*), max(played_at) FROM plays GROUP BY 1, 2 EXCEPT "
                           "SELECT user_id, track_id, plays, last_played FROM play_totals").fetchall()
    per_album = db.execute("SELECT p.user_id, t.album_id, count(*), max(p.played_at) FROM plays p JOIN tracks t "
                           "ON t.id = p.track_id GROUP BY 1, 2 EXCEPT SELECT user_id, album_id, plays, last_played "
                           "FROM album_plays").fetchall()
    return len(per_track), len(per_album)


def test_subsonic_sync_pages_by_id_are_the_pages_offset_gives(db, monkeypatch):
    monkeypatch.setattr(catalog, "BOOKMARK_EVERY", 4)
    for table, search in (("tracks", browse.search_songs), ("albums", browse.search_albums),
                          ("artists", browse.search_artists)):
        marks = catalog.bookmarks(db, table, (("id", ""),))
        whole = [r["id"] for r in search(db, "u", "", 500, 0)]
        for offset in range(len(whole) + 1):
            assert [r["id"] for r in search(db, "u", "", 3, offset, marks)] == whole[offset:offset + 3]
