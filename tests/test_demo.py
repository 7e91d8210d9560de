"""Tests for the synthesized demo library (media.demo)."""

from __future__ import annotations

import pathlib
import re
import time
from collections import defaultdict

import imageio_ffmpeg
import mutagen
import pytest
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4

from media.demo import make_demo_library
from media.tags import read_track

AUDIO_EXTS = {".mp3", ".flac", ".ogg", ".opus", ".m4a"}
REQUIRED_TAGS = ("title", "artist", "album", "albumartist", "tracknumber", "discnumber", "date", "genre")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[pathlib.Path], float]:
    # Generated once per module: every test below only reads the result.
    dest = tmp_path_factory.mktemp("demo")
    started = time.perf_counter()
    files = make_demo_library(dest, imageio_ffmpeg.get_ffmpeg_exe())
    return dest, files, time.perf_counter() - started


def _audio(files: list[pathlib.Path]) -> list[pathlib.Path]:
    return [f for f in files if f.suffix in AUDIO_EXTS]


def _codec(f: pathlib.Path) -> str:
    return read_track(f)["codec"]


def _is_compilation(f: pathlib.Path) -> bool:
    m = mutagen.File(f)
    if isinstance(m, MP3):
        return "TCMP" in m.tags and str(m.tags["TCMP"]) == "1"
    if isinstance(m, MP4):
        return bool(m.tags.get("cpil"))
    return m.tags.get("compilation") == ["1"]


def _has_embedded_art(f: pathlib.Path) -> bool:
    m = mutagen.File(f)
    if isinstance(m, MP3):
        return any(k.startswith("APIC") and len(m.tags[k].data) > 100 for k in m.tags.keys())
    if isinstance(m, MP4):
        return bool(m.tags.get("covr"))
    if isinstance(m, FLAC):
        return bool(m.pictures) and len(m.pictures[0].data) > 100
    return False


def test_files_returned_match_disk(library) -> None:
    dest, files, elapsed = library
    print(f"demo library generated in {elapsed:.2f}s")
    on_disk = sorted(p for p in dest.rglob("*") if p.is_file())
    assert sorted(files) == on_disk
    assert not [p for p in on_disk if p.name.endswith(".part")], "temp files left behind"
    audio = _audio(files)
    assert 8 <= len(audio) <= 9
    assert sum(p.stat().st_size for p in files) < 10 * 1024 * 1024
    # Generous bound (target is ~2-3 s on 2 cores); this only guards regressions.
    assert elapsed < 20


def test_layout_and_tags(library) -> None:
    dest, files, _ = library
    albums: dict[pathlib.Path, list[pathlib.Path]] = defaultdict(list)
    for f in _audio(files):
        albums[f.parent].append(f)
    assert len(albums) == 3
    for folder, tracks in albums.items():
        assert folder.parent.parent == dest
        for f in tracks:
            m = mutagen.File(f, easy=True)
            assert m is not None, f"mutagen cannot open {f}"
            for key in REQUIRED_TAGS:
                assert m.get(key) and m[key][0], f"{f.name} lacks {key}"
            tags = {k: m[k][0] for k in REQUIRED_TAGS}
            # dest/<Album Artist>/<Album>/NN Title.ext
            assert folder.parent.name == tags["albumartist"]
            assert folder.name == tags["album"]
            num, total = tags["tracknumber"].split("/")
            assert int(total) == len(tracks)
            assert f.name == f"{int(num):02d} {tags['title']}{f.suffix}"
            assert tags["discnumber"] == "1/1"
            assert re.fullmatch(r"(19|20)\d\d", tags["date"])
        numbers = sorted(int(mutagen.File(f, easy=True)["tracknumber"][0].split("/")[0]) for f in tracks)
        assert numbers == list(range(1, len(tracks) + 1))


def test_codecs_and_audio_properties(library) -> None:
    _, files, _ = library
    codecs = {_codec(f) for f in _audio(files)}
    assert {"mp3", "flac", "vorbis", "opus", "aac"} <= codecs
    for f in _audio(files):
        info = mutagen.File(f).info
        assert 20 <= info.length <= 40, f"{f.name}: {info.length:.1f}s"
        assert info.channels == 2
        if f.suffix != ".opus":  # Opus always decodes at 48 kHz
            assert info.sample_rate == 44100
        if f.suffix == ".mp3":
            assert 160_000 <= info.bitrate <= 224_000


def test_compilation_album(library) -> None:
    dest, files, _ = library
    folder = dest / "Various Artists"
    assert folder.is_dir()
    tracks = [f for f in _audio(files) if folder in f.parents]
    assert len(tracks) >= 2
    artists = {mutagen.File(f, easy=True)["artist"][0] for f in tracks}
    assert len(artists) >= 2 and "Various Artists" not in artists
    for f in tracks:
        assert mutagen.File(f, easy=True)["albumartist"] == ["Various Artists"]
        assert _is_compilation(f), f"{f.name} lacks the compilation flag"
    # ...and no other album claims to be one.
    assert not [f for f in _audio(files) if folder not in f.parents and _is_compilation(f)]


def test_cover_art(library) -> None:
    _, files, _ = library
    covers = [f for f in files if f.name == "cover.jpg"]
    assert len(covers) == 1
    data = covers[0].read_bytes()
    assert data[:2] == b"\xff\xd8" and len(data) > 500  # a real JPEG
    embedded = [f for f in _audio(files) if _has_embedded_art(f)]
    assert embedded
    # Embedded art lives on a different album than the folder cover.
    assert all(f.parent != covers[0].parent for f in embedded)
