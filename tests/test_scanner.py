"""The scanner on generated files: tags, grouping, covers, broken files, incremental rescans."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from media import Catalog, Scanner
from media.catalog import VARIOUS_ARTISTS
from media.ids import track_id
from tests.conftest import encode


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog(tmp_path / "data" / "catalog.db")
    yield catalog
    catalog.close()


@pytest.fixture(scope="module")
def small_library(tmp_path_factory, ffmpeg) -> Path:
    """Two albums (one a compilation with no album artist tag), a folder cover, broken files."""
    root = tmp_path_factory.mktemp("lib") / "music"
    a = root / "Ann" / "First"
    encode(ffmpeg, a / "01 One.mp3", metadata={"title": "One", "artist": "Ann", "album": "First",
                                               "track": "1/2", "date": "2001-05-04", "genre": "Rock"})
    encode(ffmpeg, a / "02 Two.flac", metadata={"title": "Two", "artist": "Ann", "album": "First",
                                                "track": "2/2", "date": "2001"}, freq=550)
    (a / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    mix = root / "Mix"
    for n, artist, ext in [(1, "Bo", "ogg"), (2, "Cy", "opus"), (3, "Di", "m4a")]:
        encode(ffmpeg, mix / f"0{n} Song.{ext}", metadata={"title": f"Song {n}", "artist": artist,
                                                           "album": "Party Mix", "track": str(n)})
    encode(ffmpeg, root / "loose.wav")  # untagged, at the root
    broken = root / "Broken"
    broken.mkdir()
    (broken / "empty.mp3").write_bytes(b"")
    (broken / "text.flac").write_text("this is not audio")
    good = (a / "01 One.mp3").read_bytes()
    (broken / "truncated.mp3").write_bytes(good[:40])
    (broken / "notes.txt").write_text("ignored: not an audio extension")
    return root


def copy_library(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "music"
    shutil.copytree(src, dest, symlinks=True)
    return dest


async def scan(library, catalog):
    return await Scanner(library, catalog, workers=1).scan()


async def test_first_scan_reads_tags_and_reports_broken_files(small_library, tmp_path, catalog):
    library = copy_library(small_library, tmp_path)
    progress = await scan(library, catalog)
    assert progress.state == "done"
    assert progress.files == 9 and progress.added == 6 and progress.skipped == 3
    reasons = {p["path"]: p["reason"] for p in progress.problems}
    assert set(reasons) == {"Broken/empty.mp3", "Broken/text.flac", "Broken/truncated.mp3"}
    assert "empty" in reasons["Broken/empty.mp3"]

    tracks, total = await catalog.tracks(limit=50, offset=0)
    assert total == 6
    one = await catalog.track(track_id("Ann/First/01 One.mp3"))
    assert (one["title"], one["artist"], one["album"], one["album_artist"]) == ("One", "Ann", "First", "Ann")
    assert (one["track_number"], one["year"], one["genre"], one["codec"]) == (1, 2001, "Rock", "mp3")
    assert 1.9 < one["duration"] < 2.2 and one["sample_rate"] == 44100 and one["channels"] == 2
    assert one["bitrate"] > 0
    codecs = {t["codec"] for t in tracks}
    assert codecs == {"mp3", "flac", "vorbis", "opus", "aac", "pcm"}
    loose = await catalog.track(track_id("loose.wav"))
    assert loose["title"] == "loose" and loose["artist"] == "Unknown Artist"


async def test_albums_group_by_album_artist_and_detect_compilations(small_library, tmp_path, catalog):
    library = copy_library(small_library, tmp_path)
    await scan(library, catalog)
    albums, _ = await catalog.albums(limit=50, offset=0)
    by_title = {a["title"]: a for a in albums}
    assert by_title["First"]["artist"] == "Ann" and by_title["First"]["track_count"] == 2
    assert by_title["First"]["has_cover"] and by_title["First"]["year"] == 2001
    mix = by_title["Party Mix"]
    assert mix["artist"] == VARIOUS_ARTISTS and mix["compilation"] and mix["track_count"] == 3
    album = await catalog.album(mix["id"])
    assert [t["track_number"] for t in album["tracks"]] == [1, 2, 3]
    assert {t["artist"] for t in album["tracks"]} == {"Bo", "Cy", "Di"}
    artists, _ = await catalog.artists(limit=50, offset=0)
    names = {a["name"] for a in artists}
    assert {"Ann", "Bo", "Cy", "Di", VARIOUS_ARTISTS} <= names
    bo = next(a for a in artists if a["name"] == "Bo")
    assert [a["title"] for a in (await catalog.artist(bo["id"]))["appears_on"]] == ["Party Mix"]


async def test_rescan_is_incremental_and_ids_are_stable(small_library, tmp_path, catalog):
    library = copy_library(small_library, tmp_path)
    await scan(library, catalog)
    ids_before = {t["id"] for t in (await catalog.tracks(limit=50, offset=0))[0]}

    again = await scan(library, catalog)
    assert again.to_read == 3 and again.unchanged == 6  # only the broken files are looked at again
    assert {t["id"] for t in (await catalog.tracks(limit=50, offset=0))[0]} == ids_before

    # A fresh catalog over the same folder (another node) names the tracks alike.
    other = Catalog(tmp_path / "other.db")
    try:
        await scan(library, other)
        assert {t["id"] for t in (await other.tracks(limit=50, offset=0))[0]} == ids_before
    finally:
        other.close()


async def test_tracks_carry_a_content_fingerprint_and_those_without_one_are_read_again(small_library, tmp_path,
                                                                                       catalog):
    from media.fingerprint import content_fingerprint

    library = copy_library(small_library, tmp_path)
    await scan(library, catalog)
    rows = catalog.db.read_sync(lambda db: db.execute("SELECT path, size, fingerprint FROM tracks").fetchall())
    assert rows and all(f == content_fingerprint(str(library / p), s) for p, s, f in rows)
    # A catalog from before fingerprints (schema 2): its tracks are read once more, and get one.
    catalog.db.write_sync(lambda db: db.execute("UPDATE tracks SET fingerprint = NULL WHERE path = ?", [rows[0][0]]))
    again = await scan(library, catalog)
    assert again.to_read == 3 + 1 and again.updated == 1
    assert catalog.db.read_sync(lambda db: db.execute("SELECT COUNT(*) FROM tracks WHERE fingerprint IS NULL")
                                .fetchone()[0]) == 0


def test_a_fingerprint_sees_a_change_that_keeps_the_size(tmp_path):
    from media.fingerprint import content_fingerprint

    path = tmp_path / "a.bin"
    data = bytearray(range(256)) * 400
    path.write_bytes(bytes(data))
    before = content_fingerprint(str(path), len(data))
    for where in (0, len(data) // 2, len(data) - 1):  # the start (tags), the middle, the end
        changed = bytearray(data)
        changed[where] ^= 1
        path.write_bytes(bytes(changed))
        assert content_fingerprint(str(path), len(data)) != before
    tiny = tmp_path / "tiny.bin"
    tiny.write_bytes(b"abc")
    assert content_fingerprint(str(tiny), 3) != content_fingerprint(str(path), len(data))


async def test_rescan_sees_changes_additions_and_deletions(small_library, tmp_path, catalog, ffmpeg):
    library = copy_library(small_library, tmp_path)
    await scan(library, catalog)
    one_id = track_id("Ann/First/01 One.mp3")
    added_at = (await catalog.track(one_id))["added_at"]

    encode(ffmpeg, library / "Ann" / "First" / "01 One.mp3",
           metadata={"title": "One (remaster)", "artist": "Ann", "album": "First"})
    (library / "Ann" / "First" / "02 Two.flac").unlink()
    encode(ffmpeg, library / "New" / "x.mp3", metadata={"title": "Fresh", "artist": "Eve", "album": "N"})
    shutil.rmtree(library / "Broken")

    progress = await scan(library, catalog)
    assert (progress.added, progress.updated, progress.removed) == (1, 1, 1)
    one = await catalog.track(one_id)
    assert one["title"] == "One (remaster)" and one["added_at"] == added_at
    titles = {t["title"] for t in (await catalog.tracks(limit=50, offset=0))[0]}
    assert "Two" not in titles and "Fresh" in titles
    first = next(a for a in (await catalog.albums(limit=50, offset=0))[0] if a["title"] == "First")
    assert first["track_count"] == 1


async def test_file_that_breaks_leaves_the_catalog(small_library, tmp_path, catalog):
    library = copy_library(small_library, tmp_path)
    await scan(library, catalog)
    path = library / "Ann" / "First" / "01 One.mp3"
    path.write_bytes(b"garbage now")
    progress = await scan(library, catalog)
    assert progress.removed == 1
    assert "Ann/First/01 One.mp3" in {p["path"] for p in progress.problems}
    _, total = await catalog.tracks(limit=50, offset=0)
    assert total == 5


async def test_symlinks_outside_the_library_are_refused(small_library, tmp_path, catalog, ffmpeg):
    library = copy_library(small_library, tmp_path)
    outside = encode(ffmpeg, tmp_path / "elsewhere" / "secret.mp3", metadata={"title": "Secret"})
    os.symlink(outside, library / "link.mp3")
    os.symlink(library / "Ann", library / "Ann again")  # inside: followed once, no loop
    os.symlink(library, library / "Ann" / "loop")  # a loop back to the root
    progress = await scan(library, catalog)
    assert progress.state == "done"
    assert any(p["path"] == "link.mp3" and "outside" in p["reason"] for p in progress.problems)
    titles = [t["title"] for t in (await catalog.tracks(limit=50, offset=0))[0]]
    assert "Secret" not in titles
    assert titles.count("One") == 1


async def test_search_finds_words_and_prefixes(small_library, tmp_path, catalog):
    library = copy_library(small_library, tmp_path)
    await scan(library, catalog)
    found = await catalog.search("part mix")
    assert {t["album"] for t in found["tracks"]} == {"Party Mix"}
    assert [a["title"] for a in found["albums"]] == ["Party Mix"]
    assert (await catalog.search('"; DROP TABLE tracks; --'))["tracks"] == []
    items, total = await catalog.tracks(q="song", artist="Cy", limit=10, offset=0)
    assert total == 1 and items[0]["artist"] == "Cy"


async def test_scan_in_worker_processes(small_library, tmp_path, catalog, monkeypatch):
    """Large scans read tags in a process pool; force it on the small library."""
    import media.scanner

    monkeypatch.setattr(media.scanner, "IN_THREAD_BELOW", 0)
    monkeypatch.setattr(media.scanner, "CHUNK", 2)
    library = copy_library(small_library, tmp_path)
    progress = await Scanner(library, catalog, workers=2).scan()
    assert progress.state == "done" and progress.added == 6 and progress.skipped == 3


def test_ogg_that_holds_opus_or_flac_is_read_right(tmp_path, ffmpeg):
    """.ogg is opened as Vorbis first (the common case); other Ogg codecs fall back to sniffing."""
    from media.tags import read_track

    opus = encode(ffmpeg, tmp_path / "opus.ogg", codec_args=("-c:a", "libopus"), metadata={"title": "O"})
    flac = encode(ffmpeg, tmp_path / "flac.oga", codec_args=("-c:a", "flac"), metadata={"title": "F"})
    vorbis = encode(ffmpeg, tmp_path / "v.ogg", codec_args=("-c:a", "libvorbis"), metadata={"title": "V"})
    assert (read_track(opus)["codec"], read_track(opus)["title"]) == ("opus", "O")
    assert read_track(flac)["codec"] in ("flac", "oggflac")
    assert (read_track(vorbis)["codec"], read_track(vorbis)["title"]) == ("vorbis", "V")


def _id3_frame_22(name: str, data: bytes) -> bytes:
    return name.encode() + len(data).to_bytes(4, "big")[1:] + data


def test_mp3_tags_of_every_id3_version_are_read_alike_whatever_other_frames_they_hold(tmp_path, ffmpeg):
    """The scan parses only the ID3 frames it reads (and the older ones mutagen turns into them:
    ID3v2.3 dates, ID3v2.2's three-letter names); comments, lyrics, private frames are left raw."""
    from mutagen.id3 import (APIC, COMM, ID3, PRIV, TALB, TCMP, TCON, TDAT, TDRC, TIT2, TPE1, TPE2, TPOS, TRCK,
                             TXXX, TYER, UFID, USLT)

    from media.tags import read_track

    audio = encode(ffmpeg, tmp_path / "plain.mp3", 0.5)
    ID3(audio).delete()
    frames = [TIT2(encoding=3, text="Tïtle"), TPE1(encoding=1, text="Ärtist"), TALB(encoding=3, text="Album"),
              TPE2(encoding=3, text="Band"), TRCK(encoding=3, text="3/12"), TPOS(encoding=3, text="2/2"),
              TCON(encoding=3, text="(17)"), TCMP(encoding=3, text="1"),
              UFID(owner="http://musicbrainz.org", data=b"mb-1"),
              TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text="-7.5 dB"), APIC(encoding=3, mime="image/jpeg",
              type=3, desc="", data=b"\xff\xd8\xff" + b"0" * 999), COMM(encoding=3, lang="eng", desc="", text="hi"),
              USLT(encoding=3, lang="eng", desc="", text="la la"), PRIV(owner="x", data=b"123")]
    for version, date in ((3, [TYER(encoding=0, text="1999"), TDAT(encoding=0, text="0405")]),
                          (4, [TDRC(encoding=3, text="1999-05-04")])):
        path = tmp_path / f"v2{version}.mp3"
        shutil.copyfile(audio, path)
        tags = ID3()
        for frame in frames + date:
            tags.add(frame)
        tags.save(path, v2_version=version)
        got = read_track(path)
        assert (got["title"], got["tag_artist"], got["tag_album"], got["album_artist_tag"]) == \
            ("Tïtle", "Ärtist", "Album", "Band")
        assert (got["track_number"], got["disc_number"], got["year"], got["genre"]) == (3, 2, 1999, "Rock")
        assert got["compilation"] and got["has_art"] and (got["rg_track_gain"], got["mbid"]) == (-7.5, "mb-1")
    # ID3v2.2 (mutagen writes none): written by hand, text frames in Latin-1.
    body = b"".join(_id3_frame_22(name, b"\0" + text) for name, text in (
        ("TT2", b"Old"), ("TP1", b"Someone"), ("TAL", b"Their Album"), ("TYE", b"1987"), ("TRK", b"5/9"),
        ("TCO", b"Jazz"), ("COM", b"eng\0a comment"), ("TXX", b"replaygain_track_gain\0-3.00 dB")))
    body += _id3_frame_22("PIC", b"\0JPG\x03\0\xff\xd8\xff" + b"1" * 100)
    size = bytes(len(body) >> shift & 0x7F for shift in (21, 14, 7, 0))
    (tmp_path / "v22.mp3").write_bytes(b"ID3\x02\x00\x00" + size + body + audio.read_bytes())
    got = read_track(tmp_path / "v22.mp3")
    assert (got["title"], got["tag_artist"], got["tag_album"], got["year"], got["track_number"]) == \
        ("Old", "Someone", "Their Album", 1987, 5)
    assert got["genre"] == "Jazz" and got["has_art"] and got["rg_track_gain"] == -3.0


