#!/usr/bin/env python3
"""Cluster benchmark: a master and regions, each a real `run.py serve` process, measured against
the master alone in the same run (replication lag, region bootstrap, plays through a region,
streaming of a file present in the region's own library).

What it does (everything on 127.0.0.1; everything it starts is stopped at the end, also on Ctrl-C):

0. makes a small library, --tracks (20) one-second mp3 files (one ffmpeg run, not timed); adds a
   user with `run.py user add` on the master's data folder (users replicate, so its token works at
   every node); starts the master (`--role master`) over the library and waits for its scan, then
   region A (empty library) and region B (a copy of the master's library, same relative paths),
   each until GET /readyz is 200 and it lists every track;
S. with --sync-replicas N (N >= 1; the master of every cluster but this step's reference runs with
   it): what a write costs. A second cluster with N = 0 is started as the reference; at each
   master, one client's --latency-writes (200) sequential POST /api/v1/playlists (p50/p99), then
   --writers (8) clients for --duration (5) s (p50/p99, writes/s), then plays/s at the master and
   through region A as in [2]; --sync-rounds (2) rounds in ABBA order, latencies pooled, the
   median of each rate; ratios N/0. Every write must be answered 200/201 (a 503 not_replicated fails it). Info, no target;
1. replication lag: --writes (500) POST /api/v1/playlists {"name": unique} at region A, one at a
   time; after each, GET /api/v1/playlists/{id} at region B every 2 ms until 200. The lag is timed
   from the moment the POST is sent (so it includes the forward to the master) and, as info, from
   A's answer. Targets: p50 < 100 ms, p99 < 500 ms. Reference: the same write POSTed to the master
   and read back at the master (local read-after-write), same polling;
2. plays through a region: --clients (24) concurrent clients POST /api/v1/plays with 100 plays
   each for --duration (5) s at region A (forwarded to the master), then the same load straight to
   the master (reference). Target: >= 2,000 plays/s at the region;
3. streaming a locally present file: wrk (`-t2 -c32`) GET /stream/{id} of one whole small mp3 at
   region B and at the master, alternating --rounds (4) rounds of --wrk-seconds (4) s (the order
   swapped every round), best kept.
   Target: region/master req/s >= 0.9. (Without wrk, this test is skipped and says so.);
4. promotion, --promotion-runs (1) times (the first on the cluster of [1]-[3], each other on a
   fresh one): --writers (8) clients POST playlists at the master as fast as it answers; after
   --kill-after (1.5) s the master is killed with SIGKILL mid-stream. Once both regions have seen
   it gone (/healthz master.reachable false), their replica positions (master.sequence) are read
   and one is promoted (POST /cluster/v1/promote, timed): with N >= 1 the one holding the highest
   sequence (A on a tie), as an operator would choose; with N = 0 region A, as always. Then every
   write the master acknowledged (201) is looked up at it: the ones missing are what the promotion
   lost, reported per run and in total, with the time span they were written in. Then a first
   write at the new master is timed, the other region is pointed at it (POST /cluster/v1/follow)
   and timed until it reads that write. Target: N = 0, the loss window under the lag p99 target
   (500 ms); N >= 1, no acknowledged write lost in any run;
5. bootstrap from a big catalog: the other nodes are stopped; a fresh data folder gets the schema
   from `run.py scan` over an empty folder, then --catalog (100,000) generated track rows (no
   media) inserted with sqlite3; a master starts on it with --no-scan-on-start (reference: its
   start to /readyz 200), then a fresh region: its start to /readyz 200 and to
   GET /api/v1/tracks total == --catalog. Target: under 5 s;
6. checks: every write answered 2xx, the plays the master counts equal those accepted, no
   traceback or ERROR line in any server's log.

Run it with the project's Python, from the repo root:

    python bench/cluster_bench.py [--writes 500] [--clients 24] [--duration 5] [--catalog 100000]
                                  [--rounds 4] [--wrk-seconds 4] [--tracks 20] [--writers 8]
                                  [--kill-after 1.5] [--sync-replicas 0] [--promotion-runs 1]
                                  [--latency-writes 200] [--sync-rounds 2] [--keep]

About 2 minutes in all with the defaults (add ~1 min for [S], ~10 s per extra promotion run);
every node, wrk and the clients share the machine's cores.

Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, Summary, ensure_alive, ffmpeg_exe, free_port, log_problems, parse_wrk, percentile,
    ratio, run_bench, wait_port, wait_scan,
)
from plays_bench import add_user, make_library, ms, play_maker, stored_plays

TARGET_LAG_P50 = 0.100
TARGET_LAG_P99 = 0.500
TARGET_PLAYS = 2000.0
TARGET_STREAM_RATIO = 0.9
TARGET_BOOTSTRAP = 5.0
BATCH = 100
POLL = 0.002
REQUEST_TIMEOUT = 30.0
SEQUENCE_HEADER = "X-Change-Sequence"  # a master's write answer: its change-log position


# --- nodes ------------------------------------------------------------------------------------

class Node:
    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.base = node_url(port)
        self.started = time.monotonic()


def node_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports, picked before any node of a cluster starts (each names them all)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def start_node(name: str, role: str, secret: str, library: Path, data: Path, log: Path, procs: list[Proc],
               port: int, nodes: list[int], master: Node | None = None, extra: tuple[str, ...] = ()) -> Node:
    """A `run.py serve` node on `port` (picked beforehand), its cluster_nodes the URLs of `nodes`:
    the ports of every node of its cluster (a region follows, at promotion, only the nodes listed)."""
    argv = [sys.executable, str(REPO / "run.py"), "serve", "--role", role, "--cluster-secret", secret,
            "--host", "127.0.0.1", "--port", str(port), "--library", str(library), "--data-dir", str(data),
            "--no-demo-library", "--log-level", "warning",
            "--cluster-nodes", ",".join(node_url(p) for p in nodes),
            "--writes-per-minute", "1000000",  # one bench user writes as fast as it can: no per-user limit
            "--no-loudness-analysis",  # its background ffmpeg runs would mix with what is measured
            *extra]
    if master is not None:
        argv += ["--master-url", master.base]
    t0 = time.monotonic()
    proc = Proc(name, argv, log, cwd=str(REPO))
    procs.append(proc)
    node = Node(proc, port)
    node.started = t0
    wait_port(port, proc, 60)
    return node


def get_json(url: str, token: str | None = None, timeout: float = 10) -> tuple[int, dict | None]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def wait_ready(node: Node, timeout: float = 60) -> float:
    """Seconds from the node's start to GET /readyz 200 (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not node.proc.alive():
            raise BenchError(f"{node.proc.name} exited:\n{node.proc.log_tail()}")
        if get_json(f"{node.base}/readyz", timeout=2)[0] == 200:
            return time.monotonic() - node.started
        time.sleep(0.01)
    raise BenchError(f"{node.proc.name} not ready within {timeout:.0f}s:\n{node.proc.log_tail()}")


