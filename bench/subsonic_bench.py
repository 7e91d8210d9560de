#!/usr/bin/env python3
"""Subsonic API benchmark: our /rest door against Supysonic (from PyPI), side by side, in the same run.

What it does (everything on 127.0.0.1; everything it starts is stopped at the end, also on Ctrl-C):

0. installs Supysonic and waitress into a venv of their own under --cache (default
   /tmp/streamer-bench-cache/supysonic; made once, reused after), never into the project's venv;
   exit 2 with the reason when that install fails;
1. makes one library of --tracks (2,400) real audio files: 4 short encoded bases (mp3 stereo, mp3
   mono, flac, ogg vorbis; ~1 s each, imageio-ffmpeg's ffmpeg) copied to `Artist/Album/NN Title.ext`
   (12 tracks an album, 4 albums an artist) and re-tagged one by one with mutagen (title, artist,
   album artist, album, track, year, genre all distinct), not timed;
2. Supysonic: `supysonic-cli user add`, `folder add`, `folder scan --foreground` (timed, info),
   then `supysonic-server -S waitress` (one process, waitress' default 4 threads). Ours: `run.py
   user add NAME --password` (password on stdin), `run.py serve` (one process) and its scan (time
   from start to scan done, info). The same user name and password on both;
3. checks both before timing: ping answers status ok; a full empty-query search3 sync returns every
   song, album and artist of the library exactly once; getAlbumList2?type=random&size=50 returns 50
   albums; getAlbum of a random album returns its 12 songs; /rest/stream with a Range header is a
   206 with the file's bytes (and our /stream/{id} too);
4. times, in --rounds alternating rounds (Supysonic first), medians of rounds:
   - the full search3 empty-query sync, one client, pages of 500 songs (and 500 albums and 500
     artists, each kind paged on until it runs out, as a syncing app does): songs/s.
     Target: ours >= 5x Supysonic's;
   - getAlbumList2?type=random&size=50, then getAlbum?id=<random album>, wrk `-t2 -c32` for
     --seconds with a Lua script walking through --urls (30,000) URLs: requests/s and p99.
     Targets: ours p99 < 50 ms and ours >= 5x Supysonic's requests/s;
   - /rest/stream?id=<random mp3 track> with `Range: bytes=4096-8191`, against our own
     /stream/{id} with the same Range: requests/s. Target: /rest/stream >= 0.9x /stream.
     Also (info): /rest/stream with one salt in every URL (our server remembers that sign-in for
     5 s, so this is the door without the token check) and Supysonic's /rest/stream.

Authentication: ours gets token auth (u, t = md5(password + salt), s), a new salt in each of the
URLs wrk walks through in turn (each thread from its own offset), as the spec asks apps to make a
new salt for each call: no salt comes twice in one run below 6,000 req/s (with the defaults), so
the 5 s our server remembers a sign-in does not stand in for the check. Supysonic 0.7.9 has no
token auth (a request with t and s and no p is answered error 10, "missing parameter"; the
benchmark shows that answer), so it gets `p=enc:HEX`, its cheapest supported sign-in (a salted
sha1). Both answer f=json.

Run it with the project's Python, from the repo root (needs wrk: apt-get install -y wrk):

    python bench/subsonic_bench.py [--tracks 2400] [--seconds 5] [--rounds 3] [--clients 32]
                                   [--urls 30000] [--cache DIR] [--supysonic-threads N]
                                   [--verbose] [--keep]

About 3.5 minutes with the defaults (the first run adds ~15 s of pip install). The machine's load
average is printed at the start and at the end: wrk, both servers and other work share the cores.

Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, Summary, alternating_rounds, cpu_seconds, ensure_alive, ffmpeg_exe, free_port,
    load_average, log_problems, ratio, require_modules, run_bench, run_wrk, start_server, wait_port, wait_scan,
)

TARGET_SYNC_RATIO = 5.0
TARGET_LIST_RATIO = 5.0
TARGET_P99_MS = 50.0
TARGET_STREAM_RATIO = 0.9
PAGE = 500
TRACKS_PER_ALBUM = 12
ALBUMS_PER_ARTIST = 4
USER, PASSWORD = "bench", "bench-Passw0rd-7"
RANGE = (4096, 8191)
KINDS = ("artist", "album", "song")
STREAM_PLAIN, STREAM_REST = "ours /stream/{id}", "ours /rest/stream"
STREAM_ONE_SALT, STREAM_SUPY = "ours /rest/stream, 1 salt", "Supysonic /rest/stream"
SUPYSONIC_PACKAGES = ["supysonic", "waitress"]
GENRES = ["Rock", "Jazz", "Ambient", "Folk", "Electronic", "Classical", "Pop", "Blues"]
# (file name, ffmpeg encoder arguments, channels, seconds)
BASES = [("base.mp3", ["-c:a", "libmp3lame", "-b:a", "128k"], 2, 1.0),
         ("base_mono.mp3", ["-c:a", "libmp3lame", "-b:a", "96k"], 1, 1.5),
         ("base.flac", ["-c:a", "flac"], 2, 1.0),
         ("base.ogg", ["-c:a", "libvorbis", "-q:a", "3"], 2, 1.0)]

ROTATE_LUA = """
-- each request: the next of the paths below; each thread starts at its own offset, so no path is
-- asked twice before the list wraps (each of our paths carries its own token salt)
local paths = {{
{paths}
}}
local headers = {headers}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  index = math.floor((tid or 0) * #paths / 2)
end

function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index], headers)
end
"""


# --- Supysonic's own venv -----------------------------------------------------------------------

def supysonic_venv(cache: Path) -> Path:
    """The bin folder of a venv holding Supysonic and waitress, made under `cache` the first time.
    BenchError with pip's reason when it cannot be installed."""
    venv = cache / "venv"
    bin_dir = venv / "bin"
    probe = [str(bin_dir / "python"), "-c", "import supysonic, waitress"]
    if (bin_dir / "supysonic-server").exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return bin_dir
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"installing {' '.join(SUPYSONIC_PACKAGES)} into {venv} (once) ...", flush=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300, check=False)
    if made.returncode != 0:
        raise BenchError(f"could not make a venv for Supysonic at {venv}:\n{made.stderr[-1500:]}")
    try:
        pip = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                              *SUPYSONIC_PACKAGES], capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError("Supysonic install: pip did not finish within 600 s") from exc
    if pip.returncode != 0 or subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        errors = "\n".join(ln for ln in (pip.stdout + pip.stderr).splitlines() if "ignored" not in ln)
        shutil.rmtree(venv, ignore_errors=True)
        raise BenchError(f"Supysonic could not be installed (pip install {' '.join(SUPYSONIC_PACKAGES)} "
                         f"exited {pip.returncode}):\n{errors[-2000:]}")
    return bin_dir


