"""The stream facts the catalog shows are true: every demo codec checked against ffprobe.

ffprobe is Debian's (`apt-get install ffmpeg`); the imageio-ffmpeg wheel has none. Without it the
checks against it are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from media import Catalog, Scanner

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="no ffprobe on PATH (Debian: apt-get install ffmpeg)")

# ffprobe's codec_name -> ours.
CODEC_NAMES = {"mp3": "mp3", "flac": "flac", "vorbis": "vorbis", "opus": "opus", "aac": "aac"}
# Duration: Opus files end 6.5 ms later for ffprobe (it counts the 312-sample pre-skip that
# players drop), and in MP4 mutagen counts the AAC priming frame (1024 samples, 23 ms at 44.1
# kHz) that ffprobe's edit list drops. Both are below one codec frame.
DURATION_SLACK = 0.025
BITRATE_SLACK = 0.05


def ffprobe(path: Path) -> dict:
    """The first audio stream and the container facts of one file, as ffprobe sees them."""
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "a:0", "-show_streams", "-show_format",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True, timeout=30).stdout
    probed = json.loads(out)
    # The container's bit_rate (bytes over time), not the stream's: a Vorbis stream's own is
    # the encoder's nominal target, not what the file holds.
    return {**probed["streams"][0], "bit_rate": probed["format"]["bit_rate"]}


@pytest.fixture(scope="module")
def scanned(demo_library, tmp_path_factory) -> list[tuple[dict, Path]]:
    """The demo library scanned into a catalog: each track as the API serves it, with its file."""
    return asyncio.run(_scan(demo_library, tmp_path_factory.mktemp("meta") / "catalog.db"))


async def _scan(library: Path, db: Path) -> list[tuple[dict, Path]]:
    catalog = Catalog(db)
    try:
        progress = await Scanner(library, catalog, workers=1).scan()
        assert progress.state == "done" and progress.skipped == 0
        tracks, _ = await catalog.tracks(limit=50, offset=0)
        paths = dict(await catalog.db.read(lambda db: list(db.execute("SELECT id, path FROM tracks"))))
        return [(t, library / paths[t["id"]]) for t in tracks]
    finally:
        catalog.close()


@needs_ffprobe
def test_every_demo_codec_matches_ffprobe(scanned):
    assert {t["codec"] for t, _ in scanned} == set(CODEC_NAMES.values())  # every demo codec is here
    for track, path in scanned:
        probe = ffprobe(path)
        where = f"{path.name}: ours {track}, ffprobe {probe}"
        assert CODEC_NAMES[probe["codec_name"]] == track["codec"], where
        assert track["sample_rate"] == int(probe["sample_rate"]), where
        assert track["channels"] == probe["channels"], where
        assert abs(track["duration"] - float(probe["duration"])) <= DURATION_SLACK, where
        real = int(probe["bit_rate"]) / 1000
        assert abs(track["bitrate"] - real) <= BITRATE_SLACK * real, where


def test_opus_reports_the_48_khz_it_decodes_at(scanned):
    opus = [t for t, _ in scanned if t["codec"] == "opus"]
    assert opus and all(t["sample_rate"] == 48000 for t in opus)


async def test_a_catalog_from_schema_3_is_corrected_without_a_rescan(demo_library, tmp_path):
    """Opus rows stored with no sample rate and Vorbis rows with the nominal bitrate get the
    true values when the catalog opens, so a region (which never scans) is corrected too."""
    path = tmp_path / "catalog.db"
    catalog = Catalog(path)
    await Scanner(demo_library, catalog, workers=1).scan()
    truth = {t["id"]: t for t in (await catalog.tracks(limit=50, offset=0))[0]}
    catalog.close()
    with sqlite3.connect(path) as db:  # as the previous version stored them
        db.execute("UPDATE tracks SET sample_rate = NULL WHERE codec = 'opus'")
        db.execute("UPDATE tracks SET bitrate = 112 WHERE codec = 'vorbis'")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.close()
    catalog = Catalog(path)
    try:
        after = {t["id"]: t for t in (await catalog.tracks(limit=50, offset=0))[0]}
    finally:
        catalog.close()
    for track_id, true in truth.items():
        assert (after[track_id]["sample_rate"], after[track_id]["bitrate"]) == \
               (true["sample_rate"], pytest.approx(true["bitrate"], abs=1)), true["codec"]


def _tagged_copies(ffmpeg: str, folder: Path) -> dict[str, Path]:
    """One short file per tag family, with ReplayGain (or R128) values and a MusicBrainz id."""
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3, TXXX, UFID
    from mutagen.mp4 import MP4, MP4FreeForm
    from mutagen.oggopus import OggOpus

    from tests.conftest import encode

    files = {kind: folder / f"loud.{kind}" for kind in ("mp3", "flac", "opus", "m4a")}
    for kind, path in files.items():
        encode(ffmpeg, path, 1.0)
    id3 = ID3(files["mp3"])
    id3.add(TXXX(desc="REPLAYGAIN_TRACK_GAIN", text=["-7.25 dB"]))
    id3.add(TXXX(desc="REPLAYGAIN_ALBUM_PEAK", text=["0.988"]))
    id3.add(UFID(owner="http://musicbrainz.org", data=b"11111111-2222-3333-4444-555555555555"))
    id3.save()
    flac = FLAC(files["flac"])
    flac["REPLAYGAIN_TRACK_GAIN"], flac["REPLAYGAIN_ALBUM_GAIN"] = "+1.5 dB", "-2 dB"
    flac["MUSICBRAINZ_TRACKID"] = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    flac.save()
    opus = OggOpus(files["opus"])
    opus["R128_TRACK_GAIN"] = "-1280"  # -5 dB relative to -23 LUFS: 0 dB ReplayGain
    opus.save()
    mp4 = MP4(files["m4a"])
    mp4["----:com.apple.iTunes:replaygain_track_gain"] = [MP4FreeForm(b"-3.10 dB")]
    mp4.save()
    return files


def test_replaygain_and_musicbrainz_ids_are_read_from_every_tag_family(ffmpeg, tmp_path):
    from media.tags import read_track

    files = _tagged_copies(ffmpeg, tmp_path)
    mp3, flac, opus, m4a = (read_track(files[k]) for k in ("mp3", "flac", "opus", "m4a"))
    assert (mp3["rg_track_gain"], mp3["rg_album_peak"], mp3["mbid"]) == (
        -7.25, 0.988, "11111111-2222-3333-4444-555555555555")
    assert (flac["rg_track_gain"], flac["rg_album_gain"], flac["mbid"]) == (
        1.5, -2.0, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    assert opus["rg_track_gain"] == 0.0 and opus["rg_album_gain"] is None
    assert m4a["rg_track_gain"] == -3.1 and m4a["mbid"] is None


async def test_subsonic_songs_carry_them_and_an_older_catalog_reads_its_files_again(ffmpeg, tmp_path):
    from media import listeners
    from media.tags import TAGS_VERSION
    from streamer import create_app
    from streamer.http.keys import AUTH, CATALOG
    from tests.conftest import settings_for, wait_for_scan

    library = tmp_path / "music"
    library.mkdir()
    _tagged_copies(ffmpeg, library)
    catalog = Catalog(tmp_path / "data" / "catalog.db")
    await Scanner(library, catalog, workers=1).start()
    catalog.db.write_sync(lambda db: db.execute("UPDATE tracks SET tags_read = NULL, rg_track_gain = NULL"))
    catalog.close()
    app = create_app(settings_for(library, tmp_path / "data"))  # scans at start: reads them again
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as client:
        await wait_for_scan(app)
        await app[CATALOG].db.write(listeners.add_user, "ann", "listener")
        await app[CATALOG].db.write(listeners.set_password, "ann", "pw", app[AUTH].password_key)
        songs = (await (await client.get("/rest/search3", params={
            "u": "ann", "p": "pw", "v": "1.16.1", "c": "t", "f": "json", "query": ""})).json())
        songs = {s["path"]: s for s in songs["subsonic-response"]["searchResult3"]["song"]}
        assert songs["loud.mp3"]["replayGain"] == {"trackGain": -7.25, "albumPeak": 0.988}
        assert songs["loud.mp3"]["musicBrainzId"] == "11111111-2222-3333-4444-555555555555"
        assert songs["loud.opus"]["replayGain"] == {"trackGain": 0.0} and songs["loud.m4a"]["musicBrainzId"] == ""
        versions = await app[CATALOG].db.read(lambda db: {r[0] for r in db.execute("SELECT tags_read FROM tracks")})
        assert versions == {TAGS_VERSION}