def wait_tracks(node: Node, expected: int, timeout: float = 60, pause: float = 0.05) -> float:
    """Seconds from the node's start until GET /api/v1/tracks says total == expected."""
    deadline = time.monotonic() + timeout
    total = None
    while time.monotonic() < deadline:
        if not node.proc.alive():
            raise BenchError(f"{node.proc.name} exited:\n{node.proc.log_tail()}")
        status, body = get_json(f"{node.base}/api/v1/tracks?limit=1", timeout=10)
        if status == 200 and body is not None:
            total = body.get("total")
            if total == expected:
                return time.monotonic() - node.started
        time.sleep(pause)
    raise BenchError(f"{node.proc.name} lists {total} tracks, not {expected}, after {timeout:.0f}s")


# --- 1. replication lag ---------------------------------------------------------------------

async def lag_run(write: Node, read: Node, token: str, count: int, label: str) -> dict:
    """Write `count` playlists at `write`, each read back at `read` until 200."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    from_send: list[float] = []
    from_ack: list[float] = []
    ack: list[float] = []
    bad: list[str] = []
    tag = secrets.token_hex(4)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as ws, aiohttp.ClientSession(timeout=timeout) as rs:
        for i in range(count):
            t0 = time.perf_counter()
            async with ws.post(f"{write.base}/api/v1/playlists", json={"name": f"{label} {tag} {i}"},
                               headers=headers) as resp:
                body = await resp.read()
                status = resp.status
            t1 = time.perf_counter()
            if status != 201:
                bad.append(f"POST {status} {body[:200]!r}")
                continue
            pid = json.loads(body)["id"]
            deadline = t1 + 10
            while True:
                async with rs.get(f"{read.base}/api/v1/playlists/{pid}", headers=headers) as resp:
                    await resp.read()
                    seen = resp.status
                t2 = time.perf_counter()
                if seen == 200:
                    break
                if seen != 404 or t2 > deadline:
                    bad.append(f"GET {pid}: {seen}")
                    t2 = float("inf")
                    break
                await asyncio.sleep(POLL)
            from_send.append(t2 - t0)
            from_ack.append(max(0.0, t2 - t1))
            ack.append(t1 - t0)
    return {"from_send": from_send, "from_ack": from_ack, "ack": ack, "bad": bad}


# --- 2. plays -----------------------------------------------------------------------------

@dataclass
class PlaysTally:
    """What the play clients of one run sent and got; plays and latencies of the timed window."""
    t_start: float  # perf_counter time
    t_end: float
    accepted: int = 0
    requests: int = 0
    window: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def note(self, status: int, answer: bytes, t0: float, t1: float) -> None:
        """One answer, sent at t0 and there at t1; it counts if it came in the window."""
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.accepted += BATCH
            if self.t_start <= t1 <= self.t_end:
                self.window += BATCH
                self.latencies.append(t1 - t0)
        elif len(self.failures) < 20:
            self.failures.append(f"{status} {answer[:200]!r}")


async def plays_client(session, url: str, headers: dict, make, tally: PlaysTally) -> None:
    """One client: a POST of BATCH plays after the other, each with its own key, until the window ends."""
    import aiohttp

    while time.perf_counter() < tally.t_end:
        body = json.dumps({"plays": [make() for _ in range(BATCH)]}).encode()
        h = {**headers, "Idempotency-Key": secrets.token_hex(16)}
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=h) as resp:
                answer = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.failures.append(repr(exc))
            continue
        tally.note(status, answer, t0, time.perf_counter())


async def plays_run(node: Node, token: str, track_ids: list[str], clients: int, duration: float,
                    seed: int) -> dict:
    """`clients` clients posting plays at `node` for 0.5 s (not counted) then `duration` s."""
    import aiohttp

    make = play_maker(track_ids, seed)
    url = f"{node.base}/api/v1/plays"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    warm = 0.5
    t_start = time.perf_counter() + warm
    tally = PlaysTally(t_start, t_start + duration)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
        await asyncio.gather(*(plays_client(session, url, headers, make, tally) for _ in range(clients)))
    return {"rate": tally.window / duration, "accepted": tally.accepted, "requests": tally.requests,
            "statuses": tally.statuses, "latencies": tally.latencies, "failures": tally.failures}


def master_play_count(master: Node, token: str) -> int:
    """Plays the master stores for the user (-1 if it cannot say)."""
    try:
        return asyncio.run(stored_plays(master.base, token))
    except (BenchError, OSError, KeyError, ValueError):
        return -1


# --- 3. streaming -------------------------------------------------------------------------

def wrk_rps(url: str, seconds: float, connections: int) -> tuple[float, str]:
    done = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
                          capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-400:]}")
    r = parse_wrk(done.stdout)
    problems = []
    if r["non2xx"]:
        problems.append(f"Non-2xx or 3xx responses: {r['non2xx']}")
    if r["errors"]:
        problems.append(f"Socket errors: connect {r['connect']}, read {r['read']}, write {r['write']}, "
                        f"timeout {r['timeout']}")
    return r["rps"], "; ".join(problems)


# --- 5. bootstrap ------------------------------------------------------------------------------

def make_catalog(data: Path, empty_lib: Path, count: int) -> float:
    """Schema by `run.py scan` over an empty folder, then `count` generated rows; seconds taken."""
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "run.py"), "scan", "--library", str(empty_lib),
                           "--data-dir", str(data)], cwd=str(REPO), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BenchError(f"run.py scan failed ({done.returncode}):\n{done.stdout[-800:]}\n{done.stderr[-800:]}")
    dbs = [p for p in data.rglob("*.db") if p.is_file()]
    db_path = None
    for p in dbs:
        with contextlib.closing(sqlite3.connect(p)) as c:
            if c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='tracks'").fetchone():
                db_path = p
                break
    if db_path is None:
        raise BenchError(f"no catalog with a tracks table in {data}: {dbs}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = []
    for i in range(count):
        artist_no, album_no = i // 1000, i // 20
        artist = f"Artist {artist_no:03d}"
        album = f"Album {album_no:05d}"
        rows.append((f"{i:016x}", f"{artist}/{album}/{i % 20 + 1:02d} Track {i}.mp3", 1_000_000 + i,
                     1_700_000_000_000_000_000 + i, f"Track {i}", artist, f"ar{artist_no:014x}", album,
                     f"al{album_no:014x}", artist, f"ar{artist_no:014x}", f"{artist}/{album}", artist, album,
                     i % 20 + 1, 1, 180.0 + i % 60, "mp3", "mp3", 192000, 44100, 2, now, now))
    with contextlib.closing(sqlite3.connect(db_path)) as c:
        c.executemany(
            "INSERT INTO tracks (id, path, size, mtime_ns, title, artist, artist_id, album, album_id, album_artist, "
            "album_artist_id, dir, tag_artist, tag_album, track_number, disc_number, duration, codec, container, "
            "bitrate, sample_rate, channels, added_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        c.commit()
    return time.monotonic() - t0


# --- clusters -----------------------------------------------------------------------------------

@dataclass
class Cluster:
    master: Node
    region_a: Node  # empty library
    region_b: Node  # a copy of the master's library
    token: str
    track_ids: list[str]
    sync: int  # the master's sync_replicas

    @property
    def nodes(self) -> list[Node]:
        return [self.master, self.region_a, self.region_b]


@dataclass
class Bench:
    """What the run's steps share: options, folders, processes, the summary table."""
    args: argparse.Namespace
    tmp: Path
    procs: list[Proc]
    secret: str
    table: Summary = field(default_factory=lambda: Summary(("test", "reference", "ours", "ratio", "target", "result")))
    stopped: list[Proc] = field(default_factory=list)  # nodes stopped; their logs are looked at in [6]
    clusters: int = 0


