"""Child processes are reaped by the event loop's child watcher and by nothing else (issue 15).

hls_bench logged `WARNING asyncio: Unknown child process pid N, will report returncode 255`: an
ffmpeg that had just exited was reaped by Popen.poll() inside asyncio's Process.kill() (through
Popen.send_signal, bpo-38630) before the watcher's waitpid(), which then found no child and
reported 255. Whether the watcher or the poll comes first is a race, so a log line alone would
catch the fault in some runs only; this test also watches every waitpid() that Popen itself does
on the pool's ffmpeg (a pass-through spy on subprocess.Popen: the server and ffmpeg are real),
and any such call fails it, whoever wins the race that time.

One real server runs every path that starts and ends ffmpeg together: HLS segments made cold (the
last segment of a track, whose run ends with ffmpeg already gone: the path of the warning), runs
going on ahead of their listener (killed at shutdown), segment requests abandoned before their
segment is made, transcodes left midway, and meanwhile a scan that reads tags in worker processes
(reader processes forked from this one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
from pathlib import Path

from media.scanner import IN_THREAD_BELOW
from streamer import create_app
from streamer.http.keys import FFMPEG_POOL, SCANNER
from tests.conftest import encode, settings_for, wait_for_scan
from tests.test_ffmpeg_pool import _until
from tests.test_hls import aac_variant

TRACKS = 12  # hard links (a track id each, so cold segments): 6 of a 20 s FLAC, 6 of a 120 s one
MORE = IN_THREAD_BELOW + 6  # files added for the second scan: enough for its worker processes


def _waits_by_popen(monkeypatch, binary: str) -> list[tuple[int, str]]:
    """A list that fills with (pid, method) for each time subprocess.Popen itself waits for one
    of the pool's ffmpeg processes that asyncio has not seen end (returncode None): the calls
    that reap behind the watcher's back when the child has just exited. Popen's only two
    waitpid() callers, each passed through unchanged."""
    waits: list[tuple[int, str]] = []
    for name in ("_internal_poll", "_try_wait"):
        original = getattr(subprocess.Popen, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if self.returncode is None and tuple(self.args[:2]) == (binary, "-nostdin"):
                waits.append((self.pid, _name))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(subprocess.Popen, name, spy)
    return waits


def _ffmpeg_children() -> list[tuple[int, str]]:
    """(pid, state) of this process's ffmpeg children, zombies (state Z) included."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    name, rest = f.read().split(" (", 1)[1].rsplit(")", 1)
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            state, ppid = rest.split()[:2]
            if int(ppid) == os.getpid() and name.startswith("ffmpeg"):  # the wheel's: ffmpeg-linux-x8...
                found.append((int(entry), state))
    return found


async def _segment_base(client, track: dict) -> str:
    uri = await aac_variant(client, track)
    return f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}"


async def _last_segment(client, track: dict) -> None:
    base = await _segment_base(client, track)
    resp = await client.get(f"{base}/index.m3u8")
    last = [ln for ln in (await resp.text()).splitlines() if ln and not ln.startswith("#")][-1]
    resp = await client.get(f"{base}/{last}")
    assert resp.status == 200 and len(await resp.read()) > 100


def _ffmpeg_runs_on(path: Path) -> bool:
    """Whether an ffmpeg child of this process has `path` on its command line."""
    for pid, _ in _ffmpeg_children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if os.fsencode(path) in f.read().split(b"\0"):
                    return True
        except OSError:
            pass
    return False


async def _raw_get(client, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def _abandoned(client, path: str, source: Path) -> None:
    """A segment request dropped once its ffmpeg runs: the run is cancelled, ffmpeg killed."""
    _, writer = await _raw_get(client, path)
    await _until(lambda: _ffmpeg_runs_on(source), f"no ffmpeg started for {path}")
    writer.transport.abort()


async def _transcode_left_midway(client, track: dict) -> None:
    reader, writer = await _raw_get(client, f"/stream/{track['id']}?format=opus")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    assert head.startswith(b"HTTP/1.1 200")
    await reader.read(1000)
    writer.transport.abort()


async def _paths_that_start_ffmpeg(client, tracks: list[dict], files: list[Path]) -> None:
    """Every way ffmpeg starts and ends, at once, while a scan of MORE new files runs."""
    scan = client.server.app[SCANNER].start()
    bases = [await _segment_base(client, t) for t in tracks]
    await asyncio.gather(
        *(_last_segment(client, t) for t in tracks[:6]),
        *(client.get(f"{b}/0.aac") for b in bases[6:8]),  # runs that go on ahead of their listener
        *(_abandoned(client, f"{b}/2.aac", f) for b, f in zip(bases[8:11], files[8:11])),
        _transcode_left_midway(client, tracks[11]),
    )
    progress = await asyncio.wait_for(scan, 60)
    assert (progress.state, progress.added, progress.to_read) == ("done", MORE, MORE)


async def test_only_the_child_watcher_reaps_ffmpeg(aiohttp_client, ffmpeg, tmp_path, caplog, monkeypatch):
    library = tmp_path / "music"
    (library / "Cold").mkdir(parents=True)
    short, long = encode(ffmpeg, tmp_path / "short.flac", 20.0), encode(ffmpeg, tmp_path / "long.flac", 120.0)
    files = [library / "Cold" / f"{i:02d} Track.flac" for i in range(TRACKS)]
    for i, path in enumerate(files):
        os.link(short if i < TRACKS // 2 else long, path)  # long: runs that live until they are stopped
    # Two scan workers (conftest makes it one): the scan below reads in worker processes.
    app = create_app(dataclasses.replace(settings_for(library, tmp_path / "data"), scan_workers=2))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    resp = await client.get("/api/v1/tracks?limit=100&sort=title")
    by_title = {t["title"]: t for t in (await resp.json())["items"]}
    tracks = [by_title[f.stem] for f in files]
    (library / "More").mkdir()
    for i in range(MORE):
        os.link(short, library / "More" / f"{i:03d} More.flac")
    waits = _waits_by_popen(monkeypatch, app[FFMPEG_POOL].binary)
    caplog.set_level(logging.WARNING, logger="asyncio")

    await _paths_that_start_ffmpeg(client, tracks, files)
    assert app[FFMPEG_POOL].runs >= TRACKS
    await client.close()  # the runs still going on ahead are killed and reaped with the app
    await _until(lambda: not _ffmpeg_children(), "ffmpeg left running or unreaped")

    assert waits == [], "Popen waited for ffmpeg itself, racing asyncio's child watcher"
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"
            and ("child process" in r.getMessage() or "returncode" in r.getMessage())] == []

