#!/usr/bin/env python3
"""Range / whole-file streaming benchmark: our server against nginx, in the same run.

What it does (everything on 127.0.0.1, everything it starts is stopped at the end):

1. encodes a real ~5 MB mp3 (160 s at 256 kbps, with the ffmpeg of imageio-ffmpeg) into a temp
   library folder;
2. starts nginx (1 worker, sendfile on, access_log off) serving that folder, and our server (one
   process) over the same folder; waits for our scan to finish and finds the track id;
3. checks correctness first: one 64 KiB range from each server must be a 206 whose body equals the
   file's bytes (and a whole-file GET must return the whole file);
4. runs wrk against nginx and ours in turn (never both at once), in --rounds alternating rounds of
   --duration seconds, keeping the best round of each (noise on a shared machine only slows down):
   - random 64 KiB ranges at --connections connections: req/s and the ratio ours/nginx;
   - whole-file GETs at --connections connections: bytes/s (wrk's Transfer/sec) and the ratio;
   - --held connections (default 1000) doing random ranges: socket errors and non-2xx;
5. reports peak RSS (VmHWM) of our server and of nginx, and a summary table with PASS/FAIL.

Needs the `nginx` and `wrk` binaries (Debian packages `nginx-light` and `wrk`); it installs
nothing. Run it with the project's Python:

    python bench/range_bench.py [--duration 4] [--rounds 3] [--connections 64] [--held 1000]
                                [--only range,whole,held] [--verbose] [--keep]

Defaults: 3 tests x 2 servers x 3 rounds x 4 s = 72 s of load, about 95 s in all. The machine is
shared and noisy: whole-file bytes/s in particular is bound by wrk and the kernel, not by either
server, and swings by 2x from run to run; use more --rounds for steadier figures.

Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    BenchError, Proc, Summary, alternating_rounds, cpu_seconds, ensure_alive, fastest, free_port, paired_median, ratio,
    run_bench, run_wrk, start_server, wait_port, wait_scan,
)

BLOCK = 65536
ALIGN = 4096

TARGET_RANGE_RATIO = 0.3
TARGET_WHOLE_RATIO = 0.9

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
    return (f"  {label:<6} {r['rps']:>10.0f} req/s  {human_bytes(r['bps']):>11}/s  "
            f"p50 {r['p50']:>8}  p99 {r['p99']:>8}  max {r['max']:>8}  "
            f"errors {r['errors']} (c{r['connect']} r{r['read']} w{r['write']} t{r['timeout']})  "
            f"non-2xx {r['non2xx']}  server CPU {r['server_cpu']:.2f} cores, "
            f"{r['cpu_per_req_us']:.0f} us/req")


def best(runs: list[dict]) -> dict:
    """The fastest round (noise on a shared machine only slows a run down); errors of all rounds."""
    top = dict(fastest(runs))
    for k in ("connect", "read", "write", "timeout", "non2xx", "errors"):
        top[k] = sum(r[k] for r in runs)
    return top


# --- the run's steps ----------------------------------------------------------------------------

@dataclass
class Servers:
    """The two servers under test, each with the URL of the test file."""
    ngx: Proc
    ngx_workers: list[int]
    nginx_url: str
    ours: Proc
    base: str
    our_url: str


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


def start_servers(tmp: Path, library: Path, track: Path, nginx: str, procs: list[Proc]) -> Servers:
    """nginx, then ours once its scan has found the test file."""
    ngx, ngx_workers, nginx_port = start_nginx(tmp, library, nginx, procs)
    nginx_url = f"http://127.0.0.1:{nginx_port}/{track.name}"
    ours, base = start_server(library, tmp / "data", tmp / "ours.out", procs)
    track_id = wait_scan(base, ours)[0]["id"]
    our_url = f"{base}/stream/{track_id}"
    print(f"nginx: {nginx_url}  (master {ngx.pid}, worker {','.join(map(str, ngx_workers))})")
    print(f"ours:  {our_url}  (pid {ours.pid})")
    return Servers(ngx, ngx_workers, nginx_url, ours, base, our_url)


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


def measure_test(args: argparse.Namespace, wrk: str, s: Servers, procs: list[Proc],
                 key: str, title: str, conns: int, script: Path | None) -> dict[str, list[dict]]:
    """One test's alternating rounds, nginx then ours: the runs of each."""
    print(f"[{key}] {title}: {args.rounds} rounds of {args.duration}s, nginx and ours alternating; "
          f"wrk -t{args.threads} --timeout {args.timeout}", flush=True)
    targets = {"nginx": (s.nginx_url, [s.ngx.pid, *s.ngx_workers]), "ours": (s.our_url, [s.ours.pid])}

    def measure(who: str, round_no: int) -> dict:
        for p in procs:
            ensure_alive(p)
        url, pids = targets[who]
        r = wrk_with_cpu(wrk, url, args, connections=conns, script=script, server_pids=pids,
                         label=f"{key} {who} round {round_no + 1}")
        print(line(f"{who} {round_no + 1}", r), flush=True)
        return r

    # a pause after each run lets the other server's connections close
    return alternating_rounds(args.rounds, ("nginx", "ours"), measure, pause=1)


