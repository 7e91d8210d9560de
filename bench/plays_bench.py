#!/usr/bin/env python3
"""Listener-data benchmark: play events written into one node over HTTP, in batches of 100 and
one per request, with catalog reads running alongside; the reference, a plain INSERT loop into a
fresh SQLite file, is measured in the same run.

What it does (everything on 127.0.0.1; everything it starts is stopped at the end, also on Ctrl-C):

0. makes a small library, --tracks (20) one-second mp3 files with distinct tags (one ffmpeg run,
   not timed) in LIB/Artist/Album/NN Title.mp3; adds a listener with `run.py user add` (its token
   authorises the writes); starts our server (one process) over the library and waits for the scan;
1. reads alone (reference for the reads): --readers (4) concurrent readers, in a child process of
   their own (so that the writers' client work does not delay them), loop over
   GET /api/v1/tracks?limit=50 and GET /api/v1/search?q=WORD (anonymous) for --read-alone (3) s;
2. batched plays: --clients (32) concurrent clients (aiohttp tasks sharing one session, one
   connection each) POST /api/v1/plays {"plays": [100 plays]} for --duration (5) s after a
   --warmup (0.5) s that is not counted, with the readers of 1 running at the same time.
   Targets: >= 5,000 plays/s accepted; reads' p99 < 50 ms for each endpoint;
3. single plays: the same with one play per request ({"track_id", "played_at", "seconds"}).
   Targets: >= 1,000 plays/s; reads' p99 < 50 ms for each endpoint.
   Every write request of 2 and 3 carries its own Idempotency-Key, as a client that retries
   would send (--no-keys to leave them out); every play has its own played_at and a random track.
   The request latency (send to full answer, as the client sees it) is reported as p50/p99;
4. reference: the same number of rows as each phase accepted (1,000 at least), inserted into a
   fresh SQLite file (WAL, synchronous=NORMAL, the server's `plays` table and its two indexes,
   nothing else: no change-log row, no idempotency row) with `db.execute("INSERT INTO plays ...")`
   through sqlite-utils, (a) one row per transaction (`with db.atomic()` around each), (b) 100
   rows per transaction; best of --ref-rounds (2) runs, each into a new file; rows/s and
   ours/reference, i.e. what HTTP, JSON, validation, idempotency and the change log cost on top
   of the bare insert. (sqlite-utils' `table.insert(row)` would be a weaker reference: it costs
   3-5x more per row than `db.execute` here.) Only the INSERT loop is timed;
5. checks: every write answered 2xx with as many new ids as plays sent, no id twice, the server
   counts (GET /api/v1/plays/counts) exactly the plays it accepted, one request sent again with
   its key gets the same ids and adds nothing, every read answered 200, no 5xx in /metrics.

Run it with the project's Python, from the repo root:

    python bench/plays_bench.py [--duration 5] [--warmup 0.5] [--clients 32] [--readers 4]
                                [--read-alone 3] [--ref-rounds 2] [--tracks 20] [--no-keys]
                                [--verbose] [--keep]

About 25 s in all with the defaults. The clients, the readers and our server share the machine's
cores (2 here): the client and server CPU time of each phase is printed.

Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, Summary, cpu_seconds, ensure_alive, ffmpeg_exe, load_average, log_problems, percentile,
    raise_interrupt, ratio, require_modules, run_bench, start_server, wait_scan,
)

TARGET_BATCH_PLAYS = 5000.0  # plays/s, 100 per request
TARGET_SINGLE_PLAYS = 1000.0  # plays/s, one per request
TARGET_READ_P99 = 0.050
BATCH = 100
REQUEST_TIMEOUT = 30.0

ARTISTS = ["Amber Lane", "Blue Harbor", "Cold River", "Dusty Road"]
WORDS = ["morning", "river", "silver", "night", "garden", "echo", "winter", "shadow", "golden", "ocean",
         "paper", "little", "fire", "dream", "stone", "summer", "velvet", "north", "city", "blue"]
QUERIES = ["river", "night", "amber", "silver echo", "harbor", "summer", "gold", "dusty road"]
PLAYED_FROM = 1_795_000_000  # 2026-11-18, the first played_at; each play one second later


# --- the library and the server -----------------------------------------------------------------

def make_library(ffmpeg: str, library: Path, count: int) -> list[dict]:
    """`count` one-second mp3 files with distinct tags, made by one ffmpeg run per 50 files."""
    made = []
    for i in range(count):
        artist = ARTISTS[i % len(ARTISTS)]
        album = f"{WORDS[(i // len(ARTISTS)) % 7].title()} Days"
        title = f"{WORDS[i % len(WORDS)].title()} {WORDS[(3 * i + 1) % len(WORDS)].title()} {i}"
        number = i // len(ARTISTS) + 1
        path = library / artist / album / f"{number:02d} {title}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        made.append({"path": path, "artist": artist, "album": album, "title": title, "track": number})
    for start in range(0, count, 50):
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1"]
        for m in made[start:start + 50]:
            cmd += ["-map", "0:a", "-metadata", f"title={m['title']}", "-metadata", f"artist={m['artist']}",
                    "-metadata", f"album={m['album']}", "-metadata", f"track={m['track']}",
                    "-c:a", "libmp3lame", "-b:a", "64k", str(m["path"])]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"ffmpeg failed making the library: {done.stderr.decode(errors='replace')[-1500:]}")
    return made


def add_user(data: Path, name: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "user", "add", name, "--data-dir", str(data)],
                          cwd=str(REPO), capture_output=True, text=True, timeout=60)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"run.py user add failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return lines[-1].strip()


# --- HTTP -------------------------------------------------------------------------------------

async def server_5xx(base: str) -> int:
    """Answers with a 5xx status counted by our /metrics (-1 if it cannot be read)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"{base}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return -1
    return int(sum(float(m.group(1)) for m in re.finditer(r'^streamer_\w+\{[^}]*status="5\d\d"[^}]*\} (\S+)$',
                                                          text, re.M)))


