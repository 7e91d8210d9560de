#!/usr/bin/env python3
"""Web player benchmark (issue 14): first paint of the home page on a 20,000-album library in
headless Chromium, against the same app shell served by nginx in the same run, and the app
shell's size on a cold load.

What it does (everything on 127.0.0.1; everything it starts is stopped at the end, also on Ctrl-C):

0. the library: one tiny real mp3 (0.3 s, made by imageio-ffmpeg's ffmpeg) copied --albums
   (20,000) times to `Artist NNNN/Album NNNNN/01 Title NNNNN.mp3`, each copy re-tagged with mutagen
   (its own artist, album, title, year, genre), so every file is an album of its own. It is kept
   in --work-dir (/tmp/streamer-web-bench) and made only when missing (~1 min); our server
   (`run.py serve`, one process, anonymous reads from loopback as by default, no loudness
   analysis) scans it into a fresh data folder each run (not timed) until GET /api/v1/albums
   counts every album;
1. the reference: nginx (Debian nginx-light, 1 worker, gzip on) serving a copy of the app shell as
   our server serves it (GET / and every shell file a first load of ours asked for, plus the files
   of streamer/web/static), on another port. Without nginx: python -m http.server, and it says so;
2. --loads (5) rounds, each a cold load of the reference then of ours (alternating, so a shared
   machine's noise falls on both): Chromium started with a new profile (no cache, no service
   worker), `GET /`, then `performance.getEntriesByName('first-contentful-paint')` and, on ours,
   the mark `streamer:first-view` (the player marks it once the home view's first page of albums
   is in the DOM; reported missing when the shell does not set it or it does not come within
   --view-timeout s). Medians of the loads. Target: our first contentful paint < 1 s. Also (info)
   time to first byte, DOMContentLoaded, load, and a repeat visit in the same profile;
3. the app shell: every request of our cold loads to the node that is not API, media or cluster
   (HTML, CSS, JS, manifest, icons; not /api/ JSON, not covers, not /stream/ or /hls/), from
   Chromium's network events: bytes transferred (gzip as served, headers included) and bytes
   uncompressed. Target: transferred < 200 kB (200,000 bytes).

Run it with the project's Python, from the repo root:

    python bench/web_bench.py [--albums 20000] [--loads 5] [--work-dir /tmp/streamer-web-bench]
                              [--view-timeout 15] [--keep]

About 50 s with the library cached (its scan included), 1.5 min the first time. Needs Debian's
chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) and selenium (the
project's `test` extra); nginx-light for the reference. It installs nothing.

Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    REPO, BenchError, Proc, Summary, ensure_alive, ffmpeg_exe, free_port, load_average, log_problems, ratio,
    require_modules, run_bench, start_server, wait_port, wait_scan,
)

# Selenium Manager would try to download a driver or a browser: never (the paths are given too).
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
)
FIRST_VIEW = "streamer:first-view"
TARGET_FCP = 1.0  # s
TARGET_SHELL = 200_000  # bytes transferred
# Requests that are not the app shell: the API (JSON, covers, waveforms), media, the other doors.
NOT_SHELL = ("/api/", "/stream/", "/hls/", "/rest/", "/cluster/", "/auth/", "/healthz", "/readyz", "/metrics")
GENRES = ["Rock", "Jazz", "Ambient", "Folk", "Electronic", "Classical", "Pop", "Blues"]
LIBRARY_FORMAT = 1  # bump when the generated library changes: a cached one of another format is remade


# --- the library ------------------------------------------------------------------------------

def library_path(work_dir: Path, albums: int) -> Path:
    return work_dir / f"library-{albums}"


def make_library(work_dir: Path, albums: int) -> tuple[Path, bool]:
    """The cached library of `albums` one-file albums (made when missing); (its path, made now)."""
    import mutagen

    root = library_path(work_dir, albums)
    stamp = root / ".web-bench.json"
    want = {"format": LIBRARY_FORMAT, "albums": albums}
    with contextlib.suppress(OSError, ValueError):
        if json.loads(stamp.read_text()) == want:
            return root, False
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    partial.mkdir(parents=True)
    base = partial / "base.mp3"
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
                           "-i", "sine=frequency=440:duration=0.3", "-ac", "1", "-c:a", "libmp3lame", "-b:a", "32k",
                           str(base)], capture_output=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"ffmpeg failed: {done.stderr.decode(errors='replace')[-1500:]}")
    t0 = time.monotonic()
    for i in range(albums):
        artist = i // 10
        path = partial / f"Artist {artist:04d}" / f"Album {i:05d}" / f"01 Title {i:05d}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base, path)
        audio = mutagen.File(path, easy=True)
        if audio.tags is None:
            audio.add_tags()
        audio.update({"title": f"Title {i:05d}", "artist": f"Artist {artist:04d}", "album": f"Album {i:05d}",
                      "albumartist": f"Artist {artist:04d}", "tracknumber": "1/1",
                      "date": str(1960 + i % 60), "genre": GENRES[i % len(GENRES)]})
        audio.save()
        if i and i % 5000 == 0:
            print(f"  library: {i} of {albums} files ({time.monotonic() - t0:.0f}s)", flush=True)
    base.unlink()
    (partial / stamp.name).write_text(json.dumps(want))
    partial.rename(root)
    return root, True


def wait_albums(base: str, proc: Proc, albums: int, timeout: float) -> None:
    """Until our scan is done and GET /api/v1/albums counts every album of the library."""
    wait_scan(base, proc, None, timeout)
    with urllib.request.urlopen(f"{base}/api/v1/albums?limit=1", timeout=30) as resp:
        total = json.loads(resp.read()).get("total")
    if total != albums:
        raise BenchError(f"scan done with {total} albums, {albums} in the library:\n{proc.log_tail()}")


# --- Chromium ---------------------------------------------------------------------------------

@contextlib.contextmanager
def chromium(profile: Path):
    """A headless Chromium with a new profile folder (nothing cached, no service worker) and its
    network events kept (the performance log); quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile.parent / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float):
    """The script's value once truthy, polled every 20 ms; None at the deadline."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: d.execute_script(script))
    except TimeoutException:
        return None


FCP_JS = "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;"
VIEW_JS = f"const e = performance.getEntriesByName('{FIRST_VIEW}', 'mark')[0]; return e ? e.startTime : null;"
NAV_JS = ("const n = performance.getEntriesByType('navigation')[0]; "
          "return n && n.loadEventEnd > 0 ? [n.responseStart, n.domContentLoadedEventEnd, n.loadEventEnd] : null;")


@dataclass
class Load:
    """One cold load's figures, in seconds from the navigation's start (None: not seen)."""
    fcp: float | None
    view: float | None
    ttfb: float | None
    dcl: float | None
    load: float | None
    repeat_fcp: float | None = None
    shell: list[dict] = field(default_factory=list)  # the app-shell requests answered 2xx/3xx
    failed: list[str] = field(default_factory=list)  # those answered otherwise: "STATUS URL"
    severe: list[str] = field(default_factory=list)  # SEVERE console entries


def network_settled(driver, events: list[dict], quiet: float, timeout: float) -> None:
    """Gather the performance log into `events` until no request has started or ended for `quiet`
    seconds (the page's lazy modules, its manifest and icons have come), or `timeout`."""
    deadline = time.monotonic() + timeout
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        batch = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        if any(m["method"].startswith("Network.") for m in batch):
            last_change = time.monotonic()
        events += batch
        if time.monotonic() - last_change >= quiet:
            return
        time.sleep(0.1)  # a poll interval; the loop ends on quiet or the deadline


def shell_requests(events: list[dict], origin: str) -> list[dict]:
    """The app-shell requests among the network events: url, transferred (encoded bytes with
    headers), decoded (body bytes), encoding, status, failed (not 2xx/3xx: not part of the shell,
    such as Chromium's own /favicon.ico)."""
    reqs: dict[str, dict] = {}
    for m in events:
        p = m.get("params", {})
        rid = p.get("requestId")
        if m["method"] == "Network.requestWillBeSent":
            reqs.setdefault(rid, {"url": p["request"]["url"], "decoded": 0, "transferred": None})
        elif m["method"] == "Network.responseReceived" and rid in reqs:
            headers = {k.lower(): v for k, v in p["response"].get("headers", {}).items()}
            reqs[rid].update(status=p["response"]["status"], encoding=headers.get("content-encoding", ""),
                             type=p.get("type", ""))
        elif m["method"] == "Network.dataReceived" and rid in reqs:
            reqs[rid]["decoded"] += p.get("dataLength", 0)
        elif m["method"] == "Network.loadingFinished" and rid in reqs:
            reqs[rid]["transferred"] = p.get("encodedDataLength", 0)
    shell = []
    for r in reqs.values():
        parts = urlsplit(r["url"])
        if f"{parts.scheme}://{parts.netloc}" != origin or parts.path.startswith(NOT_SHELL):
            continue
        if r["transferred"] is None:
            raise BenchError(f"the request for {r['url']} did not finish")
        r["failed"] = not 200 <= r.get("status", 0) < 400
        shell.append(r)
    return shell


def measure(url: str, tmp: Path, name: str, view: bool, view_timeout: float) -> Load:
    """One cold load of `url` in a new Chromium profile, then a repeat visit in the same profile."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    with chromium(tmp / f"profile-{name}") as driver:
        driver.get(url)  # returns after the load event
        fcp = wait_for(driver, FCP_JS, 10)
        mark = wait_for(driver, VIEW_JS, view_timeout) if view else None
        nav = wait_for(driver, NAV_JS, 10) or (None, None, None)
        events: list[dict] = []
        network_settled(driver, events, quiet=1.0, timeout=15)
        severe = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        driver.get(url)  # the repeat visit: HTTP cache (and a service worker if the shell has one)
        repeat = wait_for(driver, FCP_JS, 10)
    seconds = (lambda ms: None if ms is None else ms / 1000)
    requests = shell_requests(events, origin)
    return Load(seconds(fcp), seconds(mark), *(seconds(v) for v in nav), repeat_fcp=seconds(repeat),
                shell=[r for r in requests if not r["failed"]],
                failed=[f"{r.get('status', '?')} {r['url']}" for r in requests if r["failed"]], severe=severe)


def service_worker(base: str, shell: list[dict]) -> tuple[int, int] | None:
    """(gzip body bytes, uncompressed bytes) of /sw.js when the node serves one and the page's own
    requests do not hold it: Chromium fetches a service worker's script outside the page (and so
    do the worker's own fetches when it installs), so it is counted here, with no headers."""
    import gzip

    if any(urlsplit(r["url"]).path == "/sw.js" for r in shell):
        return None
    request = urllib.request.Request(base + "/sw.js", headers={"Accept-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body, encoding = resp.read(), resp.headers.get("Content-Encoding", "")
    except OSError:
        return None
    return len(body), len(gzip.decompress(body) if encoding == "gzip" else body)


# --- the reference ----------------------------------------------------------------------------

def copy_shell(base: str, shell: list[dict], root: Path) -> list[str]:
    """The app shell as our server serves it, into `root`: the files of streamer/web/static under
    /static/, then every shell request of our first load (its path; `/` as index.html) as our
    server answers it (uncompressed). The paths written."""
    static = REPO / "streamer" / "web" / "static"
    if static.is_dir():
        shutil.copytree(static, root / "static", dirs_exist_ok=True)
    written = []
    for path in dict.fromkeys(urlsplit(r["url"]).path for r in shell):
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            body = resp.read()
        dest = root / ("index.html" if path == "/" else path.lstrip("/"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(body)
        written.append(path)
    return written


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def start_reference(tmp: Path, root: Path, procs: list[Proc]) -> tuple[str, str]:
    """nginx over the shell copy (python -m http.server without nginx): (its name, its URL)."""
    port = free_port()
    nginx = nginx_binary()
    if nginx is None:
        proc = Proc("python http.server", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                           "--directory", str(root)], tmp / "reference.log")
        procs.append(proc)
        wait_port(port, proc, 15)
        print("  nginx is missing (apt-get install nginx-light): the reference is python -m http.server")
        return "python http.server", f"http://127.0.0.1:{port}/"
    tmp.chmod(0o755)  # nginx's worker runs as nobody when started by root: it must read the copy
    prefix = tmp / "nginx"
    conf = nginx_conf(prefix, root, port)
    proc = Proc("nginx", [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log")],
                tmp / "nginx.out")
    procs.append(proc)
    wait_port(port, proc, 15)
    return "nginx", f"http://127.0.0.1:{port}/"


def nginx_conf(prefix: Path, root: Path, port: int) -> Path:
    """nginx.conf for one worker serving `root` gzipped (level 9), as our server serves the shell."""
    for d in ("logs", "temp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    mime = "/etc/nginx/mime.types"
    types = f"include {mime};" if Path(mime).exists() else (
        "types { text/html html; text/css css; text/javascript js; application/manifest+json webmanifest; "
        "image/svg+xml svg; image/png png; }")
    temps = "\n".join(f"    {d} {prefix}/temp/{d.split('_')[0]};"
                      for d in ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path",
                                "scgi_temp_path", "uwsgi_temp_path"))
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    {types}
    types {{ application/manifest+json webmanifest; text/javascript js; }}
    default_type application/octet-stream;
    gzip on;
    gzip_comp_level 9;
    gzip_types text/css text/javascript application/javascript application/manifest+json image/svg+xml;
{temps}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ try_files $uri $uri/index.html =404; add_header Cache-Control no-cache; }}
    }}
}}
""")
    return conf


# --- the run ----------------------------------------------------------------------------------

def median(values: list[float | None]) -> float | None:
    seen = [v for v in values if v is not None]
    return statistics.median(seen) if len(seen) == len(values) and seen else None


def ms(x: float | None) -> str:
    return "missing" if x is None else f"{x * 1000:.0f} ms"


def kb(n: float) -> str:
    return f"{n / 1000:.1f} kB ({n:,.0f} B)"


def check_tools() -> None:
    require_modules("selenium", "mutagen")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            raise BenchError(f"{path} is missing: apt-get install -y {package}")


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    t_begin = time.monotonic()
    check_tools()
    load = load_average()
    print(f"web_bench: load average {load} at start; {os.cpu_count()} cores shared by our server, nginx and "
          f"Chromium. Temp folder {tmp}", flush=True)
    ours, base, view = start_ours(args, tmp, procs)
    warm = measure(base + "/", tmp, "warmup", view, args.view_timeout)  # untimed: the server's first answers
    root = tmp / "shell"
    root.mkdir()
    copied = copy_shell(base, warm.shell, root)
    for failed in warm.failed:
        print(f"    not part of the shell, not counted: {failed}", flush=True)
    ref_name, ref_url = start_reference(tmp, root, procs)
    print(f"[1] reference: {ref_name} at {ref_url} serving a copy of our shell ({', '.join(copied)})", flush=True)
    print(f"[2] {args.loads} rounds of cold loads (new profile each), {ref_name} then ours", flush=True)
    refs: list[Load] = []
    loads: list[Load] = []
    for i in range(args.loads):
        refs.append(measure(ref_url, tmp, f"ref{i}", False, args.view_timeout))
        ensure_alive(ours, " during the loads")
        loads.append(measure(base + "/", tmp, f"ours{i}", view, args.view_timeout))
        r, o = refs[-1], loads[-1]
        print(f"  round {i + 1}: {ref_name} FCP {ms(r.fcp)}; ours FCP {ms(o.fcp)}, first view {ms(o.view)}, "
              f"TTFB {ms(o.ttfb)}, load {ms(o.load)}, repeat visit FCP {ms(o.repeat_fcp)}", flush=True)
    severe = print_shell(loads)
    table = summary(args, base, refs, loads)
    n_err, _, _ = log_problems(ours)
    table.info("SEVERE console entries on our page (all loads) / server log ERROR lines", "",
               f"{len(severe)} / {n_err}")
    print(f"load average at the end: {load_average()} (at start: {load})")
    return table.finish(f"\nSUMMARY ({args.albums:,} albums; our server one process; reference {ref_name} "
                        f"serving the same shell; headless Chromium {args.loads} cold loads each, alternating; "
                        f"total {time.monotonic() - t_begin:.0f}s)")


def start_ours(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> tuple[Proc, str, bool]:
    """The library (made or cached) and our server over it, scanned: (it, its URL, whether the
    shell sets the first-view mark)."""
    t0 = time.monotonic()
    library, made = make_library(args.work_dir, args.albums)
    print(f"[0] library: {args.albums:,} albums of one 0.3 s mp3 each in {library} "
          f"({'made now' if made else 'cached'}, {time.monotonic() - t0:.1f}s)", flush=True)
    t0 = time.monotonic()
    ours, base = start_server(library, tmp / "data", tmp / "server.log", procs)
    wait_albums(base, ours, args.albums, args.scan_timeout)
    print(f"    our server {base} (pid {ours.pid}): scan done, {args.albums:,} albums "
          f"({time.monotonic() - t0:.1f}s, not timed)", flush=True)
    shell_files = [p for p in (REPO / "streamer" / "web" / "static").glob("*") if p.is_file()]
    view = any(FIRST_VIEW in p.read_text(errors="replace") for p in shell_files)
    if not view:
        print(f"    the shell sets no mark {FIRST_VIEW!r} (streamer/web/static): reported missing", flush=True)
    return ours, base, view


def print_shell(loads: list[Load]) -> list[str]:
    """The app shell's requests of the first timed load; the SEVERE console entries of all."""
    shell = loads[0].shell
    transferred = sum(r["transferred"] for r in shell)
    print("[3] app shell of a cold load (ours, first timed load):")
    for r in sorted(shell, key=lambda r: -r["transferred"]):
        print(f"  {r.get('status', '?')} {urlsplit(r['url']).path:<32} {r['transferred']:>8,} B transferred "
              f"{r['decoded']:>8,} B uncompressed {r.get('encoding') or 'identity'}")
    if any(sum(x["transferred"] for x in o.shell) != transferred for o in loads[1:]):
        print("  (other loads: " + ", ".join(f"{sum(x['transferred'] for x in o.shell):,} B" for o in loads[1:])
              + " transferred)")
    severe = sorted({m for o in loads for m in o.severe})
    if severe:
        print(f"  SEVERE console entries on our page ({len(severe)}):")
        for m in severe[:10]:
            print(f"    {m}")
    return severe


