"""Subsonic media endpoints (issue 13, section 3) against a real server on 127.0.0.1: stream
(originals with exact Range, transcodes by maxBitRate and format, timeOffset), download,
getCoverArt at several sizes (made once, then from the cache), hls, getLyrics and
getLyricsBySongId (tags and .lrc files), errors, and py-opensonic doing the same."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess

import libopensonic
import pytest
from lxml import etree
from mutagen.flac import FLAC
from mutagen.id3 import ID3, SYLT, USLT
from mutagen.mp4 import MP4

from media import listeners
from streamer import create_app
from streamer.http.keys import AUTH, CACHE, CATALOG, FFMPEG_POOL, SETTINGS
from streamer.subsonic.media_files import content_disposition, limited_master, plan_stream
from tests.conftest import encode, settings_for, wait_for_scan

NS = "{http://subsonic.org/restapi}"
PASSWORD = "pa55 word"
LRC = ("[ar:Lyra]\n[ti:Sung]\n[offset:+250]\n[00:01.00]Hello there\n[00:03.50][00:05.00]Twice\n"
       "[00:02.25]<00:02.25>Word <00:02.80>by word\n")


def _make_lyrics_files(ffmpeg, folder):
    sung = encode(ffmpeg, folder / "Sung.mp3", 6.0, metadata={"title": "Sung", "artist": "Lyra", "album": "Words"})
    tags = ID3(sung)
    tags.add(USLT(encoding=3, lang="eng", desc="", text="First line\n\nSecond line"))
    tags.add(SYLT(encoding=3, lang="deu", format=2, type=1, desc="", text=[("Welt", 2500), ("Hallo", 1000)]))
    tags.save()
    (folder / "Sung.lrc").write_text(LRC, encoding="utf-8")
    flac = encode(ffmpeg, folder / "Flow.flac", 4.0, metadata={"title": "Flow", "artist": "Lyra", "album": "Words"})
    tagged = FLAC(flac)
    tagged["LYRICS"] = "[00:00.50]Flac one\n[00:01.50]Flac two"
    tagged["UNSYNCEDLYRICS"] = "Plain flac"
    tagged.save()
    m4a = encode(ffmpeg, folder / "Tune.m4a", 4.0, codec_args=("-c:a", "aac"),
                 metadata={"title": "Tune", "artist": "Lyra", "album": "Words"})
    tagged = MP4(m4a)
    tagged["\xa9lyr"] = ["Mp4 words\nmore words"]
    tagged.save()


@pytest.fixture
async def server(aiohttp_client, demo_library, tmp_path, ffmpeg):
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    _make_lyrics_files(ffmpeg, library / "Lyra" / "Words")
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    _, token = await app[CATALOG].db.write(listeners.add_user, "ann", "listener")
    await app[CATALOG].db.write(listeners.set_password, "ann", PASSWORD, app[AUTH].password_key)
    client.token = token
    return client


def _auth(**extra) -> dict[str, str]:
    return {"u": "ann", "p": PASSWORD, "v": "1.16.1", "c": "tests", **{k: str(v) for k, v in extra.items()}}


async def _call(client, name, method="GET", headers=None, **params):
    if method == "GET":
        return await client.get(f"/rest/{name}", params=_auth(**params), headers=headers)
    return await client.post(f"/rest/{name}.view", data=_auth(**params), headers=headers)


async def _json(client, name, **params):
    resp = await _call(client, name, f="json", **params)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["subsonic-response"]


async def _tracks(client) -> list[dict]:
    resp = await client.get("/api/v1/tracks?limit=500", headers={"Authorization": f"Bearer {client.token}"})
    return (await resp.json())["items"]


async def _track(client, **match) -> dict:
    return next(t for t in await _tracks(client) if all(t[k] == v for k, v in match.items()))


async def _file(client, track) -> bytes:
    app = client.server.app
    relpath, _ = await app[CATALOG].track_file(track["id"])
    return (app[SETTINGS].library / relpath).read_bytes()


def _probe(ffmpeg: str, data: bytes) -> str:
    """ffmpeg's description of the streams in `data` (it exits 1: no output asked for)."""
    done = subprocess.run([ffmpeg, "-hide_banner", "-i", "pipe:0"], input=data, capture_output=True)
    return done.stderr.decode("utf-8", "replace")


