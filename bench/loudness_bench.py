#!/usr/bin/env python3
"""Loudness analysis benchmark: the background job (media.loudness) against a plain ffmpeg loop.

Makes a library of --tracks real files (default 24: --seconds each, default 60 s, of tones at
different levels, half mp3 and half flac, 12 to an album; not timed) and scans it into a fresh
catalog. Reference: a one-process loop of `ffmpeg -i FILE -af ebur128=peak=true -f null -` over the
same files, one after another, the summary read from stderr. Ours: `LoudnessJob.run_pass()`
through an FfmpegPool, one track at a time as the server runs it (the pool's ordering and pausing
in play, nobody else asking), then its albums; the catalog's measurements are cleared before each
run. The sides alternate, --repeat rounds each (one untimed reference run first warms the page
cache); the best of each counts. Target: ours/reference >= 0.9 (tracks/s): the job's bookkeeping
(parsing, saving, the album pass) costs little next to decoding.

Run with the project's Python:  python bench/loudness_bench.py [--tracks 24] [--seconds 60]
Exit status: 0 when the target passes, 1 when it fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from common import BenchError, Summary, ffmpeg_exe, run_bench  # bench/ is on sys.path as a script

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_RATIO = 0.9
FORMATS = {".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"], ".flac": ["-c:a", "flac"]}


def make_library(root: Path, tracks: int, seconds: float) -> list[Path]:
    """`tracks` files of tones at levels from -30 to 0 dB, 12 to an album (not timed)."""
    ffmpeg, files = ffmpeg_exe(), []
    for i in range(tracks):
        ext = list(FORMATS)[i % 2]
        path = root / f"Album {i // 12:02d}" / f"{i % 12 + 1:02d} Tone {i}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
                               f"sine=frequency={220 + 20 * i}:duration={seconds}", "-ac", "2", "-af",
                               f"volume={-30 + 30 * (i % 7) / 6:.1f}dB", *FORMATS[ext], "-metadata",
                               f"album=Album {i // 12:02d}", "-metadata", f"title=Tone {i}", str(path)],
                              capture_output=True)
        if done.returncode != 0:
            raise BenchError(f"ffmpeg could not make {path.name}: {done.stderr.decode(errors='replace')[-500:]}")
        files.append(path)
    return files


def reference_loop(ffmpeg: str, files: list[Path]) -> float:
    """Plain ffmpeg ebur128 over every file, one after another; its wall time."""
    started = time.perf_counter()
    for path in files:
        err = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-i", str(path), "-af", "ebur128=peak=true",
                              "-f", "null", "-"], capture_output=True, text=True).stderr
        if "Integrated loudness" not in err:
            raise BenchError(f"plain ffmpeg gave no summary for {path.name}")
    return time.perf_counter() - started


async def scanned(library: Path, db: Path):
    from media import Catalog, Scanner

    catalog = Catalog(db, synchronous="normal")
    progress = await Scanner(library, catalog, workers=1).scan()
    if progress.state != "done":
        raise BenchError(f"the scan ended {progress.state}: {progress.error}")
    return catalog


async def our_pass(catalog, library: Path, ffmpeg: str) -> tuple[float, int]:
    """The job's pass over every track, measurements cleared first: (wall time, tracks measured)."""
    from media import FfmpegPool
    from media.loudness import LoudnessJob

    await catalog.db.write(lambda db: db.execute("UPDATE tracks SET loudness_of = NULL"))
    job = LoudnessJob(catalog, FfmpegPool(ffmpeg, slots=2 * (os.cpu_count() or 1), queue_seconds=60), library)
    started = time.perf_counter()
    count = await job.run_pass()
    elapsed = time.perf_counter() - started
    if job.failed:
        raise BenchError(f"the job could not measure {job.failed} tracks")
    return elapsed, count


async def rounds(args: argparse.Namespace, tmp: Path, files: list[Path]) -> tuple[list[float], list[float]]:
    ffmpeg, library = ffmpeg_exe(), tmp / "library"
    catalog = await scanned(library, tmp / "catalog.db")
    try:
        reference_loop(ffmpeg, files)  # warm, untimed
        ref_times, our_times = [], []
        for i in range(args.repeat):
            ref_times.append(await asyncio.to_thread(reference_loop, ffmpeg, files))
            elapsed, count = await our_pass(catalog, library, ffmpeg)
            if count != len(files):
                raise BenchError(f"the job measured {count} of {len(files)} tracks")
            our_times.append(elapsed)
            print(f"  round {i + 1}: reference {len(files) / ref_times[-1]:6.2f} tracks/s   "
                  f"ours {len(files) / elapsed:6.2f} tracks/s", flush=True)
        return ref_times, our_times
    finally:
        catalog.close()


def run(args: argparse.Namespace, tmp: Path) -> int:
    t_start = time.monotonic()
    files = make_library(tmp / "library", args.tracks, args.seconds)
    print(f"loudness_bench: {len(files)} tracks of {args.seconds:g} s ({os.cpu_count()} cores), "
          f"made in {time.monotonic() - t_start:.1f}s (not timed). Temp folder {tmp}", flush=True)
    ref_times, our_times = asyncio.run(rounds(args, tmp, files))
    ref_tps, our_tps = len(files) / min(ref_times), len(files) / min(our_times)
    table = Summary()
    table.check(our_tps / ref_tps >= TARGET_RATIO, f"loudness, {len(files)} tracks (tracks/s)", f"{ref_tps:.2f}",
                f"{our_tps:.2f}", f"{our_tps / ref_tps:.2f}", f">= {TARGET_RATIO}")
    table.info("  audio seconds measured per second", f"{ref_tps * args.seconds:.0f}",
               f"{our_tps * args.seconds:.0f}")
    return table.finish(f"\nSUMMARY (best of {args.repeat}; reference = plain `ffmpeg -af ebur128=peak=true` "
                        f"loop; total {time.monotonic() - t_start:.0f}s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=24, help="tracks in the library")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each track")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the best counts")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    return run_bench("loudness_bench", args.keep, lambda tmp, _procs: run(args, tmp))


if __name__ == "__main__":
    sys.exit(main())