def start_cluster(b: Bench, sync: int) -> Cluster:
    """A master (with `--sync-replicas sync` when sync > 0) over the library, then regions A and B,
    each ready and listing every track; a fresh data folder and user for each cluster."""
    b.clusters += 1
    tag = "" if b.clusters == 1 else f" #{b.clusters}"
    folder = b.tmp / f"cluster-{b.clusters}"
    folder.mkdir()
    token = add_user(folder / "master-data", "bench")
    extra = ("--sync-replicas", str(sync)) if sync else ()
    ports = free_ports(3)  # master, region A, region B: each names all three
    master = start_node(f"master{tag}", "master", b.secret, b.tmp / "library", folder / "master-data",
                        folder / "master.log", b.procs, ports[0], ports, extra=extra)
    wait_ready(master)
    track_ids = [t["id"] for t in wait_scan(master.base, master.proc, b.args.tracks)]
    regions = [start_node(f"region {x}{tag}", "region", b.secret, b.tmp / lib, folder / f"region-{x.lower()}-data",
                          folder / f"region-{x.lower()}.log", b.procs, port, ports, master)
               for x, lib, port in (("A", "empty", ports[1]), ("B", "library-b", ports[2]))]
    for r in regions:
        wait_ready(r)
        wait_tracks(r, b.args.tracks)
    return Cluster(master, *regions, token, track_ids, sync)


def stop_cluster(b: Bench, c: Cluster) -> None:
    for node in reversed(c.nodes):
        node.proc.stop()
        b.stopped.append(node.proc)


# --- sync_replicas: what a write costs ------------------------------------------------------------

async def post_playlist(session, node: Node, auth: dict, name: str) -> tuple[int, float]:
    """POST one playlist: (status, seconds to the answer)."""
    t0 = time.perf_counter()
    async with session.post(f"{node.base}/api/v1/playlists", json={"name": name}, headers=auth) as resp:
        await resp.read()
        return resp.status, time.perf_counter() - t0