def _codec(ffmpeg: str, data: bytes) -> str:
    return re.search(r"Audio: (\w+)", _probe(ffmpeg, data)).group(1)


def _dimensions(ffmpeg: str, data: bytes) -> tuple[int, int]:
    found = re.search(r"Video: .*?(\d{2,5})x(\d{2,5})", _probe(ffmpeg, data))
    return int(found.group(1)), int(found.group(2))


def _seconds(ffmpeg: str, data: bytes) -> float:
    """The decoded length of `data`: 8 kHz mono 16-bit samples counted."""
    done = subprocess.run([ffmpeg, "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "8000",
                           "pipe:1"], input=data, capture_output=True, check=True)
    return len(done.stdout) / 16000


def _error_code(body: dict) -> int:
    assert body["status"] == "failed", body
    return body["error"]["code"]


def test_the_stream_plan():
    mp3 = {"codec": "mp3", "container": "mp3", "path": "a/b.mp3", "bitrate": 192}
    flac = {"codec": "flac", "container": "flac", "path": "a/b.flac", "bitrate": 900}
    assert plan_stream("", 0, 0, mp3) is None and plan_stream("mp3", 320, 0, mp3) is None
    assert plan_stream("raw", 64, 30, flac) is None  # raw is the original, whatever else is asked
    assert plan_stream("", 128, 0, mp3) == ("mp3", 128)
    assert plan_stream("", 128, 0, flac) == ("mp3", 128)
    assert plan_stream("opus", 0, 0, mp3) == ("opus", 128) and plan_stream("aac", 0, 0, flac) == ("aac", 192)
    assert plan_stream("", 0, 10, mp3) == ("mp3", 192)  # only the offset: the source's codec and bitrate
    assert plan_stream("", 0, 10, flac) == ("mp3", 320)
    assert plan_stream("wma", 0, 0, flac) == ("mp3", 192) and plan_stream("", 8, 0, flac) == ("mp3", 32)


def test_the_name_of_a_download_and_a_limited_master_playlist():
    assert content_disposition('Zoë "x".flac') == (
        "attachment; filename=\"Zo_ _x_.flac\"; filename*=UTF-8''Zo%C3%AB%20%22x%22.flac")
    master = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=70400,AVERAGE-BANDWIDTH=64000\nv/aac64/i.m3u8\n"
              "#EXT-X-STREAM-INF:BANDWIDTH=140800,AVERAGE-BANDWIDTH=128000\nv/aac128/i.m3u8\n")
    assert limited_master(master, "http://h/hls/t/", 100).splitlines()[2:] == [
        "#EXT-X-STREAM-INF:BANDWIDTH=70400,AVERAGE-BANDWIDTH=64000", "http://h/hls/t/v/aac64/i.m3u8"]
    assert limited_master(master, "B/", 10).count("#EXT-X-STREAM-INF") == 1  # the lowest stays
    assert limited_master(master, "B/", 0).count("B/v/") == 2


async def test_stream_sends_the_original_with_exact_ranges(server):
    track = await _track(server, codec="mp3")
    original = await _file(server, track)
    for method in ("GET", "POST"):
        resp = await _call(server, "stream", method, id=track["id"])
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/mpeg"
        assert await resp.read() == original and resp.headers["Accept-Ranges"] == "bytes"
        resp = await _call(server, "stream", method, headers={"Range": "bytes=100-4195"}, id=track["id"])
        assert resp.status == 206 and await resp.read() == original[100:4196]
        assert resp.headers["Content-Range"] == f"bytes 100-4195/{len(original)}"
    resp = await _call(server, "stream", headers={"Range": "bytes=-10,0-9"}, id=track["id"], format="raw")
    assert resp.status == 206 and resp.content_type == "multipart/byteranges"
    resp = await _call(server, "stream", headers={"Range": f"bytes={len(original)}-"}, id=track["id"])
    assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(original)}"
    etag = resp.headers["ETag"]
    resp = await _call(server, "stream", headers={"If-None-Match": etag}, id=track["id"], maxBitRate=0)
    assert resp.status == 304
    assert "private" in resp.headers["Cache-Control"]  # asked with credentials


