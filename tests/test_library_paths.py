"""Every path a node opens stays inside its library: catalog rows from a master's feed, uploads
named by their tags, covers and pulls all go through media.library_paths."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from media import OutsideLibrary, is_library_relpath, library_file, replica
from media.catalog import SCANNED_FIELDS
from streamer import create_app
from streamer.api.admin import _part
from streamer.http.keys import CATALOG
from streamer.delivery.originals import holds
from tests.conftest import encode, make_user, settings_for, wait_for_scan


def test_library_file_refuses_every_way_out(tmp_path):
    library = tmp_path / "music"
    (library / "a").mkdir(parents=True)
    (library / "a" / "song.mp3").write_bytes(b"x")
    (tmp_path / "secret.key").write_bytes(b"k")
    (library / "a" / "out").symlink_to(tmp_path)  # a symlink that leads out
    (library / "a" / "alias.mp3").symlink_to(library / "a" / "song.mp3")  # one that stays in
    assert library_file(library, "a/song.mp3") == os.path.realpath(library / "a" / "song.mp3")
    assert library_file(library, "a/alias.mp3") == os.path.realpath(library / "a" / "song.mp3")
    for bad in (str(tmp_path / "secret.key"), "../secret.key", "a/../../secret.key", "a/./song.mp3",
                "a//song.mp3", "", "a/out/secret.key", "a/song.mp3\x00", None, 3):
        with pytest.raises(OutsideLibrary):
            library_file(library, bad)
    assert not is_library_relpath("/etc/passwd") and is_library_relpath("Artist/Album/01 Song.flac")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(". /\\\x00\nab\u00e9"), max_size=12) | st.text(),
       st.text(), st.text())
@example(". ..", ". ..", "..")
def test_upload_names_from_any_tags_stay_inside_the_library(artist, album, title):
    relative = f"{_part(artist, 'Unknown Artist')}/{_part(album, 'Unknown Album')}/{_part(title, 'Untitled', 180)}.mp3"
    assert is_library_relpath(relative), relative
    assert library_file("/srv/music", relative).startswith("/srv/music/")


def test_parts_made_of_dots_and_spaces_are_not_parent_folders():
    assert _part(". ..", "Unknown") == "Unknown" and _part(" .. ", "Unknown") == "Unknown"
    assert _part("..hidden..", "x") == "hidden" and _part("Vol. 2", "x") == "Vol. 2"


def _row(track_id: str, path: str, **facts) -> dict:
    row = {name: None for name in SCANNED_FIELDS}
    row.update(id=track_id, path=path, size=32, mtime_ns=1, title="t", compilation=0, duration=1.0,
               codec="mp3", container="mp3", has_art=0, **facts)
    return row


async def test_replicated_rows_with_paths_out_are_refused_and_logged(tmp_path, caplog):
    from media import Catalog

    catalog = Catalog(tmp_path / "data" / "catalog.db")
    try:
        changes = [{"seq": 1, "at": "2026-01-01T00:00:00Z", "user_id": None, "op": "tracks.put",
                    "data": {"tracks": [_row("a" * 16, str(tmp_path / "data" / "secret.key")),
                                        _row("b" * 16, "../data/secret.key"),
                                        _row("c" * 16, "Artist/Album/song.mp3", fingerprint="f" * 24)]}},
                   {"seq": 2, "at": "2026-01-01T00:00:00Z", "user_id": None, "op": "catalog.regroup",
                    "data": {"folder_images": {"Artist/Album": "../../data/secret.key"}}}]
        with caplog.at_level(logging.WARNING, logger="media.replica"):
            assert await catalog.db.write(replica.apply_changes, changes) == 2
        paths = await catalog.db.read(lambda db: [r[0] for r in db.execute("SELECT path FROM tracks")])
        assert paths == ["Artist/Album/song.mp3"]
        assert await catalog.db.read(lambda db: db.execute("SELECT count(*) FROM folder_images").fetchone()[0]) == 0
        assert sum("refused a track" in r.message for r in caplog.records) == 2
        assert any("refused a folder image" in r.message for r in caplog.records)
    finally:
        catalog.close()


async def test_a_catalog_row_naming_a_file_outside_is_never_served(aiohttp_client, tmp_path):
    library = tmp_path / "music"
    library.mkdir()
    secret = tmp_path / "data" / "secret.key"
    secret.parent.mkdir()
    secret.write_bytes(b"s" * 32)
    app = create_app(settings_for(library, tmp_path / "data", scan_on_start=False))
    client = await aiohttp_client(app)
    from media import catalog as catalog_module

    rows = [_row("d" * 16, str(secret)), _row("e" * 16, "../data/secret.key")]
    await app[CATALOG].db.write(lambda db: catalog_module.save_scanned(db, rows, [], log=False))
    for track_id in ("d" * 16, "e" * 16):
        for url in (f"/stream/{track_id}", f"/stream/{track_id}?format=mp3", f"/hls/{track_id}/master.m3u8"):
            resp = await client.get(url)
            assert resp.status == 404, (url, resp.status)
            assert b"s" * 32 not in await resp.read()


def test_a_file_without_a_fingerprint_is_never_taken_on_trust(tmp_path):
    song = tmp_path / "song.mp3"
    song.write_bytes(b"x" * 32)
    assert not holds(str(song), {"size": 32, "fingerprint": None})


async def test_an_upload_tagged_to_climb_out_is_stored_inside(aiohttp_client, demo_library, tmp_path, ffmpeg):
    library = tmp_path / "lib" / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    ada = await make_user(app, "ada", "admin")
    song = encode(ffmpeg, tmp_path / "up.mp3", metadata={"artist": ". ..", "album": ". ..", "title": ".."})
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", song.read_bytes(), filename="up.mp3", content_type="audio/mpeg")
    resp = await client.post("/api/v1/tracks", data=form, headers=ada)
    assert resp.status == 201, await resp.text()
    stored = [p for p in library.rglob("*.mp3") if p.read_bytes() == song.read_bytes()]
    assert len(stored) == 1 and stored[0].parent.parent.parent == library
    assert not list((tmp_path / "lib").glob("*.mp3")) and [p.name for p in tmp_path.glob("*.mp3")] == ["up.mp3"]


async def test_a_snapshot_with_paths_out_keeps_none_of_them(tmp_path, caplog):
    from media import Catalog, catalog as catalog_module

    catalog = Catalog(tmp_path / "catalog.db")
    try:
        rows = [_row("a" * 16, "/etc/passwd"), _row("b" * 16, "x/../../y.mp3"), _row("c" * 16, "A/B/song.mp3")]
        await catalog.db.write(lambda db: catalog_module.save_scanned(db, rows, [], log=False))
        await catalog.db.write(lambda db: catalog_module.save_folder_images(db, {"A/B": "/etc/shadow"}))
        with caplog.at_level(logging.WARNING, logger="media.replica"):
            assert await catalog.db.write(replica.refuse_outside_paths) == 3
        paths = await catalog.db.read(lambda db: [r[0] for r in db.execute("SELECT path FROM tracks")])
        assert paths == ["A/B/song.mp3"]
    finally:
        catalog.close()


async def test_a_snapshot_is_checked_before_it_takes_the_catalogs_place(tmp_path, caplog):
    """What a region does with the file its master sent: paths out dropped, the sequence the
    master named checked, before the file replaces the region's catalog."""
    from media import Catalog, catalog as catalog_module

    master = Catalog(tmp_path / "master.db")
    try:
        rows = [_row("a" * 16, "/etc/passwd"), _row("c" * 16, "A/B/song.mp3")]
        await master.db.write(lambda db: catalog_module.save_scanned(db, rows, [], log=False))
    finally:
        master.close()
    sequence = replica.snapshot(tmp_path / "master.db", tmp_path / "copy.db")
    with pytest.raises(replica.BadSnapshot, match=f"up to {sequence}, its master said {sequence + 1}"):
        replica.prepare_snapshot(tmp_path / "copy.db", sequence + 1)
    with caplog.at_level(logging.WARNING, logger="media.replica"):
        replica.prepare_snapshot(tmp_path / "copy.db", sequence)
    region = Catalog(tmp_path / "region" / "catalog.db")
    try:
        (tmp_path / "copy.db").rename(tmp_path / "region" / "taken.db")
        await region.replace_file(tmp_path / "region" / "taken.db")
        paths = await region.db.read(lambda db: [r[0] for r in db.execute("SELECT path FROM tracks")])
        assert paths == ["A/B/song.mp3"] and "/etc/passwd" in caplog.text
    finally:
        region.close()
    (tmp_path / "garbage.db").write_bytes(b"not a catalog at all" * 100)
    with pytest.raises(replica.BadSnapshot, match="not a catalog"):
        replica.prepare_snapshot(tmp_path / "garbage.db", sequence)


