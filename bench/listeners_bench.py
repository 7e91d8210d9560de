#!/usr/bin/env python3
"""1,000 listeners at real playback rate: our server against nginx, in the same run.

What it does (everything on 127.0.0.1, everything it starts is stopped at the end):

1. encodes one real mp3 (160 s at 256 kbps, ~5 MB) and hard-links it at --tracks paths of a temp
   library, so each listener asks for a track id of its own among them (one file in the page cache);
2. starts nginx (1 worker, sendfile on, access_log off) over that folder, and our server (one
   process, its default event loop or --event-loop) over the same folder, and waits for our scan;
3. for nginx, then for ours: --listeners clients connect at once and each GETs a whole track, then
   reads it like a player: as fast as it comes until it holds --buffer seconds of audio, then plays
   (the playhead moves at the file's own rate, its size / duration) and reads only while it holds
   less than --ahead seconds beyond the playhead (reading paused: TCP's window closes, as a
   player's full buffer makes it). A listener whose bytes fall behind its playhead stalls: it is
   counted, and waits for the bytes, as a player would. After --seconds every listener hangs up;
4. meanwhile it samples the server's CPU time and the RSS of its process tree (every 0.1 s), and
   prints a summary table with PASS/FAIL: no stall and no error for ours; CPU and RSS for information.

The listeners are asyncio protocols in this process; its own CPU use is printed too (a client
that cannot keep up would show as stalls of both servers).

    python bench/listeners_bench.py                       # ~2.5 min: 2 x 60 s of listening
    python bench/listeners_bench.py --seconds 20 --listeners 500

Needs the `nginx` binary (Debian package `nginx-light`); it installs nothing.
Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    BenchError, Proc, Summary, cpu_seconds, ensure_alive, load_average, percentile, run_bench, start_server,
    wait_scan,
)
from range_bench import RssSampler, make_mp3, raise_descriptor_limit, settle, start_nginx

TARGET_STALLED = 0
TICK = 0.05  # how often every listener's playhead moves and its reading is resumed


@dataclass
class Track:
    path: str  # the URL's path on the server
    rate: float  # bytes per second of playback (size / duration)
    size: int


class Listener(asyncio.Protocol):
    """A player on one connection: buffers, then plays at `rate`, reading ahead at most `ahead`
    seconds; a stall when its bytes fall behind the playhead."""

    def __init__(self, track: Track, host: str, buffer: float, ahead: float) -> None:
        self.track, self.host = track, host
        self.buffer_bytes, self.ahead_bytes = buffer * track.rate, ahead * track.rate
        self.opened = time.monotonic()
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.body = 0  # bytes of the body received
        self.first_byte: float | None = None
        self.playing_since: float | None = None  # when the playhead was at byte 0 (moved by stalls)
        self.stalls = 0
        self.stalled_seconds = 0.0
        self.error: str | None = None
        self.paused = False
        self.hung_up = False  # the benchmark ended it: a lost connection is no error then

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(f"GET {self.track.path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.first_byte is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                self.fail(head.split(b"\r\n")[0].decode(errors="replace"))
                return
            self.first_byte = time.monotonic()
        self.body += len(data)
        self.tick(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None and self.body < self.track.size and not self.hung_up:
            self.error = f"connection lost after {self.body} bytes: {exc}"

    def fail(self, why: str) -> None:
        self.error = why
        if self.transport is not None:
            self.transport.close()

    def playhead(self, now: float) -> float:
        return 0.0 if self.playing_since is None else (now - self.playing_since) * self.track.rate

    def tick(self, now: float) -> None:
        """Start playing once buffered; count a stall (and wait, as a player does) when the
        bytes are behind the playhead; read only while less than `ahead` is held."""
        if self.error is not None or self.first_byte is None:
            return
        if self.playing_since is None and self.body >= min(self.buffer_bytes, self.track.size):
            self.playing_since = now
        behind = self.playhead(now) - self.body
        if behind > 0 and self.body < self.track.size:
            self.stalls += 1
            self.stalled_seconds += behind / self.track.rate
            self.playing_since += behind / self.track.rate  # the playhead waits for the bytes
        held = self.body - self.playhead(now)
        if held >= self.ahead_bytes and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        elif held < self.ahead_bytes and self.paused:
            self.transport.resume_reading()
            self.paused = False


@dataclass
class Outcome:
    """One server's figures."""
    listeners: list[Listener]
    seconds: float
    server_cpu: float  # CPU seconds of the server's processes during the listening
    client_cpu: float  # CPU seconds of this process (the listeners) meanwhile
    tree_rss: int
    root_rss: int
    errors: list[str] = field(default_factory=list)


