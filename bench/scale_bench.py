#!/usr/bin/env python3
"""Scale benchmark (issue 15, section 1): the catalog, the JSON API, Subsonic's lists and the cluster
on a big library, each figure printed at every size asked (1x = 20,000 tracks, 10x = 200,000) so the
slope shows; the reference of each figure is the same figure at the smallest size, in the same run.

What it does, for each size S (everything on 127.0.0.1; everything it starts is stopped at the end,
also on Ctrl-C):

0. the library, made cheaply and kept in --work-dir between runs: S track rows with distinct tags
   saved through media.catalog's own save path, the one a scan uses (Catalog.save_scan in batches of
   2,000, then Catalog.finish_scan: regroup, albums, artists, the search index), in realistic shapes:
   artists of 1 to 2,000 tracks (one has 2,000; sizes otherwise drawn from a Pareto law), albums of 8
   to 12 tracks, 30 genres, years 1960-2024 (some none), titles of words drawn from a Zipf law over a
   6,000-word vocabulary (so prefixes are common or rare as in real tags). No audio file: a master
   starts on it with --no-scan-on-start. A user with a password (`run.py user add --password`);
1. a master (`run.py serve --role master`) on a copy of it; region R1 (empty data) bootstraps from it
   (start to /readyz: info) and is stopped;
2. listener data through the API: S/20 favorites of tracks (PUT /api/v1/favorites/tracks/{id}, 16
   clients) and 5 x S plays (POST /api/v1/plays {"plays": [1,000 plays]}, 8 clients; a Zipf law over
   the tracks, a year of played_at): 10,000 and 1,000,000 at 10x;
3. the change feed: R1 starts again, behind by those plays; the time from its start until it holds
   the master's last change, in plays/s and change rows/s. Target: faster than the master took the
   plays (its plays/s in 2, same run);
4. bootstrap: a fresh region R2: its start to /readyz 200 and to GET /api/v1/tracks total = S
   (target < 10 s at every size); the snapshot's size (as a region is sent it, zstd; and the catalog file);
5. the server's RSS (VmRSS) idle, with the catalog loaded and the plays written;
6. readers: for each endpoint below, wrk (-t2, --readers (32) connections, --seconds (3) s) walking a
   list of its URLs (a Lua script: each thread in order from its own place), p50/p99 as wrk measures
   them; the server's RSS sampled every 0.1 s meanwhile (its peak under reader load), and VmHWM.
   Target: p99 < 50 ms at every size, and no non-2xx answer. Endpoints (offsets scale with S: "deep"
   is 0.75 x S, i.e. 150,000 at 10x): /healthz (the floor of the HTTP stack, info);
   /api/v1/tracks pages deep in the list, paged in order, the default order and each sort (both
   directions); first pages of every sort; /api/v1/search of common and of rare prefixes; the
   tracks of the artist with 2,000 tracks (pages) and that artist; album pages (random albums);
   /api/v1/albums deep; /api/v1/plays/counts; /api/v1/favorites and /api/v1/favorites/tracks pages;
   Subsonic getAlbumList2 frequent, recent and newest (pages), search3 empty-query sync pages of 100
   songs through the whole library (token sign-in, a salt per URL).

Run it with the project's Python, from the repo root; wrk must be installed (apt-get install wrk):

    python bench/scale_bench.py                        # 1x and 10x: ~12 min, ~8 the next time
    python bench/scale_bench.py --sizes 20000 --seconds 2
    python bench/scale_bench.py --sizes 20000,200000,2000000 --work-dir /var/tmp/scale-bench

The first run makes the catalogs (~3 min at 10x) and keeps them in --work-dir
(/tmp/streamer-scale-bench by default); later runs copy them.

Exit status: 0 when every target passes, 1 when one fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from cluster_bench import Node, free_ports, get_json, start_node, wait_ready, wait_tracks
from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, Summary, cpu_seconds, ensure_alive, load_average, log_problems, ratio, require_modules,
    run_bench, run_wrk,
)
from subsonic_bench import ROTATE_LUA, to_ms

TARGET_P99 = 0.050
TARGET_BOOTSTRAP = 10.0
BASE_SIZE = 20_000  # 1x
FORMAT = 2  # bump when the generated catalog changes: a kept one of another format is made again
USER, PASSWORD = "bench", "scale-bench-pw"
SYLLABLES = ["ka", "lo", "mi", "ra", "ne", "to", "su", "vi", "da", "re", "an", "el", "or", "ix", "ul", "be", "ze",
             "qu", "fa", "no", "ri", "sa", "te", "mo", "ly", "gu", "he", "pi", "co", "wa"]
COMMON_WORDS = ["love", "night", "heart", "blue", "dream", "fire", "rain", "light", "song", "home", "time", "way",
                "sun", "moon", "road", "river", "city", "gold", "baby", "world"]
GENRES = ["Rock", "Pop", "Jazz", "Classical", "Electronic", "Hip-Hop", "Folk", "Blues", "Metal", "Soul", "Reggae",
          "Country", "Ambient", "Punk", "Funk", "Latin", "World", "Soundtrack", "Indie", "R&B", "House", "Techno",
          "Disco", "Gospel", "Ska", "Grunge", "Opera", "Swing", "Trance", "Dub"]
SORTS = ("title", "artist", "album", "track", "year", "duration", "added")
PLAYED_FROM = 1_764_000_000  # 2025-11-24: a year of plays from here


# --- 0. the library ---------------------------------------------------------------------------

def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def artist_sizes(total: int, rng: random.Random) -> list[int]:
    """Tracks per artist: one with 2,000 (or all of a smaller library), the rest 1 to 2,000 (Pareto)."""
    sizes = [min(2000, total)]
    while sum(sizes) < total:
        sizes.append(min(total - sum(sizes), max(1, min(2000, int(rng.paretovariate(0.9) * 8)))))
    return sizes


@dataclass
class Vocabulary:
    words: list[str]
    cumulative: list[float]  # Zipf weights, accumulated once (rng.choices would redo it per call)

    @classmethod
    def make(cls, rng: random.Random, size: int = 6000) -> Vocabulary:
        return cls([_word(rng) for _ in range(size)], list(itertools.accumulate(1 / (i + 1) for i in range(size))))

    def phrase(self, rng: random.Random, most: int) -> str:
        return " ".join(w.title() for w in rng.choices(self.words, cum_weights=self.cumulative, k=rng.randint(1, most)))


def album_tracks(rng: random.Random, vocab: Vocabulary, artist: str, album: str, folder: str, count: int,
                 facts: dict, number: int) -> list[dict]:
    """One album's track records, as the scanner makes them (media.catalog.SCANNED_FIELDS)."""
    from media import ids
    from media.tags import TAGS_VERSION

    out = []
    for t in range(count):
        common = COMMON_WORDS[rng.randrange(len(COMMON_WORDS))].title() + " " if rng.random() < 0.3 else ""
        title = common + vocab.phrase(rng, 3)
        path = f"{folder}/{t + 1:02d} {title}.mp3"
        out.append({"id": ids.track_id(path), "path": path, "size": 3_000_000 + number + t,
                    "mtime_ns": 1_700_000_000 * 10**9 + number + t, "title": title, "tag_artist": artist,
                    "tag_album": album, "album_artist_tag": None, "compilation": 0, "track_number": t + 1,
                    "disc_number": 1, **facts, "duration": round(rng.uniform(90, 420), 3), "codec": "mp3",
                    "container": "mp3", "bitrate": 192, "sample_rate": 44100, "channels": 2, "has_art": 0,
                    "fingerprint": f"{number + t:016x}", "rg_track_gain": None, "rg_track_peak": None,
                    "rg_album_gain": None, "rg_album_peak": None, "mbid": None, "tags_read": TAGS_VERSION})
    return out