async def test_a_snapshot_of_an_older_master_is_brought_to_this_schema(tmp_path):
    """A master of an earlier version sends its schema: the region's copy is migrated before use
    (its floats at 15 digits, what media.track_json rests on); a newer schema is refused."""
    import sqlite3

    from media import Catalog, catalog as catalog_module

    master = Catalog(tmp_path / "master.db")
    try:
        await master.db.write(lambda db: catalog_module.save_scanned(db, [_row("c" * 16, "A/B/song.mp3")], [],
                                                                     log=False))
    finally:
        master.close()
    with sqlite3.connect(tmp_path / "master.db") as conn:  # as an earlier version left it
        conn.execute("UPDATE tracks SET rg_track_gain = ?", [-7.123456789012345678])
        conn.execute("UPDATE meta SET value = '10' WHERE key = 'schema_version'")
    sequence = replica.snapshot(tmp_path / "master.db", tmp_path / "copy.db")
    replica.prepare_snapshot(tmp_path / "copy.db", sequence)
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == \
            str(catalog_module.SCHEMA_VERSION)
        assert conn.execute("SELECT rg_track_gain FROM tracks").fetchone()[0] == float("-7.12345678901235")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(catalog_module.SCHEMA_VERSION + 1)])
    with pytest.raises(replica.BadSnapshot, match="newer than this program"):
        replica.prepare_snapshot(tmp_path / "copy.db", sequence)
