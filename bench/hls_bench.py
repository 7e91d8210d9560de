#!/usr/bin/env python3
"""HLS benchmark: segments made on demand against plain ffmpeg, a cached segment against a range of
an original, and 20 listeners starting cold tracks at once; every reference is measured in the
same run.

What it does (everything on 127.0.0.1; everything it starts is stopped at the end, also on Ctrl-C):

0. makes --bases (4) different ~5-minute FLAC files (44.1 kHz stereo, a tone and a noise on each
   channel, imageio-ffmpeg's ffmpeg; not timed) and hard-links them at distinct paths of a library,
   one path per cold track the run needs (so every track id, and every cache key, is new); starts
   our server (one process) over it and waits for the scan;
1. cold start: for --cold (20) tracks never requested before, master -> aac128 variant playlist ->
   segment 0; the segment request is timed (request to full body). Cold seek: the same with the
   LAST segment of other cold tracks, and (info) with the segment at 150 s of yet other tracks.
   Reference: `ffmpeg -ss 150 -i f.flac -t 6 -c:a aac -b:a 128k -f adts -` on the same FLAC,
   interleaved with ours. Before each timed request and each reference run the server is left
   to go idle (no ffmpeg running: the segment made ahead of the previous request is finished),
   so each starts on an idle server. Targets: p50 < 300 ms, p95 < 600 ms (both series);
2. warm segment: wrk (--connections 32) on an already cached segment, against wrk on a Range
   request `bytes=0-(N-1)` of an original (`/stream/{id}`, N = the segment's size) on the same
   server; alternating rounds, best round of each. Target: segment/range req/s >= 0.5;
3. --listeners (20) listeners start a different cold track at the same moment (one aiohttp
   session each): master -> variant -> segment 0, time to first segment (target: every one
   within 3 s); then each plays --playback (30) s of audio in real time from the moment its first
   segment arrived, asking for segment k when segment k-1 starts playing (--lookahead 1), and
   must have segment k before the playhead reaches it (target: every listener, every segment).
   The listeners' thread runs at real-time priority (SCHED_FIFO, when run as root): they stand for
   phones elsewhere, and on 2 shared cores with 20 ffmpeg runs a process of the usual priority was
   held up for 2-5 s, so the late segments were the load generator's (`client stall` shows it);
4. whole-track transcode (info): all segments of one cold track fetched one after the other as
   fast as they come, against one plain ffmpeg transcoding the whole FLAC to AAC 128k (`-f adts`);
   both as x-realtime, and the time ratio.

With --catalog N (200000 for issue 15), a second server runs over a catalog of the library plus
N generated tracks: the library scanned by the server's own Scanner, then N rows (distinct paths,
titles, 12-track albums, 48-track artists; the stream facts of one real file) saved through the
catalog's scan save path (Catalog.save_scan in batches, then finish_scan, which rebuilds albums,
artists and the search index) into its data folder, which it opens with --no-scan-on-start (a
scan would drop rows whose files do not exist). Tests 1, 2 and 4 then run on that server, and
test 3 on both, --scale-rounds times alternating which goes first, each round on new cold
tracks and once the runs of earlier tests have ended on both servers: the server over the
library alone (81 tracks, and --listeners more for each round after the first) is the
reference measured in the same run.

Every segment body is checked (200, audio/aac, an ID3 timestamp tag followed by ADTS frames, as
many frames as its #EXTINF says); any bad body, non-2xx answer or 5xx counted by /metrics fails.

Run it with the project's Python, from the repo root:

    python bench/hls_bench.py [--cold 20] [--listeners 20] [--playback 30] [--rounds 2]
                              [--duration 4] [--connections 32] [--catalog 200000 [--scale-rounds 2]]
                              [--verbose] [--keep]

About 2 minutes in all with the defaults, 5 to 8 with --catalog 200000. Needs the `wrk` binary
(Debian package `wrk`) for test 2; it installs nothing.

Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, Summary, alternating_rounds, ensure_alive, fastest, ffmpeg_exe, load_average, log_problems,
    paired_median, percentile, ratio, require_modules, run_bench, run_wrk, start_server, wait_scan,
)

if str(REPO) not in sys.path:  # --catalog fills a catalog with the server's own media package
    sys.path.insert(0, str(REPO))

TARGET_COLD_P50 = 0.300
TARGET_COLD_P95 = 0.600
TARGET_WARM_RATIO = 0.5
TARGET_FIRST_SEGMENT = 3.0

SAMPLE_RATE = 44100
AAC_FRAME = 1024
REF_SEEK = 150.0  # where the reference cuts its 6 s segment
REF_SECONDS = 6.0
REQUEST_TIMEOUT = 20.0  # any one HTTP request of ours


# --- processes --------------------------------------------------------------------------------


# --- making the library -----------------------------------------------------------------------



def make_bases(ffmpeg: str, folder: Path, count: int, seconds: float) -> list[Path]:
    """`count` different FLAC files, made two at a time: left and right each a tone plus noise."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i in range(count):
        path = folder / f"base{i}.flac"
        f1, f2 = 220 + 97 * i, 330 + 131 * i
        src = f"sample_rate={SAMPLE_RATE}:duration={seconds}"
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "lavfi", "-i", f"sine=frequency={f1}:{src}",
               "-f", "lavfi", "-i", f"sine=frequency={f2}:{src}",
               "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.25:seed={11 + i}:{src}",
               "-f", "lavfi", "-i", f"anoisesrc=color=brown:amplitude=0.35:seed={71 + i}:{src}",
               "-filter_complex", "[0][2]amix=inputs=2[l];[1][3]amix=inputs=2[r];[l][r]amerge=inputs=2[o]",
               "-map", "[o]", "-ar", str(SAMPLE_RATE), "-sample_fmt", "s16", "-c:a", "flac", str(path)]
        jobs.append((path, cmd))
    out = []
    for start in range(0, len(jobs), 2):
        running = [(p, subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                   for p, c in jobs[start:start + 2]]
        for path, proc in running:
            try:
                _, err = proc.communicate(timeout=120)
            except BaseException:
                for _, other in running:
                    with contextlib.suppress(ProcessLookupError):
                        other.kill()
                    other.wait()
                raise
            if proc.returncode != 0 or not path.exists():
                raise BenchError(f"ffmpeg failed for {path.name}: {err.decode(errors='replace')[-1500:]}")
            out.append(path)
    return out


def link_library(library: Path, groups: dict[str, int], bases: list[Path]) -> dict[str, Path]:
    """Hard links (copies if links fail) of the bases at distinct paths; no tags, so each
    track's title is its file's name. Returns title -> base file."""
    titles: dict[str, Path] = {}
    n = 0
    for group, count in groups.items():
        (library / group).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            title = f"{group}-{i:02d}"
            base = bases[n % len(bases)]
            n += 1
            path = library / group / f"{title}.flac"
            try:
                os.link(base, path)
            except OSError:
                shutil.copyfile(base, path)
            titles[title] = base
    return titles


# --- a big catalog (--catalog) ----------------------------------------------------------------

EXTRA_BATCH = 5000  # generated tracks per save, as a scan saves what its workers read
GENRES = ("Rock", "Jazz", "Classical", "Electronic", "Folk", "Hip-Hop", "Pop", "Soul")


def extra_records(template: dict, start: int, stop: int) -> list[dict]:
    """Catalog records of generated tracks start..stop-1: the template's stream facts under
    distinct paths, titles, albums (12 tracks each) and artists (48 tracks each). Their files do
    not exist: only a server that does not scan keeps them."""
    from media import ids

    out = []
    for i in range(start, stop):
        artist, album, number = f"Artist {i // 48:05d}", f"Album {i // 12:06d}", i % 12 + 1
        path = f"extra/{artist}/{album}/{number:02d} Song {i}.flac"
        out.append(dict(template, id=ids.track_id(path), path=path, title=f"Song {i}", tag_artist=artist,
                        tag_album=album, track_number=number, year=1960 + i // 12 % 60,
                        genre=GENRES[i // 12 % len(GENRES)]))
    return out


async def fill_catalog(library: Path, data: Path, extra: int) -> dict[str, float]:
    """The catalog of a server that will not scan: the library scanned by the server's own
    Scanner, then `extra` generated tracks saved through the scan's save path (Catalog.save_scan
    in batches, then finish_scan: albums, artists and the search index rebuilt). Timings, counts."""
    from media import Catalog, Scanner
    from media.tags import read_files

    catalog = Catalog(data / "catalog.db", "normal")
    try:
        t0 = time.monotonic()
        progress = await Scanner(library, catalog, workers=1).scan()
        first = min(library.rglob("*.flac"))
        st = first.stat()
        _, template, problem = read_files(str(library), [(first.relative_to(library).as_posix(), st.st_size,
                                                          st.st_mtime_ns)])[0]
        if progress.state != "done" or template is None:
            raise BenchError(f"scan of the library for the big catalog: {progress.state}, {problem}")
        t1 = time.monotonic()
        for start in range(0, extra, EXTRA_BATCH):
            await catalog.save_scan(extra_records(template, start, min(extra, start + EXTRA_BATCH)), [])
        await catalog.finish_scan({})
        return {"scan": t1 - t0, "fill": time.monotonic() - t1, **await catalog.counts()}
    finally:
        catalog.close()


async def same_tracks(base: str, tracks: dict[str, dict], answers: Answers) -> dict[str, dict]:
    """The tracks (title -> track) as the server at `base` lists them (ids are the same on
    every server of one library: they come from the paths)."""
    import aiohttp

    out = {}
    async with aiohttp.ClientSession() as session:
        for title, track in tracks.items():
            status, _, body = await get(session, f"{base}/api/v1/tracks/{track['id']}", answers)
            if status != 200:
                raise BenchError(f"track {title} ({track['id']}) at {base}: status {status}")
            out[title] = json.loads(body)
    return out


def start_big(r: Run, procs: list[Proc]) -> Server:
    """[0] The server over the library plus --catalog generated tracks, its tracks listed."""
    data = r.tmp / "data-big"
    print(f"[0] big catalog: the library scanned, then {r.args.catalog:,} generated tracks saved "
          f"through Catalog.save_scan ({EXTRA_BATCH:,} a batch) and finish_scan", flush=True)
    facts = asyncio.run(fill_catalog(r.tmp / "library", data, r.args.catalog))
    t0 = time.monotonic()
    proc, base = start_server(r.tmp / "library", data, r.tmp / "server-big.log", procs,
                              extra=("--no-scan-on-start",))
    tracks = asyncio.run(same_tracks(base, r.small.tracks, r.answers))
    print(f"  scan {facts['scan']:.1f}s, {r.args.catalog:,} tracks saved and regrouped in {facts['fill']:.1f}s "
          f"(not timed): {facts['tracks']:,} tracks, {facts['albums']:,} albums, {facts['artists']:,} "
          f"artists; {(data / 'catalog.db').stat().st_size / 2**20:.0f} MiB. Its server: {base} (pid "
          f"{proc.pid}), answering {time.monotonic() - t0:.1f}s after its start\n", flush=True)
    return Server(f"{facts['tracks']:,} tracks", proc, base, tracks)


# --- HTTP (aiohttp client) --------------------------------------------------------------------

class Answers:
    """Counts of what the server answered, and what was wrong."""

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.bad_bodies: list[str] = []
        self.failures: list[str] = []

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def non2xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)


async def get(session, url: str, answers: Answers, headers: dict | None = None) -> tuple[int, dict, bytes]:
    import aiohttp

    try:
        async with session.get(url, headers=headers or {},
                               timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
            body = await resp.read()
            answers.count(resp.status)
            if resp.status >= 300:
                answers.failures.append(f"{resp.status} for {url}: {body[:200]!r}")
            return resp.status, dict(resp.headers), body
    except (TimeoutError, aiohttp.ClientError) as exc:
        answers.count(0)
        answers.failures.append(f"{type(exc).__name__} for {url}: {exc}")
        return 0, {}, b""


def parse_playlist(text: str) -> list[tuple[float, str]]:
    """(#EXTINF duration, URI) of each segment of a media playlist."""
    out, duration = [], None
    for raw in text.splitlines():
        ln = raw.strip()
        if ln.startswith("#EXTINF:"):
            duration = float(ln[8:].split(",")[0])
        elif ln and not ln.startswith("#"):
            out.append((duration if duration is not None else float("nan"), ln))
            duration = None
    return out


async def open_track(session, hls_url: str, variant: str, answers: Answers) -> tuple[str, list]:
    """Master, then the variant's playlist: (the variant playlist's URL, its segments)."""
    status, _, body = await get(session, hls_url, answers)
    if status != 200:
        raise BenchError(f"master playlist {hls_url}: status {status}: {body[:300]!r}")
    uris = [ln.strip() for ln in body.decode().splitlines() if ln.strip() and not ln.startswith("#")]
    wanted = [u for u in uris if f"/{variant}/" in f"/{u}"]
    if not wanted:
        raise BenchError(f"no {variant} variant in {hls_url}: {uris}")
    variant_url = urljoin(hls_url, wanted[0])
    status, _, body = await get(session, variant_url, answers)
    if status != 200:
        raise BenchError(f"variant playlist {variant_url}: status {status}: {body[:300]!r}")
    plan = parse_playlist(body.decode())
    if not plan:
        raise BenchError(f"variant playlist {variant_url} lists no segment")
    return variant_url, plan


def check_segment(body: bytes, headers: dict, index: int, extinf: float, last: bool) -> str | None:
    """None if the body is a packed-audio segment of the right length, else what is wrong."""
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    if not ctype.startswith("audio/aac"):
        return f"content type {ctype!r}"
    if len(body) < 10 or body[:3] != b"ID3":
        return "no ID3 timestamp tag at the start"
    size = (body[6] << 21) | (body[7] << 14) | (body[8] << 7) | body[9]
    i, frames = 10 + size, 0
    while i < len(body):
        if i + 7 > len(body) or body[i] != 0xFF or body[i + 1] & 0xF6 != 0xF0:
            return f"not an ADTS frame at byte {i}"
        length = ((body[i + 3] & 0x03) << 11) | (body[i + 4] << 3) | (body[i + 5] >> 5)
        if length < 7 or i + length > len(body):
            return f"ADTS frame at byte {i} runs past the body"
        i += length
        frames += 1
    expected = extinf * SAMPLE_RATE / AAC_FRAME
    expected = math.ceil(expected - 1e-6) if last else round(expected)
    expected += 1 if index == 0 else 0  # the first segment keeps the encoder's priming frame
    if frames != expected:
        return f"{frames} ADTS frames, expected {expected} (#EXTINF {extinf})"
    return None


async def fetch_segment(session, url: str, index: int, plan: list, answers: Answers, where: str) -> tuple[float, int]:
    """Time (request to full body) and size of one segment; bad bodies are noted in answers."""
    t0 = time.perf_counter()
    status, headers, body = await get(session, url, answers)
    elapsed = time.perf_counter() - t0
    if status != 200:
        return float("inf"), 0
    problem = check_segment(body, headers, index, plan[index][0], index == len(plan) - 1)
    if problem:
        answers.bad_bodies.append(f"{where} segment {index}: {problem}")
    return elapsed, len(body)


async def metrics(session, base: str) -> dict[str, float]:
    import aiohttp

    out: dict[str, float] = {}
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with session.get(f"{base}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            text = await resp.text()
        for m in re.finditer(r"^(streamer_\w+)(\{[^}]*\})? (\S+)$", text, re.M):
            name = m.group(1)
            if m.group(2):
                if re.search(r'status="5\d\d"', m.group(2)):
                    out["5xx"] = out.get("5xx", 0) + float(m.group(3))
                continue
            out[name] = float(m.group(3))
    return out


async def wait_idle(session, base: str, timeout: float = 10.0, runs_ended: bool = False) -> float:
    """Wait until no ffmpeg works or waits in our server (segments made ahead, say). Processes
    set aside ahead of their listener hold no slot and use no CPU (blocked on a full pipe) once
    ffmpeg has filled its pipe, which the idle period here leaves time for. With `runs_ended`,
    until those have ended too (a run stops 30 s after its listener last asked)."""
    t0 = time.monotonic()
    idle_since, m = None, {}
    while time.monotonic() - t0 < timeout:
        m = await metrics(session, base)
        working = m.get("streamer_ffmpeg_running", 1) if m else 1
        if runs_ended:
            working += m.get("streamer_ffmpeg_paused", 1) if m else 1
        if working == 0 and m.get("streamer_ffmpeg_queued", 1) == 0:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= 0.3:
                return time.monotonic() - t0
        else:
            idle_since = None
        await asyncio.sleep(0.02)
    seen = {k[len("streamer_ffmpeg_"):]: v for k, v in m.items() if k.startswith("streamer_ffmpeg_")}
    raise BenchError(f"our server {base} still runs ffmpeg after {timeout:.0f}s with nothing asked: {seen or 'no metrics'}")


def run_reference(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise BenchError(f"reference ffmpeg failed: {' '.join(cmd)}\n{done.stderr.decode(errors='replace')[-1500:]}")
    return elapsed


def ref_segment_cmd(ffmpeg: str, flac: Path) -> list[str]:
    return [ffmpeg, "-nostdin", "-v", "error", "-ss", f"{REF_SEEK:g}", "-i", str(flac), "-t", f"{REF_SECONDS:g}",
            "-c:a", "aac", "-b:a", "128k", "-f", "adts", "-"]


def ref_whole_cmd(ffmpeg: str, flac: Path) -> list[str]:
    return [ffmpeg, "-nostdin", "-v", "error", "-i", str(flac), "-c:a", "aac", "-b:a", "128k", "-f", "adts", "-"]


# --- 1. cold start and cold seek ----------------------------------------------------------------

async def cold_test(base: str, tracks: dict, titles: dict[str, Path], n: int, variant: str,
                    ffmpeg: str, answers: Answers, verbose: bool) -> dict:
    import aiohttp

    res: dict[str, list[float]] = {"ref": [], "first": [], "last": [], "mid": [], "first_total": [],
                                   "last_total": [], "idle_wait": []}
    seg_info: dict = {}
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            await wait_idle(session, base)  # the segment made ahead of the last request is done
            ref = run_reference(ref_segment_cmd(ffmpeg, titles[f"first-{i:02d}"]))
            res["ref"].append(ref)
            line = [f"  {i + 1:2d}: reference {ref * 1000:5.0f} ms"]
            for group in ("first", "last", "mid"):
                track = tracks[f"{group}-{i:02d}"]
                res["idle_wait"].append(await wait_idle(session, base))
                t0 = time.perf_counter()
                variant_url, plan = await open_track(session, track["hls_url"], variant, answers)
                index = {"first": 0, "last": len(plan) - 1,
                         "mid": min(len(plan) - 1, int(REF_SEEK // plan[0][0]))}[group]
                url = urljoin(variant_url, plan[index][1])
                elapsed, size = await fetch_segment(session, url, index, plan, answers, f"{group}-{i:02d}")
                total = time.perf_counter() - t0
                res[group].append(elapsed)
                if group in ("first", "last"):
                    res[f"{group}_total"].append(total)
                if i == 0:
                    seg_info[group] = {"index": index, "count": len(plan), "extinf": plan[index][0],
                                       "url": url, "size": size, "id": track["id"]}
                line.append(f"{group} (seg {index}) {elapsed * 1000:5.0f} ms")
            if verbose or i in (0, n - 1):
                print(", ".join(line), flush=True)
        await wait_idle(session, base)
    res["seg_info"] = seg_info  # type: ignore[assignment]
    return res


# --- 2. warm segment against a range of an original ---------------------------------------------

def warm_wrk(wrk: str, url: str, args: argparse.Namespace, script: Path | None, label: str) -> dict:
    """One wrk run of the warm test (common.run_wrk, a 5 s per-request timeout): its figures."""
    return run_wrk(wrk, url, threads=args.threads, connections=args.connections, duration=args.duration,
                   timeout="5s", script=script, label=label, verbose=args.verbose, limit=args.duration + 30)[0]


def wrk_line(label: str, r: dict) -> str:
    return (f"  {label:<16} {r['rps']:>8.0f} req/s  p50 {r['p50']:>8}  p99 {r['p99']:>8}  "
            f"socket errors {r['errors']}  non-2xx {r['non2xx']}")


async def check_warm_urls(base: str, seg_url: str, stream_url: str, size: int, answers: Answers) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        status, headers, body = await get(session, seg_url, answers)
        if status != 200 or len(body) != size:
            raise BenchError(f"cached segment {seg_url}: status {status}, {len(body)} bytes, expected {size}")
        status, headers, body = await get(session, stream_url, answers, {"Range": f"bytes=0-{size - 1}"})
        content_range = {k.lower(): v for k, v in headers.items()}.get("content-range", "")
        if status != 206 or len(body) != size or not content_range.startswith(f"bytes 0-{size - 1}/"):
            raise BenchError(f"range of {stream_url}: status {status}, {len(body)} bytes, "
                             f"Content-Range {content_range!r}; expected 206 with {size} bytes")


async def server_counts(base: str) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await metrics(session, base)


# --- 3. listeners -----------------------------------------------------------------------------

async def play_along(session, no: int, variant_url: str, plan: list, play_start: float, playback: float,
                     lookahead: int, answers: Answers, out: dict) -> None:
    """Play `playback` s in real time from `play_start`, asking for segment k when segment
    k - lookahead starts playing; each segment's margin (> 0: there before the playhead needs it)."""
    starts = [0.0]
    for d, _ in plan:
        starts.append(starts[-1] + d)
    wanted = [k for k in range(1, len(plan)) if starts[k] < playback]
    for k in wanted:
        # Ask for segment k when the playhead reaches the start of segment k - lookahead.
        ask_at = play_start + starts[max(0, k - lookahead)]
        delay = ask_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elapsed, _ = await fetch_segment(session, urljoin(variant_url, plan[k][1]), k, plan, answers,
                                         f"listener {no}")
        arrived = time.perf_counter()
        margin = (play_start + starts[k]) - arrived  # > 0: before the playhead needs it
        out["margins"].append(margin)
        if elapsed == float("inf") or margin <= 0:
            out["late"].append(k)
        if elapsed != float("inf"):
            out["segments"] += 1


async def listener(no: int, track: dict, variant: str, start: asyncio.Event, playback: float,
                   lookahead: int, answers: Answers) -> dict:
    """One listener, on `start`: master, variant, segment 0 (timed), then the playback."""
    import aiohttp

    out: dict = {"no": no, "first": float("inf"), "margins": [], "late": [], "segments": 0, "error": None}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        await start.wait()
        t0 = time.perf_counter()
        try:
            variant_url, plan = await open_track(session, track["hls_url"], variant, answers)
            out["playlists"] = time.perf_counter() - t0
            elapsed, _ = await fetch_segment(session, urljoin(variant_url, plan[0][1]), 0, plan, answers,
                                             f"listener {no}")
            if elapsed == float("inf"):
                out["error"] = "segment 0 failed"
                return out
            play_start = time.perf_counter()
            out["first"] = play_start - t0
            out["segments"] = 1
            await play_along(session, no, variant_url, plan, play_start, playback, lookahead, answers, out)
        except BenchError as exc:
            out["error"] = str(exc)
    return out


async def listeners_test(tracks: list[dict], variant: str, playback: float, lookahead: int,
                         answers: Answers) -> list[dict]:
    """Every listener's figures; each also carries `client_stall`, the longest time this process's
    own event loop was held up during the round (the listeners share it: a late segment may be the
    load generator's, not the server's, when the two processes share 2 cores with 20 ffmpeg runs)."""
    start = asyncio.Event()
    tasks = [asyncio.create_task(listener(i, t, variant, start, playback, lookahead, answers))
             for i, t in enumerate(tracks)]
    stall = [0.0]
    heart = asyncio.create_task(_loop_stalls(stall))
    with listeners_first() as first:
        return [{**x, "first_in_line": first} for x in await _listen(tasks, heart, start, stall, playback)]


async def _listen(tasks: list[asyncio.Task], heart: asyncio.Task, start: asyncio.Event, stall: list[float],
                  playback: float) -> list[dict]:
    try:
        await asyncio.sleep(0.2)  # every listener waits on the event
        start.set()
        _, pending = await asyncio.wait(tasks, timeout=playback + 60)
        if pending:
            raise BenchError(f"{len(pending)} listeners did not finish within {playback + 60:.0f}s")
        return [{**t.result(), "client_stall": stall[0]} for t in tasks]
    finally:
        heart.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(heart, *tasks, return_exceptions=True)


@contextlib.contextmanager
def listeners_first():
    """The listeners' thread (this one) ahead of every other process on the CPU while they play
    (SCHED_FIFO; what it starts later gets the usual policy back), where the system allows it
    (root): the listeners stand for phones and speakers elsewhere, not for a process that waits
    behind the server's 20 ffmpeg runs on the same 2 cores. `client stall` shows what is left."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(10))
    except (OSError, AttributeError):  # not allowed: the listeners take their chances
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


async def _loop_stalls(longest: list[float], tick: float = 0.02) -> None:
    """The longest wait past `tick` of a sleep of `tick` on this loop, in longest[0]."""
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(tick)
        longest[0] = max(longest[0], time.perf_counter() - asked - tick)


# --- 4. whole track ----------------------------------------------------------------------------

async def whole_track(base: str, track: dict, variant: str, answers: Answers) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        await wait_idle(session, base)
        before = await metrics(session, base)
        t0 = time.perf_counter()
        variant_url, plan = await open_track(session, track["hls_url"], variant, answers)
        size = 0
        slowest = 0.0
        for k, (_, uri) in enumerate(plan):
            elapsed, n = await fetch_segment(session, urljoin(variant_url, uri), k, plan, answers, "whole")
            slowest = max(slowest, elapsed)
            size += n
        elapsed = time.perf_counter() - t0
        await wait_idle(session, base)
        after = await metrics(session, base)
    return {"seconds": elapsed, "segments": len(plan), "bytes": size, "slowest": slowest,
            "audio": sum(d for d, _ in plan),
            "runs": after.get("streamer_ffmpeg_runs", 0) - before.get("streamer_ffmpeg_runs", 0),
            "ffmpeg_s": after.get("streamer_ffmpeg_seconds", 0) - before.get("streamer_ffmpeg_seconds", 0)}


# --- output -----------------------------------------------------------------------------------

def ms(x: float) -> str:
    return "fail" if x == float("inf") else f"{x * 1000:.0f} ms"


# --- the run's steps ----------------------------------------------------------------------------

@dataclass
class Server:
    """One of our servers: what its catalog holds, its process, its URL and its tracks."""
    label: str
    proc: Proc
    base: str
    tracks: dict[str, dict]  # title -> the catalog's track


@dataclass
class Run:
    """What the run's steps share: options, folders, processes, tools, our servers and their tracks."""
    args: argparse.Namespace
    tmp: Path
    answers: Answers
    ffmpeg: str
    wrk: str
    small: Server  # over the library alone
    titles: dict[str, Path]  # title -> the FLAC it is a link of
    big: Server | None = None  # with --catalog: over the library and the generated tracks

    @property
    def servers(self) -> list[Server]:
        return [self.small] + ([self.big] if self.big is not None else [])

    @property
    def ours(self) -> Proc:  # tests 1, 2 and 4 run on the last server: the big one if any
        return self.servers[-1].proc

    @property
    def base(self) -> str:
        return self.servers[-1].base

    @property
    def tracks(self) -> dict[str, dict]:
        return self.servers[-1].tracks


def find_tools() -> tuple[str, str]:
    """aiohttp, ffmpeg and wrk, or BenchError: (ffmpeg, wrk)."""
    require_modules("aiohttp")
    ffmpeg = ffmpeg_exe()
    wrk = shutil.which("wrk") or ("/usr/bin/wrk" if os.access("/usr/bin/wrk", os.X_OK) else None)
    if not wrk:
        raise BenchError("missing binary: wrk. Install the Debian package: apt-get install -y wrk   "
                         "(this script installs nothing)")
    return ffmpeg, wrk


def make_library(args: argparse.Namespace, tmp: Path, ffmpeg: str) -> dict[str, Path]:
    """[0] The FLAC files, linked at one path per cold track the run needs (not timed)."""
    t0 = time.monotonic()
    bases = make_bases(ffmpeg, tmp / "bases", args.bases, args.seconds)
    groups = {"first": args.cold, "last": args.cold, "mid": args.cold, "listen": args.listeners, "whole": 1}
    if args.catalog:  # new cold tracks for each round of listeners after the first
        groups.update({f"listen{k}": args.listeners for k in range(1, args.scale_rounds)})
    titles = link_library(tmp / "library", groups, bases)
    print(f"library: {len(titles)} tracks, hard links of {len(bases)} different FLAC files "
          f"({args.seconds:g} s, {SAMPLE_RATE} Hz stereo, {bases[0].stat().st_size / 1e6:.1f} MB each), "
          f"made in {time.monotonic() - t0:.1f}s (not timed)", flush=True)
    return titles


def prepare(args: argparse.Namespace, tmp: Path, procs: list[Proc], answers: Answers, ffmpeg: str,
            wrk: str) -> Run:
    """[0] The library, then our server over it, its scan done and its tracks as made."""
    titles = make_library(args, tmp, ffmpeg)
    ours, base = start_server(tmp / "library", tmp / "data", tmp / "server.log", procs)
    tracks = {t["title"]: t for t in wait_scan(base, ours, len(titles))}
    missing = set(titles) - set(tracks)
    if missing:
        raise BenchError(f"tracks missing from the catalog (by title): {sorted(missing)[:5]}")
    sample = tracks["first-00"]
    if sample["codec"] != "flac" or abs(sample["duration"] - args.seconds) > 1:
        raise BenchError(f"unexpected track facts: codec {sample['codec']}, duration {sample['duration']}")
    print(f"our server: {base} (pid {ours.pid}); scan done\n", flush=True)
    return Run(args, tmp, answers, ffmpeg, wrk, Server(f"{len(tracks)} tracks", ours, base, tracks), titles)


def print_cold(cold: dict) -> None:
    """Each cold series' spread against the reference's, and the time around the segment."""
    info = cold["seg_info"]
    ref50, ref95 = percentile(cold["ref"], 50), percentile(cold["ref"], 95)
    for group, label in (("first", "segment 0"), ("last", f"last segment ({info['last']['index']}, "
                                                          f"{info['last']['extinf']:.2f} s)"),
                         ("mid", f"segment {info['mid']['index']} (at {REF_SEEK:g} s)")):
        v = cold[group]
        print(f"  {label:<32} p50 {ms(percentile(v, 50)):>7}  p95 {ms(percentile(v, 95)):>7}  "
              f"min {ms(min(v)):>7}  max {ms(max(v)):>7}", flush=True)
    print(f"  {'reference (ffmpeg -ss 150 -t 6)':<32} p50 {ms(ref50):>7}  p95 {ms(ref95):>7}  "
          f"min {ms(min(cold['ref'])):>7}  max {ms(max(cold['ref'])):>7}")
    print(f"  master + variant + segment, p50: segment 0 {ms(percentile(cold['first_total'], 50))}, "
          f"last segment {ms(percentile(cold['last_total'], 50))}; waited for the server to idle "
          f"{ms(statistics.mean(cold['idle_wait']))} on average before each request\n", flush=True)


def cold_rows(table: Summary, cold: dict) -> None:
    """p50 and p95 of cold start and cold seek against their targets; the seek to 150 s as info."""
    info = cold["seg_info"]
    ref50, ref95 = percentile(cold["ref"], 50), percentile(cold["ref"], 95)
    for group, label in (("first", "cold start, segment 0"),
                         ("last", f"cold seek, last segment ({info['last']['extinf']:.2f} s)")):
        v = cold[group]
        p50, p95 = percentile(v, 50), percentile(v, 95)
        table.check(p50 < TARGET_COLD_P50, f"{label} p50 (n={len(v)})", ms(ref50), ms(p50),
                    f"{ratio(p50, ref50):.2f}", f"< {TARGET_COLD_P50 * 1000:.0f} ms")
        table.check(p95 < TARGET_COLD_P95, f"{label} p95", ms(ref95), ms(p95), f"{ratio(p95, ref95):.2f}",
                    f"< {TARGET_COLD_P95 * 1000:.0f} ms")
    mid50, mid95 = percentile(cold["mid"], 50), percentile(cold["mid"], 95)
    table.info(f"cold seek, segment at {REF_SEEK:g} s p50/p95", f"{ms(ref50)} / {ms(ref95)}",
               f"{ms(mid50)} / {ms(mid95)}", f"{ratio(mid50, ref50):.2f}")


def cold_section(r: Run, table: Summary) -> dict:
    """[1] Cold start and cold seek; the first cold segment's facts (the warm test's segment)."""
    a = r.args
    print(f"[1] cold segments: {a.cold} tracks each for segment 0, the last segment and the "
          f"segment at {REF_SEEK:g} s, reference interleaved; the server idles before each request",
          flush=True)
    cold = asyncio.run(cold_test(r.base, r.tracks, r.titles, a.cold, a.variant, r.ffmpeg, r.answers, a.verbose))
    print_cold(cold)
    cold_rows(table, cold)
    return cold["seg_info"]["first"]


def warm_rounds(r: Run, seg: dict, stream_url: str, lua: Path) -> dict[str, list[dict]]:
    """The warm test's alternating wrk rounds: a Range of the original, then the cached segment."""
    targets = {"range": (stream_url, lua), "segment": (seg["url"], None)}

    def measure(who: str, round_no: int) -> dict:
        ensure_alive(r.ours)
        url, script = targets[who]
        res = warm_wrk(r.wrk, url, r.args, script, f"{who} {round_no + 1}")
        print(wrk_line(f"{who} {round_no + 1}", res), flush=True)
        return res

    return alternating_rounds(r.args.rounds, ("range", "segment"), measure, pause=0.5)


def warm_section(r: Run, table: Summary, seg: dict) -> None:
    """[2] A cached segment against a Range of the same size of the original, by wrk."""
    a, size = r.args, seg["size"]
    stream_url = f"{r.base}/stream/{seg['id']}"
    asyncio.run(check_warm_urls(r.base, seg["url"], stream_url, size, r.answers))
    lua = r.tmp / "range.lua"
    lua.write_text(f'wrk.method = "GET"\nwrk.headers["Range"] = "bytes=0-{size - 1}"\n')
    print(f"[2] warm segment ({size} bytes, cached) against a Range of the same size of the "
          f"original FLAC: wrk -t{a.threads} -c{a.connections} -d{a.duration}s, "
          f"{a.rounds} alternating rounds", flush=True)
    before = asyncio.run(server_counts(r.base))
    runs = warm_rounds(r, seg, stream_url, lua)
    after = asyncio.run(server_counts(r.base))
    best = {who: fastest(rs) for who, rs in runs.items()}
    errs = {who: sum(x["errors"] + x["non2xx"] for x in rs) for who, rs in runs.items()}
    warm_ratio = ratio(best["segment"]["rps"], best["range"]["rps"])
    seg_requests = sum(x["requests"] for x in runs["segment"])
    ff_runs = after.get("streamer_ffmpeg_runs", 0) - before.get("streamer_ffmpeg_runs", 0)
    hits = after.get("streamer_cache_hits", 0) - before.get("streamer_cache_hits", 0)
    print(f"  during the segment runs: {ff_runs:.0f} ffmpeg runs, {hits:.0f} cache hits for "
          f"{seg_requests} segment requests\n", flush=True)
    table.check(warm_ratio >= TARGET_WARM_RATIO and errs["segment"] == 0, f"warm segment req/s (c={a.connections})",
                f"{best['range']['rps']:.0f} (range)", f"{best['segment']['rps']:.0f}", f"{warm_ratio:.2f}",
                f">= {TARGET_WARM_RATIO}")
    table.info("  median of paired rounds; errors+non-2xx", f"{errs['range']}", f"{errs['segment']}",
               f"{paired_median(runs['range'], runs['segment']):.2f}")


async def idle_then_listen(r: Run, server: Server, group: str = "listen") -> list[dict]:
    """The listeners of [3] on `server`, on the tracks of `group`, started once every server is
    idle; with --catalog, once the runs of earlier tests have ended too, so that each round starts
    alike on either server."""
    import aiohttp

    scale = r.big is not None
    async with aiohttp.ClientSession() as s:
        for each in r.servers:
            await wait_idle(s, each.base, 45 if scale else 10, runs_ended=scale)
        before = await segment_waits(s, server.base)
    results = await listeners_test([server.tracks[f"{group}-{i:02d}"] for i in range(r.args.listeners)],
                                   r.args.variant, r.args.playback, r.args.lookahead, r.answers)
    async with aiohttp.ClientSession() as s:
        after = await segment_waits(s, server.base)
    waits = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    return [{**x, "server_waits": waits} for x in results]


async def segment_waits(session, base: str) -> dict[str, float]:
    """The server's histogram of how long segment requests waited (streamer_hls_segment_wait_seconds),
    cumulative counts by upper bound."""
    import aiohttp

    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with session.get(f"{base}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            text = await resp.text()
        return {m.group(1): float(m.group(2)) for m in
                re.finditer(r'^streamer_hls_segment_wait_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)}
    return {}


def listener_figures(results: list[dict]) -> dict:
    """The listeners' times to first segment, those always ahead, every margin, the late segments."""
    return {"firsts": [x["first"] for x in results],
            "ahead": [x for x in results if x["error"] is None and not x["late"] and x["first"] != float("inf")],
            "margins": [m for x in results for m in x["margins"]],
            "late": sum(len(x["late"]) for x in results),
            "client_stall": max((x.get("client_stall", 0.0) for x in results), default=0.0),
            "first_in_line": all(x.get("first_in_line") for x in results),
            "server_waits": results[0].get("server_waits", {}) if results else {}}


def print_listeners(results: list[dict], fig: dict, verbose: bool) -> None:
    """Listeners in trouble (every one if `verbose`), then the spread of their figures."""
    firsts, margins = fig["firsts"], fig["margins"]
    for x in sorted(results, key=lambda x: x["first"]):
        if verbose or x["error"] or x["late"]:
            print(f"  listener {x['no']:2d}: first segment {ms(x['first'])}, {x['segments']} segments, "
                  f"min margin {min(x['margins'], default=float('nan')):.2f}s, late {x['late']}"
                  f"{', error: ' + x['error'] if x['error'] else ''}", flush=True)
    print(f"  time to first segment: min {ms(min(firsts))}, p50 {ms(percentile(firsts, 50))}, "
          f"max {ms(max(firsts))}; {len(fig['ahead'])}/{len(results)} listeners always ahead of the playhead; "
          f"margins (segment there before needed): min {min(margins, default=float('nan')):.2f}s, "
          f"p50 {percentile(margins, 50):.2f}s; the listeners' own loop "
          f"({'at real-time priority' if fig['first_in_line'] else 'at the usual priority: not root'}) held up "
          f"at most {fig['client_stall']:.2f}s; {server_side(fig)}\n", flush=True)


def server_side(fig: dict) -> str:
    """What the server's histogram says of the round: its segment requests and how many waited long."""
    waits = fig.get("server_waits") or {}
    if not waits:
        return "the server's waits: not reported"
    total = waits.get("+Inf", 0)
    return (f"the server answered {total:.0f} segment requests, {total - waits.get('1.0', 0):.0f} after more "
            f"than 1 s, {total - waits.get('2.5', 0):.0f} after more than 2.5 s")


def listeners_section(r: Run, table: Summary) -> None:
    """[3] Listeners starting cold tracks at once, then playing in real time."""
    a = r.args
    print(f"[3] {a.listeners} listeners start {a.listeners} different cold tracks at once, then "
          f"play {a.playback:g} s each in real time (segment k asked for when segment "
          f"k-{a.lookahead} starts playing)", flush=True)
    if r.big is not None:
        scale_listeners(r, table)
        return
    results = asyncio.run(idle_then_listen(r, r.small))
    fig = listener_figures(results)
    print_listeners(results, fig, a.verbose)
    firsts, margins, ahead = fig["firsts"], fig["margins"], fig["ahead"]
    table.check(max(firsts) <= TARGET_FIRST_SEGMENT, f"{a.listeners} listeners: first segment max (p50)", "",
                f"{ms(max(firsts))} ({ms(percentile(firsts, 50))})", "", f"<= {TARGET_FIRST_SEGMENT:g} s each")
    table.check(len(ahead) == len(results), f"{a.listeners} listeners ahead of real time ({a.playback:g} s)", "",
                f"{len(ahead)}/{len(results)}; {fig['late']}/{len(margins)} late; min margin "
                f"{min(margins, default=float('nan')):.2f}s; client stall {fig['client_stall']:.1f}s; "
                f"{server_side(fig)}", "", "all")


def scale_listeners(r: Run, table: Summary) -> None:
    """[3] with --catalog: the listeners on each server in --scale-rounds rounds, alternating which
    goes first, each round on tracks cold on both; the server over the library alone is the
    reference."""
    figs: dict[str, list[dict]] = {"small": [], "big": []}
    for k in range(r.args.scale_rounds):
        group = "listen" if k == 0 else f"listen{k}"
        for side in ("small", "big") if k % 2 == 0 else ("big", "small"):
            server = getattr(r, side)
            results = asyncio.run(idle_then_listen(r, server, group))
            print(f"  round {k + 1}, {server.label}:", flush=True)
            figs[side].append(listener_figures(results))
            print_listeners(results, figs[side][-1], r.args.verbose)
    scale_rows(r, table, figs)


def pooled(figs: list[dict]) -> dict:
    """The listener figures of several rounds as one."""
    out = {key: [x for f in figs for x in f[key]] for key in ("firsts", "ahead", "margins")}
    waits: dict[str, float] = {}
    for f in figs:
        for le, n in (f.get("server_waits") or {}).items():
            waits[le] = waits.get(le, 0) + n
    return {**out, "late": sum(f["late"] for f in figs), "client_stall": max(f["client_stall"] for f in figs),
            "server_waits": waits}


def ahead_text(fig: dict) -> str:
    return (f"{len(fig['ahead'])}/{len(fig['firsts'])} ahead, {fig['late']}/{len(fig['margins'])} late, "
            f"min margin {min(fig['margins'], default=float('nan')):.2f}s, client stall {fig['client_stall']:.1f}s; "
            f"{server_side(fig)}")


def peak_rss(proc: Proc) -> str:
    """A process's peak resident set (VmHWM), or "?" when it cannot be read."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        return f"{int(next(ln for ln in status if ln.startswith('VmHWM:')).split()[1]) / 1024:.0f} MiB"
    return "?"


def scale_rows(r: Run, table: Summary, figs: dict[str, list[dict]]) -> None:
    """The listeners on the big catalog against the target, those on the library alone beside them."""
    a, small, big = r.args, pooled(figs["small"]), pooled(figs["big"])
    p50 = {side: [percentile(f["firsts"], 50) for f in fs] for side, fs in figs.items()}
    paired = statistics.median(ratio(b, s) for s, b in zip(p50["small"], p50["big"]))
    name = f"{a.listeners} listeners x {a.scale_rounds}, {r.small.label} -> {r.big.label}"
    table.check(max(big["firsts"]) <= TARGET_FIRST_SEGMENT, f"{name}: first segment max (p50)",
                f"{ms(max(small['firsts']))} ({ms(percentile(small['firsts'], 50))})",
                f"{ms(max(big['firsts']))} ({ms(percentile(big['firsts'], 50))})", f"{paired:.2f} (p50s paired)",
                f"<= {TARGET_FIRST_SEGMENT:g} s each")
    table.check(len(big["ahead"]) == len(big["firsts"]), f"{name}: ahead of real time ({a.playback:g} s)",
                ahead_text(small), ahead_text(big), "", "all")
    table.info(f"peak RSS (VmHWM), {r.small.label} -> {r.big.label}", peak_rss(r.small.proc), peak_rss(r.big.proc))


def whole_section(r: Run, table: Summary) -> None:
    """[4] All segments of one cold track in order against one ffmpeg run over the whole file (info)."""
    print("[4] whole track: all segments of one cold track in order, against one ffmpeg "
          "transcoding the whole FLAC", flush=True)
    whole = asyncio.run(whole_track(r.base, r.tracks["whole-00"], r.args.variant, r.answers))
    ref_whole = run_reference(ref_whole_cmd(r.ffmpeg, r.titles["whole-00"]))
    ours_x = whole["audio"] / whole["seconds"]
    ref_x = r.args.seconds / ref_whole
    print(f"  ours: {whole['segments']} segments ({whole['bytes'] / 1e6:.2f} MB) in {whole['seconds']:.2f}s "
          f"= {ours_x:.1f}x realtime (slowest segment {ms(whole['slowest'])}; {whole['runs']:.0f} ffmpeg "
          f"runs, {whole['ffmpeg_s']:.1f}s of ffmpeg wall time summed)")
    print(f"  reference: one ffmpeg run in {ref_whole:.2f}s = {ref_x:.1f}x realtime\n", flush=True)
    table.info("whole-track transcode (x realtime)", f"{ref_x:.1f}x", f"{ours_x:.1f}x",
               f"{ratio(whole['seconds'], ref_whole):.2f} (time)")


def server_health(server: Server) -> dict:
    """One server's counters and log, printed: its 5xx count, log lines and children reaped by
    someone other than asyncio's child watcher (which then logs "... returncode 255")."""
    ensure_alive(server.proc, " during the run")
    final = asyncio.run(server_counts(server.base))
    n_err, n_warn, sample_lines = log_problems(server.proc)
    lost = 0
    with contextlib.suppress(OSError):
        lost = server.proc.log_path.read_text(errors="replace").count("returncode 255")
    print(f"our server ({server.label}): {final.get('streamer_ffmpeg_runs', 0):.0f} ffmpeg runs "
          f"({final.get('streamer_ffmpeg_seconds', 0):.1f}s summed), cache hits "
          f"{final.get('streamer_cache_hits', 0):.0f}, misses {final.get('streamer_cache_misses', 0):.0f}; "
          f"{final.get('5xx', 0):.0f} answers 5xx by /metrics; log: {n_err} ERROR, {n_warn} WARNING lines")
    for ln in sample_lines:
        print(f"  log: {ln[:200]}")
    return {"5xx": int(final.get("5xx", 0)), "errors": n_err, "warnings": n_warn, "lost": lost}


def health_section(r: Run, table: Summary) -> None:
    """Our servers' counters and logs, and what the clients saw go wrong."""
    health = [server_health(server) for server in r.servers]
    fivexx, lost = sum(h["5xx"] for h in health), sum(h["lost"] for h in health)
    answers = r.answers
    for f in answers.failures[:5]:
        print(f"  client saw: {f[:200]}")
    for b in answers.bad_bodies[:5]:
        print(f"  bad segment: {b}")
    table.check(fivexx == 0 and answers.non2xx == 0 and not answers.bad_bodies,
                "5xx (metrics) / non-2xx (clients) / bad segments", "",
                f"{fivexx} / {answers.non2xx} / {len(answers.bad_bodies)}", "", "0")
    table.check(lost == 0, "children reaped behind asyncio's watcher (log: returncode 255)", "", str(lost), "", "0")
    table.info("server log ERROR / WARNING lines", "", " + ".join(f"{h['errors']} / {h['warnings']}" for h in health))


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc], answers: Answers) -> int:
    """The benchmark proper, in the temp folder `tmp`, each process it starts put in `procs`:
    0 when every target passes, 1 when one fails (BenchError when it cannot run)."""
    t_start = time.monotonic()
    ffmpeg, wrk = find_tools()
    load = load_average()
    print(f"hls_bench: load average {load} at start; {os.cpu_count()} cores shared by our server "
          f"(one process, its ffmpeg runs), the references and the clients; ffmpeg {ffmpeg}; wrk {wrk}. "
          f"Temp folder {tmp}", flush=True)
    r = prepare(args, tmp, procs, answers, ffmpeg, wrk)
    if args.catalog:
        r.big = start_big(r, procs)
    table = Summary()
    seg = cold_section(r, table)
    warm_section(r, table, seg)
    listeners_section(r, table)
    whole_section(r, table)
    health_section(r, table)
    print(f"load average at the end: {load_average()} (at start: {load})")
    catalog = f"; tests 1, 2, 4 on the {r.big.label} catalog" if r.big is not None else ""
    return table.finish(f"\nSUMMARY ({args.variant}, {args.seconds:g} s 44.1 kHz stereo FLAC sources{catalog}; reference = "
                        f"plain ffmpeg on the same file; {os.cpu_count()} cores shared; total "
                        f"{time.monotonic() - t_start:.0f}s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold", type=int, default=20, help="cold tracks per cold series (default 20)")
    ap.add_argument("--listeners", type=int, default=20, help="listeners starting at once (default 20)")
    ap.add_argument("--playback", type=float, default=30,
                    help="seconds of audio each listener plays (default 30; 60 at most)")
    ap.add_argument("--lookahead", type=int, default=1,
                    help="listeners ask for segment k when segment k-LOOKAHEAD starts playing (default 1)")
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run (default 4)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating wrk rounds; the best counts (default 2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--seconds", type=float, default=300, help="length of the FLAC files (default 300)")
    ap.add_argument("--bases", type=int, default=4, help="different FLAC contents (default 4)")
    ap.add_argument("--variant", default="aac128", help="HLS variant (default aac128)")
    ap.add_argument("--catalog", type=int, default=0, metavar="N",
                    help="run tests 1, 2 and 4 on a server whose catalog also holds N generated tracks, and "
                         "test 3 on it and on the library alone (default 0: one server, the library alone)")
    ap.add_argument("--scale-rounds", type=int, default=2,
                    help="with --catalog: listener rounds on each server, alternating which goes first (default 2)")
    ap.add_argument("--verbose", action="store_true", help="every cold request, every listener, wrk outputs")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (library, server log)")
    args = ap.parse_args()
    if not 1 <= args.playback <= 60:
        ap.error("--playback must be from 1 to 60 seconds")
    if args.catalog < 0 or args.scale_rounds < 1:
        ap.error("--catalog must be >= 0 and --scale-rounds >= 1")
    if args.cold < 1 or args.listeners < 1 or args.bases < 1 or args.seconds < REF_SEEK + REF_SECONDS:
        ap.error(f"--cold, --listeners and --bases must be >= 1, --seconds >= {REF_SEEK + REF_SECONDS:g}")
    answers = Answers()

    def client_failures() -> None:
        for f in answers.failures[:5]:
            print(f"  client saw: {f[:300]}", file=sys.stderr)

    return run_bench("hls_bench", args.keep, lambda tmp, procs: run(args, tmp, procs, answers),
                     on_error=client_failures)


if __name__ == "__main__":
    sys.exit(main())
