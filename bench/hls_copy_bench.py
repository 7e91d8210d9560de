#!/usr/bin/env python3
"""Cold segments of the `original` (copy) HLS variant of a long mp3: time and peak RSS (info).

Makes (or takes, with --source) a 60-minute 192 kbit/s mp3 (~86 MB; about a minute of
ffmpeg), starts our server over it, asks for segment 0 of the original variant (which
extracts the track's frames into the cache, measured as below) and restarts the server, so the frames are on
disk and nothing is in memory. Then, each on that fresh server: the last segment (the first
cold segment of the track since the start), the one before it, and one in the middle. For
each: the time from request to full body, and how far the server's peak RSS (VmHWM, reset
through /proc/PID/clear_refs before each request) rose above its RSS before it.

    python bench/hls_copy_bench.py [--source FILE.mp3] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import BenchError, ffmpeg_exe, run_bench, start_server, wait_scan


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as resp:
        return resp.read()


def _segment_urls(base: str, track: dict) -> list[str]:
    master = _get(f"{base}/hls/{track['id']}/master.m3u8").decode()
    uri = next(line for line in master.splitlines() if "/original/" in line)
    playlist = _get(f"{base}/hls/{track['id']}/{uri}").decode()
    folder = f"{base}/hls/{track['id']}/{uri.rsplit('/', 1)[0]}"
    return [f"{folder}/{line}" for line in playlist.splitlines() if line and not line.startswith("#")]


def _measure(pid: int, url: str) -> tuple[float, float, int]:
    """Seconds, MiB of peak RSS over the RSS before, and the body's size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib(pid, "VmRSS")
    started = time.perf_counter()
    body = _get(url)
    seconds = time.perf_counter() - started
    return seconds, (_status_kib(pid, "VmHWM") - before) / 1024, len(body)


def body(args: argparse.Namespace, work: Path, procs: list) -> int:
    library = work / "music"
    library.mkdir()
    source = library / "long.mp3"
    if args.source:
        shutil.copyfile(args.source, source)  # not a link: the scanner keeps to the library
    else:
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3600",
                        "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "192k", str(source)], check=True)
    print(f"source: {source.stat().st_size / 1e6:.1f} MB", flush=True)
    server, base = start_server(library, work / "data", work / "server1.log", procs)
    track = wait_scan(base, server, 1)[0]
    urls = _segment_urls(base, track)
    seconds, peak, size = _measure(server.pid, urls[0])  # extracts the frames into the cache
    print(f"segment 0, extracting the frames ({size} bytes): {seconds * 1000:.0f} ms, peak RSS +{peak:.1f} MiB",
          flush=True)
    server.stop()  # stores what was made; the next server starts with nothing in memory
    server, base = start_server(library, work / "data", work / "server2.log", procs, ("--no-scan-on-start",))
    urls = _segment_urls(base, track)  # the catalog kept in the data folder
    for name, index in (("last", len(urls) - 1), ("before last", len(urls) - 2), ("middle", len(urls) // 2)):
        seconds, peak, size = _measure(server.pid, urls[index])
        print(f"cold {name} segment ({index} of {len(urls)}, {size} bytes): {seconds * 1000:.0f} ms, "
              f"peak RSS +{peak:.1f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="a long mp3 to use instead of making one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args()
    sys.exit(run_bench("hls_copy_bench", options.keep, lambda work, procs: body(options, work, procs)))