def test_work_for_the_workers_shrinks_towards_the_end():
    from media.scanner import CHUNK, CHUNK_MAX, _tasks

    files = [(f"{i}.mp3", 1, 1) for i in range(20_000)]
    tasks = _tasks(files, 2)
    assert [f for task in tasks for f in task] == files
    sizes = [len(task) for task in tasks]
    assert sizes[0] == CHUNK_MAX and sizes == sorted(sizes, reverse=True)
    assert all(size >= CHUNK for size in sizes[:-1]) and sizes[-1] <= CHUNK
    assert len(tasks) < len(files) / CHUNK / 4  # few round trips


def _linked_library(root: Path, base: Path, count: int) -> Path:
    """`count` hard links of one file, 100 to a folder: a big library made in a blink."""
    for i in range(count):
        folder = root / f"Folder {i // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        os.link(base, folder / f"{i:05d}.mp3")
    return root


async def test_a_scan_never_reads_on_the_event_loop(tmp_path, catalog, ffmpeg, monkeypatch):
    """A few changed files are read here, in a thread; many, in reader processes (none here); the
    walk runs in a thread too; and what is read is saved while the reading goes on."""
    import threading

    import media.scanner

    import media.tags

    here = os.getpid()
    library = _linked_library(tmp_path / "music", encode(ffmpeg, tmp_path / "base.mp3", 0.2), 600)
    loop_thread, reading_here, walks = threading.current_thread(), [], []
    original_read, original_walk = media.tags.read_track, media.scanner.walk

    def read_track(path, size=None):
        if os.getpid() == here:
            reading_here.append(threading.current_thread())
        return original_read(path, size)

    def walking(*args):
        walks.append(threading.current_thread())
        return original_walk(*args)

    monkeypatch.setattr(media.tags, "read_track", read_track)
    monkeypatch.setattr(media.scanner, "walk", walking)
    progress = await Scanner(library, catalog, workers=2).scan()
    assert progress.state == "done" and progress.added == 600
    assert reading_here == [] and len(walks) == 1 and loop_thread not in walks  # all 600 read by the readers
    ops = await catalog.db.read(lambda db: [op for (op,) in db.execute("SELECT op FROM changes ORDER BY seq")])
    assert ops.count("tracks.put") >= 2 and ops[-1] == "catalog.regroup"

    for i in range(media.scanner.IN_THREAD_BELOW - 1):  # a few more: read here, off the loop
        os.link(tmp_path / "base.mp3", library / "Folder 0" / f"new {i}.mp3")
    progress = await Scanner(library, catalog, workers=2).scan()
    assert progress.added == media.scanner.IN_THREAD_BELOW - 1
    assert len(reading_here) == progress.added and loop_thread not in reading_here
    _, total = await catalog.tracks(limit=1, offset=0)
    assert total == 600 + progress.added