async def listen(tracks: list[Track], port: int, args: argparse.Namespace) -> tuple[list[Listener], float]:
    """Connect every listener at once, let them play for --seconds, hang up: (listeners, seconds)."""
    loop = asyncio.get_running_loop()
    host = f"127.0.0.1:{port}"
    listeners = [Listener(tracks[i % len(tracks)], host, args.buffer, args.ahead) for i in range(args.listeners)]
    started = time.monotonic()

    async def connect(listener: Listener) -> None:
        try:
            await loop.create_connection(lambda: listener, "127.0.0.1", port)
        except OSError as exc:
            listener.error = f"connect: {exc}"

    await asyncio.gather(*(connect(li) for li in listeners))
    while time.monotonic() - started < args.seconds:
        await asyncio.sleep(TICK)
        now = time.monotonic()
        for listener in listeners:
            listener.tick(now)
    for listener in listeners:
        listener.hung_up = True
        if listener.transport is not None:
            listener.transport.close()
    return listeners, time.monotonic() - started


def measure(name: str, tracks: list[Track], port: int, pids: list[int], tree_root: int,
            args: argparse.Namespace) -> Outcome:
    """One server's run of listeners, with its CPU time and the RSS of its process tree."""
    print(f"[{name}] {args.listeners} listeners for {args.seconds} s (load average {load_average()})", flush=True)
    cpu0, mine0 = cpu_seconds(pids), time.process_time()
    with RssSampler(tree_root) as rss:
        listeners, seconds = asyncio.run(listen(tracks, port, args))
    outcome = Outcome(listeners, seconds, cpu_seconds(pids) - cpu0, time.process_time() - mine0,
                      rss.tree_peak, rss.root_peak, [li.error for li in listeners if li.error])
    print_outcome(name, outcome)
    return outcome


def print_outcome(name: str, o: Outcome) -> None:
    starts = [li.playing_since - li.opened for li in o.listeners if li.playing_since is not None]
    stalled = [li for li in o.listeners if li.stalls]
    got = sum(li.body for li in o.listeners)
    print(f"  {name}: {len(starts)} of {len(o.listeners)} playing; start-up p50 {percentile(starts, 50):.2f} s, "
          f"p99 {percentile(starts, 99):.2f} s, max {max(starts, default=float('nan')):.2f} s; "
          f"{len(stalled)} stalled ({sum(li.stalled_seconds for li in stalled):.1f} s in all); "
          f"{len(o.errors)} errors; {got / o.seconds / 1e6:.1f} MB/s received", flush=True)
    print(f"  {name}: server CPU {o.server_cpu / o.seconds:.3f} cores, peak RSS of its tree "
          f"{o.tree_rss / 2**20:.1f} MiB (its main process {o.root_rss / 2**20:.1f} MiB); "
          f"the listeners' CPU {o.client_cpu / o.seconds:.2f} cores; load average {load_average()}", flush=True)
    for error in sorted(set(o.errors))[:5]:
        print(f"    error: {error}")


def make_library(tmp: Path, args: argparse.Namespace) -> Path:
    """One mp3 hard-linked at --tracks paths (a track id each; one file in the page cache)."""
    library = tmp / "library"
    library.mkdir()
    first = library / "t0000.mp3"
    make_mp3(first, args.mp3_seconds)
    for i in range(1, args.tracks):
        os.link(first, library / f"t{i:04d}.mp3")
    print(f"library: {args.tracks} links of one {first.stat().st_size / 1e6:.2f} MB mp3 ({args.mp3_seconds} s)")
    return library


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if not found:
        raise BenchError("nginx is missing: apt-get install -y nginx-light (this script installs nothing)")
    return found


