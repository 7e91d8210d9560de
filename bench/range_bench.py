#!/usr/bin/env python3
"""Range / whole-file streaming benchmark: our server against nginx, in the same run.

What it does (everything on 127.0.0.1, everything it starts is stopped at the end):

1. encodes a real ~5 MB mp3 (160 s at 256 kbps, with the ffmpeg of imageio-ffmpeg) into a temp
   library folder;
2. starts nginx (1 worker, sendfile on, access_log off) serving that folder, and our server (one
   process, its default event loop, or --event-loop) over the same folder; with --compare-loops
   a second server of ours on the other event loop (uvloop, or asyncio's); waits for our scans;
3. checks correctness first: one 64 KiB range from each server must be a 206 whose body equals the
   file's bytes (and a whole-file GET must return the whole file);
4. runs wrk against each server in turn (never two at once), in --rounds alternating rounds of
   --duration seconds; the targets are on the median of the paired rounds' ratios (ours/nginx,
   steadier on a shared machine than the best rounds, which are printed too):
   - random 64 KiB ranges at --connections connections: req/s;
   - whole-file GETs at --connections connections: bytes/s (wrk's Transfer/sec);
   - --held connections (default 1000) doing random ranges: req/s, our p99, socket errors, non-2xx;
5. samples our server's process tree (the server and every process it started: a scan's
   reader processes, ffmpeg) every 0.1 s while wrk loads it, and reports its peak RSS, with the peak RSS
   (VmHWM) of the server process alone and of nginx; then a summary table with PASS/FAIL.

Needs the `nginx` and `wrk` binaries (Debian packages `nginx-light` and `wrk`); it installs
nothing. Run it with the project's Python:

    python bench/range_bench.py [--duration 10] [--rounds 3] [--connections 64] [--held 1000]
                                [--only range,whole,held] [--compare-loops] [--event-loop asyncio|uvloop]
                                [--verbose] [--keep]

Defaults: 3 tests x 2 servers x 3 rounds x 10 s = 180 s of load, about 3.5 min in all (5 with
--compare-loops). The machine is shared and noisy: each round prints the load average; whole-file
bytes/s in particular is bound by wrk and the kernel more than by either server.

Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    BenchError, Proc, Summary, alternating_rounds, cpu_seconds, ensure_alive, fastest, free_port, load_average,
    paired_median, ratio, run_bench, run_wrk, start_server, wait_port, wait_scan,
)

BLOCK = 65536
ALIGN = 4096

# Issue 15's targets, on the median of paired rounds against nginx (1 worker) in the same run.
TARGET_RANGE_RATIO = 0.6
TARGET_HELD_RATIO = 0.5
TARGET_HELD_P99_MS = 50.0
TARGET_WHOLE_RATIO = 0.95
TARGET_RSS_MIB = 64  # our server's process tree at --held connections

RANGE_LUA = """
-- random {block}-byte ranges, start aligned to {align} bytes, in [0, size - {block}]
local size = {size}
local block = {block}
local align = {align}
local slots = math.floor((size - block) / align)
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(os.time() * 7919 + (tid or 0) * 104729)
end

function request()
  local s = math.random(0, slots) * align
  return wrk.format("GET", nil, {{["Range"] = "bytes=" .. s .. "-" .. (s + block - 1)}})
end
"""


# --- processes --------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (a scan's readers, ffmpeg...)."""
    out = [pid]
    for child in children(pid):
        out += process_tree(child)
    return out


def settle(pid: int, seconds: float = 20) -> None:
    """Wait (at most `seconds`) until the server's process tree stops shrinking after its scan
    (its tag-reading workers exit on their own), then print what it holds: the load meets the
    server as it serves, not as it scans."""
    deadline, last, steady_since = time.monotonic() + seconds, None, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady_since < 2:
        tree = process_tree(pid)
        if tree != last:
            last, steady_since = tree, time.monotonic()
        time.sleep(0.2)
    for p in last or []:
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            print(f"  process {p}: {(proc_status(p, 'VmRSS') or 0) / 2**20:.1f} MiB  {name[:100]}")


