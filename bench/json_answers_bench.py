#!/usr/bin/env python3
"""JSON answers under 32 readers, side against side in paired rounds (issue 15, "ten times bigger").

A focused part of bench/scale_bench.py's readers [6]: the loads that missed p99 < 50 ms, asked of
several servers ("sides") started at once on copies of the same kept catalog, so that two
versions of the server, or one version with another number of reader threads, are compared in
the same run. A side is one of:

    old        the server as it was at --old (a commit: `git archive` of it in the temp folder);
               by default the parent of the commit that brought streamer/http/json_answers.py
               (aiohttp's json.dumps, 4 reader threads), or HEAD while it is not committed
    old:N      the same with N reader threads
    new        the server in this work tree, as configured (media.database.READERS and SPARE_AFTER)
    new:N      the same with a plain pool of N reader threads (media.database.READERS = N and
               SPARE_AFTER = 0, set before the app starts)
    new~MS     the same with media.database.SPARE_AFTER = MS milliseconds
    new:N~MS   and with READERS = N (a main thread and N - 1 spares)

For each round, each load (wrk -t2, --readers connections, --seconds s, a Lua script walking the
load's URLs as scale_bench's does) is asked of every side one after the other, in turns that
alternate from round to round (first to last, then last to first), so the noise of the shared
machine falls on every side alike. A side's figures are the medians over the rounds of wrk's p50
and p99, and the server's CPU per request (every thread, counted until the server answers a
one-row read quickly again: what the load left queued is its cost too), with its kernel share;
the last columns are the paired medians of each round's ratio to the first side's.

Loads (as scale_bench's endpoints(), offsets from 0.75 x S): `tracks deep` (pages of 50, default
order), `search common` and `search rare` (prefixes), `artist` (the one with the most tracks),
`search3` (Subsonic sync pages of 100 songs, f=json), `album lists` (Subsonic getAlbumList2 frequent, recent
and newest, pages of 50; the kept catalogs hold no plays, so the first two are short lists).

    python bench/json_answers_bench.py                           # 20,000 tracks, old,new:1,new:2,new
    python bench/json_answers_bench.py --size 200000 --rounds 5 --sides old,new
    python bench/json_answers_bench.py --loads "tracks deep" --sides new:1,new:2,new:4 --rounds 7

The catalogs are those scale_bench keeps in --work-dir (made there the first time, ~3 min at
200,000). Exit status: 0 when it ran (it has no target of its own: scale_bench has them), 2 when
it could not run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cluster_bench import Node, get_json, node_url
from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, ensure_alive, free_port, load_average, print_table, ratio, run_bench, run_wrk, wait_port,
)
from scale_bench import add_password_user, cpu_ns, deep_pages, kept_library, library_facts, lua, subsonic
from subsonic_bench import to_ms

# Runs run.py of a tree (argv: TREE THREADS run.py's arguments...) with its own packages first on
# sys.path and media.database's reader threads set before any catalog opens: THREADS 0 as the tree
# has them, N a plain pool of N, [N]~MS (N threads, or the tree's count) with SPARE_AFTER = MS ms.
LAUNCH = r"""
import runpy, sys
tree, threads = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree)
import media.database
if not media.database.__file__.startswith(tree):
    sys.exit(f"media.database was imported from {media.database.__file__}, not from {tree}")
count, tilde, after = threads.partition("~")
if tilde and hasattr(media.database, "SPARE_AFTER"):
    media.database.READERS = int(count or media.database.READERS)
    media.database.SPARE_AFTER = float(after) / 1000
elif int(threads) and hasattr(media.database, "SPARE_AFTER"):
    media.database.READERS, media.database.SPARE_AFTER = int(threads), 0
elif int(threads):  # before them: a ThreadPoolExecutor of Database(readers=4)'s default
    init = media.database.Database.__init__
    if init.__defaults__ != (4, "full"):
        sys.exit(f"{tree}: cannot set media.database's reader threads (defaults {init.__defaults__})")
    init.__defaults__ = (int(threads), "full")
sys.argv = [f"{tree}/run.py", *sys.argv[3:]]
runpy.run_path(f"{tree}/run.py", run_name="__main__")
"""

HELPER = "streamer/http/json_answers.py"
LOADS = ("tracks deep", "search common", "search rare", "artist", "search3", "album lists")


@dataclass
class Side:
    name: str
    tree: Path
    threads: str  # LAUNCH's THREADS
    data: Path
    token: str = ""
    node: Node | None = None
    runs: dict[str, list[dict]] = field(default_factory=dict)  # load -> a run per round


def old_commit() -> str:
    """The parent of the commit that brought the JSON answers' helper; HEAD while none did."""
    found = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", HELPER], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.split()
    return f"{found[-1]}^" if found else "HEAD"


