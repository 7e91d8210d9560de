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