class RssSampler:
    """While it runs (a `with` block), samples every 0.1 s the RSS of a process tree: the peak of
    the tree's sum, and of the root alone. What a process tree holds at once is what the machine
    must have; each process's own VmHWM may come from different moments."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tree_peak = 0
        self.root_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            sizes = [proc_status(p, "VmRSS") or 0 for p in process_tree(self.pid)]
            self.tree_peak = max(self.tree_peak, sum(sizes))
            self.root_peak = max(self.root_peak, sizes[0])
            if self._stop.wait(0.1):
                return


def proc_status(pid: int, key: str) -> int | None:
    """A kB field of /proc/PID/status (VmHWM, VmRSS), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# --- setup ------------------------------------------------------------------------------------

def check_tools() -> tuple[str, str]:
    nginx, wrk = shutil.which("nginx") or _sbin("nginx"), shutil.which("wrk")
    missing = [(name, pkg) for name, pkg, found in (("nginx", "nginx-light", nginx), ("wrk", "wrk", wrk))
               if not found]
    if missing:
        names = ", ".join(n for n, _ in missing)
        pkgs = " ".join(p for _, p in missing)
        raise BenchError(f"missing binaries: {names}. Install the Debian packages: "
                         f"apt-get install -y {pkgs}   (this script installs nothing)")
    return nginx, wrk


def _sbin(name: str) -> str | None:
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    return None


def make_mp3(path: Path, seconds: int = 160) -> None:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise BenchError("imageio-ffmpeg is not importable: run this with the project's Python") from exc
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           "-ac", "2", "-b:a", "256k", "-c:a", "libmp3lame",
           "-metadata", "title=Bench Track", "-metadata", "artist=Bench Artist",
           "-metadata", "album=Bench Album", str(path)]
    done = subprocess.run(cmd, capture_output=True, timeout=120)
    if done.returncode != 0 or not path.exists():
        raise BenchError(f"ffmpeg failed: {done.stderr.decode(errors='replace')[-2000:]}")


def nginx_conf(tmp: Path, library: Path, port: int, nginx: str) -> Path:
    prefix = tmp / "nginx"
    for d in ("logs", "temp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    features = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    temp_paths = ["client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path"]
    for module in ("scgi", "uwsgi"):
        if f"--without-http_{module}_module" not in features:
            temp_paths.append(f"{module}_temp_path")
    temps = "\n".join(f"    {d} {prefix}/temp/{d.split('_')[0]};" for d in temp_paths)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
worker_rlimit_nofile 16384;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    # Like our server: no limit on requests per keep-alive connection (nginx's default is 1000).
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    types {{ audio/mpeg mp3; }}
    default_type application/octet-stream;
{temps}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {library};
        location / {{ }}
    }}
}}
""")
    return conf


def verify(name: str, url: str, data: bytes) -> None:
    size = len(data)
    start = (size // 3) // ALIGN * ALIGN
    end = start + BLOCK - 1
    status, headers, body = http_get(url, {"Range": f"bytes={start}-{end}"})
    if status != 206 or len(body) != BLOCK or body != data[start:end + 1]:
        raise BenchError(f"{name}: range check failed: status {status}, {len(body)} bytes, "
                         f"equal={body == data[start:end + 1]}")
    content_range = {k.lower(): v for k, v in headers.items()}.get("content-range")
    if content_range != f"bytes {start}-{end}/{size}":
        raise BenchError(f"{name}: wrong Content-Range {content_range!r}")
    status, _, body = http_get(url)
    if status != 200 or body != data:
        raise BenchError(f"{name}: whole-file check failed: status {status}, {len(body)} of {size} bytes")


# --- wrk --------------------------------------------------------------------------------------

def wrk_with_cpu(wrk: str, url: str, args: argparse.Namespace, *, connections: int, script: Path | None,
                 server_pids: list[int], label: str) -> dict:
    """common.run_wrk, with the CPU the server's processes used meanwhile: cores, and per request."""
    cpu0 = cpu_seconds(server_pids)
    result, wall = run_wrk(wrk, url, threads=args.threads, connections=connections, duration=args.duration,
                           timeout=args.timeout, script=script, label=label, verbose=args.verbose,
                           limit=args.duration + 60)
    cpu = cpu_seconds(server_pids) - cpu0
    result["server_cpu"] = cpu / wall if wall else float("nan")  # cores used by the server
    result["cpu_per_req_us"] = cpu / result["requests"] * 1e6 if result["requests"] else float("nan")
    return result