async def write_latency(node: Node, token: str, count: int, writers: int, duration: float) -> dict:
    """One client's `count` sequential writes at `node`, then `writers` concurrent clients writing
    for `duration` s: latencies and statuses of each."""
    import aiohttp

    auth = {"Authorization": f"Bearer {token}"}
    seq: list[float] = []
    conc: list[float] = []
    statuses: dict[int, int] = {}
    tag = secrets.token_hex(4)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
        for i in range(count):
            status, took = await post_playlist(session, node, auth, f"seq {tag} {i}")
            statuses[status] = statuses.get(status, 0) + 1
            seq.append(took)
        t_end = time.perf_counter() + duration

        async def writer(no: int) -> None:
            i = 0
            while time.perf_counter() < t_end:
                i += 1
                status, took = await post_playlist(session, node, auth, f"conc {tag} {no} {i}")
                statuses[status] = statuses.get(status, 0) + 1
                conc.append(took)

        await asyncio.gather(*(writer(n) for n in range(writers)))
    return {"seq": seq, "conc": conc, "conc_rate": len(conc) / duration, "statuses": statuses}


def measure_writes(b: Bench, c: Cluster, seed: int) -> dict:
    """Write latency at the master, then plays/s at the master and through region A."""
    a = b.args
    res = asyncio.run(write_latency(c.master, c.token, a.latency_writes, a.writers, a.duration))
    res["plays_master"] = asyncio.run(plays_run(c.master, c.token, c.track_ids, a.clients, a.duration, seed))
    res["plays_region"] = asyncio.run(plays_run(c.region_a, c.token, c.track_ids, a.clients, a.duration, seed + 1))
    for key in ("plays_master", "plays_region"):
        for status, n in res[key]["statuses"].items():
            res["statuses"][status] = res["statuses"].get(status, 0) + n
    print(f"  N={c.sync}: 1 client p50 {ms(percentile(res['seq'], 50))} p99 {ms(percentile(res['seq'], 99))}; "
          f"{a.writers} writers p50 {ms(percentile(res['conc'], 50))} p99 {ms(percentile(res['conc'], 99))} "
          f"({res['conc_rate']:,.0f} writes/s); plays/s master {res['plays_master']['rate']:,.0f}, region A "
          f"{res['plays_region']['rate']:,.0f}; statuses {res['statuses']}", flush=True)
    return res


def merged(rounds: list[dict]) -> dict:
    """The rounds of one N together: latencies pooled, the median of each rate, statuses summed."""
    statuses: dict[int, int] = {}
    for r in rounds:
        for status, n in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    median = lambda f: percentile([f(r) for r in rounds], 50)  # noqa: E731
    return {"seq": [x for r in rounds for x in r["seq"]], "conc": [x for r in rounds for x in r["conc"]],
            "conc_rate": median(lambda r: r["conc_rate"]), "statuses": statuses,
            "plays_master": median(lambda r: r["plays_master"]["rate"]),
            "plays_region": median(lambda r: r["plays_region"]["rate"])}


def section_sync(b: Bench, ours: Cluster) -> None:
    """[S] The cost of sync_replicas = N: the same writes at a fresh cluster with N = 0 (reference)
    and at ours, in alternating rounds (ABBA), so both see the same machine."""
    a = b.args
    if not a.sync_replicas:
        print("[S] sync_replicas cost: skipped (the master runs with N = 0; --sync-replicas 1 compares)\n")
        return
    print(f"[S] sync_replicas cost: a second cluster with N = 0 (reference) against ours (N = {a.sync_replicas}); "
          f"{a.latency_writes} sequential writes, {a.writers} writers for {a.duration:g} s, plays ({a.clients} "
          f"clients x {BATCH}) at the master and at region A; {a.sync_rounds} rounds, ABBA", flush=True)
    ref = start_cluster(b, 0)
    rounds: dict[int, list[dict]] = {0: [], a.sync_replicas: []}
    for rnd in range(a.sync_rounds):
        for c in (ref, ours) if rnd % 2 == 0 else (ours, ref):
            rounds[c.sync].append(measure_writes(b, c, 10 + 2 * rnd))
    stop_cluster(b, ref)
    sync_rows(b, merged(rounds[0]), merged(rounds[a.sync_replicas]))
    print(flush=True)


def sync_rows(b: Bench, r0: dict, rn: dict) -> None:
    """The summary's rows of [S]: N = 0 as the reference, ours against it."""
    a, n = b.args, f"N={b.args.sync_replicas}"
    for label, key in (("1 client, sequential", "seq"), (f"{a.writers} writers", "conc")):
        p0 = percentile(r0[key], 50), percentile(r0[key], 99)
        pn = percentile(rn[key], 50), percentile(rn[key], 99)
        b.table.info(f"write latency at master, {label}, p50 / p99 ({n})", f"{ms(p0[0])} / {ms(p0[1])} (N=0)",
                     f"{ms(pn[0])} / {ms(pn[1])}", f"{ratio(pn[0], p0[0]):.1f} / {ratio(pn[1], p0[1]):.1f}")
    b.table.info(f"writes/s at master, {a.writers} writers ({n})", f"{r0['conc_rate']:,.0f} (N=0)",
                 f"{rn['conc_rate']:,.0f}", f"{ratio(rn['conc_rate'], r0['conc_rate']):.2f}")
    for label, key in (("at master", "plays_master"), ("via region A", "plays_region")):
        b.table.info(f"plays/s {label}, c={a.clients} ({n})", f"{r0[key]:,.0f} (N=0)", f"{rn[key]:,.0f}",
                     f"{ratio(rn[key], r0[key]):.2f}")
    odd = [sum(v for s, v in r["statuses"].items() if s not in (200, 201)) for r in (r0, rn)]
    b.table.check(odd == [0, 0], "sync cost: writes not answered 200/201 (N=0 / ours)", "", f"{odd[0]} / {odd[1]}", "",
                  "0 / 0")