async def test_stream_transcodes_by_bitrate_and_format(server, ffmpeg):
    flac, mp3 = await _track(server, codec="flac"), await _track(server, codec="mp3")
    for params, codec in (({"maxBitRate": 96}, "mp3"), ({"format": "opus"}, "opus"),
                          ({"format": "aac", "maxBitRate": 64}, "aac"), ({"format": "mp3"}, "mp3")):
        resp = await _call(server, "stream", id=flac["id"], **params)
        assert resp.status == 200, await resp.text()
        data = await resp.read()
        assert _codec(ffmpeg, data) == codec, params
        assert abs(_seconds(ffmpeg, data) - flac["duration"]) < 1.0
    resp = await _call(server, "stream", "POST", id=mp3["id"], maxBitRate=64)
    data = await resp.read()
    assert _codec(ffmpeg, data) == "mp3" and len(data) < mp3["size"] * 0.75
    resp = await _call(server, "stream", id=flac["id"], format="raw", maxBitRate=64)
    assert await resp.read() == await _file(server, flac)


async def test_time_offset_starts_later_on_transcodes_and_originals(server, ffmpeg):
    flac = await _track(server, codec="flac")
    for params in ({"format": "mp3"}, {}, {"maxBitRate": 128}):
        resp = await _call(server, "stream", id=flac["id"], timeOffset=20, **params)
        assert resp.status == 200, await resp.text()
        data = await resp.read()
        assert _codec(ffmpeg, data) == "mp3"
        assert abs(_seconds(ffmpeg, data) - (flac["duration"] - 20)) < 1.0, params


async def test_download_is_the_named_original_with_ranges(server):
    track = await _track(server, codec="flac")
    original = await _file(server, track)
    resp = await _call(server, "download", "POST", id=track["id"])
    assert resp.status == 200 and await resp.read() == original
    relpath, _ = await server.server.app[CATALOG].track_file(track["id"])
    name = relpath.rsplit("/", 1)[-1]
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
    assert resp.headers["Content-Disposition"].endswith(content_disposition(name).rsplit("''", 1)[1])
    resp = await _call(server, "download", headers={"Range": "bytes=10-19"}, id=track["id"])
    assert resp.status == 206 and await resp.read() == original[10:20]
    assert "Content-Disposition" in resp.headers


async def _albums(client) -> list[dict]:
    resp = await client.get("/api/v1/albums?limit=100", headers={"Authorization": f"Bearer {client.token}"})
    return (await resp.json())["items"]


async def test_cover_art_in_sizes_made_once(server, ffmpeg):
    album = next(a for a in await _albums(server) if a["title"] == "Tidal Sketches")  # cover.jpg, 300x300
    pool = server.server.app[FFMPEG_POOL]
    resp = await _call(server, "getCoverArt", id=f"al-{album['id']}")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    assert _dimensions(ffmpeg, await resp.read()) == (300, 300)
    sizes = {}
    for size in (100, 40):
        resp = await _call(server, "getCoverArt", id=f"al-{album['id']}", size=size)
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        sizes[size] = (resp.headers["ETag"], await resp.read())
        assert _dimensions(ffmpeg, sizes[size][1]) == (size, size)
    runs, hits = pool.runs, server.server.app[CACHE].hits
    resp = await _call(server, "getCoverArt", "POST", id=f"al-{album['id']}", size=100)
    assert await resp.read() == sizes[100][1] and resp.headers["ETag"] == sizes[100][0]
    assert pool.runs == runs and server.server.app[CACHE].hits == hits + 1  # from the cache, no ffmpeg
    resp = await _call(server, "getCoverArt", headers={"If-None-Match": sizes[40][0]}, id=album["id"], size=40)
    assert resp.status == 304 and "max-age" in resp.headers["Cache-Control"]
    resp = await _call(server, "getCoverArt", id=album["id"], size=99999)  # clamped, never enlarged
    assert _dimensions(ffmpeg, await resp.read()) == (300, 300)