def server_errors(base: str, proc: Proc) -> tuple[int, int]:
    """Our 5xx answers by /metrics, and the exceptions our server logged (kind -> count)."""
    fivexx = 0
    with contextlib.suppress(Exception):
        _, _, metrics = http_get(f"{base}/metrics", timeout=5)
        text = metrics.decode()
        fivexx = sum(int(float(n)) for n in re.findall(
            r'^streamer_http_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)', text, re.M))
        aborts = re.search(r"^streamer_client_aborts_total (\S+)", text, re.M)
        print(f"our /metrics: {fivexx} answers with status 5xx, client aborts "
              f"{aborts.group(1) if aborts else '?'}")
    kinds: dict[str, int] = {}
    errors = 0
    with contextlib.suppress(OSError):
        lines = proc.log_path.read_text(errors="replace").splitlines()
        errors = sum(1 for ln in lines if " ERROR " in ln)
        for ln in lines:  # the last line of each traceback: "module.Error: message"
            if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln):
                kinds[ln[:160]] = kinds.get(ln[:160], 0) + 1
    if errors:
        print(f"our server logged {errors} ERROR lines; exceptions:")
        for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {n:6d} x {kind}")
    return fivexx, errors


def raise_descriptor_limit(want: int) -> None:
    """Lift this process's soft limit of open files to `want` (at least 4096), within the hard
    limit; the servers and load generators it starts inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(want, 4096)
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


# --- output -----------------------------------------------------------------------------------

def human_bytes(n: float) -> str:
    if n != n:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GiB"


def line(label: str, r: dict) -> str:
    return (f"  {label:<9} {r['rps']:>10.0f} req/s  {human_bytes(r['bps']):>11}/s  "
            f"p50 {r['p50']:>8}  p99 {r['p99']:>8}  max {r['max']:>8}  "
            f"errors {r['errors']} (c{r['connect']} r{r['read']} w{r['write']} t{r['timeout']})  "
            f"non-2xx {r['non2xx']}  server CPU {r['server_cpu']:.2f} cores, "
            f"{r['cpu_per_req_us']:.0f} us/req  load {r['load']}")


def best(runs: list[dict]) -> dict:
    """The fastest round (noise on a shared machine only slows a run down); errors of all rounds."""
    top = dict(fastest(runs))
    for k in ("connect", "read", "write", "timeout", "non2xx", "errors"):
        top[k] = sum(r[k] for r in runs)
    return top


def milliseconds(text: str) -> float:
    """wrk's latency ("950.00us", "33.12ms", "1.21s") in ms; nan when missing."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


# --- the run's steps ----------------------------------------------------------------------------

@dataclass
class Side:
    """One server under test: the URL of the test file, the processes whose CPU counts, and the
    process whose tree's memory is sampled (ours only)."""
    url: str
    pids: list[int]
    proc: Proc
    base: str = ""  # ours: the server's base URL (its /metrics)


def make_test_file(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, bytes]:
    """The library folder with the test mp3 in it: (folder, file, its bytes)."""
    library = tmp / "library"
    library.mkdir()
    track = library / "track.mp3"
    make_mp3(track, args.mp3_seconds)
    data = track.read_bytes()
    size = len(data)
    if size < BLOCK * 2:
        raise BenchError(f"the test file is too small ({size} bytes)")
    print(f"test file: {track.name}, {size} bytes ({size / 1e6:.2f} MB, {args.mp3_seconds} s mp3 at 256 kbps)")
    return library, track, data


def start_nginx(tmp: Path, library: Path, nginx: str, procs: list[Proc]) -> tuple[Proc, list[int], int]:
    """nginx over the library, put in `procs`: (its master, its workers, its port) once it listens."""
    port = free_port()
    conf = nginx_conf(tmp, library, port, nginx)
    ngx = Proc("nginx", [nginx, "-p", str(tmp / "nginx"), "-c", str(conf), "-e",
                         str(tmp / "nginx" / "logs" / "error.log")], tmp / "nginx.out")
    procs.append(ngx)
    wait_port(port, ngx, 15)
    time.sleep(0.2)  # the master forks its worker after it listens
    return ngx, children(ngx.pid), port


def start_ours(tmp: Path, library: Path, name: str, procs: list[Proc], loop: str | None) -> Side:
    """One server of ours over the library (on `loop`, or its default event loop), scan done."""
    extra = ("--event-loop", loop) if loop else ()
    proc, base = start_server(library, tmp / f"data-{name}", tmp / f"{name}.out", procs, extra)
    track_id = wait_scan(base, proc)[0]["id"]
    settle(proc.pid)
    print(f"{name}: {base}/stream/{track_id}  (pid {proc.pid}, event loop {loop or 'default'})")
    return Side(f"{base}/stream/{track_id}", [proc.pid], proc, base)