class Writes:
    """What one write phase sent and got."""

    def __init__(self) -> None:
        self.latencies: list[float] = []  # requests that completed inside the timed window
        self.window_plays = 0
        self.accepted = 0  # plays answered 2xx, warm-up and stragglers included
        self.requests = 0
        self.statuses: dict[int, int] = {}
        self.failures: list[str] = []
        self.ids: list[str] = []
        self.last: tuple[bytes, str, list[str]] | None = None  # body, key, ids of one request
        self.cpu_client = 0.0
        self.cpu_server = 0.0
        self.duration = 0.0

    @property
    def non2xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)

    def note(self, plan: WritePlan, status: int, ids: list[str] | None, problem: str | None, latency: float,
             done: float, sent: tuple[bytes, str | None]) -> None:
        """One request's answer (`sent`: its body and key); its latency counts if it ended in the window."""
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if problem is not None:
            self.failures.append(f"{plan.label}: {problem}")
            return
        self.accepted += len(ids)
        self.ids.extend(ids)
        self.last = (*sent, ids)
        if plan.t_start <= done <= plan.t_end:
            self.latencies.append(latency)
            self.window_plays += len(ids)


@dataclass
class WritePlan:
    """What the clients of one write phase send, and the timed window (wall time)."""
    url: str
    token: str
    track_ids: list[str]
    per_request: int
    keys: bool
    label: str
    t_start: float
    t_end: float
    tag: str = field(default_factory=lambda: secrets.token_hex(4))  # keys unique from run to run