def library_tracks(total: int, seed: int = 15):
    """Track records of a library of `total` tracks, artist by artist, album by album."""
    rng = random.Random(seed)
    vocab = Vocabulary.make(rng)
    number = 0
    for a, size in enumerate(artist_sizes(total, rng)):
        artist = f"{_word(rng).title()} {_word(rng).title()}"
        genre = GENRES[rng.randrange(len(GENRES))] if rng.random() > 0.03 else None
        done = 0
        while done < size:
            count = min(size - done, rng.randint(8, 12))
            year = rng.randint(1960, 2024) if rng.random() > 0.05 else None
            album = vocab.phrase(rng, 3)
            folder = f"{artist}/{year or 'undated'} - {album} ({a}.{done})"
            yield from album_tracks(rng, vocab, artist, album, folder, count, {"year": year, "genre": genre}, number)
            number += count
            done += count


async def save_library(path: Path, total: int) -> None:
    """The tracks through the catalog's scan path: save_scan in batches, then finish_scan."""
    from media import Catalog

    catalog = Catalog(path, "normal")
    try:
        batch: list[dict] = []
        for track in library_tracks(total):
            batch.append(track)
            if len(batch) == 2000:
                await catalog.save_scan(batch, [])
                batch = []
        if batch:
            await catalog.save_scan(batch, [])
        await catalog.finish_scan({})
    finally:
        catalog.close()


def kept_library(work_dir: Path, size: int) -> Path:
    """The data folder of a library of `size` tracks, made once and kept (catalog.db only)."""
    folder = work_dir / f"catalog-{FORMAT}-{size}"
    if (folder / "catalog.db").exists():
        return folder
    made = folder.with_name(folder.name + ".part")
    shutil.rmtree(made, ignore_errors=True)
    made.mkdir(parents=True)
    t0 = time.monotonic()
    print(f"  making the {size:,}-track catalog through the scan's save path (kept in {work_dir})...", flush=True)
    asyncio.run(save_library(made / "catalog.db", size))
    made.rename(folder)
    print(f"  made in {time.monotonic() - t0:.0f} s", flush=True)
    return folder