def start_servers(args: argparse.Namespace, tmp: Path, library: Path, track: Path, nginx: str,
                  procs: list[Proc]) -> dict[str, Side]:
    """nginx, then ours (and ours on the other event loop with --compare-loops) once its scan is done."""
    ngx, ngx_workers, nginx_port = start_nginx(tmp, library, nginx, procs)
    sides = {"nginx": Side(f"http://127.0.0.1:{nginx_port}/{track.name}", [ngx.pid, *ngx_workers], ngx)}
    print(f"nginx: {sides['nginx'].url}  (master {ngx.pid}, worker {','.join(map(str, ngx_workers))})")
    sides["ours"] = start_ours(tmp, library, "ours", procs, args.event_loop)
    if args.compare_loops:
        other = "asyncio" if args.event_loop == "uvloop" else "uvloop"
        sides[other] = start_ours(tmp, library, other, procs, other)
    return sides


def plan_tests(args: argparse.Namespace, lua: Path, size: int) -> list[tuple[str, str, int, Path | None]]:
    """The tests --only asks for: (key, title, connections, Lua script or None for whole GETs)."""
    plan = [
        ("range", f"random 64 KiB ranges, {args.connections} connections", args.connections, lua),
        ("whole", f"whole-file GETs ({human_bytes(size)}), {args.connections} connections", args.connections, None),
        ("held", f"{args.held} connections held, random 64 KiB ranges", args.held, lua),
    ]
    wanted = {t.strip() for t in args.only.split(",") if t.strip()}
    if not wanted or wanted - {"range", "whole", "held"}:
        raise BenchError(f"--only takes range, whole and/or held, not {args.only!r}")
    return [step for step in plan if step[0] in wanted]


def measure_test(args: argparse.Namespace, wrk: str, sides: dict[str, Side], procs: list[Proc],
                 key: str, title: str, conns: int, script: Path | None) -> dict[str, list[dict]]:
    """One test's alternating rounds, nginx then ours: the runs of each. Our process tree's RSS
    is sampled while wrk loads it."""
    print(f"[{key}] {title}: {args.rounds} rounds of {args.duration}s, {' and '.join(sides)} alternating; "
          f"wrk -t{args.threads} --timeout {args.timeout}", flush=True)

    def measure(who: str, round_no: int) -> dict:
        for p in procs:
            ensure_alive(p)
        side = sides[who]
        with RssSampler(side.proc.pid) as rss:
            r = wrk_with_cpu(wrk, side.url, args, connections=conns, script=script, server_pids=side.pids,
                             label=f"{key} {who} round {round_no + 1}")
        r["tree_rss"], r["root_rss"], r["load"] = rss.tree_peak, rss.root_peak, load_average()
        print(line(f"{who} {round_no + 1}", r), flush=True)
        return r

    # a pause after each run lets the other server's connections close
    return alternating_rounds(args.rounds, tuple(sides), measure, pause=1)


def run_tests(args: argparse.Namespace, wrk: str, sides: dict[str, Side], procs: list[Proc],
              plan: list) -> tuple[dict[tuple[str, str], dict], dict[tuple[str, str], float]]:
    """Every planned test: the best round of each server, the median of each server's paired
    ratios to nginx ((test, side) -> ratio; (test, "loops"): the other loop's server / ours), and peaks."""
    results: dict[tuple[str, str], dict] = {}
    paired: dict[tuple[str, str], float] = {}
    for key, title, conns, script in plan:
        runs = measure_test(args, wrk, sides, procs, key, title, conns, script)
        field = "bps" if key == "whole" else "rps"
        for who, rs in runs.items():
            results[(key, who)] = best(rs)
            results[(key, who)]["p99_ms"] = statistics.median(milliseconds(r["p99"]) for r in rs)
            results[(key, who)]["tree_rss"] = max(r["tree_rss"] for r in rs)
            results[(key, who)]["root_rss"] = max(r["root_rss"] for r in rs)
            if who != "nginx":
                paired[(key, who)] = paired_median(runs["nginx"], rs, field)
        for other in set(runs) - {"nginx", "ours"}:  # --compare-loops
            paired[(key, "loops")] = paired_median(runs["ours"], runs[other], field)
        print(flush=True)
    return results, paired


