"""Subsonic's song and album leave every absent value out (they take out by name the fields that
may be None: streamer.subsonic.models), whatever the catalog row lacks."""

from __future__ import annotations

import itertools

import pytest

from media.annotated import SONG_COLUMNS
from media.catalog import ALBUM_FIELDS
from streamer.subsonic import models

SONG = {**dict.fromkeys(SONG_COLUMNS, None), "id": "t1", "path": "a/b.flac", "dir": "a", "container": "flac",
        "album_id": "al1", "starred": None, "user_rating": None, "play_count": 0, "played": None}
FULL_SONG = {**SONG, **{c: 1 for c in SONG_COLUMNS if SONG[c] is None},
             **{c: "x" for c in ("title", "artist", "artist_id", "album", "album_artist", "album_artist_id",
                                 "genre", "added_at", "mbid")},
             "starred": "2026-01-01T00:00:00Z", "user_rating": 3, "played": "2026-01-02T00:00:00Z"}
ALBUM = {**dict.fromkeys(ALBUM_FIELDS, None), "id": "al1"}
FULL_ALBUM = {**{c: 1 for c in ALBUM_FIELDS}, **{c: "x" for c in ("id", "title", "artist", "artist_id", "genre",
                                                                   "added_at")},
              "starred": "2026-01-01T00:00:00Z", "user_rating": 3, "play_count": 2, "played": "2026-01-02T00:00:00Z"}


def _nones(value: dict) -> list:
    return [k for k, v in value.items() if v is None]


@pytest.mark.parametrize("empty", [0, 1, 3, len(SONG)])
def test_a_song_leaves_out_what_its_row_lacks(empty):
    optional = [c for c in FULL_SONG if c not in ("id", "path", "dir", "album_id")]
    for lacking in itertools.islice(itertools.combinations(optional, min(empty, len(optional))), 60):
        row = {**FULL_SONG, **dict.fromkeys(lacking)}
        made = models.song(row)
        assert not _nones(made), (lacking, _nones(made))
        assert made["id"] == "t1" and made["isDir"] is False


def test_a_full_song_and_album_have_every_field():
    song, album = models.song(FULL_SONG), models.album(FULL_ALBUM)
    assert {"title", "album", "artist", "track", "year", "genre", "starred", "userRating", "played", "artistId",
            "displayAlbumArtist"} <= set(song)
    assert {"name", "artist", "artistId", "year", "genre", "starred", "userRating", "played", "created"} <= set(album)


@pytest.mark.parametrize("lacking", [c for c in FULL_ALBUM if c != "id"])
def test_an_album_leaves_out_what_its_row_lacks(lacking):
    made = models.album({**FULL_ALBUM, lacking: None})
    assert not _nones(made), _nones(made)
    assert not _nones(models.album(ALBUM))