async def test_the_server_answers_during_a_big_scan(aiohttp_client, tmp_path, ffmpeg):
    """A first scan of thousands of files in worker processes: the server answers all along and
    reports the scan's progress as it goes, and no answer waits for the scan's own work on the
    event loop. That is measured in CPU time of the loop's thread during each answer: on this
    shared machine the wall time of an answer swings with the load of other work alone (seconds,
    at times, under a load of 20); bench/scan_bench.py --scale prints it (tens of ms when quiet)."""
    import dataclasses

    from streamer import create_app
    from streamer.http.keys import SCANNER
    from tests.conftest import settings_for

    library = _linked_library(tmp_path / "music", encode(ffmpeg, tmp_path / "base.mp3", 0.2), 4000)
    app = create_app(dataclasses.replace(settings_for(library, tmp_path / "data"), scan_workers=2))
    client = await aiohttp_client(app)
    busiest, reads = 0.0, set()
    deadline = time.monotonic() + 60
    while app[SCANNER].running or app[SCANNER].progress.state != "done":
        assert time.monotonic() < deadline, "the scan did not end"
        cpu = time.thread_time()  # this test and the server share the event loop's thread
        body = await (await client.get("/api/v1/library/scan")).json()
        busiest = max(busiest, time.thread_time() - cpu)
        if body["state"] == "reading":
            reads.add(body["read"])
    assert busiest < 0.2
    assert len(reads) >= 3  # answered while reading, and the progress seen moving
    assert (await (await client.get("/api/v1/tracks?limit=1")).json())["total"] == 4000