def report_resources(sides: dict[str, Side]) -> tuple[dict[str, float | None], int, int]:
    """Peak RSS (VmHWM) of each server process, our 5xx answers and ERROR log lines."""
    ours = sides["ours"]
    ensure_alive(ours.proc, " during the run")
    workers = sides["nginx"].pids[1:]
    rss = {"ours": proc_status(ours.proc.pid, "VmHWM"),
           "nginx worker": max((proc_status(p, "VmHWM") or 0) for p in workers) if workers else None,
           "nginx master": proc_status(sides["nginx"].proc.pid, "VmHWM")}
    our_5xx, log_errors = server_errors(ours.base, ours.proc)
    print(f"peak RSS (VmHWM): ours {human_bytes(rss['ours'] or float('nan'))}; nginx worker "
          f"{human_bytes(rss['nginx worker'] or float('nan'))}, master "
          f"{human_bytes(rss['nginx master'] or float('nan'))}\n")
    return rss, our_5xx, log_errors


def ratio_rows(table: Summary, results: dict, paired: dict, key: str, title: str, target: float) -> None:
    """A test's target on the median of paired rounds, then its best rounds for information."""
    n, o = results[(key, "nginx")], results[(key, "ours")]
    field, shown = ("bps", lambda v: f"{human_bytes(v)}/s") if key == "whole" else ("rps", lambda v: f"{v:.0f}")
    table.check(paired[(key, "ours")] >= target and o["errors"] == 0 and o["non2xx"] == 0,
                f"{title}, median of pairs", "", "", f"{paired[(key, 'ours')]:.3f}", f">= {target}")
    table.info("  best rounds", shown(n[field]), shown(o[field]), f"{ratio(o[field], n[field]):.3f}")


def range_rows(table: Summary, args: argparse.Namespace, results: dict, paired: dict) -> None:
    ratio_rows(table, results, paired, "range", f"range 64KiB req/s (c={args.connections})", TARGET_RANGE_RATIO)
    n, o = results[("range", "nginx")], results[("range", "ours")]
    table.info("server CPU per range request", f"{n['cpu_per_req_us']:.0f} us", f"{o['cpu_per_req_us']:.0f} us",
               f"{ratio(o['cpu_per_req_us'], n['cpu_per_req_us']):.1f}")


def whole_rows(table: Summary, args: argparse.Namespace, results: dict, paired: dict) -> None:
    ratio_rows(table, results, paired, "whole", f"whole-file bytes/s (c={args.connections})", TARGET_WHOLE_RATIO)


def held_rows(table: Summary, args: argparse.Namespace, results: dict, paired: dict) -> None:
    n, o = results[("held", "nginx")], results[("held", "ours")]
    hr = paired[("held", "ours")]
    table.check(hr >= TARGET_HELD_RATIO, f"{args.held} conns: req/s, median of pairs", "", "", f"{hr:.3f}",
                f">= {TARGET_HELD_RATIO}")
    table.info("  best rounds", f"{n['rps']:.0f}", f"{o['rps']:.0f}", f"{ratio(o['rps'], n['rps']):.3f}")
    table.check(o["p99_ms"] < TARGET_HELD_P99_MS, f"{args.held} conns: p99, median of rounds",
                f"{n['p99_ms']:.1f} ms", f"{o['p99_ms']:.1f} ms", "", f"< {TARGET_HELD_P99_MS:.0f} ms (ours)")
    table.check(o["errors"] == 0 and o["requests"] > 0, f"{args.held} conns: socket errors", str(n["errors"]),
                str(o["errors"]), "", "0 (ours)")
    table.check(o["non2xx"] == 0, f"{args.held} conns: non-2xx", str(n["non2xx"]), str(o["non2xx"]), "", "0 (ours)")
    mib = o["tree_rss"] / 2**20
    table.check(mib < TARGET_RSS_MIB, f"{args.held} conns: peak RSS of our process tree", "",
                f"{mib:.1f} MiB", "", f"< {TARGET_RSS_MIB} MiB")
    table.info("  of it, the server process", "", f"{o['root_rss'] / 2**20:.1f} MiB")