def supysonic_version(bin_dir: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('supysonic'), m.version('waitress'))"
    done = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, check=False)
    parts = done.stdout.split()
    return f"Supysonic {parts[0]} on waitress {parts[1]}" if len(parts) == 2 else "Supysonic (version unknown)"


# --- the library ------------------------------------------------------------------------------

def make_bases(folder: Path) -> list[Path]:
    ffmpeg = ffmpeg_exe()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (name, args, channels, seconds) in enumerate(BASES):
        path = folder / name
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
               "-i", f"sine=frequency={330 + 110 * i}:duration={seconds}", "-ac", str(channels), *args, str(path)]
        done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
        if done.returncode != 0 or not path.exists():
            raise BenchError(f"ffmpeg failed for {name}: {done.stderr.decode(errors='replace')[-1500:]}")
        out.append(path)
    return out


def make_library(root: Path, n: int, bases: list[Path]) -> dict[str, int]:
    """`n` copies of the bases, each with its own tags; the numbers of songs, albums and artists."""
    import mutagen

    for i in range(n):
        album_no, track = divmod(i, TRACKS_PER_ALBUM)
        artist, album = divmod(album_no, ALBUMS_PER_ARTIST)
        base = bases[album_no % len(bases)]  # one format per album, like real libraries
        path = root / f"Artist {artist:04d}" / f"Album {album:02d}" / f"{track + 1:02d} Title {i}{base.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base, path)
        audio = mutagen.File(path, easy=True)
        if audio is None:
            raise BenchError(f"mutagen does not recognise {path}")
        if audio.tags is None:
            audio.add_tags()
        audio.update({"title": f"Title {i}", "artist": f"Artist {artist:04d}", "albumartist": f"Artist {artist:04d}",
                      "album": f"Album {artist:04d}-{album:02d}", "tracknumber": str(track + 1),
                      "date": str(1960 + album_no % 60), "genre": GENRES[album_no % len(GENRES)]})
        audio.save()
    albums = -(-n // TRACKS_PER_ALBUM)
    return {"song": n, "album": albums, "artist": -(-albums // ALBUMS_PER_ARTIST)}


# --- the two servers ----------------------------------------------------------------------------

def supysonic_cli(bin_dir: Path, home: Path, *args: str, timeout: float = 60) -> float:
    """One `supysonic-cli` command run in `home` (where its supysonic.conf is); its wall time."""
    t0 = time.monotonic()
    try:
        done = subprocess.run([str(bin_dir / "supysonic-cli"), *args], cwd=str(home), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"supysonic-cli {' '.join(args)} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(f"supysonic-cli {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - t0


def start_supysonic(bin_dir: Path, home: Path, library: Path, threads: int | None,
                    procs: list[Proc]) -> tuple[Proc, str, float]:
    """Supysonic's user, folder and scan (its wall time), then its server on a free port."""
    home.mkdir(parents=True)
    (home / "cache").mkdir()
    (home / "supysonic.conf").write_text(
        f"[base]\ndatabase_uri = sqlite:///{home / 'supysonic.db'}\n\n"
        f"[webapp]\ncache_dir = {home / 'cache'}\nlog_level = WARNING\nmount_webui = no\n\n"
        f"[daemon]\nsocket = {home / 'daemon.sock'}\nrun_watcher = no\n")
    supysonic_cli(bin_dir, home, "user", "add", USER, "-p", PASSWORD)
    supysonic_cli(bin_dir, home, "folder", "add", "library", str(library))
    scan = supysonic_cli(bin_dir, home, "folder", "scan", "--foreground", "library", timeout=1800)
    port = free_port()
    argv = [str(bin_dir / "supysonic-server"), "-S", "waitress", "-h", "127.0.0.1", "-p", str(port)]
    if threads:
        argv += ["--threads", str(threads)]
    proc = Proc("Supysonic", argv, home / "server.log", cwd=str(home))
    procs.append(proc)
    wait_port(port, proc, 60)
    return proc, f"http://127.0.0.1:{port}", scan


def start_ours(library: Path, data: Path, log_path: Path, procs: list[Proc]) -> tuple[Proc, str, float]:
    """Our user with a password (read from stdin), our server and its scan (start to scan done)."""
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "user", "add", USER, "--password",
                           "--data-dir", str(data)], cwd=str(REPO), input=PASSWORD + "\n",
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise BenchError(f"run.py user add --password failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    t0 = time.monotonic()
    proc, base = start_server(library, data, log_path, procs)
    wait_scan(base, proc, timeout=600)
    return proc, base, time.monotonic() - t0


# --- one side: its base URL, its sign-in, what it holds ------------------------------------------

@dataclass
class Side:
    name: str
    base: str
    proc: Proc
    token: bool  # u+t+s; else u+p=enc:HEX
    songs: list[dict] = field(default_factory=list)
    album_ids: list[str] = field(default_factory=list)

    def auth(self) -> str:
        common = f"u={USER}&v=1.16.1&c=bench&f=json"
        if self.token:
            salt = secrets.token_hex(6)
            return f"{common}&t={hashlib.md5((PASSWORD + salt).encode()).hexdigest()}&s={salt}"
        return f"{common}&p=enc:{PASSWORD.encode().hex()}"

    def rest(self, name: str, auth: str | None = None, **params) -> str:
        """The path of a /rest call with its parameters and a sign-in (a new one unless `auth`)."""
        return f"/rest/{name}?{urllib.parse.urlencode(params)}&{auth or self.auth()}"


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def call(side: Side, path: str) -> dict:
    """The subsonic-response of a /rest call; BenchError unless it is a 200 with status ok."""
    status, body = http_get(side.base + path)
    try:
        answer = json.loads(body)["subsonic-response"]
    except (ValueError, KeyError) as exc:
        raise BenchError(f"{side.name} {path}: HTTP {status}, not a Subsonic JSON answer: {body[:300]!r}") from exc
    if status != 200 or answer.get("status") != "ok":
        raise BenchError(f"{side.name} {path}: HTTP {status}, {json.dumps(answer)[:400]}")
    return answer


def sync(side: Side) -> dict[str, list[dict]]:
    """A full search3 empty-query sync on one keep-alive connection, as an app syncs its library:
    pages of PAGE of each kind, each kind paged on until a page comes back short."""
    url = urllib.parse.urlsplit(side.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    seen: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    going = set(KINDS)
    try:
        while going:
            params = {"query": ""}
            for kind in KINDS:
                params[f"{kind}Count"] = PAGE if kind in going else 0
                params[f"{kind}Offset"] = len(seen[kind])
            conn.request("GET", side.rest("search3", **params))
            resp = conn.getresponse()
            body = resp.read()
            answer = json.loads(body)["subsonic-response"]
            if resp.status != 200 or answer.get("status") != "ok":
                raise BenchError(f"{side.name} search3: HTTP {resp.status}, {body[:300]!r}")
            found = answer.get("searchResult3") or {}
            for kind in list(going):
                items = found.get(kind) or []
                seen[kind] += items
                if len(items) < PAGE:
                    going.discard(kind)
    finally:
        conn.close()
    return seen


# --- checks before timing -----------------------------------------------------------------------

def check_sync(side: Side, counts: dict[str, int]) -> None:
    """Every song, album and artist of the library exactly once; keeps the songs and album ids."""
    seen = sync(side)
    for kind in KINDS:
        ids = [item["id"] for item in seen[kind]]
        if len(ids) != counts[kind] or len(set(ids)) != len(ids):
            raise BenchError(f"{side.name}: the search3 sync returned {len(ids)} {kind}s "
                             f"({len(set(ids))} distinct), the library holds {counts[kind]}")
    side.songs = seen["song"]
    side.album_ids = [item["id"] for item in seen["album"]]


def check_lists(side: Side) -> None:
    albums = call(side, side.rest("getAlbumList2", type="random", size=50)).get("albumList2", {}).get("album", [])
    want = min(50, len(side.album_ids))
    if len(albums) != want:
        raise BenchError(f"{side.name}: getAlbumList2 random size=50 returned {len(albums)} albums, not {want}")
    for album_id in random.sample(side.album_ids, min(5, len(side.album_ids))):
        album = call(side, side.rest("getAlbum", id=album_id)).get("album", {})
        songs = album.get("song") or []
        if not songs or len(songs) != album.get("songCount") or len(songs) > TRACKS_PER_ALBUM:
            raise BenchError(f"{side.name}: getAlbum {album_id} has songCount {album.get('songCount')} "
                             f"and {len(songs)} songs")


def stream_songs(side: Side, library: Path) -> list[tuple[str, Path]]:
    """(id, file) of the mp3 songs, the file found from the song's path (relative to the library)."""
    out = []
    for song in side.songs:
        if song.get("suffix") == "mp3":
            path = Path(song.get("path", ""))
            path = path if path.is_absolute() else library / path
            if not path.is_file():
                raise BenchError(f"{side.name}: song {song['id']} has path {song.get('path')!r}, not a file")
            out.append((song["id"], path))
    if not out:
        raise BenchError(f"{side.name}: no mp3 song found in its sync")
    return out


def check_range(name: str, url: str, path: Path) -> None:
    status, body = http_get(url, {"Range": f"bytes={RANGE[0]}-{RANGE[1]}"})
    with open(path, "rb") as f:
        f.seek(RANGE[0])
        want = f.read(RANGE[1] - RANGE[0] + 1)
    if status != 206 or body != want:
        raise BenchError(f"{name}: a Range request answered HTTP {status} with {len(body)} bytes "
                         f"(want 206 with bytes {RANGE[0]}-{RANGE[1]} of {path.name}): {body[:200]!r}")


def check_side(side: Side, counts: dict[str, int], library: Path) -> list[tuple[str, Path]]:
    call(side, side.rest("ping"))
    check_sync(side, counts)
    check_lists(side)
    songs = stream_songs(side, library)
    for song_id, path in random.sample(songs, min(3, len(songs))):
        check_range(f"{side.name} /rest/stream", side.base + side.rest("stream", id=song_id), path)
        if side.token:
            check_range(f"{side.name} /stream", f"{side.base}/stream/{song_id}", path)
    return songs


def token_refusal(side: Side) -> str:
    """What Supysonic answers to token auth (u, t, s and no p)."""
    salt = secrets.token_hex(6)
    path = (f"/rest/ping?u={USER}&t={hashlib.md5((PASSWORD + salt).encode()).hexdigest()}&s={salt}"
            "&v=1.16.1&c=bench&f=json")
    status, body = http_get(side.base + path)
    with_ok = b'"ok"' in body
    return f"HTTP {status}, {'status ok' if with_ok else body.decode(errors='replace').strip()[:160]}"


# --- timing -------------------------------------------------------------------------------------

def to_ms(text: str) -> float:
    """A wrk latency ("812.00us", "12.5ms", "1.02s", "2.00m") in ms."""
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * scale
            except ValueError:
                return float("nan")
    return float("nan")


def timed_sync(side: Side, counts: dict[str, int]) -> dict:
    t0 = time.monotonic()
    seen = sync(side)
    seconds = time.monotonic() - t0
    if len(seen["song"]) != counts["song"]:
        raise BenchError(f"{side.name}: a timed sync returned {len(seen['song'])} songs, not {counts['song']}")
    return {"songs_s": counts["song"] / seconds, "seconds": seconds}


def lua_script(path: Path, paths: list[str], range_header: bool) -> Path:
    if any('"' in p or "\\" in p for p in paths):
        raise BenchError("a URL holds a quote or backslash: cannot write it into the Lua script")
    headers = f'{{["Range"] = "bytes={RANGE[0]}-{RANGE[1]}"}}' if range_header else "nil"
    path.write_text(ROTATE_LUA.format(paths=",\n".join(f'  "{p}"' for p in paths), headers=headers))
    return path


@dataclass
class Load:
    """One wrk test: per side, its Lua script, its process and base URL; the runs of each side."""
    label: str
    scripts: dict[str, tuple[Path, Proc, str]]
    runs: dict[str, list[dict]] = field(default_factory=dict)


def wrk_round(args: argparse.Namespace, wrk: str, load: Load, side: str) -> dict:
    script, proc, base = load.scripts[side]
    ensure_alive(proc, f" before {load.label}")
    cpu0 = cpu_seconds([proc.pid])
    r, _wall = run_wrk(wrk, base + "/", threads=2, connections=args.clients, duration=args.seconds,
                      timeout="10s", script=script, label=f"{load.label} {side}", verbose=args.verbose,
                      limit=args.seconds + 60)
    r["cpu_us"] = (cpu_seconds([proc.pid]) - cpu0) / max(r["requests"], 1) * 1e6
    r["p99_ms"] = to_ms(r["p99"])
    print(f"  {load.label:<22} {side:<26} {r['rps']:>9,.0f} req/s  p50 {r['p50']:>9}  p99 {r['p99']:>9}  "
          f"{r['cpu_us']:>7,.0f} us CPU/req  errors {r['errors']}  non-2xx {r['non2xx']}", flush=True)
    return r


def run_load(args: argparse.Namespace, wrk: str, load: Load) -> Load:
    load.runs = alternating_rounds(args.rounds, tuple(load.scripts),
                                   lambda side, _round: wrk_round(args, wrk, load, side), pause=0.5)
    return load


def median_of(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs if r[key] == r[key]]
    return statistics.median(values) if values else float("nan")


# --- the run ------------------------------------------------------------------------------------

@dataclass
class Run:
    args: argparse.Namespace
    tmp: Path
    library: Path
    counts: dict[str, int]
    supy: Side
    ours: Side
    supy_scan: float
    our_scan: float
    version: str
    refusal: str = ""


def prepare(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> Run:
    """[0-2] Supysonic's venv, the library, both servers and their scans."""
    bin_dir = supysonic_venv(Path(args.cache))
    version = supysonic_version(bin_dir)
    t0 = time.monotonic()
    library = tmp / "library"
    counts = make_library(library, args.tracks, make_bases(tmp / "bases"))
    print(f"library: {counts['song']:,} tracks, {counts['album']:,} albums, {counts['artist']:,} artists "
          f"({time.monotonic() - t0:.1f} s to make, not timed)", flush=True)
    supy_proc, supy_base, supy_scan = start_supysonic(bin_dir, tmp / "supysonic", library,
                                                      args.supysonic_threads, procs)
    our_proc, our_base, our_scan = start_ours(library, tmp / "data", tmp / "ours.log", procs)
    print(f"scans: Supysonic `folder scan` {supy_scan:.1f} s; ours, start to scan done, {our_scan:.1f} s", flush=True)
    return Run(args, tmp, library, counts, Side("Supysonic", supy_base, supy_proc, token=False),
               Side("ours", our_base, our_proc, token=True), supy_scan, our_scan, version)


def loads(run: Run, our_songs: list[tuple[str, Path]], supy_songs: list[tuple[str, Path]]) -> list[Load]:
    """The three wrk tests with their scripts: each side's own ids, a new salt in each of our URLs
    (but for the info side "ours /rest/stream, 1 salt", whose sign-in our server remembers)."""
    rng = random.Random(7)
    supy, ours = run.supy, run.ours

    def side(name: str, of: Side, make: Callable[[], str], range_header: bool = False) -> tuple[Path, Proc, str]:
        paths = [make() for _ in range(run.args.urls)]
        return lua_script(run.tmp / f"{name}.lua", paths, range_header), of.proc, of.base

    one_salt = ours.auth()
    albumlist = Load("getAlbumList2 random", {
        "Supysonic": side("list_supy", supy, lambda: supy.rest("getAlbumList2", type="random", size=50)),
        "ours": side("list_ours", ours, lambda: ours.rest("getAlbumList2", type="random", size=50))})
    album = Load("getAlbum random id", {
        "Supysonic": side("album_supy", supy, lambda: supy.rest("getAlbum", id=rng.choice(supy.album_ids))),
        "ours": side("album_ours", ours, lambda: ours.rest("getAlbum", id=rng.choice(ours.album_ids)))})
    stream = Load("stream with Range", {
        STREAM_PLAIN: side("stream_plain", ours, lambda: f"/stream/{rng.choice(our_songs)[0]}", True),
        STREAM_REST: side("stream_ours", ours, lambda: ours.rest("stream", id=rng.choice(our_songs)[0]), True),
        STREAM_ONE_SALT: side("stream_one_salt", ours, lambda: ours.rest("stream", id=rng.choice(our_songs)[0],
                                                                         auth=one_salt), True),
        STREAM_SUPY: side("stream_supy", supy, lambda: supy.rest("stream", id=rng.choice(supy_songs)[0]), True)})
    return [albumlist, album, stream]


def measure_sync(run: Run) -> dict[str, list[dict]]:
    sides = {"Supysonic": run.supy, "ours": run.ours}
    runs = alternating_rounds(run.args.rounds, tuple(sides),
                              lambda side, _round: timed_sync(sides[side], run.counts), pause=0.2)
    for side, rs in runs.items():
        print(f"  search3 sync            {side:<26} " + ", ".join(f"{r['songs_s']:,.0f}" for r in rs)
              + " songs/s", flush=True)
    return runs


def summarize(run: Run, sync_runs: dict[str, list[dict]], tests: list[Load]) -> Summary:
    s = Summary()
    supy_sync, our_sync = median_of(sync_runs["Supysonic"], "songs_s"), median_of(sync_runs["ours"], "songs_s")
    sync_ratio = ratio(our_sync, supy_sync)
    s.check(sync_ratio >= TARGET_SYNC_RATIO, f"search3 sync ({run.counts['song']:,} songs, pages of {PAGE})",
            f"Supysonic {supy_sync:,.0f} songs/s", f"{our_sync:,.0f} songs/s", f"{sync_ratio:.1f}x",
            f">= {TARGET_SYNC_RATIO:.0f}x")
    for load in tests[:2]:
        ref, ours = load.runs["Supysonic"], load.runs["ours"]
        rps_ratio = ratio(median_of(ours, "rps"), median_of(ref, "rps"))
        s.check(rps_ratio >= TARGET_LIST_RATIO, f"{load.label}, {run.args.clients} clients: req/s",
                f"Supysonic {median_of(ref, 'rps'):,.0f}", f"{median_of(ours, 'rps'):,.0f}",
                f"{rps_ratio:.1f}x", f">= {TARGET_LIST_RATIO:.0f}x")
        p99 = median_of(ours, "p99_ms")
        s.check(p99 < TARGET_P99_MS and all(r["errors"] == 0 and r["non2xx"] == 0 for r in ours),
                f"{load.label}, {run.args.clients} clients: p99", f"Supysonic {median_of(ref, 'p99_ms'):,.0f} ms",
                f"{p99:,.1f} ms", "", f"< {TARGET_P99_MS:.0f} ms")
    stream = tests[2].runs
    plain, rest, one_salt, supy = (median_of(stream[k], "rps")
                                   for k in (STREAM_PLAIN, STREAM_REST, STREAM_ONE_SALT, STREAM_SUPY))
    s.check(ratio(rest, plain) >= TARGET_STREAM_RATIO
            and all(r["errors"] == 0 and r["non2xx"] == 0 for r in stream[STREAM_REST]),
            "/rest/stream vs /stream/{id}, Range: req/s", f"ours /stream {plain:,.0f}", f"{rest:,.0f}",
            f"{ratio(rest, plain):.2f}", f">= {TARGET_STREAM_RATIO}")
    s.info("/rest/stream, one salt (sign-in remembered)", f"ours /stream {plain:,.0f}", f"{one_salt:,.0f}",
           f"{ratio(one_salt, plain):.2f}")
    s.info("Supysonic /rest/stream, Range: req/s", f"Supysonic {supy:,.0f}", f"{rest:,.0f}",
           f"{ratio(rest, supy):.1f}x")
    s.info(f"scan of {run.counts['song']:,} tracks (s)", f"Supysonic {run.supy_scan:.1f}",
           f"{run.our_scan:.1f} (start to done)", f"{ratio(run.supy_scan, run.our_scan):.1f}x speed")
    return s


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    require_modules("aiohttp", "mutagen")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is missing: apt-get install -y wrk   (this script installs no system package)")
    load_start = load_average()
    print(f"load average at start: {load_start}  ({os.cpu_count()} cores)", flush=True)
    r = prepare(args, tmp, procs)
    print(f"reference: {r.version}, one process (waitress, "
          f"{args.supysonic_threads or 'its default 4'} threads); ours: run.py serve, one process", flush=True)
    r.refusal = token_refusal(r.supy)
    print(f"Supysonic asked with token auth (u, t, s): {r.refusal}; it gets p=enc:HEX instead", flush=True)
    supy_songs = check_side(r.supy, r.counts, r.library)
    our_songs = check_side(r.ours, r.counts, r.library)
    print("checks: both answer ok; sync counts match the library; lists, albums and ranges right", flush=True)
    print(f"timing, {args.rounds} alternating rounds, medians (wrk -t2 -c{args.clients} -d{args.seconds}s):",
          flush=True)
    sync_runs = measure_sync(r)
    tests = [run_load(args, wrk, load) for load in loads(r, our_songs, supy_songs)]
    errors, _warnings, sample = log_problems(r.ours.proc)
    if errors:
        raise BenchError(f"our server logged {errors} ERROR lines:\n" + "\n".join(sample))
    summary = summarize(r, sync_runs, tests)
    return summary.finish(f"\nSUMMARY ({r.counts['song']:,} tracks; load average {load_start} at start, "
                          f"{load_average()} at end)",
                          f"  reference: {r.version}; ours signs in with u+t+s, Supysonic with u+p=enc:HEX")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=2400, help="tracks in the generated library (default 2400)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds of each wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of each test; medians count (default 3)")
    ap.add_argument("--clients", type=int, default=32, help="wrk connections of the list and stream tests")
    ap.add_argument("--urls", type=int, default=30000,
                    help="URLs each wrk script walks through; each of ours has its own token salt (default 30000)")
    ap.add_argument("--cache", default="/tmp/streamer-bench-cache/supysonic",
                    help="folder of Supysonic's own venv, made once and reused")
    ap.add_argument("--supysonic-threads", type=int, default=None,
                    help="waitress threads of Supysonic's one process (default: waitress' own, 4)")
    ap.add_argument("--verbose", action="store_true", help="print every wrk output in full")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (library, logs, Lua scripts)")
    args = ap.parse_args()
    if args.tracks < TRACKS_PER_ALBUM * 5:
        ap.error(f"--tracks must be at least {TRACKS_PER_ALBUM * 5}")
    return run_bench("subsonic_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
