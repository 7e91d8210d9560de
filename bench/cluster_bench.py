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
4. promotion: --writers (8) clients POST playlists at the master as fast as it answers; after
   --kill-after (1.5) s the master is killed with SIGKILL mid-stream. Region A is promoted
   (POST /cluster/v1/promote, timed), then every write the master acknowledged (201) is looked
   up at A: the ones missing are what the promotion lost (what A had not yet pulled), reported
   as a count and as the time span they were written in, against the replication lag of [1].
   Then a first write at A is timed, region B is pointed at A (POST /cluster/v1/follow) and timed
   until it reads that write. Target: the loss window under the lag p99 target (500 ms), no
   acknowledged write lost outside it;
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
                                  [--kill-after 1.5] [--keep]

About 2 minutes in all with the defaults; every node, wrk and the clients share the machine's
cores.

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
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, ffmpeg_exe, free_port, log_problems, overall, parse_wrk, percentile, print_table,
    ratio, run_bench, verdict, wait_port, wait_scan,
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


# --- nodes ------------------------------------------------------------------------------------

class Node:
    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.started = time.monotonic()


def start_node(name: str, role: str, secret: str, library: Path, data: Path, log: Path, procs: list[Proc],
               master: Node | None = None, extra: tuple[str, ...] = ()) -> Node:
    port = free_port()
    argv = [sys.executable, str(REPO / "run.py"), "serve", "--role", role, "--cluster-secret", secret,
            "--host", "127.0.0.1", "--port", str(port), "--library", str(library), "--data-dir", str(data),
            "--no-demo-library", "--log-level", "warning", *extra]
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

async def plays_run(node: Node, token: str, track_ids: list[str], clients: int, duration: float,
                    seed: int) -> dict:
    import aiohttp

    make = play_maker(track_ids, seed)
    url = f"{node.base}/api/v1/plays"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted = 0
    requests = 0
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    failures: list[str] = []
    warm = 0.5
    t_start = time.perf_counter() + warm
    t_end = t_start + duration
    window = 0

    async def client(session) -> None:
        nonlocal accepted, requests, window
        while time.perf_counter() < t_end:
            body = json.dumps({"plays": [make() for _ in range(BATCH)]}).encode()
            h = {**headers, "Idempotency-Key": secrets.token_hex(16)}
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=h) as resp:
                    answer = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(repr(exc))
                continue
            t1 = time.perf_counter()
            requests += 1
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                accepted += BATCH
                if t_start <= t1 <= t_end:
                    window += BATCH
                    latencies.append(t1 - t0)
            elif len(failures) < 20:
                failures.append(f"{status} {answer[:200]!r}")

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return {"rate": window / duration, "accepted": accepted, "requests": requests, "statuses": statuses,
            "latencies": latencies, "failures": failures}


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


# --- 4. bootstrap ---------------------------------------------------------------------------

# --- 4. promotion -------------------------------------------------------------------------------

async def promotion_run(master: Node, region_a: Node, region_b: Node, token: str, secret: str, writers: int,
                        kill_after: float) -> dict:
    import aiohttp

    auth = {"Authorization": f"Bearer {token}"}
    acked: list[tuple[float, str]] = []  # (when the 201 arrived, playlist id)
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def writer(no: int) -> None:
            i = 0
            while True:
                i += 1
                try:
                    async with session.post(f"{master.base}/api/v1/playlists", json={"name": f"w{no}-{i}"},
                                            headers=auth) as resp:
                        if resp.status == 201:
                            acked.append((time.monotonic(), (await resp.json())["id"]))
                except (aiohttp.ClientError, OSError):
                    return  # the master is gone: this write was never acknowledged

        tasks = [asyncio.create_task(writer(n)) for n in range(writers)]
        await asyncio.sleep(kill_after)
        master.proc.popen.kill()
        killed = time.monotonic()
        await asyncio.gather(*tasks, return_exceptions=True)
        t0 = time.monotonic()
        async with session.post(f"{region_a.base}/cluster/v1/promote", headers={"X-Cluster-Secret": secret}) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise BenchError(f"promotion answered {resp.status}: {answer}")
        promote = time.monotonic() - t0
        present = await asyncio.gather(*(_exists(session, f"{region_a.base}/api/v1/playlists/{pid}", auth)
                                         for _, pid in acked))
        lost = [(at, pid) for (at, pid), there in zip(acked, present) if not there]
        window = (killed - min(at for at, _ in lost)) if lost else 0.0
        t0 = time.monotonic()
        async with session.post(f"{region_a.base}/api/v1/playlists", json={"name": "after promotion"},
                                headers=auth) as resp:
            first_status = resp.status
            first_id = (await resp.json()).get("id")
        first_write = time.monotonic() - t0
        t0 = time.monotonic()
        async with session.post(f"{region_b.base}/cluster/v1/follow", json={"master_url": region_a.base},
                                headers={"X-Cluster-Secret": secret}) as resp:
            if resp.status != 200:
                raise BenchError(f"follow answered {resp.status}: {await resp.text()}")
        while not await _exists(session, f"{region_b.base}/api/v1/playlists/{first_id}", auth):
            if time.monotonic() - t0 > 60:
                raise BenchError("region B did not follow the new master within 60 s")
            await asyncio.sleep(0.005)
        follow = time.monotonic() - t0
    return {"acked": len(acked), "rate": len(acked) / max(killed - started, 1e-9), "promote": promote,
            "answer": {k: answer[k] for k in ("sequence", "outbox_applied", "tracks_without_media")},
            "lost": lost, "window": window, "first_write": first_write, "first_write_status": first_status,
            "follow": follow}