def export(rev: str, into: Path) -> str:
    """The tree of commit `rev` written into `into` (git archive: the repository is left as it is); its hash."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    if commit.returncode != 0:
        raise BenchError(f"--old {rev}: not a commit ({commit.stderr.strip()})")
    archive = subprocess.run(["git", "archive", "--format=tar", commit.stdout.strip()], cwd=REPO,
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev} failed: {archive.stderr.decode(errors='replace')}")
    into.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit.stdout.strip()


def parse_side(spec: str) -> tuple[str, str] | None:
    """(old or new, LAUNCH's THREADS) of a side's name; None for a name that is not one."""
    m = re.fullmatch(r"(old|new)(?::(\d+))?(?:~(\d+))?", spec)
    if m is None or m[3] and m[1] == "old" or m[2] and not 1 <= int(m[2]) <= 64:
        return None
    return m[1], (m[2] or "") + (f"~{m[3]}" if m[3] else "") or "0"


def make_sides(args: argparse.Namespace, tmp: Path, kept: Path, secret: str) -> list[Side]:
    sides, old_tree = [], None
    for spec in args.sides:
        name, threads = parse_side(spec)
        if name == "old":
            if old_tree is None:
                old_tree = tmp / "old-tree"
                print(f"  old: {export(args.old, old_tree)[:12]} ({args.old})", flush=True)
            tree = old_tree
        else:
            tree = REPO
        side = Side(spec, tree, threads, tmp / f"data-{spec.replace(':', '-').replace('~', '-')}")
        side.data.mkdir(mode=0o700)
        shutil.copy(kept / "catalog.db", side.data / "catalog.db")
        side.token = add_password_user(side.data, secret, tree)
        sides.append(side)
    return sides


def start(side: Side, tmp: Path, procs: list[Proc], secret: str, size: int) -> None:
    port = free_port()
    argv = [sys.executable, "-c", LAUNCH, str(side.tree), side.threads,
            "serve", "--role", "master", "--cluster-secret", secret, "--host", "127.0.0.1", "--port", str(port),
            "--library", str(tmp / "empty"), "--data-dir", str(side.data), "--no-demo-library",
            "--log-level", "warning", "--cluster-nodes", node_url(port), "--writes-per-minute", "1000000",
            "--no-loudness-analysis", "--no-scan-on-start"]
    proc = Proc(f"server {side.name}", argv, tmp / f"server-{side.name.replace(':', '-')}.log", cwd=str(side.tree))
    procs.append(proc)
    side.node = Node(proc, port)
    wait_port(port, proc, 60)
    deadline = time.monotonic() + 120
    while (get_json(f"{side.node.base}/api/v1/tracks?limit=1", side.token)[1] or {}).get("total") != size:
        ensure_alive(proc, " at start")
        if time.monotonic() > deadline:
            raise BenchError(f"{proc.name} does not list {size:,} tracks:\n{proc.log_tail()}")
        time.sleep(0.2)


def loads(facts: dict, size: int, wanted: list[str]) -> list[tuple[str, list[str]]]:
    artist = facts["big_artist"][0]
    every = {"tracks deep": deep_pages(size, [""]),
             "search common": [f"/api/v1/search?q={q}" for q in facts["common"]],
             "search rare": [f"/api/v1/search?q={q}" for q in facts["rare"]],
             "artist": [f"/api/v1/artists/{artist}"],
             "search3": [subsonic("search3", k, query="", songCount=100, songOffset=100 * k, albumCount=0,
                                  artistCount=0) for k in range(size // 100)],
             "album lists": [subsonic("getAlbumList2", k, type=kind, size=50, offset=50 * k)
                             for kind in ("frequent", "recent", "newest") for k in range(20)]}
    return [(label, every[label]) for label in wanted]


def get(base: str, path: str, token: str) -> None:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=300) as resp:
        resp.read()


def settle(side: Side, path: str, timeout: float = 300) -> None:
    """Until the server answers `path` (a one-row read) within 50 ms twice in a row: what a load left
    queued neither falls on the next one nor escapes its CPU count."""
    deadline, quick = time.monotonic() + timeout, 0
    while quick < 2:
        if time.monotonic() > deadline:
            raise BenchError(f"{side.name} still slow {timeout:.0f} s after a load")
        t0 = time.monotonic()
        get(side.node.base, path, side.token)
        quick = quick + 1 if time.monotonic() - t0 < 0.05 else 0
        time.sleep(0.05)


def kernel_ticks(pid: int) -> tuple[int, int]:
    """User and system CPU ticks of a process (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def measure(args: argparse.Namespace, side: Side, label: str, script: Path, one_row: str) -> dict:
    pid = side.node.proc.pid
    ensure_alive(side.node.proc, f" before {label}")
    settle(side, one_row)
    cpu0, (user0, sys0) = cpu_ns(pid), kernel_ticks(pid)
    r, _ = run_wrk("wrk", side.node.base + "/", threads=2, connections=args.readers, duration=args.seconds,
                   timeout="10s", script=script, label=f"{label} {side.name}", verbose=args.verbose,
                   limit=args.seconds + 60)
    settle(side, one_row)
    (user1, sys1) = kernel_ticks(pid)
    r["cpu_us"] = (cpu_ns(pid) - cpu0) / 1000 / max(r["requests"], 1)
    r["kernel"] = ratio(sys1 - sys0, (user1 - user0) + (sys1 - sys0))
    r["p50_ms"], r["p99_ms"] = to_ms(r["p50"]), to_ms(r["p99"])
    if r["non2xx"] or r["errors"]:
        raise BenchError(f"{label} on {side.name}: {r['non2xx']} non-2xx answers, {r['errors']} socket errors")
    print(f"    {label:<24} {side.name:<7} {r['rps']:>7,.0f} req/s  p50 {r['p50_ms']:>6.1f} ms  p99 "
          f"{r['p99_ms']:>6.1f} ms  {r['cpu_us']:>6,.0f} us CPU/req ({r['kernel']:.0%} kernel)  load {load_average()}",
          flush=True)
    return r


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def summary(args: argparse.Namespace, sides: list[Side], labels: list[str], began: float) -> None:
    ref = sides[0]
    rows = [("load", "side", "req/s", "p50 ms", "p99 ms", "CPU us/req", "kernel",
             f"p99/{ref.name}", f"CPU/{ref.name}")]
    for label in labels:
        for side in sides:
            runs = side.runs[label]
            paired = [(r, o) for r, o in zip(ref.runs[label], runs)]
            rows.append((label, side.name, f"{statistics.median(r['rps'] for r in runs):,.0f}",
                         spread([r["p50_ms"] for r in runs]), spread([r["p99_ms"] for r in runs]),
                         spread([r["cpu_us"] for r in runs], 0), f"{statistics.median(r['kernel'] for r in runs):.0%}",
                         f"{statistics.median(ratio(o['p99_ms'], r['p99_ms']) for r, o in paired):.2f}",
                         f"{statistics.median(ratio(o['cpu_us'], r['cpu_us']) for r, o in paired):.2f}"))
    print(f"\nSUMMARY ({args.size:,} tracks; {args.readers} readers, {args.seconds} s a load, {args.rounds} paired "
          f"rounds; medians (min-max) over the rounds, the ratios paired medians; {os.cpu_count()} cores shared; "
          f"load average at the end {load_average()}; total {time.monotonic() - began:.0f} s)")
    print_table(rows)


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    began = time.monotonic()
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    (tmp / "empty").mkdir()
    secret = os.urandom(16).hex()
    kept = kept_library(Path(args.work_dir), args.size)
    facts = library_facts(kept / "catalog.db")
    print(f"== {facts['tracks']:,} tracks; sides {', '.join(args.sides)}; load average {load_average()}", flush=True)
    sides = make_sides(args, tmp, kept, secret)
    for side in sides:
        start(side, tmp, procs, secret, facts["tracks"])
    one_row = f"/api/v1/tracks/{facts['track_ids'][0]}"
    work = loads(facts, args.size, args.loads)
    for n, (label, paths) in enumerate(work):
        for side in sides:  # what a server works out once (an order's bookmarks, a kept search)
            for path in paths[:2]:
                get(side.node.base, path, side.token)
            side.runs[label] = []
    for round_no in range(args.rounds):
        print(f"  round {round_no + 1} of {args.rounds}", flush=True)
        for n, (label, paths) in enumerate(work):
            for side in sides if round_no % 2 == 0 else sides[::-1]:
                script = lua(tmp / f"load-{n}-{side.name.replace(':', '-')}.lua", paths, side.token)
                side.runs[label].append(measure(args, side, label, script, one_row))
    summary(args, sides, [label for label, _ in work], began)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20_000, help="tracks in the catalog (default 20000)")
    ap.add_argument("--sides", default="old,new:1,new:2,new",
                    help="servers compared, comma-separated: old, old:N, new, new:N, new~MS, new:N~MS (default old,new:1,new:2,new); "
                         "the first is the reference of the ratios")
    ap.add_argument("--old", default=None, help="the commit of the side `old` (default: before the JSON helper)")
    ap.add_argument("--loads", default=",".join(LOADS), help=f"comma-separated, of: {', '.join(LOADS)}")
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds (default 5)")
    ap.add_argument("--readers", type=int, default=32, help="concurrent reader connections (default 32)")
    ap.add_argument("--seconds", type=int, default=3, help="seconds of each load (default 3)")
    ap.add_argument("--work-dir", default="/tmp/streamer-scale-bench", help="where scale_bench keeps its catalogs")
    ap.add_argument("--verbose", action="store_true", help="print wrk's output")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (data, logs, Lua scripts)")
    args = ap.parse_args()
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    args.loads = [s.strip() for s in args.loads.split(",") if s.strip()]
    for spec in args.sides:
        if parse_side(spec) is None:
            ap.error(f"--sides: {spec!r} is not old, old:N, new, new:N, new~MS or new:N~MS (N from 1 to 64)")
    if len(set(args.sides)) != len(args.sides) or not args.sides:
        ap.error("--sides: each side once")
    if unknown := [x for x in args.loads if x not in LOADS]:
        ap.error(f"--loads: {unknown[0]!r} is not one of: {', '.join(LOADS)}")
    if not (20_000 <= args.size <= 5_000_000 and 1 <= args.rounds <= 50 and 1 <= args.readers <= 1000
            and 1 <= args.seconds <= 60):
        ap.error("an option is out of range")
    args.old = args.old or old_commit()
    return run_bench("json_answers_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