def summary(args: argparse.Namespace, base: str, refs: list[Load], loads: list[Load]) -> Summary:
    shell = loads[0].shell
    transferred = sum(r["transferred"] for r in shell)
    fcp_ref, fcp_ours = median([r.fcp for r in refs]), median([o.fcp for o in loads])
    table = Summary()
    table.check(fcp_ours is not None and fcp_ours < TARGET_FCP,
                f"first contentful paint, median of {args.loads} cold loads", ms(fcp_ref), ms(fcp_ours),
                f"{ratio(fcp_ours or float('nan'), fcp_ref or float('nan')):.2f}", f"< {TARGET_FCP * 1000:.0f} ms")
    table.info(f"mark {FIRST_VIEW} (first page of albums in the DOM), median", "", ms(median([o.view for o in loads])))
    table.info("time to first byte of /, median", ms(median([r.ttfb for r in refs])),
               ms(median([o.ttfb for o in loads])))
    table.info("DOMContentLoaded, median", ms(median([r.dcl for r in refs])), ms(median([o.dcl for o in loads])))
    table.info("load event, median", ms(median([r.load for r in refs])), ms(median([o.load for o in loads])))
    table.info("repeat visit (same profile) FCP, median", ms(median([r.repeat_fcp for r in refs])),
               ms(median([o.repeat_fcp for o in loads])))
    table.check(transferred < TARGET_SHELL, f"app shell transferred, cold ({len(shell)} requests, gzip as served)",
                "", kb(transferred), "", f"< {TARGET_SHELL / 1000:.0f} kB")
    table.info("app shell uncompressed", "", kb(sum(r["decoded"] for r in shell)))
    sw = service_worker(base, shell)
    if sw is not None:
        table.info("service worker /sw.js, not among the page's requests: gzip / uncompressed body", "",
                   f"{sw[0]:,} / {sw[1]:,} B")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--albums", type=int, default=20000, help="albums in the library, one file each (default 20000)")
    ap.add_argument("--loads", type=int, default=5, help="cold loads of each side, medians reported (default 5)")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/streamer-web-bench"),
                    help="where the generated library is kept between runs (default /tmp/streamer-web-bench)")
    ap.add_argument("--view-timeout", type=float, default=15,
                    help=f"seconds to wait for the mark {FIRST_VIEW} after the load (default 15)")
    ap.add_argument("--scan-timeout", type=float, default=600, help="seconds our first scan may take (default 600)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (data, logs, the shell copy)")
    args = ap.parse_args()
    if not 1 <= args.albums <= 200_000 or not 1 <= args.loads <= 50 or not 0 < args.view_timeout <= 120:
        ap.error("--albums 1 to 200000, --loads 1 to 50, --view-timeout up to 120 s")
    return run_bench("web_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