async def _exists(session, url: str, auth: dict) -> bool:
    async with session.get(url, headers=auth) as resp:
        return resp.status == 200


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


# --- the run ----------------------------------------------------------------------------------

def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    t_begin = time.monotonic()
    if shutil.which("wrk") is None:
        print("wrk not found: the streaming test will be skipped (apt-get install -y wrk)", flush=True)
    secret = secrets.token_hex(16)
    lib, empty = tmp / "library", tmp / "empty"
    lib.mkdir()
    empty.mkdir()
    d_master, d_a, d_b = tmp / "master-data", tmp / "region-a-data", tmp / "region-b-data"
    make_library(ffmpeg_exe(), lib, args.tracks)
    lib_b = tmp / "library-b"
    shutil.copytree(lib, lib_b)
    token = add_user(d_master, "bench")
    print(f"[0] library of {args.tracks} files; user added; starting master, region A (empty library), "
          f"region B (copy of the library)", flush=True)
    master = start_node("master", "master", secret, lib, d_master, tmp / "master.log", procs)
    wait_ready(master)
    items = wait_scan(master.base, master.proc, args.tracks)
    track_ids = [t["id"] for t in items]
    region_a = start_node("region A", "region", secret, empty, d_a, tmp / "region-a.log", procs, master)
    region_b = start_node("region B", "region", secret, lib_b, d_b, tmp / "region-b.log", procs, master)
    for r in (region_a, region_b):
        wait_ready(r)
        wait_tracks(r, args.tracks)
    nodes = [master, region_a, region_b]
    rows: list[tuple[str, ...]] = [("test", "reference", "ours", "ratio", "target", "result")]
    checks: list[bool] = []
    print(flush=True)

    # 1. replication lag ----------------------------------------------------------------------
    print(f"[1] replication lag: {args.writes} playlists POSTed at region A, each polled at region B "
          f"(every {POLL * 1000:g} ms) until 200; reference: the same at the master alone", flush=True)
    ref = asyncio.run(lag_run(master, master, token, args.writes, "ref"))
    lag = asyncio.run(lag_run(region_a, region_b, token, args.writes, "lag"))
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
    checks.append(p50 < TARGET_LAG_P50 and not lag["bad"] and len(lag["from_send"]) == args.writes)
    rows.append((f"replication lag A->B p50 (n={len(lag['from_send'])})", f"{ms(r50)} (master RaW)", ms(p50),
                 f"{ratio(p50, r50):.1f}", f"< {TARGET_LAG_P50 * 1000:.0f} ms", verdict(checks[-1])))
    checks.append(p99 < TARGET_LAG_P99 and not lag["bad"])
    rows.append(("replication lag A->B p99", f"{ms(r99)} (master RaW)", ms(p99), f"{ratio(p99, r99):.1f}",
                 f"< {TARGET_LAG_P99 * 1000:.0f} ms", verdict(checks[-1])))
    rows.append(("  lag after A's answer p50 / p99", "",
                 f"{ms(percentile(lag['from_ack'], 50))} / {ms(percentile(lag['from_ack'], 99))}", "", "info", ""))
    print(flush=True)

    # 2. plays --------------------------------------------------------------------------------
    print(f"[2] plays: {args.clients} clients x {BATCH} plays/request for {args.duration:g} s "
          f"(+0.5 s warm-up) at region A, then at the master", flush=True)
    count_before = master_play_count(master, token)
    via_region = asyncio.run(plays_run(region_a, token, track_ids, args.clients, args.duration, 1))
    direct = asyncio.run(plays_run(master, token, track_ids, args.clients, args.duration, 2))
    for name, res in (("region A", via_region), ("master", direct)):
        print(f"  {name}: {res['rate']:,.0f} plays/s, request p50 {ms(percentile(res['latencies'], 50))} "
              f"p99 {ms(percentile(res['latencies'], 99))}; {res['requests']} requests, statuses "
              f"{res['statuses']}, {res['accepted']} plays accepted", flush=True)
        for f in res["failures"][:3]:
            print(f"    failure: {f[:300]}")
    accepted = via_region["accepted"] + direct["accepted"]
    deadline = time.monotonic() + 15
    count_after = master_play_count(master, token)
    while count_after - count_before != accepted and time.monotonic() < deadline:
        time.sleep(0.2)  # 202s (queued at the region) reach the master a little later
        count_after = master_play_count(master, token)
    stored = count_after - count_before if count_before >= 0 and count_after >= 0 else -1
    print(f"  master counts {stored} new plays; {accepted} accepted", flush=True)
    non2xx = sum(n for res in (via_region, direct) for s, n in res["statuses"].items() if not 200 <= s < 300)
    checks.append(via_region["rate"] >= TARGET_PLAYS)
    rows.append((f"plays/s via region A (c={args.clients}, {BATCH}/request)", f"{direct['rate']:,.0f} (master)",
                 f"{via_region['rate']:,.0f}", f"{ratio(via_region['rate'], direct['rate']):.2f}",
                 f">= {TARGET_PLAYS:,.0f}", verdict(checks[-1])))
    rows.append(("  request latency p50 / p99",
                 f"{ms(percentile(direct['latencies'], 50))} / {ms(percentile(direct['latencies'], 99))}",
                 f"{ms(percentile(via_region['latencies'], 50))} / {ms(percentile(via_region['latencies'], 99))}",
                 "", "info", ""))
    checks.append(stored == accepted and non2xx == 0)
    rows.append(("plays counted at master = accepted; non-2xx", "", f"{stored} = {accepted}; {non2xx}", "",
                 "equal; 0", verdict(checks[-1])))
    print(flush=True)

    # 3. streaming ----------------------------------------------------------------------------
    tid = track_ids[0]
    if shutil.which("wrk"):
        print(f"[3] streaming: wrk -t2 -c{args.connections} GET /stream/{{id}} (whole "
              f"small mp3) at region B (file in its own library) and at the master, {args.rounds} alternating "
              f"rounds of {args.wrk_seconds:g} s, best kept", flush=True)
        bodies = {}
        for name, node in (("master", master), ("region B", region_b)):
            with urllib.request.urlopen(f"{node.base}/stream/{tid}", timeout=10) as resp:
                bodies[name] = resp.read()
        if bodies["master"] != bodies["region B"] or not bodies["master"]:
            raise BenchError(f"/stream/{tid} differs between master ({len(bodies['master'])} bytes) and "
                             f"region B ({len(bodies['region B'])} bytes)")
        pulled = "pulled track" in region_b.proc.log_path.read_text(errors="replace")
        best = {"master": 0.0, "region B": 0.0}
        notes = []
        for rnd in range(args.rounds):
            pair = (("master", master), ("region B", region_b))
            for name, node in pair if rnd % 2 == 0 else pair[::-1]:  # ABBA: neither always goes first
                rps, note = wrk_rps(f"{node.base}/stream/{tid}", args.wrk_seconds, args.connections)
                best[name] = max(best[name], rps)
                if note:
                    notes.append(f"{name}: {note}")
                print(f"  round {rnd + 1} {name}: {rps:,.0f} req/s{f' ({note})' if note else ''}", flush=True)
        r = ratio(best["region B"], best["master"])
        checks.append(r >= TARGET_STREAM_RATIO and not notes)
        rows.append((f"stream req/s region B ({len(bodies['master'])} B file, c={args.connections})",
                     f"{best['master']:,.0f} (master)", f"{best['region B']:,.0f}", f"{r:.2f}",
                     f"ratio >= {TARGET_STREAM_RATIO}", verdict(checks[-1])))
        if pulled:
            print("  note: region B logged a pull from the master (file not served locally?)")
    else:
        rows.append(("stream req/s region B / master", "", "skipped (no wrk)", "", f">= {TARGET_STREAM_RATIO}",
                     "SKIP"))
    print(flush=True)

    for node in nodes:
        if not node.proc.alive():
            raise BenchError(f"{node.proc.name} died during the run:\n{node.proc.log_tail()}")

    # 4. promotion ----------------------------------------------------------------------------
    print(f"[4] promotion: {args.writers} clients write at the master, which is killed (SIGKILL) after "
          f"{args.kill_after:g} s; region A is promoted, region B pointed at it", flush=True)
    res = asyncio.run(promotion_run(master, region_a, region_b, token, secret, args.writers, args.kill_after))
    print(f"  {res['acked']} writes acknowledged by the master ({res['rate']:,.0f}/s); promotion answered in "
          f"{ms(res['promote'])}: {res['answer']}", flush=True)
    print(f"  lost: {len(res['lost'])} acknowledged writes are not at the new master, written in the last "
          f"{ms(res['window'])} before the kill (replication lag p99 in [1]: {ms(p99)})", flush=True)
    print(f"  first write at the new master {ms(res['first_write'])} after the promotion; region B following "
          f"it and reading that write {ms(res['follow'])} after being pointed at it", flush=True)
    checks.append(res["window"] < TARGET_LAG_P99 and res["first_write_status"] == 201)
    rows.append((f"promotion: acked writes lost (of {res['acked']})", f"{ms(p99)} (lag p99 of [1])",
                 f"{len(res['lost'])} in the last {ms(res['window'])}", "", f"window < {TARGET_LAG_P99 * 1000:.0f} ms",
                 verdict(checks[-1])))
    rows.append(("  promote call / first write at A / B follows A", "",
                 f"{ms(res['promote'])} / {ms(res['first_write'])} / {ms(res['follow'])}", "", "info", ""))
    print(flush=True)

    # stop the small cluster, collect its log problems ---------------------------------------
    problems: list[tuple[str, int, int, list[str]]] = []
    for node in reversed(nodes):
        node.proc.stop()
        problems.append((node.proc.name, *log_problems(node.proc)))

    # 5. bootstrap ----------------------------------------------------------------------------
    print(f"[5] bootstrap: {args.catalog:,} generated track rows; master on them (--no-scan-on-start), "
          f"then a fresh region", flush=True)
    d_big, d_c = tmp / "big-master-data", tmp / "region-c-data"
    made = make_catalog(d_big, empty, args.catalog)
    print(f"  catalog made in {made:.1f} s (not timed)", flush=True)
    big = start_node("big master", "master", secret, empty, d_big, tmp / "big-master.log", procs,
                     extra=("--no-scan-on-start",))
    master_ready = wait_ready(big)
    master_tracks = wait_tracks(big, args.catalog, timeout=60, pause=0.01)
    print(f"  master: /readyz 200 after {master_ready:.2f} s, {args.catalog:,} tracks listed after "
          f"{master_tracks:.2f} s", flush=True)
    region_c = start_node("region C", "region", secret, empty, d_c, tmp / "region-c.log", procs, big)
    region_ready = wait_ready(region_c, timeout=120)
    region_tracks = wait_tracks(region_c, args.catalog, timeout=120, pause=0.01)
    print(f"  region: /readyz 200 after {region_ready:.2f} s, {args.catalog:,} tracks listed after "
          f"{region_tracks:.2f} s", flush=True)
    checks.append(region_ready < TARGET_BOOTSTRAP)
    rows.append((f"region bootstrap to /readyz ({args.catalog:,} tracks)", f"{master_ready:.2f} s (master start)",
                 f"{region_ready:.2f} s", f"{ratio(region_ready, master_ready):.1f}", f"< {TARGET_BOOTSTRAP:g} s",
                 verdict(checks[-1])))
    checks.append(region_tracks < TARGET_BOOTSTRAP)
    rows.append((f"region bootstrap to tracks total = {args.catalog:,}", f"{master_tracks:.2f} s (master start)",
                 f"{region_tracks:.2f} s", f"{ratio(region_tracks, master_tracks):.1f}", f"< {TARGET_BOOTSTRAP:g} s",
                 verdict(checks[-1])))
    for p in (region_c.proc, big.proc):
        p.stop()
        problems.append((p.name, *log_problems(p)))
    print(flush=True)

    # 6. logs ---------------------------------------------------------------------------------
    total_err = 0
    for name, n_err, n_warn, sample in problems:
        text = next(p for p in procs if p.name == name).log_path.read_text(errors="replace")
        tracebacks = text.count("Traceback (most recent call last)")
        total_err += n_err + tracebacks
        print(f"log {name}: {n_err} ERROR, {n_warn} WARNING, {tracebacks} tracebacks")
        for ln in sample[:4]:
            print(f"  log: {ln[:200]}")
    checks.append(total_err == 0)
    rows.append(("server logs: ERROR lines + tracebacks (5 nodes)", "", str(total_err), "", "0",
                 verdict(checks[-1])))

    cores = os.cpu_count()
    print(f"\nSUMMARY (master + 2 regions, separate processes on 127.0.0.1; {args.tracks} tracks; "
          f"{cores} cores shared; total {time.monotonic() - t_begin:.0f}s)")
    print_table(rows)
    return overall(checks)


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
    ap.add_argument("--tracks", type=int, default=20, help="tracks in the media library (default 20)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (data, logs)")
    args = ap.parse_args()
    if (not 1 <= args.writes <= 100_000 or not 1 <= args.clients <= 1000 or not 0 < args.duration <= 120
            or not 1 <= args.catalog <= 2_000_000 or not 1 <= args.rounds <= 10 or not 0 < args.wrk_seconds <= 60
            or not 1 <= args.tracks <= 500 or not 1 <= args.connections <= 10_000):
        ap.error("an option is out of range")
    return run_bench("cluster_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
