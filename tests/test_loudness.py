"""The loudness job (media.loudness): real files at known levels, a real server, plain ffmpeg as
the reference, the catalog and Subsonic's replayGain, and the job behind listeners in the pool."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time

import pytest

from media import FfmpegPool, loudness
from streamer import create_app
from streamer.http.keys import LOUDNESS
from streamer.http.keys import AUTH, CATALOG, SCANNER
from streamer.subsonic.models import replay_gain
from tests.conftest import encode, settings_for, wait_for_scan


def reference(ffmpeg: str, path) -> tuple[float, float]:
    """(LUFS, true peak dBFS) as plain `ffmpeg -af ebur128=peak=true` reports them in its summary."""
    err = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-i", str(path), "-af", "ebur128=peak=true",
                          "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    summary = err[err.rindex("Summary:"):]
    return (float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1)),
            float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1)))


def make_album(ffmpeg: str, folder, tagged: bool = False) -> dict:
    """A quiet and a loud track of one album (flac, tagged with album and artist)."""
    meta = {"album": "Levels", "artist": "Tone"}
    files = {"quiet": encode(ffmpeg, folder / "quiet.flac", 3.0, codec_args=("-af", "volume=-20dB"),
                             metadata={**meta, "title": "quiet"}),
             "loud": encode(ffmpeg, folder / "loud.flac", 3.0, codec_args=("-af", "volume=6dB"),
                            metadata={**meta, "title": "loud"}, freq=660)}
    if tagged:
        files["tagged"] = encode(ffmpeg, folder / "tagged.flac", 2.0, metadata={
            **meta, "title": "tagged", "REPLAYGAIN_TRACK_GAIN": "-3.00 dB"})
    return files


async def _until(condition, timeout: float = 30.0) -> None:
    """Until `condition()` holds: a state of the pool, looked at as the loop turns, with a deadline."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)  # a look at the state each few milliseconds


async def settled(app, timeout: float = 60.0) -> None:
    """The scan done, then the job idle with nothing left to measure."""
    await wait_for_scan(app)
    job, end = app[LOUDNESS], time.monotonic() + timeout
    while time.monotonic() < end:
        if not job.running and not app[SCANNER].running and not await app[CATALOG].db.read(loudness.to_measure):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the loudness job did not finish")


def every_row(db) -> dict[str, dict]:
    cursor = db.execute("SELECT * FROM tracks")
    names = [d[0] for d in cursor.description]
    return {r[names.index("title")]: dict(zip(names, r)) for r in cursor.fetchall()}


async def rows(app) -> dict[str, dict]:
    """Every track's full catalog row, by title."""
    return await app[CATALOG].db.read(every_row)


@pytest.fixture
async def served(aiohttp_client, ffmpeg, tmp_path):
    files = make_album(ffmpeg, tmp_path / "music" / "Levels", tagged=True)
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data", loudness_analysis=True))
    client = await aiohttp_client(app)
    await settled(app)
    return client, files


async def test_tracks_match_plain_ffmpeg_and_the_album_lies_between(served, ffmpeg):
    client, files = served
    found = await rows(client.server.app)
    for name in ("quiet", "loud"):
        lufs, peak_db = reference(ffmpeg, files[name])
        assert abs(found[name]["loudness"] - lufs) <= 1.0, (name, found[name]["loudness"], lufs)
        assert abs(found[name]["loudness_peak"] - 10 ** (peak_db / 20)) <= 0.01
    quiet, loud = found["quiet"]["loudness"], found["loud"]["loudness"]
    assert loud - quiet > 20  # 26 dB apart as made, so "between" means something
    album = {r["album_loudness"] for r in found.values()}
    assert len(album) == 1 and quiet < album.pop() < loud
    assert {r["album_loudness_peak"] for r in found.values()} == {max(r["loudness_peak"] for r in found.values())}