def run_tests(args: argparse.Namespace, wrk: str, s: Servers, procs: list[Proc],
              plan: list) -> tuple[dict[tuple[str, str], dict], dict[str, float]]:
    """Every planned test: the best round of each server, and the median of the paired ratios."""
    results: dict[tuple[str, str], dict] = {}
    paired: dict[str, float] = {}
    for key, title, conns, script in plan:
        runs = measure_test(args, wrk, s, procs, key, title, conns, script)
        for who, rs in runs.items():
            results[(key, who)] = best(rs)
        paired[key] = paired_median(runs["nginx"], runs["ours"], "bps" if key == "whole" else "rps")
        print(flush=True)
    return results, paired


def report_resources(s: Servers) -> tuple[dict[str, float | None], int, int]:
    """Peak RSS of each server, our 5xx answers and ERROR log lines, printed and returned."""
    ensure_alive(s.ours, " during the run")
    rss = {"ours": proc_status(s.ours.pid, "VmHWM"),
           "nginx worker": max((proc_status(p, "VmHWM") or 0) for p in s.ngx_workers) if s.ngx_workers else None,
           "nginx master": proc_status(s.ngx.pid, "VmHWM")}
    our_5xx, log_errors = server_errors(s.base, s.ours)
    print(f"peak RSS (VmHWM): ours {human_bytes(rss['ours'] or float('nan'))}; nginx worker "
          f"{human_bytes(rss['nginx worker'] or float('nan'))}, master "
          f"{human_bytes(rss['nginx master'] or float('nan'))}\n")
    return rss, our_5xx, log_errors


