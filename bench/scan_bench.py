#!/usr/bin/env python3
"""Library scan benchmark: our Scanner against plain mutagen, and a no-change rescan against os.walk.

1. Full scan. Makes a library of --files real audio files (default 2,400: base files of ~1.5 s in
   mp3, flac, ogg vorbis, opus and m4a made with imageio-ffmpeg's ffmpeg, copied to
   `Artist N/Album M/NN Title.ext` and re-tagged one by one with mutagen, so every file has its
   own tags; generation is not timed). Reference: a single-process loop `mutagen.File(p)` reading
   `.info.length` of every file. Ours: `Scanner(library, Catalog(db), workers=0).scan()` in this
   process, into a fresh catalog. The reference runs once untimed first (warm page cache), then
   both are timed, --repeat times each, best taken. Target: ours/reference >= 1.5 (files/s).

2. No-change rescan. Makes --rescan-files files (default 20,000) as hard links of a few tiny base
   files at distinct paths (equal tags, which is fine for a rescan), scans them once (untimed),
   then times a second scan with nothing changed (target < 1 s) and, as the reference, a bare
   `os.walk` + `os.stat` of the same tree.

Run with the project's Python:  python bench/scan_bench.py [--files 2400] [--rescan-files 20000]
Exit status: 0 when every target passes, 1 when one fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    BenchError, Summary, ffmpeg_exe, run_bench,
)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_SCAN_RATIO = 1.5
TARGET_RESCAN_SECONDS = 1.0

# extension -> ffmpeg encoder arguments
FORMATS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "3"],
    "opus": ["-c:a", "libopus", "-b:a", "64k"],
    "m4a": ["-c:a", "aac", "-b:a", "128k"],
}
GENRES = ["Rock", "Jazz", "Ambient", "Folk", "Electronic", "Classical", "Pop", "Blues"]


# --- making libraries ---------------------------------------------------------------------------



def make_bases(folder: Path, seconds: float) -> list[Path]:
    """One small real file per format (plus a second mp3, mono), each with a full set of tags."""
    ffmpeg = ffmpeg_exe()
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(f"base.{ext}", args, 440 + 110 * i, 2) for i, (ext, args) in enumerate(FORMATS.items())]
    jobs.append(("base_mono.mp3", ["-c:a", "libmp3lame", "-b:a", "96k"], 330, 1))
    out = []
    for name, args, freq, channels in jobs:
        path = folder / name
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
               "-i", f"sine=frequency={freq}:duration={seconds}", "-ac", str(channels),
               *args, "-metadata", "title=Base", "-metadata", "artist=Base Artist",
               "-metadata", "album=Base Album", "-metadata", "track=1",
               "-metadata", "date=2000", "-metadata", "genre=Test", str(path)]
        done = subprocess.run(cmd, capture_output=True, timeout=120)
        if done.returncode != 0 or not path.exists():
            raise BenchError(f"ffmpeg failed for {name}: {done.stderr.decode(errors='replace')[-1500:]}")
        out.append(path)
    return out


def layout(n: int, bases: list[Path], tracks_per_album: int = 12, albums_per_artist: int = 4):
    """(relative path, base, tags) for n files: Artist A/Album B/NN Title.ext."""
    for i in range(n):
        album_no, track = divmod(i, tracks_per_album)
        artist, album = divmod(album_no, albums_per_artist)
        base = bases[album_no % len(bases)]  # one format per album, like real libraries
        ext = base.suffix
        rel = f"Artist {artist:04d}/Album {album:02d}/{track + 1:02d} Title {i}{ext}"
        tags = {"title": f"Title {i}", "artist": f"Artist {artist:04d}",
                "album": f"Album {artist:04d}-{album:02d}", "tracknumber": str(track + 1),
                "date": str(1960 + album_no % 60), "genre": GENRES[album_no % len(GENRES)]}
        yield rel, base, tags


def make_tagged_library(root: Path, n: int, bases: list[Path]) -> list[Path]:
    import mutagen

    files = []
    for rel, base, tags in layout(n, bases):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base, path)
        audio = mutagen.File(path, easy=True)
        if audio is None:
            raise BenchError(f"mutagen does not recognise {path}")
        if audio.tags is None:
            audio.add_tags()
        for key, value in tags.items():
            audio[key] = value
        audio.save()
        files.append(path)
    return files


def make_linked_library(root: Path, n: int, bases: list[Path]) -> int:
    for rel, base, _ in layout(n, bases, tracks_per_album=10, albums_per_artist=10):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(base, path)
        except OSError:
            shutil.copyfile(base, path)
    return n


# --- what is timed ----------------------------------------------------------------------------

def reference_read(files: list[Path]) -> float:
    import mutagen

    total = 0.0
    for p in files:
        audio = mutagen.File(p)
        total += audio.info.length
    return total


def our_scan(library: Path, db: Path, expect_added: int | None = None,
             expect_unchanged: int | None = None):
    from media import Catalog, Scanner

    marks: dict[str, float] = {}

    def on_progress(p) -> None:  # phase marks: walk done, first tags back, last tags back
        now = time.perf_counter()
        if p.state == "reading":
            marks.setdefault("walked", now)
            if p.read and "first_read" not in marks:
                marks["first_read"] = now
            if p.read == p.to_read:
                marks.setdefault("all_read", now)

    catalog = Catalog(db)
    try:
        t0 = time.perf_counter()
        progress = asyncio.run(Scanner(library, catalog, workers=0, on_progress=on_progress).scan())
        elapsed = time.perf_counter() - t0
    finally:
        catalog.close()
    walked = marks.get("walked", t0)
    all_read = marks.get("all_read", walked)
    progress.phases = {  # type: ignore[attr-defined]
        "walk+diff": walked - t0,
        "first tags back": marks.get("first_read", walked) - walked,
        "reading": all_read - walked,
        "save+regroup": t0 + elapsed - all_read,
    }
    if progress.state != "done":
        raise BenchError(f"our scan ended in state {progress.state!r}: {progress.error}")
    if expect_added is not None and progress.added != expect_added:
        raise BenchError(f"our scan added {progress.added} files, expected {expect_added} "
                         f"(skipped {progress.skipped}: {progress.problems[:3]})")
    if expect_unchanged is not None and (progress.unchanged != expect_unchanged or progress.to_read):
        raise BenchError(f"rescan: {progress.unchanged} unchanged and {progress.to_read} to read, "
                         f"expected {expect_unchanged} unchanged and none to read")
    return elapsed, progress


def phases(progress) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in getattr(progress, "phases", {}).items())


def walk_stat(root: Path) -> int:
    n = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            os.stat(os.path.join(folder, name))
            n += 1
    return n


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


# --- the two comparisons -------------------------------------------------------------------------

def make_full_library(args: argparse.Namespace, tmp: Path, library: Path) -> list[Path]:
    """The full scan's tagged library (not timed); its files."""
    t0 = time.monotonic()
    bases = make_bases(tmp / "bases", args.seconds)
    files = make_tagged_library(library, args.files, bases)
    size = sum(p.stat().st_size for p in files)
    print(f"[full scan] library: {len(files)} files ({size / 1e6:.1f} MB; "
          f"{', '.join(sorted({p.suffix for p in files}))}), made in {time.monotonic() - t0:.1f}s "
          f"(not timed)", flush=True)
    return files