async def test_cover_art_of_tracks_artists_and_items_without_one(server, ffmpeg):
    albums = {a["title"]: a for a in await _albums(server)}
    embedded = await _track(server, album="Paper Lanterns")
    for cover_id in (f"tr-{embedded['id']}", embedded["id"], f"ar-{embedded['artist_id']}",
                     f"al-{albums['Paper Lanterns']['id']}"):
        resp = await _call(server, "getCoverArt", id=cover_id, size=64)
        assert resp.status == 200 and resp.content_type.startswith("image/"), cover_id
        assert _dimensions(ffmpeg, await resp.read()) == (64, 64)
    bare = next(a for a in albums.values() if not a["has_cover"])
    for cover_id in (f"al-{bare['id']}", bare["id"], "al-nope", "nope", "tr-", ""):
        assert _error_code(await _json(server, "getCoverArt", id=cover_id)) == 70, cover_id


async def test_lyrics_by_song_id_from_tags_and_lrc_files(server):
    sung = await _track(server, title="Sung")
    lists = (await _json(server, "getLyricsBySongId", id=sung["id"]))["lyricsList"]["structuredLyrics"]
    assert [(item["lang"], item["synced"]) for item in lists] == [("eng", False), ("deu", True), ("und", True)]
    assert lists[0]["line"] == [{"value": "First line"}, {"value": ""}, {"value": "Second line"}]
    assert lists[1]["line"] == [{"start": 1000, "value": "Hallo"}, {"start": 2500, "value": "Welt"}]
    assert lists[2]["offset"] == 250 and lists[2]["displayTitle"] == "Sung" and lists[2]["displayArtist"] == "Lyra"
    assert lists[2]["line"] == [{"start": 1000, "value": "Hello there"}, {"start": 2250, "value": "Word by word"},
                                {"start": 3500, "value": "Twice"}, {"start": 5000, "value": "Twice"}]
    only = (await _json(server, "getLyricsBySongId", id=sung["id"], lang="deu"))["lyricsList"]["structuredLyrics"]
    assert [item["lang"] for item in only] == ["deu"]
    flow, tune = await _track(server, title="Flow"), await _track(server, title="Tune")
    lists = (await _json(server, "getLyricsBySongId", id=flow["id"]))["lyricsList"]["structuredLyrics"]
    assert {(item["synced"], item["line"][0]["value"]) for item in lists} == {(True, "Flac one"), (False, "Plain flac")}
    lists = (await _json(server, "getLyricsBySongId", id=tune["id"]))["lyricsList"]["structuredLyrics"]
    assert [line["value"] for line in lists[0]["line"]] == ["Mp4 words", "more words"]
    none = await _track(server, album="Paper Lanterns")
    assert (await _json(server, "getLyricsBySongId", id=none["id"]))["lyricsList"] == {"structuredLyrics": []}
    resp = await _call(server, "getLyricsBySongId", id=sung["id"])  # XML: a line's text is its content
    root = etree.fromstring(await resp.read())
    lines = root.findall(f"{NS}lyricsList/{NS}structuredLyrics")[1].findall(f"{NS}line")
    assert [(line.get("start"), line.text) for line in lines] == [("1000", "Hallo"), ("2500", "Welt")]


async def test_get_lyrics_by_artist_and_title(server):
    found = (await _json(server, "getLyrics", artist="Lyra", title="sung"))["lyrics"]
    assert found == {"artist": "Lyra", "title": "Sung", "value": "First line\n\nSecond line"}
    found = (await _json(server, "getLyrics", title="Flow"))["lyrics"]
    assert found["value"] == "Plain flac"
    assert (await _json(server, "getLyrics", artist="Nobody", title="Sung"))["lyrics"] == {
        "artist": "Nobody", "title": "Sung", "value": ""}
    assert (await _json(server, "getLyrics"))["lyrics"] == {"value": ""}