def run_nginx(tmp: Path, library: Path, procs: list[Proc], args: argparse.Namespace) -> Outcome:
    ngx, workers, port = start_nginx(tmp, library, nginx_binary(), procs)
    size = (library / "t0000.mp3").stat().st_size
    rate = size / args.mp3_seconds  # the encoder's duration: what the catalog measures too
    tracks = [Track(f"/t{i:04d}.mp3", rate, size) for i in range(args.tracks)]
    outcome = measure("nginx", tracks, port, [ngx.pid, *workers], ngx.pid, args)
    ngx.stop()
    return outcome


def run_ours(tmp: Path, library: Path, procs: list[Proc], args: argparse.Namespace) -> Outcome:
    extra = ("--event-loop", args.event_loop) if args.event_loop else ()
    ours, base = start_server(library, tmp / "data", tmp / "ours.out", procs, extra)
    items = wait_scan(base, ours, expected=min(args.tracks, 500), timeout=120)
    settle(ours.pid)
    tracks = [Track(f"/stream/{t['id']}", t["size"] / t["duration"], t["size"]) for t in items]
    outcome = measure("ours", tracks, int(base.rsplit(":", 1)[1]), [ours.pid], ours.pid, args)
    ensure_alive(ours, " during the run")
    return outcome


def rows(table: Summary, ngx: Outcome, ours: Outcome, args: argparse.Namespace) -> None:
    def stalled(o: Outcome) -> int:
        return sum(1 for li in o.listeners if li.stalls)

    def starts(o: Outcome, q: float) -> str:
        return f"{percentile([li.playing_since - li.opened for li in o.listeners if li.playing_since], q):.2f} s"

    table.check(stalled(ours) <= TARGET_STALLED, "listeners that stalled", str(stalled(ngx)), str(stalled(ours)),
                "", f"{TARGET_STALLED} (ours)")
    table.check(not ours.errors, "listeners with an error", str(len(ngx.errors)), str(len(ours.errors)), "", "0 (ours)")
    table.info("start-up (buffer held), p50", starts(ngx, 50), starts(ours, 50))
    table.info("start-up (buffer held), p99", starts(ngx, 99), starts(ours, 99))
    per = [o.server_cpu / o.seconds for o in (ngx, ours)]
    table.info("server CPU, cores", f"{per[0]:.3f}", f"{per[1]:.3f}", f"{per[1] / per[0]:.1f}" if per[0] else "")
    table.info("peak RSS of the server's process tree", f"{ngx.tree_rss / 2**20:.1f} MiB",
               f"{ours.tree_rss / 2**20:.1f} MiB")
    table.info("  of it, the server process", f"{ngx.root_rss / 2**20:.1f} MiB (master)",
               f"{ours.root_rss / 2**20:.1f} MiB")


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    tmp.chmod(0o755)  # nginx's worker runs as nobody when started by root: it must read the library
    load = load_average()
    print(f"listeners_bench: {args.listeners} listeners, {args.seconds} s each server, buffer {args.buffer} s, "
          f"read-ahead {args.ahead} s; {os.cpu_count()} cores shared by the servers and the listeners; "
          f"load average {load}", flush=True)
    library = make_library(tmp, args)
    ngx = run_nginx(tmp, library, procs, args)
    ours = run_ours(tmp, library, procs, args)
    table = Summary(("metric", "nginx", "ours", "ours/nginx", "target", "result"))
    rows(table, ngx, ours, args)
    return table.finish(f"SUMMARY ({args.listeners} listeners, {args.seconds} s; load average {load} at the start, "
                        f"{load_average()} at the end)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listeners", type=int, default=1000, help="listeners at once (default 1000)")
    ap.add_argument("--seconds", type=float, default=60, help="how long they listen, per server (default 60)")
    ap.add_argument("--tracks", type=int, default=100, help="distinct track ids they ask for (default 100)")
    ap.add_argument("--buffer", type=float, default=2.0, help="seconds of audio held before playing (default 2)")
    ap.add_argument("--ahead", type=float, default=10.0, help="most seconds read ahead of the playhead (default 10)")
    ap.add_argument("--mp3-seconds", type=int, default=160, help="length of the mp3 (160 s ~ 5 MB)")
    ap.add_argument("--event-loop", choices=("asyncio", "uvloop"), default=None,
                    help="our server's event loop (default: its own default, the event_loop setting's)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs, nginx.conf)")
    args = ap.parse_args()
    raise_descriptor_limit(args.listeners * 2 + 256)  # the listeners' sockets, and the servers' (inherited)
    return run_bench("listeners_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