async def test_a_changed_file_is_measured_again_and_unchanged_ones_are_not(served, ffmpeg):
    client, files = served
    app = client.server.app
    job = app[LOUDNESS]
    before, measured = await rows(app), job.measured
    encode(ffmpeg, files["loud"], 4.0, codec_args=("-af", "volume=-6dB"),
           metadata={"album": "Levels", "artist": "Tone", "title": "loud"}, freq=660)
    await app[SCANNER].start()
    await settled(app)
    after = await rows(app)
    assert job.measured == measured + 1  # only the changed file
    assert abs(after["loud"]["loudness"] - reference(ffmpeg, files["loud"])[0]) <= 1.0
    assert after["loud"]["loudness"] < before["loud"]["loudness"] - 10
    assert after["quiet"]["loudness_of"] == before["quiet"]["loudness_of"]
    assert after["quiet"]["album_loudness"] < before["quiet"]["album_loudness"]  # the album follows
    await app[SCANNER].start()  # nothing changed: nothing measured
    await settled(app)
    assert job.measured == measured + 1 and job.passes >= 2


async def test_replaygain_is_the_measurement_without_tags_and_the_tag_with_them(served):
    client, _ = served
    found = await rows(client.server.app)
    untagged = replay_gain(found["quiet"])
    assert untagged["trackGain"] == round(-18 - found["quiet"]["loudness"], 2)
    assert untagged["albumGain"] == round(-18 - found["quiet"]["album_loudness"], 2)
    assert untagged["trackPeak"] == found["quiet"]["loudness_peak"]
    assert found["tagged"]["loudness"] is not None  # measured, yet the tag wins
    assert replay_gain(found["tagged"]) == {"trackGain": -3.0}


async def test_subsonic_songs_carry_the_computed_gain(served):
    from media import listeners

    client, _ = served
    app = client.server.app
    await app[CATALOG].db.write(listeners.add_user, "ann", "listener")
    await app[CATALOG].db.write(listeners.set_password, "ann", "pw", app[AUTH].password_key)
    answer = await (await client.get("/rest/search3", params={
        "u": "ann", "p": "pw", "v": "1.16.1", "c": "t", "f": "json", "query": ""})).json()
    songs = {s["title"]: s for s in answer["subsonic-response"]["searchResult3"]["song"]}
    found = await rows(app)
    assert songs["quiet"]["replayGain"]["trackGain"] == round(-18 - found["quiet"]["loudness"], 2)
    assert songs["tagged"]["replayGain"] == {"trackGain": -3.0}


async def test_the_job_waits_behind_a_listener_in_the_pool(ffmpeg, tmp_path):
    """One slot, held: the job's run asked first, a listener's after; the listener goes first."""
    path = encode(ffmpeg, tmp_path / "a.flac", 2.0)
    pool = FfmpegPool(ffmpeg, slots=1, queue_seconds=30)
    order: list[str] = []
    realtime = ["-f", "lavfi", "-i", "anullsrc", "-af", "arealtime", "-t", "0.4", "-f", "null", "-"]

    async def listener() -> None:
        await pool.run(realtime)  # deadline None: needed now
        order.append("listener")

    async def job() -> None:
        await loudness.measure(pool, str(path))
        order.append("job")

    holder = asyncio.create_task(pool.run(realtime))
    await _until(lambda: pool.running == 1)  # the only slot is held
    waiting_job = asyncio.create_task(job())
    await _until(lambda: pool.queued == 1)  # the job is in line first
    await asyncio.gather(holder, waiting_job, listener())
    assert order == ["listener", "job"]


async def test_a_transcode_during_the_job_starts_at_once(aiohttp_client, ffmpeg, tmp_path):
    for i in range(12):
        encode(ffmpeg, tmp_path / "music" / f"t{i:02}.flac", 20.0, metadata={"title": f"t{i:02}"}, freq=300 + 40 * i)
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data", loudness_analysis=True))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    while not app[LOUDNESS].running:
        await asyncio.sleep(0.01)
    track = (await (await client.get("/api/v1/tracks?limit=1")).json())["items"][0]
    started = time.monotonic()
    resp = await client.get(f"/stream/{track['id']}?format=mp3&bitrate=128")
    assert resp.status == 200 and await resp.content.readexactly(4096)
    first_bytes = time.monotonic() - started
    await resp.read()
    assert app[LOUDNESS].pending > 0  # the job was still at work
    assert first_bytes < 1.5, first_bytes
    await settled(app)
    assert all(r["loudness"] is not None for r in (await rows(app)).values())