async def test_hls_answers_the_master_playlist_with_signed_absolute_uris(server):
    flac = await _track(server, codec="flac")
    for name in ("hls.m3u8", "hls"):
        resp = await _call(server, name, id=flac["id"])
        assert resp.status == 200 and resp.content_type == "application/vnd.apple.mpegurl"
        uris = [line for line in (await resp.text()).splitlines() if line and not line.startswith("#")]
        assert len(uris) == 3 and all(u.startswith(f"http://127.0.0.1:{server.server.port}/hls/") for u in uris)
    variant = await server.get(uris[0].split(str(server.server.port), 1)[1])  # no credentials but the signature
    assert variant.status == 200 and "#EXT-X-ENDLIST" in await variant.text()
    resp = await _call(server, "hls.m3u8", id=flac["id"], bitRate="100@640x480")
    assert (await resp.text()).count("#EXT-X-STREAM-INF") == 1


async def test_unknown_ids_and_hostile_parameters_are_subsonic_errors(server):
    for name in ("stream", "download", "getCoverArt", "getLyricsBySongId", "hls"):
        assert _error_code(await _json(server, name, id="nope")) == 70, name
        assert _error_code(await _json(server, name)) == 10, name
    track = await _track(server, codec="flac")
    for params in ({"timeOffset": "-1"}, {"timeOffset": "abc"}, {"timeOffset": "1e400"}, {"timeOffset": "nan"},
                   {"timeOffset": "99999"}, {"maxBitRate": "-5"}, {"maxBitRate": "x" * 40}, {"maxBitRate": "10" * 30},
                   {"estimateContentLength": "maybe"}):
        assert _error_code(await _json(server, "stream", id=track["id"], **params)) == 0, params
    for size in ("0", "-3", "abc", "1" * 50, "12.5"):
        assert _error_code(await _json(server, "getCoverArt", id=track["id"], size=size)) == 0, size
    assert _error_code(await _json(server, "hls", id=track["id"], bitRate="fast")) == 0
    resp = await _call(server, "stream", id=track["id"], format="x" * 500, maxBitRate=10**5)
    assert resp.status == 200 and resp.content_type == "audio/mpeg"  # an unknown format: mp3
    await resp.read()


def _read(connection, response) -> bytes:
    """A py-opensonic binary answer's body, read on the connection's own loop."""
    return asyncio.run_coroutine_threadsafe(response.read(), connection._loop).result()


def _opensonic_session(port: int, track_id: str, cover_id: str, lyric_id: str) -> dict:
    connection = libopensonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=port)
    try:
        whole = connection.stream(track_id)
        ranged = connection.stream(track_id, byte_range="bytes=0-99")
        later = connection.stream(track_id, tformat="mp3", time_offset=20)
        return {"whole": _read(connection, whole), "ranged": (ranged.status, _read(connection, ranged)),
                "later": _read(connection, later), "download": _read(connection, connection.download(track_id)),
                "cover": _read(connection, connection.get_cover_art(cover_id, size=50)),
                "lyrics": connection.get_lyrics_by_song_id(lyric_id)}
    finally:
        connection.cleanup()


async def test_py_opensonic_streams_downloads_and_reads_covers_and_lyrics(server, ffmpeg):
    flac, sung = await _track(server, codec="flac"), await _track(server, title="Sung")
    album = next(a for a in await _albums(server) if a["has_cover"])
    got = await asyncio.to_thread(_opensonic_session, server.server.port, flac["id"], f"al-{album['id']}", sung["id"])
    original = await _file(server, flac)
    assert got["whole"] == original and got["download"] == original and got["ranged"] == (206, original[:100])
    assert abs(_seconds(ffmpeg, got["later"]) - (flac["duration"] - 20)) < 1.0
    assert _dimensions(ffmpeg, got["cover"]) == (50, 50)
    assert [(item.lang, item.synced) for item in got["lyrics"]] == [("eng", False), ("deu", True), ("und", True)]
    assert got["lyrics"][1].line[0].start == 1000 and got["lyrics"][2].offset == 250