def library_facts(db_path: Path) -> dict:
    """What the readers ask for: ids, the big artist, albums, prefixes common and rare."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as c:
        facts = {"tracks": c.execute("SELECT count(*) FROM tracks").fetchone()[0],
                 "albums": c.execute("SELECT count(*) FROM albums").fetchone()[0],
                 "artists": c.execute("SELECT count(*) FROM artists").fetchone()[0],
                 "track_ids": [r for (r,) in c.execute("SELECT id FROM tracks ORDER BY id")],
                 "album_ids": [r for (r,) in c.execute("SELECT id FROM albums ORDER BY id")],
                 "big_artist": c.execute("SELECT id, track_count FROM artists ORDER BY track_count DESC, id "
                                         "LIMIT 1").fetchone()}
    rng = random.Random(3)
    vocab = Vocabulary.make(random.Random(15))  # the generator's own first draws: the same words
    facts["common"] = ["l", "lo", "lov", "ka", "mi", "ra", "re", "ni", "he", "so"]
    # More rare prefixes than the catalog keeps searches (256): each is asked cold, as typed.
    facts["rare"] = sorted({w[:max(4, len(w) - 1)] for w in vocab.words[3000:]}, key=lambda _: rng.random())
    return facts


def add_password_user(data: Path, secret: str, tree: Path = REPO) -> str:
    """The bench user with a password (Subsonic; sealed with the cluster's key, which every node of it
    shares) and a token (the JSON API): its token. By the run.py of `tree` (the one that serves the
    catalog: another version's would migrate it to its own schema)."""
    done = subprocess.run([sys.executable, str(tree / "run.py"), "user", "add", USER, "--password", "--data-dir",
                           str(data), "--cluster-secret", secret], cwd=str(tree), input=PASSWORD + "\n", capture_output=True, text=True,
                          timeout=60, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"run.py user add failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return lines[-1].strip()


# --- 1-4. the master, listener data, the feed, bootstrap ---------------------------------------

@dataclass
class Size:
    """One size's run: its master, user, library facts and figures."""
    size: int
    tmp: Path
    procs: list[Proc]
    secret: str
    facts: dict
    token: str = ""
    master: Node | None = None
    ports: list[int] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.tmp / f"master-{self.size}"


def start_master(s: Size) -> None:
    s.ports = free_ports(3)  # the master, R1, R2: each node names all three
    s.master = start_node(f"master {s.size:,}", "master", s.secret, s.tmp / "empty", s.data,
                          s.tmp / f"master-{s.size}.log", s.procs, s.ports[0], s.ports,
                          extra=("--no-scan-on-start",))
    wait_ready(s.master, timeout=120)
    wait_tracks(s.master, s.size, timeout=120)


def start_region(s: Size, name: str, port: int) -> Node:
    # No mirror: the generated catalog has no files, and a region would try to copy every track's.
    return start_node(f"region {name} {s.size:,}", "region", s.secret, s.tmp / "empty",
                      s.tmp / f"region-{name}-{s.size}", s.tmp / f"region-{name}-{s.size}.log", s.procs, port,
                      s.ports, s.master, extra=("--no-mirror-media",))


def stop(node: Node) -> None:
    node.proc.stop()


async def _send(session, method: str, url: str, headers: dict, body: bytes | None = None) -> None:
    async with session.request(method, url, data=body, headers=headers) as resp:
        answer = await resp.read()
        if resp.status not in (200, 201, 204):
            raise BenchError(f"{method} {url}: {resp.status} {answer[:300]!r}")


async def _clients(count: int, jobs, run) -> None:
    """`run(session, job)` for every job, `count` at a time."""
    import aiohttp

    queue = iter(jobs)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def client() -> None:
            for job in queue:
                await run(session, job)
        await asyncio.gather(*(client() for _ in range(count)))


def play_batches(track_ids: list[str], plays: int, seed: int = 5):
    """Batches of 1,000 plays as JSON bodies: tracks by a Zipf law, a year of played_at in order."""
    rng = random.Random(seed)
    ranked = track_ids[:]
    rng.shuffle(ranked)
    cumulative = list(itertools.accumulate(1 / (i + 1) ** 0.8 for i in range(len(ranked))))
    step = 365 * 86400 / max(plays, 1)
    for start in range(0, plays, 1000):
        picked = rng.choices(ranked, cum_weights=cumulative, k=min(1000, plays - start))
        yield json.dumps({"plays": [
            {"track_id": t, "played_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                       time.gmtime(PLAYED_FROM + (start + i) * step)),
             "seconds": 180.0} for i, t in enumerate(picked)]}).encode()


def listener_data(s: Size) -> None:
    """[2] favorites and plays through the API; the plays' rate is the feed's reference."""
    headers = {"Authorization": f"Bearer {s.token}"}
    favorites = random.Random(9).sample(s.facts["track_ids"], s.size // 20)
    t0 = time.monotonic()
    asyncio.run(_clients(16, favorites, lambda session, tid: _send(
        session, "PUT", f"{s.master.base}/api/v1/favorites/tracks/{tid}", headers)))
    t1, cpu = time.monotonic(), cpu_seconds([s.master.proc.pid])
    plays = 5 * s.size
    asyncio.run(_clients(8, play_batches(s.facts["track_ids"], plays), lambda session, body: _send(
        session, "POST", f"{s.master.base}/api/v1/plays", {**headers, "Content-Type": "application/json"}, body)))
    t2, cpu = time.monotonic(), cpu_seconds([s.master.proc.pid]) - cpu
    s.figures.update(favorites=len(favorites), plays=plays, plays_s=plays / (t2 - t1), plays_cpu_us=cpu / plays * 1e6)
    print(f"  [2] {len(favorites):,} favorites in {t1 - t0:.1f} s; {plays:,} plays in {t2 - t1:.1f} s "
          f"({plays / (t2 - t1):,.0f} plays/s, 1,000 a request, 8 clients; {cpu / plays * 1e6:.1f} us of the "
          f"master's CPU per play); load {load_average()}", flush=True)


def last_sequence(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as c:
        return c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]


def region_sequence(node: Node) -> int | None:
    status, body = get_json(f"{node.base}/healthz", timeout=5)
    return (body or {}).get("master", {}).get("sequence") if status == 200 else None


def catch_up(s: Size, before: int) -> None:
    """[3] R1, stopped at sequence `before`, started again: from its first answer (its start-up is
    not catching up; what it held then is printed) until it holds the master's last change."""
    target = last_sequence(s.data / "catalog.db")
    region = start_region(s, "R1", s.ports[1])
    deadline, first = time.monotonic() + 600, None
    while (seen := region_sequence(region)) is None or seen < target:
        ensure_alive(region.proc, " while catching up")
        if time.monotonic() > deadline:
            raise BenchError(f"region R1 did not catch up to {target} within 600 s:\n{region.proc.log_tail()}")
        first = first or ((time.monotonic(), seen) if seen is not None else None)
        time.sleep(0.02)
    first = first or (time.monotonic(), seen)
    took = max(time.monotonic() - first[0], 1e-3)
    cpu = cpu_seconds([region.proc.pid])
    stop(region)
    s.figures.update(feed_s=took, feed_plays_s=s.figures["plays"] / took, feed_rows_s=(target - before) / took,
                     feed_cpu_us=cpu / s.figures["plays"] * 1e6)
    print(f"  [3] R1 behind by {target - before:,} change rows ({s.figures['plays']:,} plays): it answered "
          f"{first[0] - region.started:.1f} s after its start, holding {first[1] - before:,} of them, and held them "
          f"all {took:.1f} s later: {s.figures['feed_plays_s']:,.0f} plays/s, {s.figures['feed_rows_s']:,.0f} change "
          f"rows/s; its CPU from its start, {s.figures['feed_cpu_us']:.1f} us per play; load {load_average()}",
          flush=True)


def bootstrap(s: Size, name: str, port: int) -> tuple[float, float, float]:
    """A fresh region: seconds from its start to /readyz 200 and to every track listed, and the CPU
    seconds the master and the region spent meanwhile (what a busy machine does not change much)."""
    master_cpu = cpu_seconds([s.master.proc.pid])
    region = start_region(s, name, port)
    ready = wait_ready(region, timeout=300)
    listed = wait_tracks(region, s.size, timeout=300, pause=0.01)
    cpu = cpu_seconds([region.proc.pid]) + cpu_seconds([s.master.proc.pid]) - master_cpu
    stop(region)
    return ready, listed, cpu


def snapshot_size(s: Size) -> int:
    """Bytes of GET /cluster/v1/snapshot as a region is sent it (zstd)."""
    import urllib.request

    request = urllib.request.Request(f"{s.master.base}/cluster/v1/snapshot",
                                     headers={"X-Cluster-Secret": s.secret, "Accept-Encoding": "zstd, gzip"})
    with urllib.request.urlopen(request, timeout=300) as resp:
        return sum(len(chunk) for chunk in iter(lambda: resp.read(1 << 20), b""))


def cluster_steps(s: Size) -> None:
    """[1]-[4] and the idle RSS [5]."""
    first, _, _ = bootstrap(s, "R1", s.ports[1])
    before = last_sequence(s.data / "catalog.db")
    s.figures["bootstrap_tracks_only"] = first
    print(f"  [1] R1 bootstrapped (tracks only) to /readyz in {first:.2f} s", flush=True)
    listener_data(s)
    catch_up(s, before)
    ready, listed, cpu = bootstrap(s, "R2", s.ports[2])
    s.figures.update(bootstrap_ready=ready, bootstrap_listed=listed, bootstrap_cpu=cpu, snapshot=snapshot_size(s),
                     catalog_file=(s.data / "catalog.db").stat().st_size, parts=file_parts(s.data / "catalog.db"))
    print(f"  [4] R2 (fresh) to /readyz {ready:.2f} s, to {s.size:,} tracks listed {listed:.2f} s ({cpu:.1f} s of "
          f"CPU, master and region); snapshot "
          f"{s.figures['snapshot'] / 2**20:,.1f} MiB zstd (catalog file {s.figures['catalog_file'] / 2**20:,.1f} MiB); "
          f"load {load_average()}", flush=True)
    time.sleep(2)  # the master settles
    s.figures["rss_idle"] = rss(s.master.proc.pid)["VmRSS"]
    print(f"  [5] master RSS idle {s.figures['rss_idle'] / 1024:,.1f} MiB", flush=True)


PARTS = ("change log", "plays", "play totals", "tracks and search", "the rest")


def file_parts(db_path: Path) -> dict[str, int]:
    """Bytes of the catalog file (what a snapshot carries) by what they hold, each table with its
    indexes (SQLite's dbstat)."""
    part = {"changes": PARTS[0], "plays": PARTS[1], "play_totals": PARTS[2], "album_plays": PARTS[2]}
    found = dict.fromkeys(PARTS, 0)
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as c:
        owner = dict(c.execute("SELECT name, tbl_name FROM sqlite_master"))
        for name, size in c.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            found[part.get(table, PARTS[3] if table.startswith("tracks") else PARTS[4])] += size
    return found


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


# --- 6. readers -------------------------------------------------------------------------------

def subsonic(name: str, n: int, **params) -> str:
    salt = f"s{n % 64:04d}"
    token = hashlib.md5((PASSWORD + salt).encode()).hexdigest()
    return (f"/rest/{name}?{urllib.parse.urlencode(params)}&u={USER}&t={token}&s={salt}&v=1.16.1&c=scale&f=json")


def deep_offsets(total: int, pages: int = 200) -> list[int]:
    """Offsets of `pages` pages of 50 from 0.75 x total on, wrapping inside the list's last quarter
    (every page full: a page past the end would cost nothing)."""
    deep, span = total * 3 // 4, max(50, total - total * 3 // 4 - 50)
    return [deep + (50 * k) % span for k in range(pages)]


def deep_pages(size: int, sorts: list[str]) -> list[str]:
    """Pages deep in the track list, each client in order, in the sorts given."""
    return [f"/api/v1/tracks?limit=50&offset={offset}" + (f"&sort={sort}" if sort else "")
            for offset in deep_offsets(size) for sort in sorts]


def endpoints(s: Size) -> list[tuple[str, list[str]]]:
    """(label, paths) of each reader load."""
    f, size, rng = s.facts, s.size, random.Random(11)
    artist, artist_tracks = f["big_artist"]
    rows = [("/healthz (the floor)", ["/healthz"]),
            ("tracks deep, default order", deep_pages(size, [""]))]
    rows += [(f"tracks deep, sort={sort} and -{sort}", deep_pages(size, [sort, "-" + sort])) for sort in SORTS]
    rows += [("tracks first pages, every sort", [f"/api/v1/tracks?limit=50&sort={d}{sort}" for sort in SORTS
                                                 for d in ("", "-")]),
             ("search, common prefixes", [f"/api/v1/search?q={q}" for q in f["common"]]),
             ("search, rare prefixes", [f"/api/v1/search?q={q}" for q in f["rare"]]),
             (f"tracks of the artist with {artist_tracks:,} (pages)",
              [f"/api/v1/tracks?artist={artist}&limit=50&offset={50 * k}" for k in range(artist_tracks // 50)]),
             (f"the artist with {artist_tracks:,} tracks", [f"/api/v1/artists/{artist}"]),
             ("album pages (random albums)", [f"/api/v1/albums/{a}" for a in rng.sample(f["album_ids"], 500)]),
             ("albums deep", [f"/api/v1/albums?limit=50&offset={o}" for o in deep_offsets(f["albums"], 40)]),
             ("plays/counts", ["/api/v1/plays/counts"]),
             ("favorites, every id (S/20 starred)", ["/api/v1/favorites"]),
             ("favorites/tracks pages", [f"/api/v1/favorites/tracks?limit=50&offset={50 * k}"
                                         for k in range(s.figures["favorites"] // 50)])]
    rows += [(f"Subsonic getAlbumList2 {kind}", [subsonic("getAlbumList2", k, type=kind, size=50, offset=50 * k)
                                                 for k in range(20)]) for kind in ("frequent", "recent", "newest")]
    rows.append(("Subsonic search3 sync pages", [subsonic("search3", k, query="", songCount=100,
                                                          songOffset=100 * k, albumCount=0, artistCount=0)
                                                 for k in range(size // 100)]))
    return rows


def lua(path: Path, paths: list[str], token: str) -> Path:
    if any('"' in p or "\\" in p for p in paths):
        raise BenchError("a URL holds a quote or backslash: cannot write it into the Lua script")
    path.write_text(ROTATE_LUA.format(paths=",\n".join(f'  "{p}"' for p in paths),
                                      headers=f'{{["Authorization"] = "Bearer {token}"}}'))
    return path


class RssSampler:
    """The peak VmRSS of a process, sampled every 0.1 s while it runs (a thread)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._done = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.1):
            self.peak = max(self.peak, rss(self.pid).get("VmRSS", 0))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def settle(s: Size, timeout: float = 300) -> None:
    """Wait until the master answers a one-row catalog read within 50 ms twice in a row: what a slow
    load left queued (its clients gone) must not fall on the next one."""
    import urllib.request

    url = f"{s.master.base}/api/v1/tracks/{s.facts['track_ids'][0]}"
    deadline, quick = time.monotonic() + timeout, 0
    while quick < 2:
        if time.monotonic() > deadline:
            raise BenchError(f"the master still slow {timeout:.0f} s after a load")
        t0 = time.monotonic()
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
        quick = quick + 1 if time.monotonic() - t0 < 0.05 else 0
        time.sleep(0.05)


WARM_ALL = 20  # a load of at most this many URLs is warmed whole (hot spots: first pages, common searches)


def warm_up(s: Size, paths: list[str]) -> float:
    """Seconds of the slowest of a load's first answers, asked one at a time before it: what the
    server works out once per catalog change and keeps (an order's bookmarks, a search's ids, the
    lists Subsonic keeps per listener). A short list is asked whole, a long one its first 2 URLs;
    the load then measures the steady state, where a long list's URLs are each new."""
    import urllib.request

    slowest = 0.0
    for path in paths if len(paths) <= WARM_ALL else paths[:2]:
        request = urllib.request.Request(s.master.base + path, headers={"Authorization": f"Bearer {s.token}"})
        t0 = time.monotonic()
        with urllib.request.urlopen(request, timeout=300) as resp:
            resp.read()
        slowest = max(slowest, time.monotonic() - t0)
    return slowest


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process so far, in ns (the scheduler's own count, finer than
    /proc/PID/stat's ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


ONE_CLIENT = 100  # requests of the one-client pass


def one_client(s: Size, paths: list[str]) -> float:
    """The server's CPU per request (us) when one client asks, one request at a time, for up to
    ONE_CLIENT URLs of a load (the list's last ones: wrk starts at its first and its middle): what
    a request costs with no queue and no other request beside it, the figure the machine's load
    moves least, so the slope of the library's size shows in it."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(s.master.base.rsplit(":", 1)[1]), timeout=300)
    picked = (paths * ONE_CLIENT)[-ONE_CLIENT:]
    try:
        before = cpu_ns(s.master.proc.pid)
        for path in picked:
            conn.request("GET", path, headers={"Authorization": f"Bearer {s.token}"})
            with conn.getresponse() as resp:
                resp.read()
                if resp.status != 200:
                    raise BenchError(f"GET {path}: {resp.status}")
        return (cpu_ns(s.master.proc.pid) - before) / len(picked) / 1000
    finally:
        conn.close()


def readers(s: Size, args: argparse.Namespace) -> dict[str, dict]:
    """[6] each endpoint under --readers connections (after its warm-up); the RSS under that load."""
    results = {}
    with RssSampler(s.master.proc.pid) as sampler:
        for n, (label, paths) in enumerate(endpoints(s)):
            ensure_alive(s.master.proc, f" before the readers of {label}")
            settle(s)
            cold = warm_up(s, paths)
            alone = one_client(s, paths)
            script = lua(s.tmp / f"readers-{s.size}-{n}.lua", paths, s.token)
            cpu0 = cpu_seconds([s.master.proc.pid])
            r, _ = run_wrk("wrk", s.master.base + "/", threads=2, connections=args.readers, duration=args.seconds,
                           timeout="10s", script=script, label=label, verbose=args.verbose,
                           limit=args.seconds + 60)
            settle(s)  # what the load left queued is its cost too
            r["cpu_us"] = (cpu_seconds([s.master.proc.pid]) - cpu0) / max(r["requests"], 1) * 1e6
            r["p50_ms"], r["p99_ms"], r["cold_ms"], r["alone_us"] = to_ms(r["p50"]), to_ms(r["p99"]), cold * 1000, alone
            results[label] = r
            print(f"  [6] {label:<42} {r['rps']:>8,.0f} req/s  p50 {r['p50_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms"
                  f"  {r['cpu_us']:>7,.0f} us CPU/req ({r['alone_us']:,.0f} one client)  first answer "
                  f"{r['cold_ms']:,.0f} ms  non-2xx {r['non2xx']}"
                  f"  errors {r['errors']}  load {load_average()}", flush=True)
    s.figures["rss_load"] = sampler.peak
    s.figures["hwm"] = rss(s.master.proc.pid).get("VmHWM", 0)
    print(f"  [6] master RSS under the readers: peak {sampler.peak / 1024:,.1f} MiB, VmHWM "
          f"{s.figures['hwm'] / 1024:,.1f} MiB; load {load_average()}", flush=True)
    return results


# --- the summary ------------------------------------------------------------------------------

def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def info(table: Summary, name: str, *cells: str) -> None:
    """A row with no target: its cells at each size, then the slope."""
    table.rows.append((name, *cells, "info", ""))


def figure_rows(table: Summary, runs: list[Size]) -> None:
    """The rows of the cluster and memory figures, one column per size."""
    def cells(key: str, shown) -> list[str]:
        return [shown(r.figures[key]) for r in runs]

    def slope(key: str) -> str:
        return f"{ratio(runs[-1].figures[key], runs[0].figures[key]):.2f}" if len(runs) > 1 else ""

    for key, name in (("bootstrap_ready", "region bootstrap (S tracks, 5 S plays), start to /readyz"),
                      ("bootstrap_listed", "region bootstrap (S tracks, 5 S plays), to every track listed")):
        ok = all(r.figures[key] < TARGET_BOOTSTRAP for r in runs)
        table.check(ok, name, *cells(key, lambda v: f"{v:.2f} s"), slope(key), f"< {TARGET_BOOTSTRAP:g} s")
    ok = all(r.figures["feed_plays_s"] >= r.figures["plays_s"] for r in runs)
    table.check(ok, "change feed catch-up, plays/s (master took: " + ", ".join(
        f"{r.figures['plays_s']:,.0f}" for r in runs) + ")", *cells("feed_plays_s", lambda v: f"{v:,.0f}"),
        slope("feed_plays_s"), ">= the master's plays/s")
    info(table, "change feed catch-up, change rows/s", *cells("feed_rows_s", lambda v: f"{v:,.0f}"),
         slope("feed_rows_s"))
    info(table, "plays taken by the master (POST, 1,000 a request), its CPU per play",
         *cells("plays_cpu_us", lambda v: f"{v:.1f} us"), slope("plays_cpu_us"))
    info(table, "change feed catch-up, region CPU per play", *cells("feed_cpu_us", lambda v: f"{v:.1f} us"),
         slope("feed_cpu_us"))
    info(table, "region bootstrap of the tracks alone (R1, before any play), start to /readyz",
         *cells("bootstrap_tracks_only", lambda v: f"{v:.2f} s"), slope("bootstrap_tracks_only"))
    info(table, "region bootstrap, CPU of master and region", *cells("bootstrap_cpu", lambda v: f"{v:.1f} s"),
         slope("bootstrap_cpu"))
    info(table, "snapshot, zstd as sent", *cells("snapshot", lambda v: f"{v / 2**20:,.1f} MiB"), slope("snapshot"))
    info(table, "catalog file", *cells("catalog_file", lambda v: f"{v / 2**20:,.1f} MiB"), slope("catalog_file"))
    info(table, "of it: " + " / ".join(PARTS) + " (each with its indexes)",
         *cells("parts", lambda v: " / ".join(f"{v[p] / 2**20:,.0f}" for p in PARTS) + " MiB"), "")
    info(table, "master RSS idle (catalog loaded, plays written)", *cells("rss_idle", mib), slope("rss_idle"))
    info(table, "master RSS peak under the readers", *cells("rss_load", mib), slope("rss_load"))
    info(table, "master VmHWM at the end", *cells("hwm", mib), slope("hwm"))


def reader_rows(table: Summary, runs: list[Size], results: list[dict[str, dict]]) -> None:
    """A row per endpoint: p99 (p50), the server's CPU per request under the readers and with one
    client, and the slowest first answer, at each size; the slopes of p99 and of the one-client CPU
    per request (the figure the machine's load moves least)."""
    name = ", p99 (p50); CPU/req, one client; first answer"
    for label in results[0]:
        found = [res.get(label) for res in results]
        if any(r is None for r in found):
            continue
        cells = [f"{r['p99_ms']:.1f} ({r['p50_ms']:.1f}) ms; {r['cpu_us']:,.0f}, {r['alone_us']:,.0f} us; "
                 f"{r['cold_ms']:,.0f} ms" + (f", {r['non2xx']} non-2xx" if r["non2xx"] else "") +
                 ("" if r["requests"] else ", no answer") for r in found]
        slope = (f"{ratio(found[-1]['p99_ms'], found[0]['p99_ms']):.2f}; CPU one client "
                 f"{ratio(found[-1]['alone_us'], found[0]['alone_us']):.2f}") if len(found) > 1 else ""
        if label.startswith("/healthz"):
            info(table, label + name, *cells, slope)
            continue
        ok = all(r["requests"] and r["p99_ms"] < TARGET_P99 * 1000 and not r["non2xx"] and not r["errors"]
                 for r in found)
        table.check(ok, label + name, *cells, slope, f"p99 < {TARGET_P99 * 1000:.0f} ms")


ELSEWHERE = (("first scan and no-change rescan of 20,000 / 200,000 files, memory of the scan",
              "bench/scan_bench.py --scale"),
             ("1,000 listeners at real playback rate: stalls, CPU and RSS of the server",
              "bench/listeners_bench.py"))


def summary(runs: list[Size], results: list[dict[str, dict]], args: argparse.Namespace, began: float) -> int:
    sizes = [f"{r.size / BASE_SIZE:g}x ({r.size:,}; load {r.figures['load']})" for r in runs]
    table = Summary(("metric", *sizes, f"{sizes[-1].split()[0]}/{sizes[0].split()[0]}" if len(runs) > 1 else "",
                     "target", "result"))
    figure_rows(table, runs)
    reader_rows(table, runs, results)
    problems = sum(log_problems(r.master.proc)[0] for r in runs)
    table.check(problems == 0, "ERROR lines in the masters' logs", *["" for _ in runs], "", "0")
    for what, where in ELSEWHERE:  # issue 15's figures measured by the benchmarks that own them
        table.rows.append((what, *[f"see {where}" for _ in runs], "", "", ""))
    return table.finish(f"\nSUMMARY (scale: {', '.join(sizes)} tracks; {args.readers} readers, {args.seconds} s "
                        f"each; {os.cpu_count()} cores shared; load average at the end {load_average()}; total "
                        f"{time.monotonic() - began:.0f} s; the reference of each figure is the same figure at "
                        f"{runs[0].size:,} tracks, the last column the slope)")


# --- the run ------------------------------------------------------------------------------------

def one_size(args: argparse.Namespace, tmp: Path, procs: list[Proc], size: int, secret: str) -> tuple[Size, dict]:
    print(f"\n== {size:,} tracks ({size / BASE_SIZE:g}x); load average {load_average()}", flush=True)
    kept = kept_library(Path(args.work_dir), size)
    s = Size(size, tmp, procs, secret, library_facts(kept / "catalog.db"))
    s.data.mkdir()
    shutil.copy(kept / "catalog.db", s.data / "catalog.db")
    os.chmod(s.data, 0o700)
    s.token = add_password_user(s.data, secret)
    print(f"  {s.facts['tracks']:,} tracks, {s.facts['albums']:,} albums, {s.facts['artists']:,} artists", flush=True)
    start_master(s)
    began = load_average().split()[0]
    cluster_steps(s)
    results = readers(s, args)
    s.figures["load"] = f"{began} to {load_average().split()[0]}"  # 1-minute load averages, start and end
    stop(s.master)
    return s, results


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    began = time.monotonic()
    require_modules("aiohttp", "sqlite_utils")
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    (tmp / "empty").mkdir()
    secret = os.urandom(16).hex()
    runs, results = [], []
    for size in args.sizes:
        s, res = one_size(args, tmp, procs, size, secret)
        runs.append(s)
        results.append(res)
    return summary(runs, results, args, began)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20000,200000",
                    help="library sizes in tracks, comma-separated, smallest first (default 20000,200000)")
    ap.add_argument("--readers", type=int, default=32, help="concurrent reader connections (default 32)")
    ap.add_argument("--seconds", type=int, default=3, help="seconds of each reader load (default 3)")
    ap.add_argument("--work-dir", default="/tmp/streamer-scale-bench", help="where made catalogs are kept")
    ap.add_argument("--verbose", action="store_true", help="print wrk's output")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (data, logs, Lua scripts)")
    args = ap.parse_args()
    try:
        args.sizes = sorted(int(x) for x in args.sizes.split(","))
    except ValueError:
        ap.error("--sizes: whole numbers, comma-separated")
    if (not all(BASE_SIZE <= x <= 5_000_000 for x in args.sizes) or not 1 <= args.readers <= 1000
            or not 1 <= args.seconds <= 60):
        ap.error("an option is out of range (sizes from 20000 to 5000000)")
    return run_bench("scale_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
