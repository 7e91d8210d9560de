"""A Symfonium-like session, walked with each real client library from PyPI (issue 13, section 5):
sign in, sync the whole library with empty search3 pages, browse artist -> album -> song, stream
with Range and with timeOffset, cover art at two sizes, star and unstar, make and edit a playlist,
scrobble, save and restore the play queue. Synchronous (the libraries are): run in a thread.
Each walk returns what it got; the caller compares it with the server's own answers."""

from __future__ import annotations

import asyncio
import re
import subprocess

import libopensonic
import libsonic

PAGE = 4  # small pages: the demo library takes several


def walk_opensonic(port: int, password: str, ffmpeg: str) -> dict:
    client = libopensonic.Connection("http://127.0.0.1", "ann", password, port=port)
    try:
        assert client.ping() is True
        synced = _sync(lambda offset: [s.id for s in client.search3("", 0, 0, 0, 0, PAGE, offset).song or []])
        artist = client.get_artists().index[0].artist[0]
        album = client.get_album(client.get_artist(artist.id).album[0].id)
        song = client.get_song(album.song[0].id)
        got = {"synced": synced, "song": song.id, "album": album.id, "album_songs": [s.id for s in album.song]}
        got.update(_media(lambda **kw: _body(client, client.stream(song.id, **kw)),
                          lambda size: _body(client, client.get_cover_art(album.cover_art, size=size)), ffmpeg))
        client.star([song.id])
        got["starred"] = [s.id for s in client.get_starred2().song or []]
        client.unstar([song.id])
        got["unstarred"] = [s.id for s in client.get_starred2().song or []]
        got["playlist"] = _playlist_opensonic(client, synced)
        client.scrobble(song.id, submission=True)
        got["play_count"] = client.get_song(song.id).play_count
        client.save_play_queue(synced[:3], current=synced[1], position=42_000)
        queue = client.get_play_queue()
        got["queue"] = ([e.id for e in queue.entry], queue.current, queue.position)
        return got
    finally:
        client.cleanup()


def walk_sonic(port: int, password: str, ffmpeg: str) -> dict:
    client = libsonic.Connection("http://127.0.0.1", "ann", password, port=port)  # token sign-in, POST
    assert client.ping() is True
    synced = _sync(lambda offset: [s["id"] for s in client.search3("", 0, 0, 0, 0, PAGE, offset)
                                   ["searchResult3"].get("song", [])])
    artist = client.getArtists()["artists"]["index"][0]["artist"][0]
    album = client.getAlbum(client.getArtist(artist["id"])["artist"]["album"][0]["id"])["album"]
    song = client.getSong(album["song"][0]["id"])["song"]
    got = {"synced": synced, "song": song["id"], "album": album["id"], "album_songs": [s["id"] for s in album["song"]]}
    got.update(_media(lambda **kw: _sonic_stream(client, song["id"], **kw),
                      lambda size: client.getCoverArt(album["coverArt"], size=size).read(), ffmpeg))
    client.star(sids=[song["id"]])
    got["starred"] = [s["id"] for s in client.getStarred2()["starred2"].get("song", [])]
    client.unstar(sids=[song["id"]])
    got["unstarred"] = [s["id"] for s in client.getStarred2()["starred2"].get("song", [])]
    got["playlist"] = _playlist_sonic(client, synced)
    client.scrobble(song["id"], submission=True)
    got["play_count"] = client.getSong(song["id"])["song"]["playCount"]
    client.savePlayQueue(synced[:3], current=synced[1], position=42_000)
    queue = client.getPlayQueue()["playQueue"]
    got["queue"] = ([e["id"] for e in queue["entry"]], queue["current"], queue["position"])
    return got


def _sync(page) -> list[str]:
    """Every song, by empty-query search3 pages until one comes back empty."""
    found: list[str] = []
    while batch := page(len(found)):
        found += batch
    return found


def _media(stream, cover, ffmpeg: str) -> dict:
    """The song whole, its first 100 bytes by Range, its decoded length from 2 s on, and the cover
    art's dimensions at two sizes."""
    return {"whole": stream(), "first_100": stream(byte_range="bytes=0-99"),
            "later_seconds": _seconds(ffmpeg, stream(tformat="mp3", time_offset=2)),
            "covers": [_dimensions(ffmpeg, cover(size)) for size in (32, 64)]}


def _sonic_stream(client, song_id: str, byte_range: str | None = None, tformat: str | None = None,
                  time_offset: int | None = None) -> bytes:
    if byte_range is None:
        return client.stream(song_id, tformat=tformat, timeOffset=time_offset).read()
    # py-sonic sends no Range of its own: its stream request, as it builds it, with the header added.
    request = client._getRequest("stream.view", client._getQueryDict({"id": song_id}))
    request.add_header("Range", byte_range)
    with client._opener.open(request, timeout=30) as resp:
        assert resp.status == 206
        return resp.read()


def _playlist_opensonic(client, songs: list[str]) -> tuple[str, list[str]]:
    client.create_playlist(name="road trip", song_ids=songs[:3])
    made = next(p for p in client.get_playlists() if p.name == "road trip")
    client.update_playlist(made.id, name="road trip 2", song_ids_to_add=[songs[3]], song_indices_to_remove=[0])
    edited = client.get_playlist(made.id)
    return edited.name, [entry.id for entry in edited.entry]


def _playlist_sonic(client, songs: list[str]) -> tuple[str, list[str]]:
    client.createPlaylist(name="road trip", songIds=songs[:3])
    made = next(p for p in client.getPlaylists()["playlists"]["playlist"] if p["name"] == "road trip")
    client.updatePlaylist(made["id"], name="road trip 2", songIdsToAdd=[songs[3]], songIndexesToRemove=[0])
    edited = client.getPlaylist(made["id"])["playlist"]
    return edited["name"], [entry["id"] for entry in edited["entry"]]


def _body(client, response) -> bytes:
    """A py-opensonic binary answer's body, read on the connection's own loop."""
    return asyncio.run_coroutine_threadsafe(response.read(), client._loop).result()


def _seconds(ffmpeg: str, data: bytes) -> float:
    """The decoded length of `data`: 8 kHz mono 16-bit samples counted."""
    done = subprocess.run([ffmpeg, "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "8000",
                           "pipe:1"], input=data, capture_output=True, check=True)
    return len(done.stdout) / 16000


def _dimensions(ffmpeg: str, data: bytes) -> tuple[int, int]:
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", "pipe:0"], input=data, capture_output=True)
    found = re.search(r"Video: .*?(\d{2,5})x(\d{2,5})", probe.stderr.decode("utf-8", "replace"))
    assert found, probe.stderr[-500:]
    return int(found.group(1)), int(found.group(2))


def check_walk(got: dict, original: bytes, duration: float) -> None:
    """What every walk must have found, wherever it ran: `original` is the first song's bytes."""
    assert len(got["synced"]) == len(set(got["synced"])) == 9  # the demo library, each once
    assert got["song"] in got["album_songs"]
    assert got["whole"] == original and got["first_100"] == original[:100]
    assert abs(got["later_seconds"] - (duration - 2)) < 1.0
    assert max(got["covers"][0]) == 32 and max(got["covers"][1]) == 64
    assert got["starred"] == [got["song"]] and got["unstarred"] == []
    assert got["playlist"] == ("road trip 2", [*got["synced"][1:3], got["synced"][3]])
    assert got["play_count"] >= 1
    assert got["queue"] == (got["synced"][:3], got["synced"][1], 42_000)