def time_full_scans(files: list[Path], library: Path, tmp: Path, repeat: int) -> tuple[list[float], list[float]]:
    """`repeat` rounds of the reference loop then our scan into a fresh catalog: their times."""
    reference_read(files)  # warm the page cache and mutagen's imports, untimed
    ref_times, our_times = [], []
    for i in range(repeat):
        elapsed, _ = timed(reference_read, files)
        ref_times.append(elapsed)
        print(f"  reference run {i + 1}: mutagen.File loop  {elapsed:7.3f}s  "
              f"{len(files) / elapsed:8.0f} files/s", flush=True)
        db = tmp / f"catalog-{i}.db"
        elapsed, progress = our_scan(library, db, expect_added=len(files))
        our_times.append(elapsed)
        print(f"  ours run {i + 1}:      Scanner.scan()     {elapsed:7.3f}s  "
              f"{len(files) / elapsed:8.0f} files/s  (state {progress.state}, added {progress.added}; "
              f"{phases(progress)})",
              flush=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    return ref_times, our_times


def full_scan(args: argparse.Namespace, tmp: Path, table: Summary) -> None:
    """[full scan]: our Scanner against a one-process mutagen loop, files/s of the best runs."""
    library = tmp / "library"
    files = make_full_library(args, tmp, library)
    ref_times, our_times = time_full_scans(files, library, tmp, args.repeat)
    ref_fps = len(files) / min(ref_times)
    our_fps = len(files) / min(our_times)
    scan_ratio = our_fps / ref_fps
    table.check(scan_ratio >= TARGET_SCAN_RATIO, f"full scan, {len(files)} files (files/s)", f"{ref_fps:.0f}",
                f"{our_fps:.0f}", f"{scan_ratio:.2f}", f">= {TARGET_SCAN_RATIO}")
    # Each reference run is paired with the scan right after it: the median of those ratios
    # is steadier on a shared machine than the ratio of the best runs.
    paired = statistics.median(r / o for r, o in zip(ref_times, our_times))
    table.info("  median of paired runs", "", "", f"{paired:.2f}")
    shutil.rmtree(library, ignore_errors=True)


def make_rescan_library(tmp: Path, files: int) -> tuple[Path, Path, int]:
    """The rescan's library of hard links, scanned once (not timed): (its root, its catalog, files)."""
    t0 = time.monotonic()
    tiny = make_bases(tmp / "tiny", 0.2)
    big = tmp / "big"
    n = make_linked_library(big, files, tiny)
    db = tmp / "big.db"
    first, progress = our_scan(big, db, expect_added=n)
    print(f"\n[rescan] library: {n} hard links of {len(tiny)} tiny files, made in "
          f"{time.monotonic() - t0 - first:.1f}s; first scan (not timed) {first:.1f}s "
          f"({n / first:.0f} files/s; {phases(progress)})", flush=True)
    return big, db, n


def rescan(args: argparse.Namespace, tmp: Path, table: Summary) -> None:
    """[rescan]: a scan with nothing changed against a bare os.walk + os.stat, best runs."""
    big, db, n = make_rescan_library(tmp, args.rescan_files)
    walk_times, rescan_times = [], []
    walk_stat(big)  # warm, untimed
    for i in range(args.repeat):
        elapsed, count = timed(walk_stat, big)
        walk_times.append(elapsed)
        print(f"  reference run {i + 1}: os.walk + os.stat  {elapsed:7.3f}s  ({count} files)", flush=True)
        elapsed, progress = our_scan(big, db, expect_added=0, expect_unchanged=n)
        rescan_times.append(elapsed)
        print(f"  ours run {i + 1}:      no-change rescan    {elapsed:7.3f}s  "
              f"(unchanged {progress.unchanged}, to read {progress.to_read}; {phases(progress)})", flush=True)
    walk_best, rescan_best = min(walk_times), min(rescan_times)
    table.check(rescan_best < TARGET_RESCAN_SECONDS, f"no-change rescan, {n} files (s)", f"{walk_best:.3f}",
                f"{rescan_best:.3f}", f"{rescan_best / walk_best:.2f}", f"< {TARGET_RESCAN_SECONDS:g} s")


# --- main -------------------------------------------------------------------------------------

def run(args: argparse.Namespace, tmp: Path) -> int:
    """The benchmark proper, in the temp folder `tmp`: 0 when every target passes, 1 when one fails
    (BenchError when it cannot run)."""
    t_start = time.monotonic()
    cores = os.cpu_count()
    print(f"scan_bench: {cores} cores (Scanner(workers=0) uses one worker process per core; "
          f"the reference is one process). Temp folder {tmp}", flush=True)
    table = Summary()
    full_scan(args, tmp, table)
    if not args.skip_rescan:
        rescan(args, tmp, table)
    return table.finish(f"\nSUMMARY (best of {args.repeat}; reference = 1-process mutagen loop / bare "
                        f"os.walk+stat; {cores} cores; total {time.monotonic() - t_start:.0f}s)",
                        "  (full scan: ours/ref is the files/s ratio; rescan: ours/ref is the time ratio)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2400, help="files of the full-scan library (>= 2000)")
    ap.add_argument("--rescan-files", type=int, default=20000, help="files of the no-change rescan library")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the best counts")
    ap.add_argument("--seconds", type=float, default=1.5, help="length of the full-scan base files")
    ap.add_argument("--skip-rescan", action="store_true", help="only the full-scan comparison")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    return run_bench("scan_bench", args.keep, lambda tmp, _procs: run(args, tmp))


if __name__ == "__main__":
    sys.exit(main())