def test_rows(table: Summary, args: argparse.Namespace, results: dict, paired: dict[str, float]) -> None:
    """The summary's rows of each test that ran: its target, then its figures for information."""
    if ("range", "ours") in results:
        n, o = results[("range", "nginx")], results[("range", "ours")]
        rr = ratio(o["rps"], n["rps"])
        table.check(rr >= TARGET_RANGE_RATIO and o["errors"] == 0 and o["non2xx"] == 0,
                    f"range 64KiB req/s (c={args.connections})", f"{n['rps']:.0f}", f"{o['rps']:.0f}",
                    f"{rr:.3f}", f">= {TARGET_RANGE_RATIO}")
        table.info("  median of paired rounds", "", "", f"{paired['range']:.3f}")
        table.info("server CPU per range request", f"{n['cpu_per_req_us']:.0f} us", f"{o['cpu_per_req_us']:.0f} us",
                   f"{ratio(o['cpu_per_req_us'], n['cpu_per_req_us']):.1f}")
    if ("whole", "ours") in results:
        n, o = results[("whole", "nginx")], results[("whole", "ours")]
        wr = ratio(o["bps"], n["bps"])
        table.check(wr >= TARGET_WHOLE_RATIO and o["errors"] == 0 and o["non2xx"] == 0,
                    f"whole-file bytes/s (c={args.connections})", f"{human_bytes(n['bps'])}/s",
                    f"{human_bytes(o['bps'])}/s", f"{wr:.3f}", f">= {TARGET_WHOLE_RATIO}")
        table.info("  median of paired rounds", "", "", f"{paired['whole']:.3f}")
    if ("held", "ours") in results:
        n, o = results[("held", "nginx")], results[("held", "ours")]
        table.check(o["errors"] == 0 and o["requests"] > 0, f"{args.held} conns: socket errors", str(n["errors"]),
                    str(o["errors"]), "", "0 (ours)")
        table.check(o["non2xx"] == 0, f"{args.held} conns: non-2xx", str(n["non2xx"]), str(o["non2xx"]), "",
                    "0 (ours)")
        table.info(f"{args.held} conns: req/s, p99", f"{n['rps']:.0f}, {n['p99']}", f"{o['rps']:.0f}, {o['p99']}",
                   f"{ratio(o['rps'], n['rps']):.3f}")


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    """The benchmark proper, in the temp folder `tmp`, each process it starts put in `procs`:
    0 when every target passes, 1 when one fails (BenchError when it cannot run)."""
    tmp.chmod(0o755)  # nginx's worker runs as nobody when started by root: it must read the library
    t_start = time.monotonic()
    nginx, wrk = check_tools()
    cores = os.cpu_count()
    print(f"range_bench: nginx {nginx}, wrk {wrk}, {cores} cores. Note: wrk ({args.threads} threads), "
          f"nginx (1 worker) and our server (1 process) share these {cores} cores; nginx and ours "
          f"are loaded in turn, never at the same time.", flush=True)
    library, track, data = make_test_file(args, tmp)
    lua = tmp / "ranges.lua"
    lua.write_text(RANGE_LUA.format(size=len(data), block=BLOCK, align=ALIGN))
    s = start_servers(tmp, library, track, nginx, procs)
    verify("nginx", s.nginx_url, data)
    verify("ours", s.our_url, data)
    print("correctness: a 64 KiB range from each is a 206 equal to the file's bytes; "
          "whole-file GETs equal the file: OK\n", flush=True)
    results, paired = run_tests(args, wrk, s, procs, plan_tests(args, lua, len(data)))
    rss, our_5xx, log_errors = report_resources(s)
    table = Summary(("metric", "nginx", "ours", "ours/nginx", "target", "result"))
    test_rows(table, args, results, paired)
    table.info("our 5xx answers / ERROR log lines", "", f"{our_5xx} / {log_errors}")
    table.info("peak RSS (VmHWM)", f"{human_bytes(rss['nginx worker'] or float('nan'))} (worker)",
               human_bytes(rss["ours"] or float("nan")))
    return table.finish(f"SUMMARY (file {len(data)} bytes; wrk -t{args.threads} -d{args.duration}s, best of "
                        f"{args.rounds} alternating rounds; wrk, nginx and ours "
                        f"share {cores} cores; total {time.monotonic() - t_start:.0f}s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run (default 4)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds per test, nginx then ours; the best round counts (default 3; "
                         "3 tests x 2 servers x rounds x duration of load in all)")
    ap.add_argument("--connections", type=int, default=64, help="connections of the range and whole-file runs")
    ap.add_argument("--held", type=int, default=1000, help="connections of the held-connections run")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (keep it small: 2 cores are shared)")
    ap.add_argument("--timeout", default="2s", help="wrk's per-request timeout (its default: 2s)")
    ap.add_argument("--mp3-seconds", type=int, default=160, help="length of the test mp3 (160 s ~ 5 MB)")
    ap.add_argument("--only", default="range,whole,held",
                    help="comma list of the tests to run: range, whole, held (default: all three)")
    ap.add_argument("--verbose", action="store_true", help="print every wrk output in full")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs, nginx.conf)")
    args = ap.parse_args()

    # Both servers and wrk inherit this: 1000 held connections need that many descriptors each.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.held * 2 + 256, 4096)
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    return run_bench("range_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