async def test_reading_waits_for_a_writer_that_falls_behind(tmp_path, catalog, ffmpeg, monkeypatch):
    """Records waiting to be saved stay few: while the catalog's writer is behind, the scan reads no
    further (at 200,000 files a writer behind the workers once held half a gigabyte of records).
    Here the writer saves only while the reading is held (or once it is over)."""
    import asyncio

    import media.scanner

    monkeypatch.setattr(media.scanner, "SAVE_MAX", 50)
    monkeypatch.setattr(media.scanner, "SAVE_BACKLOG", 100)
    library = _linked_library(tmp_path / "music", encode(ffmpeg, tmp_path / "base.mp3", 0.2), 1000)
    waiting, holding, reading_over = [], asyncio.Event(), []
    original_save, original_room, original_finish = (Catalog.save_scan, media.scanner._Saver.room,
                                                     media.scanner._Saver.finish)

    async def slow_save(self, tracks, removed):
        await asyncio.wait_for(holding.wait(), 30)
        return await original_save(self, tracks, removed)

    async def room(saver):
        waiting.append(len(saver._pending))
        if waiting[-1] >= media.scanner.SAVE_BACKLOG:
            holding.set()
        await original_room(saver)
        if not reading_over:
            holding.clear()

    async def finish(saver):
        reading_over.append(True)
        holding.set()
        await original_finish(saver)

    monkeypatch.setattr(Catalog, "save_scan", slow_save)
    monkeypatch.setattr(media.scanner._Saver, "room", room)
    monkeypatch.setattr(media.scanner._Saver, "finish", finish)
    progress = await Scanner(library, catalog, workers=2).scan()
    assert progress.state == "done" and progress.added == 1000
    largest_task = max(len(t) for t in media.scanner._tasks([("x", 0, 0)] * 1000, 2))
    assert 100 <= max(waiting) < 100 + largest_task  # held at the backlog, give or take what came in last
    _, total = await catalog.tracks(limit=1, offset=0)
    assert total == 1000


