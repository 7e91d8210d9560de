"""The scanner on generated files: tags, grouping, covers, broken files, incremental rescans."""

from __future__ import annotations

import os
import shutil
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


def test_scan_workers_leave_ctrl_c_to_the_server(tmp_path, catalog):
    """Ctrl-C reaches the whole process group: a worker must not die of it (a dead worker breaks
    the pool, and printed a KeyboardInterrupt traceback when a cluster was stopped)."""
    import signal

    scanner = Scanner(tmp_path, catalog, workers=2)
    pool = scanner._start_pool()
    try:
        pids: set[int] = set()
        for _ in range(1000):  # a worker answers only once its start (the initializer) has run
            pids |= {f.result(timeout=30) for f in [pool.submit(os.getpid) for _ in range(4)]}
            if len(pids) == 2:
                break
        assert pids == set(pool._processes)
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        assert pool.submit(os.getpid).result(timeout=30) in pids  # the pool still serves
        assert set(pool._processes) == pids and all(p.is_alive() for p in pool._processes.values())
    finally:
        pool.shutdown()