# --- 4. promotion -------------------------------------------------------------------------------

async def write_until_kill(session, c: Cluster, writers: int, kill_after: float) -> dict:
    """`writers` clients POST playlists at the master as fast as it answers; SIGKILL after
    `kill_after` s. The acknowledged writes (201): (when, id, X-Change-Sequence)."""
    import aiohttp

    auth = {"Authorization": f"Bearer {c.token}"}
    acked: list[tuple[float, str, int]] = []
    refused: dict[int, int] = {}

    async def writer(no: int) -> None:
        i = 0
        while True:
            i += 1
            try:
                async with session.post(f"{c.master.base}/api/v1/playlists", json={"name": f"w{no}-{i}"},
                                        headers=auth) as resp:
                    if resp.status == 201:
                        acked.append((time.monotonic(), (await resp.json())["id"],
                                      int(resp.headers.get(SEQUENCE_HEADER, -1))))
                    else:
                        refused[resp.status] = refused.get(resp.status, 0) + 1
            except (aiohttp.ClientError, OSError):
                return  # the master is gone: this write was never acknowledged

    started = time.monotonic()
    tasks = [asyncio.create_task(writer(n)) for n in range(writers)]
    await asyncio.sleep(kill_after)
    c.master.proc.popen.kill()
    killed = time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"acked": acked, "refused": refused, "rate": len(acked) / max(killed - started, 1e-9), "killed": killed}


async def replica_positions(session, regions: list[Node], timeout: float = 10) -> list[int]:
    """Each region's replica position (/healthz master.sequence), read as an operator would: once
    every region has seen its master gone (master.reachable false, so a batch it was applying is in)."""
    deadline = time.monotonic() + timeout
    while True:
        health = []
        for node in regions:
            async with session.get(f"{node.base}/healthz") as resp:
                health.append((await resp.json())["master"])
        if not any(h["reachable"] for h in health) or time.monotonic() > deadline:
            return [h["sequence"] for h in health]
        await asyncio.sleep(0.01)


def region_to_promote(sync: int, positions: list[int]) -> int:
    """With sync_replicas, the region whose replica holds the most (A on a tie), as an operator
    picks; without, region A, as this benchmark always did (comparable figures)."""
    return 1 if sync and positions[1] > positions[0] else 0


async def promote(session, node: Node, secret: str) -> tuple[float, dict]:
    t0 = time.monotonic()
    async with session.post(f"{node.base}/cluster/v1/promote", headers={"X-Cluster-Secret": secret}) as resp:
        answer = await resp.json()
        if resp.status != 200:
            raise BenchError(f"promotion answered {resp.status}: {answer}")
    return time.monotonic() - t0, {k: answer.get(k) for k in ("sequence", "outbox_applied", "tracks_without_media")}


async def after_promotion(session, new: Node, other: Node, token: str, secret: str) -> dict:
    """A first write at the new master (timed), then the other region pointed at it and timed
    until it reads that write."""
    auth = {"Authorization": f"Bearer {token}"}
    t0 = time.monotonic()
    async with session.post(f"{new.base}/api/v1/playlists", json={"name": "after promotion"}, headers=auth) as resp:
        first_status = resp.status
        first_id = (await resp.json()).get("id")
    first_write = time.monotonic() - t0
    t0 = time.monotonic()
    async with session.post(f"{other.base}/cluster/v1/follow", json={"master_url": new.base},
                            headers={"X-Cluster-Secret": secret}) as resp:
        if resp.status != 200:
            raise BenchError(f"follow answered {resp.status}: {await resp.text()}")
    while not await _exists(session, f"{other.base}/api/v1/playlists/{first_id}", auth):
        if time.monotonic() - t0 > 60:
            raise BenchError(f"{other.proc.name} did not follow the new master within 60 s")
        await asyncio.sleep(0.005)
    return {"first_write": first_write, "first_write_status": first_status, "follow": time.monotonic() - t0}


