"""media.mp4 against mutagen: for every m4a variant, read_track gives the same record with the fast
MP4 reader as through mutagen's MP4, and the fast reader serves the plain files itself."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm

from media import tags
from media.errors import UnreadableFile
from tests.conftest import encode
from tests.test_id3 import JPEG, check_fast_reader

Build = Callable[[Path, dict[str, Path]], None]  # (the file to write, the untagged bases by name)
FREEFORM = "----:com.apple.iTunes:"


def _tagged(items: dict, base: str = "aac") -> Build:
    """A base file with `items` saved by mutagen (after the ones ffmpeg wrote are taken off)."""
    def build(path: Path, bases: dict[str, Path]) -> None:
        shutil.copyfile(bases[base], path)
        audio = MP4(path)
        audio.tags.clear()
        audio.tags.update(items)
        audio.save()
    return build


def _patched(items: dict, old: bytes, new: bytes) -> Build:
    """_tagged, then bytes of it changed in place (same length): a damaged item."""
    def build(path: Path, bases: dict[str, Path]) -> None:
        _tagged(items)(path, bases)
        data = path.read_bytes()
        assert data.count(old) == 1
        path.write_bytes(data.replace(old, new))
    return build


EVERYTHING = {
    "\xa9nam": ["Tïtle ∆", "second value"], "\xa9ART": ["Ärtist"], "\xa9alb": ["Album"], "aART": ["Band"],
    "\xa9day": ["1999-05-04"], "\xa9gen": ["Jazz"], "trkn": [(3, 12)], "disk": [(2, 2)], "cpil": True,
    "covr": [MP4Cover(JPEG, MP4Cover.FORMAT_JPEG)], "\xa9cmt": ["a comment"], "tmpo": [120],
    FREEFORM + "REPLAYGAIN_TRACK_GAIN": [MP4FreeForm(b"-7.5 dB")],
    FREEFORM + "replaygain_track_gain": [MP4FreeForm(b"-1 dB")],  # the same field: the key read last wins
    FREEFORM + "replaygain_album_peak": [MP4FreeForm(b"0.98"), MP4FreeForm(b"0.5")],
    FREEFORM + "MusicBrainz Track Id": [MP4FreeForm(b"mb-recording-1")],
    "----:org.example:replaygain_track_peak": [MP4FreeForm(b"0.1")],  # another tool's: not read
}

# name -> (how the file is made, whether the fast reader serves it)
VARIANTS: dict[str, tuple[Build, bool]] = {
    "every item read": (_tagged(EVERYTHING), True),
    "as ffmpeg writes it": (lambda path, bases: shutil.copyfile(bases["aac"], path), True),
    "the movie atom first": (_tagged(EVERYTHING, "faststart"), True),
    "mono, 22,050 Hz": (_tagged({"\xa9nam": ["Low"]}, "mono"), True),
    "ALAC": (_tagged({"\xa9nam": ["Lossless"], "cpil": False}, "alac"), True),
    "no items": (_tagged({}), True),
    "not a compilation": (_tagged({"cpil": False, "trkn": [(0, 0)]}), True),
    "a title that is not UTF-8": (_patched({"\xa9nam": ["Tixtle"]}, b"Tixtle", b"Ti\xfftle"), False),
    "a data atom of another name": (_patched({"\xa9alb": ["Album"]}, b"data", b"dada"), False),
    "a numeric genre": (_patched({"\xa9gen": ["Jazz"]}, b"\xa9gen", b"gnre"), False),
    "a truncated file": (lambda path, bases: path.write_bytes(bases["aac"].read_bytes()[:-200]), False),
    "an atom past the file's end": (lambda path, bases: path.write_bytes(  # a 64-bit size: mutagen's seek fails
        bases["aac"].read_bytes() + struct.pack(">I4sQ", 1, b"free", 1 << 62)), False),
    "not audio": (lambda path, bases: path.write_bytes(b"hello, this is text " * 50), False),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory, ffmpeg) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mp4")
    made = {
        "aac": encode(ffmpeg, folder / "aac.m4a", 0.5, metadata={"title": "From ffmpeg", "track": "2/9"}),
        "faststart": encode(ffmpeg, folder / "faststart.m4a", 0.5, codec_args=("-movflags", "+faststart")),
        "alac": encode(ffmpeg, folder / "alac.m4a", 0.5, codec_args=("-c:a", "alac")),
    }
    made["mono"] = folder / "mono.m4a"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.5:sample_rate=22050",
                    "-ac", "1", str(made["mono"])], check=True)
    return made


@pytest.mark.parametrize("name", VARIANTS)
def test_the_fast_reader_reads_every_file_as_mutagen_does_or_leaves_it_to_mutagen(name, bases, tmp_path,
                                                                                  monkeypatch):
    build, plain = VARIANTS[name]
    path = tmp_path / "song.m4a"
    build(path, bases)
    check_fast_reader(path, "_quick_mp4", plain, MP4, monkeypatch)


def test_every_item_is_read(bases, tmp_path):
    path = tmp_path / "song.m4a"
    _tagged(EVERYTHING)(path, bases)
    record = tags.read_track(path)
    assert (record["title"], record["tag_artist"], record["album_artist_tag"], record["track_number"],
            record["disc_number"], record["year"], record["genre"], record["compilation"], record["has_art"]) == \
        ("Tïtle ∆", "Ärtist", "Band", 3, 2, 1999, "Jazz", True, True)
    # mutagen saves the two track gains' keys in its own order: the one it reads last wins, both ways
    assert (record["rg_track_gain"], record["rg_album_peak"], record["mbid"]) == (-7.5, 0.98, "mb-recording-1")
    assert (record["codec"], record["sample_rate"], record["channels"]) == ("aac", 44100, 2)


def test_unreadable_either_way(bases, tmp_path):
    path = tmp_path / "song.m4a"
    VARIANTS["a truncated file"][0](path, bases)
    with pytest.raises(UnreadableFile):
        tags.read_track(path)


def test_a_meta_atom_shorter_than_its_own_header_is_left_to_mutagen():
    """mutagen skips a meta atom's 4 bytes even past its end (and reads what follows out of step)."""
    from media import mp4

    meta, free = struct.pack(">I4s", 8, b"meta"), struct.pack(">I4s", 8, b"free")
    assert mp4._atoms(meta + free, 0, 16) is None
    assert mp4._atoms(struct.pack(">I4sI", 12, b"meta", 0) + free, 0, 20) == [(b"meta", 8, 12, []), (b"free", 20, 20, None)]