def _track_indexes(db) -> dict[str, str]:
    return {name: sql for name, sql in db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tracks' AND sql IS NOT NULL")}


async def test_a_first_scan_fills_the_catalog_without_its_indexes_then_builds_them(tmp_path, catalog, ffmpeg,
                                                                                   monkeypatch):
    """Into an empty catalog, tracks are saved with the unique index alone (issue 15: a track's
    save cost 14 index updates), the rest are built when the reading ends; a later scan keeps them."""
    import media.scanner

    monkeypatch.setattr(media.scanner, "INDEXES_AFTER", 300)
    monkeypatch.setattr(media.scanner, "INDEXES_BUILT_AT", 2)  # not before the reading ends (by default at 90%)
    library = _linked_library(tmp_path / "music", encode(ffmpeg, tmp_path / "base.mp3", 0.2), 300)
    before = await catalog.db.read(_track_indexes)
    during: list[set[str]] = []

    def on_progress(progress) -> None:
        if progress.state == "reading" and progress.read:
            during.append(set(catalog.db.read_sync(_track_indexes)))

    progress = await Scanner(library, catalog, workers=2, on_progress=on_progress).scan()
    assert progress.state == "done" and progress.added == 300
    unique = {name for name, sql in before.items() if sql.startswith("CREATE UNIQUE")}
    assert len(before) > 10 and unique and during and all(seen == unique for seen in during)
    assert await catalog.db.read(_track_indexes) == before

    os.link(tmp_path / "base.mp3", library / "Folder 0" / "new.mp3")
    during.clear()
    progress = await Scanner(library, catalog, workers=2, on_progress=on_progress).scan()
    assert progress.added == 1 and all(seen == set(before) for seen in during)
    assert await catalog.db.read(_track_indexes) == before


async def test_indexes_a_first_scan_left_unbuilt_are_built_at_the_next_open(tmp_path):
    """A server that stopped (or crashed) mid first scan finds them built when it opens its catalog."""
    path = tmp_path / "data" / "catalog.db"
    catalog = Catalog(path)
    before = await catalog.db.read(_track_indexes)
    assert await catalog.defer_indexes()
    assert len(await catalog.db.read(_track_indexes)) == 1  # the unique one on path
    catalog.close()
    catalog = Catalog(path)
    try:
        assert await catalog.db.read(_track_indexes) == before
        assert not await catalog.db.read(lambda db: db.execute("SELECT * FROM meta WHERE key LIKE '%index%'").fetchall())
    finally:
        catalog.close()


async def test_a_region_taking_a_snapshot_made_mid_first_scan_builds_the_indexes(tmp_path):
    """A snapshot of a master whose first scan is still reading has the tracks' indexes to come."""
    from media import replica

    master, region = Catalog(tmp_path / "master.db"), Catalog(tmp_path / "region.db")
    try:
        complete = await region.db.read(_track_indexes)
        assert await master.defer_indexes()
        sequence = replica.snapshot(tmp_path / "master.db", tmp_path / "copy.db")
        replica.prepare_snapshot(tmp_path / "copy.db", sequence)
        await region.replace_file(tmp_path / "copy.db")
        assert await region.db.read(_track_indexes) == complete
        await region.db.write(lambda db: db.execute("INSERT INTO meta (key, value) VALUES ('a write', 'works')"))
    finally:
        master.close()
        region.close()