async def promotion_run(c: Cluster, secret: str, writers: int, kill_after: float) -> dict:
    """Writes at the master until it is killed; a region promoted; the acknowledged writes it lacks."""
    import aiohttp

    auth = {"Authorization": f"Bearer {c.token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
        res = await write_until_kill(session, c, writers, kill_after)
        regions = [c.region_a, c.region_b]
        res["positions"] = await replica_positions(session, regions)
        pick = region_to_promote(c.sync, res["positions"])
        res["promoted"] = "AB"[pick]
        res["promote"], res["answer"] = await promote(session, regions[pick], secret)
        present = await asyncio.gather(*(_exists(session, f"{regions[pick].base}/api/v1/playlists/{pid}", auth)
                                         for _, pid, _ in res["acked"]))
        res["lost"] = [w for w, there in zip(res["acked"], present) if not there]
        res.update(await after_promotion(session, regions[pick], regions[1 - pick], c.token, secret))
    res["window"] = (res["killed"] - min(at for at, _, _ in res["lost"])) if res["lost"] else 0.0
    return res


async def _exists(session, url: str, auth: dict) -> bool:
    async with session.get(url, headers=auth) as resp:
        return resp.status == 200


def print_promotion(run_no: int, res: dict) -> None:
    acked = res["acked"]
    top = max((s for _, _, s in acked), default=0)
    lost_seqs = sorted(s for _, _, s in res["lost"])
    print(f"  run {run_no}: {len(acked)} writes acknowledged ({res['rate']:,.0f}/s; not 201: "
          f"{res['refused'] or 'none'}), the last at sequence {top}; replicas after the kill: A holds "
          f"{res['positions'][0]}, B holds {res['positions'][1]}; region {res['promoted']} promoted in "
          f"{ms(res['promote'])}: {res['answer']}", flush=True)
    print(f"    lost: {len(res['lost'])} acknowledged writes not at the new master, written in the last "
          f"{ms(res['window'])} before the kill{f' (sequences {lost_seqs[:5]}...)' if lost_seqs else ''}; first "
          f"write {ms(res['first_write'])} ({res['first_write_status']}); the other region follows it in "
          f"{ms(res['follow'])}", flush=True)


# --- the run's steps ----------------------------------------------------------------------------

def section_lag(b: Bench, c: Cluster) -> float:
    """[1]; the lag p99 (the promotion's loss window is held against it)."""
    a = b.args
    print(f"[1] replication lag: {a.writes} playlists POSTed at region A, each polled at region B "
          f"(every {POLL * 1000:g} ms) until 200; reference: the same at the master alone", flush=True)
    ref = asyncio.run(lag_run(c.master, c.master, c.token, a.writes, "ref"))
    lag = asyncio.run(lag_run(c.region_a, c.region_b, c.token, a.writes, "lag"))
    for name, res in (("master -> master", ref), ("region A -> region B", lag)):
        print(f"  {name}: from send p50 {ms(percentile(res['from_send'], 50))} p99 "
              f"{ms(percentile(res['from_send'], 99))} max {ms(max(res['from_send'], default=float('nan')))}; "
              f"write answered p50 {ms(percentile(res['ack'], 50))}; after the answer p50 "
              f"{ms(percentile(res['from_ack'], 50))} p99 {ms(percentile(res['from_ack'], 99))}; "
              f"{len(res['bad'])} failures", flush=True)
        for f in res["bad"][:3]:
            print(f"    failure: {f}")
    p50, p99 = percentile(lag["from_send"], 50), percentile(lag["from_send"], 99)
    r50, r99 = percentile(ref["from_send"], 50), percentile(ref["from_send"], 99)
    b.table.check(p50 < TARGET_LAG_P50 and not lag["bad"] and len(lag["from_send"]) == a.writes,
                  f"replication lag A->B p50 (n={len(lag['from_send'])})", f"{ms(r50)} (master RaW)", ms(p50),
                  f"{ratio(p50, r50):.1f}", f"< {TARGET_LAG_P50 * 1000:.0f} ms")
    b.table.check(p99 < TARGET_LAG_P99 and not lag["bad"], "replication lag A->B p99", f"{ms(r99)} (master RaW)",
                  ms(p99), f"{ratio(p99, r99):.1f}", f"< {TARGET_LAG_P99 * 1000:.0f} ms")
    b.table.info("  lag after A's answer p50 / p99", "",
                 f"{ms(percentile(lag['from_ack'], 50))} / {ms(percentile(lag['from_ack'], 99))}")
    print(flush=True)
    return p99


def counted_plays(c: Cluster, before: int, accepted: int) -> int:
    """New plays the master counts, once they reach `accepted` (202s queued at the region come a
    little later) or after 15 s; -1 if it cannot say."""
    deadline = time.monotonic() + 15
    after = master_play_count(c.master, c.token)
    while after - before != accepted and time.monotonic() < deadline:
        time.sleep(0.2)
        after = master_play_count(c.master, c.token)
    return after - before if before >= 0 and after >= 0 else -1


def section_plays(b: Bench, c: Cluster) -> None:
    a = b.args
    print(f"[2] plays: {a.clients} clients x {BATCH} plays/request for {a.duration:g} s "
          f"(+0.5 s warm-up) at region A, then at the master", flush=True)
    before = master_play_count(c.master, c.token)
    via_region = asyncio.run(plays_run(c.region_a, c.token, c.track_ids, a.clients, a.duration, 1))
    direct = asyncio.run(plays_run(c.master, c.token, c.track_ids, a.clients, a.duration, 2))
    for name, res in (("region A", via_region), ("master", direct)):
        print(f"  {name}: {res['rate']:,.0f} plays/s, request p50 {ms(percentile(res['latencies'], 50))} "
              f"p99 {ms(percentile(res['latencies'], 99))}; {res['requests']} requests, statuses "
              f"{res['statuses']}, {res['accepted']} plays accepted", flush=True)
        for f in res["failures"][:3]:
            print(f"    failure: {f[:300]}")
    accepted = via_region["accepted"] + direct["accepted"]
    stored = counted_plays(c, before, accepted)
    print(f"  master counts {stored} new plays; {accepted} accepted", flush=True)
    non2xx = sum(n for res in (via_region, direct) for s, n in res["statuses"].items() if not 200 <= s < 300)
    b.table.check(via_region["rate"] >= TARGET_PLAYS, f"plays/s via region A (c={a.clients}, {BATCH}/request)",
                  f"{direct['rate']:,.0f} (master)", f"{via_region['rate']:,.0f}",
                  f"{ratio(via_region['rate'], direct['rate']):.2f}", f">= {TARGET_PLAYS:,.0f}")
    b.table.info("  request latency p50 / p99",
                 f"{ms(percentile(direct['latencies'], 50))} / {ms(percentile(direct['latencies'], 99))}",
                 f"{ms(percentile(via_region['latencies'], 50))} / {ms(percentile(via_region['latencies'], 99))}")
    b.table.check(stored == accepted and non2xx == 0, "plays counted at master = accepted; non-2xx", "",
                  f"{stored} = {accepted}; {non2xx}", "", "equal; 0")
    print(flush=True)


def stream_rounds(b: Bench, c: Cluster, tid: str) -> tuple[dict, list[str]]:
    """wrk at the master and at region B, alternating rounds (ABBA), best req/s of each kept."""
    best = {"master": 0.0, "region B": 0.0}
    notes = []
    for rnd in range(b.args.rounds):
        pair = (("master", c.master), ("region B", c.region_b))
        for name, node in pair if rnd % 2 == 0 else pair[::-1]:  # ABBA: neither always goes first
            rps, note = wrk_rps(f"{node.base}/stream/{tid}", b.args.wrk_seconds, b.args.connections)
            best[name] = max(best[name], rps)
            if note:
                notes.append(f"{name}: {note}")
            print(f"  round {rnd + 1} {name}: {rps:,.0f} req/s{f' ({note})' if note else ''}", flush=True)
    return best, notes


def section_stream(b: Bench, c: Cluster) -> None:
    a, tid = b.args, c.track_ids[0]
    if not shutil.which("wrk"):
        b.table.rows.append(("stream req/s region B / master", "", "skipped (no wrk)", "", f">= {TARGET_STREAM_RATIO}",
                       "SKIP"))
        print(flush=True)
        return
    print(f"[3] streaming: wrk -t2 -c{a.connections} GET /stream/{{id}} (whole small mp3) at region B (file "
          f"in its own library) and at the master, {a.rounds} alternating rounds of {a.wrk_seconds:g} s, best kept",
          flush=True)
    bodies = {}
    for name, node in (("master", c.master), ("region B", c.region_b)):
        with urllib.request.urlopen(f"{node.base}/stream/{tid}", timeout=10) as resp:
            bodies[name] = resp.read()
    if bodies["master"] != bodies["region B"] or not bodies["master"]:
        raise BenchError(f"/stream/{tid} differs between master ({len(bodies['master'])} bytes) and "
                         f"region B ({len(bodies['region B'])} bytes)")
    pulled = "pulled track" in c.region_b.proc.log_path.read_text(errors="replace")
    best, notes = stream_rounds(b, c, tid)
    r = ratio(best["region B"], best["master"])
    b.table.check(r >= TARGET_STREAM_RATIO and not notes, f"stream req/s region B ({len(bodies['master'])} B file, "
                  f"c={a.connections})", f"{best['master']:,.0f} (master)", f"{best['region B']:,.0f}", f"{r:.2f}",
                  f"ratio >= {TARGET_STREAM_RATIO}")
    if pulled:
        print("  note: region B logged a pull from the master (file not served locally?)")
    print(flush=True)


def section_promotion(b: Bench, first: Cluster, lag_p99: float) -> None:
    """[4], --promotion-runs times: the first on the cluster of [1]-[3], each other on a fresh one."""
    a = b.args
    choice = ("the region whose replica holds the highest sequence (/healthz master.sequence)"
              if a.sync_replicas else "region A (as always; both regions' sequences printed)")
    print(f"[4] promotion (sync_replicas = {a.sync_replicas}), {a.promotion_runs} run(s): {a.writers} clients "
          f"write at the master, which is killed (SIGKILL) after {a.kill_after:g} s; promoted: {choice}; the "
          f"other region pointed at it", flush=True)
    runs = []
    for run_no in range(1, a.promotion_runs + 1):
        c = first if run_no == 1 else start_cluster(b, a.sync_replicas)
        res = asyncio.run(promotion_run(c, b.secret, a.writers, a.kill_after))
        stop_cluster(b, c)
        print_promotion(run_no, res)
        runs.append(res)
    lost = [len(r["lost"]) for r in runs]
    window = max(r["window"] for r in runs)
    per_run = " + ".join(map(str, lost)) if len(lost) > 1 else str(lost[0])
    ours = f"{per_run} = {sum(lost)} of {sum(len(r['acked']) for r in runs):,}; last {ms(window)}"
    first_ok = all(r["first_write_status"] == 201 for r in runs)
    if a.sync_replicas:
        b.table.check(sum(lost) == 0 and first_ok, f"promotion x{len(runs)}: acked writes lost (N={a.sync_replicas})",
                            "", ours, "", "0 lost")
    else:
        b.table.check(window < TARGET_LAG_P99 and first_ok, f"promotion x{len(runs)}: acked writes lost (N=0)",
                      f"{ms(lag_p99)} (lag p99 of [1])", ours, "", f"window < {TARGET_LAG_P99 * 1000:.0f} ms")
    med = {k: percentile([r[k] for r in runs], 50) for k in ("promote", "first_write", "follow")}
    b.table.info("  promote call / first write / other follows (median)", "",
                 f"{ms(med['promote'])} / {ms(med['first_write'])} / {ms(med['follow'])}")
    print(flush=True)


def section_bootstrap(b: Bench) -> None:
    a, tmp = b.args, b.tmp
    print(f"[5] bootstrap: {a.catalog:,} generated track rows; master on them (--no-scan-on-start), "
          f"then a fresh region", flush=True)
    made = make_catalog(tmp / "big-master-data", tmp / "empty", a.catalog)
    print(f"  catalog made in {made:.1f} s (not timed)", flush=True)
    ports = free_ports(2)  # the big master, region C
    big = start_node("big master", "master", b.secret, tmp / "empty", tmp / "big-master-data", tmp / "big-master.log",
                     b.procs, ports[0], ports, extra=("--no-scan-on-start",))
    master_ready = wait_ready(big)
    master_tracks = wait_tracks(big, a.catalog, timeout=60, pause=0.01)
    print(f"  master: /readyz 200 after {master_ready:.2f} s, {a.catalog:,} tracks listed after "
          f"{master_tracks:.2f} s", flush=True)
    region_c = start_node("region C", "region", b.secret, tmp / "empty", tmp / "region-c-data", tmp / "region-c.log",
                          b.procs, ports[1], ports, big)
    region_ready = wait_ready(region_c, timeout=120)
    region_tracks = wait_tracks(region_c, a.catalog, timeout=120, pause=0.01)
    print(f"  region: /readyz 200 after {region_ready:.2f} s, {a.catalog:,} tracks listed after "
          f"{region_tracks:.2f} s", flush=True)
    b.table.check(region_ready < TARGET_BOOTSTRAP, f"region bootstrap to /readyz ({a.catalog:,} tracks)",
                  f"{master_ready:.2f} s (master start)", f"{region_ready:.2f} s",
                  f"{ratio(region_ready, master_ready):.1f}", f"< {TARGET_BOOTSTRAP:g} s")
    b.table.check(region_tracks < TARGET_BOOTSTRAP, f"region bootstrap to tracks total = {a.catalog:,}",
                  f"{master_tracks:.2f} s (master start)", f"{region_tracks:.2f} s",
                  f"{ratio(region_tracks, master_tracks):.1f}", f"< {TARGET_BOOTSTRAP:g} s")
    for p in (region_c.proc, big.proc):
        p.stop()
        b.stopped.append(p)
    print(flush=True)


def section_logs(b: Bench) -> None:
    total_err = 0
    for proc in b.stopped:
        n_err, n_warn, sample = log_problems(proc)
        tracebacks = proc.log_path.read_text(errors="replace").count("Traceback (most recent call last)")
        total_err += n_err + tracebacks
        print(f"log {proc.name}: {n_err} ERROR, {n_warn} WARNING, {tracebacks} tracebacks")
        for ln in sample[:4]:
            print(f"  log: {ln[:200]}")
    b.table.check(total_err == 0, f"server logs: ERROR lines + tracebacks ({len(b.stopped)} nodes)", "",
                        str(total_err), "", "0")


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    t_begin = time.monotonic()
    if shutil.which("wrk") is None:
        print("wrk not found: the streaming test will be skipped (apt-get install -y wrk)", flush=True)
    b = Bench(args, tmp, procs, secrets.token_hex(16))
    (tmp / "library").mkdir()
    (tmp / "empty").mkdir()
    make_library(ffmpeg_exe(), tmp / "library", args.tracks)
    shutil.copytree(tmp / "library", tmp / "library-b")
    print(f"[0] library of {args.tracks} files; user added; starting master (sync_replicas = {args.sync_replicas}), "
          f"region A (empty library), region B (copy of the library); load average {load()}", flush=True)
    c = start_cluster(b, args.sync_replicas)
    print(flush=True)
    section_sync(b, c)
    lag_p99 = section_lag(b, c)
    section_plays(b, c)
    section_stream(b, c)
    for node in c.nodes:
        ensure_alive(node.proc, " during the run")
    section_promotion(b, c, lag_p99)
    section_bootstrap(b)
    section_logs(b)
    return b.table.finish(f"\nSUMMARY (master + 2 regions, separate processes on 127.0.0.1; {args.tracks} tracks; "
                          f"sync_replicas {args.sync_replicas}; {os.cpu_count()} cores shared, load average at the "
                          f"end {load()}; total {time.monotonic() - t_begin:.0f}s)")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=500, help="playlists written for the lag test (default 500)")
    ap.add_argument("--clients", type=int, default=24, help="concurrent play clients (default 24)")
    ap.add_argument("--duration", type=float, default=5, help="timed seconds of each plays run (default 5)")
    ap.add_argument("--catalog", type=int, default=100_000, help="generated tracks for bootstrap (default 100000)")
    ap.add_argument("--rounds", type=int, default=4, help="wrk rounds per node, best kept (default 4)")
    ap.add_argument("--wrk-seconds", type=float, default=4, help="seconds of each wrk round (default 4)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--writers", type=int, default=8, help="clients writing at the master in [4] (default 8)")
    ap.add_argument("--kill-after", type=float, default=1.5,
                    help="seconds of writing before the master is killed in [4] (default 1.5)")
    ap.add_argument("--sync-replicas", type=int, default=0,
                    help="the master's sync_replicas (0-2; default 0); with 1 or more, [S] compares with 0")
    ap.add_argument("--promotion-runs", type=int, default=1,
                    help="promotions in [4], each after the first on a fresh cluster (default 1)")
    ap.add_argument("--latency-writes", type=int, default=200,
                    help="one client's sequential writes timed in [S] (default 200)")
    ap.add_argument("--sync-rounds", type=int, default=2,
                    help="rounds of [S] at each cluster, alternating which goes first (default 2)")
    ap.add_argument("--tracks", type=int, default=20, help="tracks in the media library (default 20)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (data, logs)")
    args = ap.parse_args()
    if (not 1 <= args.writes <= 100_000 or not 1 <= args.clients <= 1000 or not 0 < args.duration <= 120
            or not 1 <= args.catalog <= 2_000_000 or not 1 <= args.rounds <= 10 or not 0 < args.wrk_seconds <= 60
            or not 1 <= args.tracks <= 500 or not 1 <= args.connections <= 10_000 or not 0 <= args.sync_replicas <= 2
            or not 1 <= args.promotion_runs <= 50 or not 1 <= args.latency_writes <= 100_000
            or not 1 <= args.sync_rounds <= 20):
        ap.error("an option is out of range")
    return run_bench("cluster_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