def loop_rows(table: Summary, results: dict, paired: dict) -> None:
    """With --compare-loops: our server on the other event loop against nginx, and against ours."""
    for key, what in (("range", "range req/s"), ("whole", "whole-file bytes/s"), ("held", "held req/s")):
        other = next((who for test, who in results if test == key and who not in ("nginx", "ours")), None)
        if other is None:
            continue
        x, o = results[(key, other)], results[(key, "ours")]
        table.info(f"{other}: {what}, median of pairs", "", "", f"{paired[(key, other)]:.3f}")
        table.info(f"  {other} / ours, median of pairs", "", "", f"{paired[(key, 'loops')]:.3f}")
        table.info(f"  {other}: p99, median of rounds", "", f"{x['p99_ms']:.1f} ms (ours {o['p99_ms']:.1f} ms)")
        table.info(f"  CPU per request: ours, {other}", f"{o['cpu_per_req_us']:.0f} us",
                   f"{x['cpu_per_req_us']:.0f} us", f"{ratio(x['cpu_per_req_us'], o['cpu_per_req_us']):.2f}")


def test_rows(table: Summary, args: argparse.Namespace, results: dict, paired: dict) -> None:
    """The summary's rows of each test that ran: its targets, then its figures for information."""
    for key, rows in (("range", range_rows), ("whole", whole_rows), ("held", held_rows)):
        if (key, "ours") in results:
            rows(table, args, results, paired)
    loop_rows(table, results, paired)


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    """The benchmark proper, in the temp folder `tmp`, each process it starts put in `procs`:
    0 when every target passes, 1 when one fails (BenchError when it cannot run)."""
    tmp.chmod(0o755)  # nginx's worker runs as nobody when started by root: it must read the library
    t_start, load = time.monotonic(), load_average()
    nginx, wrk = check_tools()
    cores = os.cpu_count()
    print(f"range_bench: nginx {nginx}, wrk {wrk}, {cores} cores, load average {load}. Note: wrk "
          f"({args.threads} threads), nginx (1 worker) and our server (1 process) share these {cores} cores; "
          f"the servers are loaded in turn, never at the same time.", flush=True)
    library, track, data = make_test_file(args, tmp)
    lua = tmp / "ranges.lua"
    lua.write_text(RANGE_LUA.format(size=len(data), block=BLOCK, align=ALIGN))
    sides = start_servers(args, tmp, library, track, nginx, procs)
    for name, side in sides.items():
        verify(name, side.url, data)
    print("correctness: a 64 KiB range from each is a 206 equal to the file's bytes; "
          "whole-file GETs equal the file: OK\n", flush=True)
    results, paired = run_tests(args, wrk, sides, procs, plan_tests(args, lua, len(data)))
    rss, our_5xx, log_errors = report_resources(sides)
    table = Summary(("metric", "nginx", "ours", "ours/nginx", "target", "result"))
    test_rows(table, args, results, paired)
    table.info("our 5xx answers / ERROR log lines", "", f"{our_5xx} / {log_errors}")
    table.info("peak RSS (VmHWM) of the server process", f"{human_bytes(rss['nginx worker'] or float('nan'))} "
               f"(worker)", human_bytes(rss["ours"] or float("nan")))
    return table.finish(f"SUMMARY (file {len(data)} bytes; wrk -t{args.threads} -d{args.duration}s, "
                        f"{args.rounds} alternating rounds; wrk, nginx and ours share {cores} cores; "
                        f"load average {load} at the start, {load_average()} at the end; "
                        f"total {time.monotonic() - t_start:.0f}s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds per test; the targets are on the median of the paired rounds "
                         "(default 3; 3 tests x servers x rounds x duration of load in all)")
    ap.add_argument("--connections", type=int, default=64, help="connections of the range and whole-file runs")
    ap.add_argument("--held", type=int, default=1000, help="connections of the held-connections run")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (keep it small: 2 cores are shared)")
    ap.add_argument("--timeout", default="2s", help="wrk's per-request timeout (its default: 2s)")
    ap.add_argument("--mp3-seconds", type=int, default=160, help="length of the test mp3 (160 s ~ 5 MB)")
    ap.add_argument("--only", default="range,whole,held",
                    help="comma list of the tests to run: range, whole, held (default: all three)")
    ap.add_argument("--event-loop", choices=("asyncio", "uvloop"), default=None,
                    help="our server's event loop (default: its own default, the event_loop setting's)")
    ap.add_argument("--compare-loops", action="store_true",
                    help="also run a server of ours on the other event loop (uvloop, or asyncio's), in the same rounds")
    ap.add_argument("--verbose", action="store_true", help="print every wrk output in full")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs, nginx.conf)")
    args = ap.parse_args()

    # Both servers and wrk inherit this: 1000 held connections need that many descriptors each.
    raise_descriptor_limit(args.held * 2 + 256)
    return run_bench("range_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