def play_maker(track_ids: list[str], seed: int):
    rng = random.Random(seed)
    counter = iter(range(10**9))

    def play() -> dict:
        at = PLAYED_FROM + next(counter)
        return {"track_id": rng.choice(track_ids), "played_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                "seconds": float(rng.randint(5, 300))}
    return play


async def post_plays(session, url: str, token: str, body: bytes, key: str | None,
                     expected: int) -> tuple[int, list[str] | None, str | None]:
    """(status, ids, what was wrong) of one POST /api/v1/plays."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    try:
        async with session.post(url, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
            raw = await resp.read()
            if resp.status != 201:
                return resp.status, None, f"{resp.status}: {raw[:300]!r}"
            ids = json.loads(raw).get("ids")
            if not isinstance(ids, list) or len(ids) != expected:
                return resp.status, None, f"201 with {len(ids) if isinstance(ids, list) else ids!r} ids for {expected}"
            return resp.status, ids, None
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        return 0, None, f"{type(exc).__name__}: {exc}"


async def write_client(no: int, session, plan: WritePlan, out: Writes) -> None:
    """One client: a POST after the other until the window ends, each answer noted in `out`."""
    make = play_maker(plan.track_ids, seed=no * 7919 + plan.per_request)
    n = 0
    while time.time() < plan.t_end:
        plays = [make() for _ in range(plan.per_request)]
        body = json.dumps(plays[0] if plan.per_request == 1 else {"plays": plays}).encode()
        key = f"{plan.label}-{plan.tag}-{no}-{n}" if plan.keys else None
        n += 1
        t0 = time.perf_counter()
        status, ids, problem = await post_plays(session, plan.url, plan.token, body, key, plan.per_request)
        latency = time.perf_counter() - t0
        done = time.time()
        out.note(plan, status, ids, problem, latency, done, (body, key))


async def cpu_in_window(plan: WritePlan, server_pid: int, out: Writes) -> None:
    """Sleep through the warm-up and the window; the CPU the clients and the server used in it."""
    await asyncio.sleep(max(0.0, plan.t_start - time.time()))
    cpu0, srv0 = time.process_time(), cpu_seconds([server_pid])
    await asyncio.sleep(max(0.0, plan.t_end - time.time()))
    out.cpu_client, out.cpu_server = time.process_time() - cpu0, cpu_seconds([server_pid]) - srv0


async def clients_done(tasks: list[asyncio.Task]) -> None:
    """Wait for the clients' last requests; a client's exception is raised here."""
    _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 10)
    if pending:
        raise BenchError(f"{len(pending)} write clients did not finish")
    for t in tasks:
        t.result()


async def write_phase(base: str, token: str, track_ids: list[str], per_request: int, clients: int,
                      t_go: float, warmup: float, duration: float, keys: bool, label: str, server_pid: int) -> Writes:
    """--clients tasks posting plays from wall time t_go for warmup + duration seconds; what
    completes after the warm-up and before the end is timed."""
    import aiohttp

    plan = WritePlan(f"{base}/api/v1/plays", token, track_ids, per_request, keys, label,
                     t_go + warmup, t_go + warmup + duration)
    out = Writes()
    connector = aiohttp.TCPConnector(limit=clients + 4, limit_per_host=clients + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.sleep(max(0.0, t_go - time.time()))
        tasks = [asyncio.create_task(write_client(i, session, plan, out)) for i in range(clients)]
        try:
            await cpu_in_window(plan, server_pid, out)
            await clients_done(tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    out.duration = duration
    return out


async def replay(base: str, token: str, last: tuple[bytes, str, list[str]]) -> tuple[bool, str]:
    """Send one request again with its Idempotency-Key: the same ids must come back."""
    import aiohttp

    body, key, ids = last
    async with aiohttp.ClientSession() as session:
        status, again, problem = await post_plays(session, f"{base}/api/v1/plays", token, body, key, len(ids))
    if problem is not None:
        return False, problem
    return again == ids, "same ids" if again == ids else f"other ids: {again[:2]}... for {ids[:2]}..."


async def stored_plays(base: str, token: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
            f"{base}/api/v1/plays/counts?limit=500", headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=30)) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise BenchError(f"GET /api/v1/plays/counts: {resp.status}: {raw[:300]!r}")
    return sum(item["plays"] for item in json.loads(raw)["items"])


# --- the readers (a child process) --------------------------------------------------------------

def read_url(base: str, n: int) -> tuple[str, str]:
    """The n-th read: the track list and a search in turn."""
    if n % 2 == 0:
        return "tracks", f"{base}/api/v1/tracks?limit=50"
    return "search", f"{base}/api/v1/search?q={QUERIES[(n // 2) % len(QUERIES)].replace(' ', '+')}"


async def read_once(session, kind: str, url: str, res: dict) -> tuple[int, float]:
    """One GET: (status, latency); a failure or an answer with nothing in it noted in res."""
    import aiohttp

    t0 = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
            raw = await resp.read()
            status = resp.status
        latency = time.perf_counter() - t0
        body = json.loads(raw) if status == 200 else None
        if status == 200 and kind == "tracks" and not body.get("items"):
            res["failures"].append(f"{url}: 200 with no items")
        if status == 200 and kind == "search" and not (body.get("tracks") or body.get("artists")):
            res["failures"].append(f"{url}: 200 and nothing found")
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        res["failures"].append(f"{url}: {type(exc).__name__}: {exc}")
        return 0, float("inf")
    if status != 200:
        res["failures"].append(f"{url}: {status}: {raw[:200]!r}")
    return status, latency


async def reader(no: int, session, cfg: dict, res: dict) -> None:
    """One reader: a GET after the other until cfg["end"]; latencies of those ending in the window."""
    n = no
    while time.time() < cfg["end"]:
        kind, url = read_url(cfg["base"], n)
        n += 1
        status, latency = await read_once(session, kind, url, res)
        res["statuses"][str(status)] = res["statuses"].get(str(status), 0) + 1
        if cfg["start"] <= time.time() <= cfg["end"]:
            res[kind].append(latency)


async def read_loop(cfg: dict) -> dict:
    """--readers tasks alternating GET /api/v1/tracks?limit=50 and /api/v1/search?q=... from
    cfg["go"] to cfg["end"] (wall time); latencies of what completes in [start, end]."""
    import aiohttp

    res: dict = {"tracks": [], "search": [], "statuses": {}, "failures": [], "late": time.time() - cfg["start"]}
    connector = aiohttp.TCPConnector(limit=cfg["readers"] + 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.sleep(max(0.0, cfg["go"] - time.time()))
        await asyncio.gather(*(reader(i, session, cfg, res) for i in range(cfg["readers"])))
    return res


def reader_child(folder: str) -> int:
    """The child process: says it is ready, waits for the schedule, reads, writes its results."""
    import aiohttp  # noqa: F401  (imported before saying ready)

    signal.signal(signal.SIGTERM, raise_interrupt)
    d = Path(folder)
    (d / "ready").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (d / "go.json").exists():
        if time.monotonic() > deadline:
            return 2
        time.sleep(0.005)
    cfg = json.loads((d / "go.json").read_text())
    res = asyncio.run(read_loop(cfg))
    tmp = d / "result.tmp"
    tmp.write_text(json.dumps(res))
    tmp.rename(d / "result.json")
    return 0


class Readers:
    """Starts the reader child, hands it its schedule, collects its results."""

    def __init__(self, tmp: Path, label: str, procs: list[Proc]) -> None:
        self.folder = tmp / f"readers-{label}"
        self.folder.mkdir()
        self.proc = Proc(f"readers ({label})", [sys.executable, str(Path(__file__).resolve()), "--reader-child",
                                                str(self.folder)], tmp / f"readers-{label}.log", cwd=str(REPO))
        procs.append(self.proc)
        deadline = time.monotonic() + 30
        while not (self.folder / "ready").exists():
            if not self.proc.alive() or time.monotonic() > deadline:
                raise BenchError(f"the reader process did not start:\n{self.proc.log_tail()}")
            time.sleep(0.01)

    def go(self, cfg: dict) -> None:
        tmp = self.folder / "go.tmp"
        tmp.write_text(json.dumps(cfg))
        tmp.rename(self.folder / "go.json")

    def result(self, timeout: float) -> dict:
        try:
            self.proc.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"the reader process did not finish:\n{self.proc.log_tail()}") from exc
        path = self.folder / "result.json"
        if not path.exists():
            raise BenchError(f"the reader process left no result ({self.proc.popen.returncode}):\n"
                             f"{self.proc.log_tail()}")
        res = json.loads(path.read_text())
        if res["late"] > 0:
            raise BenchError(f"the readers started {res['late']:.2f}s after the timed window began")
        return res


# --- the reference -------------------------------------------------------------------------------

def reference_insert(path: Path, rows: list[tuple], per_tx: int) -> float:
    """rows/s of plain INSERTs into a fresh file with the server's plays table and indexes."""
    import sqlite_utils

    db = sqlite_utils.Database(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db["plays"].create({"id": str, "user_id": str, "track_id": str, "played_at": str, "seconds": float}, pk="id")
    db["plays"].create_index(["user_id", "played_at"])
    db["plays"].create_index(["user_id", "track_id"])
    sql = "INSERT INTO plays (id, user_id, track_id, played_at, seconds) VALUES (?, ?, ?, ?, ?)"
    t0 = time.perf_counter()
    for start in range(0, len(rows), per_tx):
        with db.atomic():
            for row in rows[start:start + per_tx]:
                db.execute(sql, row)
    elapsed = time.perf_counter() - t0
    stored = db.execute("SELECT COUNT(*) FROM plays").fetchone()[0]
    db.close()
    if stored != len(rows):
        raise BenchError(f"reference stored {stored} rows of {len(rows)}")
    return len(rows) / elapsed


def reference_rows(n: int, track_ids: list[str], user_id: str) -> list[tuple]:
    """n rows like the server's: time-ordered 32-hex ids (UUIDv7-like), random tracks."""
    make = play_maker(track_ids, seed=n)
    rows = []
    millis = time.time_ns() // 1_000_000
    for i in range(n):
        p = make()
        rows.append((f"{millis + i // 10:012x}7{secrets.token_hex(10)[:19]}", user_id, p["track_id"],
                     p["played_at"], p["seconds"]))
    return rows


# --- output -----------------------------------------------------------------------------------

def ms(x: float) -> str:
    if x == float("inf"):
        return "fail"
    return f"{x * 1000:.0f} ms" if x >= 0.0095 or x != x else f"{x * 1000:.1f} ms"


def read_lines(label: str, res: dict) -> None:
    for kind in ("tracks", "search"):
        v = res[kind]
        print(f"  reads {kind:<7} {len(v):5d} in the window, p50 {ms(percentile(v, 50)):>8}  "
              f"p99 {ms(percentile(v, 99)):>8}  max {ms(max(v, default=float('nan'))):>8}  ({label})", flush=True)


# --- the run's steps ----------------------------------------------------------------------------

@dataclass
class Run:
    """What the run's steps share: options, folders, processes, the server, the user, and what each
    phase measured (by phase: "alone", "batch", "single")."""
    args: argparse.Namespace
    tmp: Path
    procs: list[Proc]
    ours: Proc
    base: str
    token: str
    track_ids: list[str]
    reads: dict[str, dict] = field(default_factory=dict)
    writes: dict[str, Writes] = field(default_factory=dict)

    @property
    def keys(self) -> bool:
        return not self.args.no_keys

    @property
    def user_id(self) -> str:
        return self.token.split(".")[0]


def prepare(args: argparse.Namespace, tmp: Path, procs: list[Proc], ffmpeg: str) -> Run:
    """[0] The library, the user and our server, its scan done (not timed)."""
    t0 = time.monotonic()
    made = make_library(ffmpeg, tmp / "library", args.tracks)
    token = add_user(tmp / "data", "bench")
    ours, base = start_server(tmp / "library", tmp / "data", tmp / "server.log", procs,
                              ("--db-synchronous", args.synchronous))
    items = wait_scan(base, ours, len(made))
    print(f"library: {len(made)} one-second mp3 files, {len(ARTISTS)} artists; user 'bench' added; "
          f"our server {base} (pid {ours.pid}), scan done; {time.monotonic() - t0:.1f}s (not timed)\n",
          flush=True)
    return Run(args, tmp, procs, ours, base, token, [t["id"] for t in items])


def reads_alone(r: Run) -> None:
    """[1] The readers with no writes: the reference for the reads."""
    a = r.args
    print(f"[1] reads alone: {a.readers} readers, GET /api/v1/tracks?limit=50 and /api/v1/search?q=... "
          f"in turn, {a.read_alone:g} s", flush=True)
    readers = Readers(r.tmp, "alone", r.procs)
    go = time.time() + 0.1
    readers.go({"base": r.base, "readers": a.readers, "go": go, "start": go + 0.3,
                "end": go + 0.3 + a.read_alone})
    r.reads["alone"] = readers.result(a.read_alone + REQUEST_TIMEOUT + 10)
    read_lines("no writes", r.reads["alone"])
    print(flush=True)


def writes_with_reads(r: Run, no: int, phase: str, per_request: int) -> None:
    """[2] or [3]: the write clients and the readers on the same schedule."""
    a = r.args
    what = f"{per_request} plays per request" if per_request > 1 else "one play per request"
    print(f"[{no}] {phase}: {a.clients} clients POST /api/v1/plays, {what}, "
          f"{'a new Idempotency-Key on every request' if r.keys else 'no Idempotency-Key'}; "
          f"{a.readers} readers alongside; {a.warmup:g} s warm-up + {a.duration:g} s timed",
          flush=True)
    ensure_alive(r.ours)
    readers = Readers(r.tmp, phase, r.procs)
    go = time.time() + 0.1
    readers.go({"base": r.base, "readers": a.readers, "go": go,
                "start": go + a.warmup, "end": go + a.warmup + a.duration})
    r.writes[phase] = asyncio.run(write_phase(r.base, r.token, r.track_ids, per_request, a.clients, go, a.warmup,
                                              a.duration, r.keys, phase, r.ours.pid))
    r.reads[phase] = readers.result(REQUEST_TIMEOUT + 10)
    print_write_phase(r, phase)


def print_write_phase(r: Run, phase: str) -> None:
    """The writes' rate, latency and CPU, then the reads alongside."""
    w = r.writes[phase]
    rate = w.window_plays / w.duration
    print(f"  writes: {rate:,.0f} plays/s ({len(w.latencies) / w.duration:,.0f} requests/s), "
          f"latency p50 {ms(percentile(w.latencies, 50))}, p99 {ms(percentile(w.latencies, 99))}, "
          f"max {ms(max(w.latencies, default=float('nan')))}; {w.requests} requests in all, "
          f"{w.accepted} plays accepted, {w.non2xx} not 2xx", flush=True)
    print(f"  CPU in the timed window: server {w.cpu_server / w.duration:.0%} of a core "
          f"({1000 * w.cpu_server / max(1, w.window_plays):.2f} ms per play), write clients "
          f"{w.cpu_client / w.duration:.0%}", flush=True)
    read_lines(f"during {phase} writes", r.reads[phase])
    for f in (w.failures if r.args.verbose else w.failures[:3]):
        print(f"  write failure: {f[:300]}")
    print(flush=True)


def reference_phase(r: Run, phase: str, per_tx: int) -> float:
    """The best of --ref-rounds INSERT runs, as many rows as the phase accepted, each into a new file."""
    n = max(1000, r.writes[phase].accepted)
    ref_rows = reference_rows(n, r.track_ids, r.user_id)
    runs = []
    for round_no in range(r.args.ref_rounds):
        path = r.tmp / f"reference-{phase}-{round_no}.db"
        runs.append(reference_insert(path, ref_rows, per_tx))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"  {per_tx:3d} {'rows' if per_tx > 1 else 'row '} per transaction, {n} rows: "
          f"{' / '.join(f'{x:,.0f}' for x in runs)} rows/s (best kept)", flush=True)
    return max(runs)


def reference(r: Run) -> dict[str, float]:
    """[4] The reference's rows/s, by phase."""
    print("[4] reference: plain INSERTs through sqlite-utils (db.execute) into a fresh SQLite file "
          "(WAL, synchronous=NORMAL; plays table and its 2 indexes only), as many rows as we accepted",
          flush=True)
    refs = {phase: reference_phase(r, phase, per_tx) for phase, per_tx in (("single", 1), ("batch", BATCH))}
    print(flush=True)
    return refs


@dataclass
class Consistency:
    """[5]'s figures: what the server stored against what it accepted, and every error seen."""
    sent: int
    twice: int
    stored_before: int
    stored: int
    replay_ok: bool
    replay_note: str
    fivexx: int
    write_non2xx: int
    read_bad: int
    read_failures: list[str]
    n_err: int
    n_warn: int
    sample: list[str]


def stored_and_replayed(r: Run) -> tuple[int, int, bool, str]:
    """Plays the server stores, then one request sent again with its key, then the plays stored."""
    stored_before = asyncio.run(stored_plays(r.base, r.token))
    replay_ok, replay_note = (False, "no request to replay")
    last = r.writes["single"].last or r.writes["batch"].last
    if r.keys and last is not None:
        replay_ok, replay_note = asyncio.run(replay(r.base, r.token, last))
    stored = asyncio.run(stored_plays(r.base, r.token))
    return stored_before, stored, replay_ok, replay_note


def consistency(r: Run) -> Consistency:
    """[5] Every play accepted stored once, the replay, and every error counted; printed."""
    all_ids = [i for w in r.writes.values() for i in w.ids]
    stored_before, stored, replay_ok, replay_note = stored_and_replayed(r)
    fivexx = asyncio.run(server_5xx(r.base))
    ensure_alive(r.ours, " during the run")
    n_err, n_warn, sample = log_problems(r.ours)
    c = Consistency(sum(w.accepted for w in r.writes.values()), len(all_ids) - len(set(all_ids)), stored_before,
                    stored, replay_ok, replay_note, fivexx, sum(w.non2xx for w in r.writes.values()),
                    sum(n for res in r.reads.values() for s, n in res["statuses"].items() if s != "200"),
                    [f for res in r.reads.values() for f in res["failures"]], n_err, n_warn, sample)
    print(f"checks: {c.sent} plays accepted, {c.stored_before} stored by the server"
          f"{f' ({c.stored} after the replay)' if r.keys else ''}; {c.twice} ids given twice; replay of one "
          f"request with its key: {c.replay_note if r.keys else 'not done (--no-keys)'}; writes not 2xx: "
          f"{c.write_non2xx}; reads not 200: {c.read_bad}; 5xx in /metrics: {c.fivexx}; server log: "
          f"{c.n_err} ERROR, {c.n_warn} WARNING", flush=True)
    for ln in c.sample:
        print(f"  log: {ln[:200]}")
    for f in c.read_failures[:5]:
        print(f"  read failure: {f[:300]}")
    return c


def read_rows(table: Summary, r: Run, phase: str) -> None:
    """Each endpoint's reads during a write phase against the same reads alone."""
    for kind in ("tracks", "search"):
        v, alone = r.reads[phase][kind], r.reads["alone"][kind]
        p99, ref99 = percentile(v, 99), percentile(alone, 99)
        name = "tracks?limit=50" if kind == "tracks" else "search?q="
        table.check(p99 < TARGET_READ_P99, f"  {phase}: reads {name} p50 / p99 (n={len(v)})",
                    f"{ms(percentile(alone, 50))} / {ms(ref99)} (alone)",
                    f"{ms(percentile(v, 50))} / {ms(p99)}", f"{ratio(p99, ref99):.2f}",
                    f"p99 < {TARGET_READ_P99 * 1000:.0f} ms")


def phase_rows(table: Summary, r: Run, refs: dict[str, float]) -> None:
    """Each write phase's plays/s against the reference, its latency, the reads alongside."""
    for phase, per_request, target in (("batch", BATCH, TARGET_BATCH_PLAYS),
                                       ("single", 1, TARGET_SINGLE_PLAYS)):
        w = r.writes[phase]
        rate = w.window_plays / w.duration
        label = f"{per_request} plays/request" if per_request > 1 else "1 play/request"
        table.check(rate >= target, f"{phase}: plays/s ({label}, c={r.args.clients})",
                    f"{refs[phase]:,.0f} ({per_request} row{'s' if per_request > 1 else ''}/tx)",
                    f"{rate:,.0f}", f"{ratio(rate, refs[phase]):.2f}", f">= {target:,.0f}")
        table.info(f"  {phase}: request latency p50 / p99", "",
                   f"{ms(percentile(w.latencies, 50))} / {ms(percentile(w.latencies, 99))}")
        read_rows(table, r, phase)


def consistency_rows(table: Summary, r: Run, c: Consistency) -> None:
    """[5]'s two targets, and the server log for information."""
    table.check(c.stored_before == c.sent and c.stored == c.sent and c.twice == 0 and (c.replay_ok or not r.keys),
                "plays stored = accepted; ids twice; replay with key", "",
                f"{c.stored_before} = {c.sent}; {c.twice}; "
                f"{'same ids' if c.replay_ok else 'not same' if r.keys else '-'}", "", "equal; 0; same")
    table.check(c.write_non2xx == 0 and c.read_bad == 0 and not c.read_failures and c.fivexx == 0,
                "writes non-2xx / reads non-200 / 5xx (metrics)", "",
                f"{c.write_non2xx} / {c.read_bad} / {c.fivexx}", "", "0")
    table.info("server log ERROR / WARNING lines", "", f"{c.n_err} / {c.n_warn}")


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    """The benchmark proper, in the temp folder `tmp`, each process it starts put in `procs`:
    0 when every target passes, 1 when one fails (BenchError when it cannot run)."""
    t_begin = time.monotonic()
    require_modules("aiohttp", "sqlite_utils")
    ffmpeg = ffmpeg_exe()
    cores = os.cpu_count()
    load = load_average()
    print(f"plays_bench: load average {load} at start; {cores} cores shared by our server "
          f"(one process), the write clients (this process) and the readers (a child process). "
          f"Temp folder {tmp}", flush=True)
    r = prepare(args, tmp, procs, ffmpeg)
    reads_alone(r)
    for no, phase, per_request in ((2, "batch", BATCH), (3, "single", 1)):
        writes_with_reads(r, no, phase, per_request)
    refs = reference(r)
    c = consistency(r)
    table = Summary()
    phase_rows(table, r, refs)
    consistency_rows(table, r, c)
    print(f"load average at the end: {load_average()} (at start: {load})")
    keys = "Idempotency-Key on every write" if r.keys else "no Idempotency-Key"
    return table.finish(f"\nSUMMARY (one server process, {len(r.track_ids)} tracks; {args.clients} write clients, "
                        f"{args.readers} readers; {keys}; "
                        f"reference = sqlite-utils INSERT loop, plays table only; {cores} cores shared; "
                        f"total {time.monotonic() - t_begin:.0f}s)")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--reader-child":
        try:
            return reader_child(sys.argv[2])
        except KeyboardInterrupt:
            return 130

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5, help="timed seconds of each write phase (default 5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="untimed seconds before each write phase (default 0.5)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent write clients (default 32)")
    ap.add_argument("--readers", type=int, default=4, help="concurrent catalog readers (default 4)")
    ap.add_argument("--read-alone", type=float, default=3, help="seconds of reads with no writes (default 3)")
    ap.add_argument("--ref-rounds", type=int, default=2, help="reference runs per mode, best kept (default 2)")
    ap.add_argument("--tracks", type=int, default=20, help="tracks in the library (default 20, 500 at most)")
    ap.add_argument("--no-keys", action="store_true", help="send no Idempotency-Key header")
    ap.add_argument("--synchronous", choices=("full", "normal"), default="full",
                    help="the server's db_synchronous setting (default full)")
    ap.add_argument("--verbose", action="store_true", help="print every failure seen")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (library, data, server log)")
    args = ap.parse_args()
    if not 0 < args.duration <= 120 or not 0 <= args.warmup <= 30 or not 0 < args.read_alone <= 120:
        ap.error("--duration and --read-alone must be from 0 to 120 s, --warmup from 0 to 30 s")
    if (not 1 <= args.clients <= 1000 or not 1 <= args.readers <= 100 or not 1 <= args.tracks <= 500
            or not 1 <= args.ref_rounds <= 10):
        ap.error("--clients 1 to 1000, --readers 1 to 100, --tracks 1 to 500, --ref-rounds 1 to 10")
    return run_bench("plays_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