async def test_a_loudness_row_applied_elsewhere_gives_the_same_values(served, tmp_path):
    """What a replica does with a `loudness.put` row (media.replica, once it knows the operation)."""
    import json

    from media import Catalog

    client, _ = served
    app = client.server.app
    found = await rows(app)
    put = [{"id": r["id"], **{c: r[c] for c in loudness.COLUMNS}} for r in found.values()]
    await app[CATALOG].db.write(lambda db: loudness.save(db, put, log_change=True))
    data = await app[CATALOG].db.read(lambda db: db.execute(
        "SELECT data FROM changes WHERE op = 'loudness.put' ORDER BY seq DESC LIMIT 1").fetchone()[0])
    other = Catalog(tmp_path / "other" / "catalog.db")
    try:
        blank = [{**r, **dict.fromkeys(loudness.COLUMNS)} for r in found.values()]
        await other.db.write(lambda db: db["tracks"].insert_all(blank))
        await other.db.write(lambda db: loudness.save(db, json.loads(data)["tracks"], log_change=False))
        assert await other.db.read(every_row) == found
    finally:
        other.close()


async def test_a_file_not_on_disk_is_neither_run_nor_marked(ffmpeg, tmp_path, caplog):
    """A track whose file is not in the library folder (a drive not mounted): no ffmpeg run for
    it, no mark that would keep it from being measured, one warning for the pass; measured in
    the pass after the file is back."""
    from media import Catalog, Scanner

    files = make_album(ffmpeg, tmp_path / "music" / "Levels")
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        await Scanner(tmp_path / "music", catalog).scan()
        kept = files["loud"].read_bytes()
        files["loud"].unlink()
        pool = FfmpegPool(ffmpeg, slots=1, queue_seconds=30)
        job = loudness.LoudnessJob(catalog, pool, tmp_path / "music")
        assert await job.run_pass() == 1
        assert (pool.runs, job.absent, job.failed) == (1, 1, 0)
        left = await catalog.db.read(loudness.to_measure)
        assert [path for _, path, _ in left] == ["Levels/loud.flac"]
        assert sum("not in" in r.getMessage() for r in caplog.records) == 1
        files["loud"].write_bytes(kept)
        assert await job.run_pass() == 1
        assert (pool.runs, job.absent) == (2, 0)
        assert await catalog.db.read(loudness.to_measure) == []
    finally:
        catalog.close()


async def test_absent_files_are_looked_for_again_without_a_catalog_change(ffmpeg, tmp_path, monkeypatch):
    """A drive mounted again changes nothing in the catalog: the job looks for absent files again
    after ABSENT_RETRY, and measures them."""
    from media import Catalog, Scanner

    monkeypatch.setattr(loudness, "ABSENT_RETRY", 0.1)
    files = make_album(ffmpeg, tmp_path / "music" / "Levels")
    catalog = Catalog(tmp_path / "catalog.db")
    follow = None
    try:
        await Scanner(tmp_path / "music", catalog).scan()
        kept = files["quiet"].read_bytes()
        files["quiet"].unlink()
        job = loudness.LoudnessJob(catalog, FfmpegPool(ffmpeg, slots=1, queue_seconds=30), tmp_path / "music")
        follow = asyncio.create_task(job.follow(lambda: False))
        await _until(lambda: job.absent == 1 and job.measured == 1 and not job.running)
        generation = catalog.generation
        files["quiet"].write_bytes(kept)
        await _until(lambda: job.absent == 0 and job.measured == 2 and not job.running)
        assert catalog.generation == generation
        assert await catalog.db.read(loudness.to_measure) == []
    finally:
        if follow is not None:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
        catalog.close()
