#!/usr/bin/env python3
"""Library scan benchmark: our Scanner against plain mutagen, a no-change rescan against os.walk,
and (--scale) a real server's scans of 2,000 to 200,000 files with the memory they take.

1. Full scan, at each size of --files (default 2,400 and 20,000). Makes a library of real audio
   files (base files of ~1.5 s in mp3, flac, ogg vorbis, opus and m4a made with imageio-ffmpeg's
   ffmpeg, copied to `Artist N/Album M/NN Title.ext` and re-tagged one by one with mutagen, so
   every file has its own tags; not timed). Reference: a single-process loop `mutagen.File(p)`
   reading `.info.length` of every file. Ours: `Scanner(library, Catalog(db), workers=0).scan()`
   in this process, into a fresh catalog. Each side runs once untimed (warm page cache, imports),
   then --rounds rounds of the reference, ours, and the reference loop split over
   two forked processes (what two processes get from the machine at that moment, with no messages
   and no saving: the ceiling of any two-process scan). Target: the median over rounds of
   ours/reference (files/s) >= 1.6. Each run of ours prints where its time went
   (walk, first tags back, reading, the last save and regroup) and the CPU time of this process
   (event loop, catalog writer, executor threads) and of the reader processes it forked (each
   scan forks its own and ends with them gone, so every run of ours pays their start), beside
   the reference's.

2. No-change rescan. Makes --rescan-files files (default 20,000) as hard links of a few tiny base
   files at distinct paths (equal tags, which is fine for a rescan), scans them once (untimed),
   then times a second scan with nothing changed (target < 1 s) and, as the reference, a bare
   `os.walk` + `os.stat` of the same tree.

3. Scale (--scale 2000,20000,200000; off by default). For each size, a library of tiny real mp3
   files (one 0.2 s mp3 encoded once; each file its audio behind an ID3v2.3 tag of its own, written
   directly: 200,000 files in about a minute), then a real `run.py serve` on it: with a fresh data
   folder its start-up scan is a first scan; started again on the same data folder, a no-change
   rescan. For each: the scan's own seconds (GET /api/v1/library/scan), the peak RSS (VmHWM) of the
   server and of each reader process it forks, and the latency of the server's answers
   to that GET, asked every 0.1 s during the scan. References: the mutagen loop and os.walk + stat
   over the same files, in this process. Targets: none (the slope is the figure), but every answer
   during a scan within 0.5 s.

Run with the project's Python:  python bench/scan_bench.py [--files 2400,20000] [--scale 2000,20000]
Exit status: 0 when every target passes, 1 when one fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import (  # bench/ is on sys.path when a benchmark runs as a script
    BenchError, Proc, Summary, alternating_rounds, ffmpeg_exe, load_average, paired_median, percentile,
    print_table, ratio, run_bench, start_server,
)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_SCAN_RATIO = 1.6
TARGET_RESCAN_SECONDS = 1.0
TARGET_ANSWER_SECONDS = 0.5  # the server's answers during a scan (--scale)
CLOCK = os.sysconf("SC_CLK_TCK")

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


def make_tiny_mp3(folder: Path) -> bytes:
    """The audio of a 0.2 s mono mp3 (its MPEG frames, no tag), encoded once."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.mp3"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=0.2", "-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k",
           "-id3v2_version", "0", "-write_xing", "0", str(path)]
    done = subprocess.run(cmd, capture_output=True, timeout=120)
    if done.returncode != 0 or not path.exists():
        raise BenchError(f"ffmpeg failed for the tiny mp3: {done.stderr.decode(errors='replace')[-1500:]}")
    audio = path.read_bytes()
    if audio[:3] == b"ID3":  # an ffmpeg that writes a tag anyway: drop it (syncsafe size)
        audio = audio[10 + sum(b << (7 * (3 - i)) for i, b in enumerate(audio[6:10])):]
    return audio


ID3_FRAMES = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "tracknumber": "TRCK", "date": "TYER",
              "genre": "TCON"}


def id3v23(tags: dict[str, str]) -> bytes:
    """An ID3v2.3 tag of Latin-1 text frames (what mutagen reads like any tagger's)."""
    frames = b"".join(ID3_FRAMES[key].encode() + struct.pack(">IH", len(value) + 1, 0) + b"\0"
                      + value.encode("latin-1") for key, value in tags.items())
    size = len(frames)
    return b"ID3\x03\x00\x00" + bytes((size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F, size & 0x7F)) + frames


def make_tiny_library(root: Path, n: int, audio: bytes) -> None:
    """n tiny real mp3 files, each with tags of its own, written directly (no encoder, no mutagen)."""
    made: set[Path] = set()
    for rel, _base, tags in layout(n, [Path("tiny.mp3")]):
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(id3v23(tags) + audio)


# --- processes: CPU and memory from /proc -----------------------------------------------------

def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    return found


def children_cpu() -> float:
    """CPU seconds of this process's children that have been reaped: a scan ends with its reader
    processes gone and reaped, so a scan's difference is the CPU of all it started."""
    times = os.times()
    return times.children_user + times.children_system


def peak_kib(pid: int) -> int | None:
    """VmHWM of a process (its peak resident set), in KiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pss_kib(pid: int) -> int:
    """A process's proportional set size (its private pages plus its share of the shared ones: a
    scan's readers are forks of the server and share its pages), in KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


# --- what is timed ----------------------------------------------------------------------------

def reference_read(files: list[Path]) -> float:
    import mutagen

    total = 0.0
    for p in files:
        audio = mutagen.File(p)
        total += audio.info.length
    return total


def split_read(files: list[Path], processes: int) -> None:
    """The reference loop split over `processes` forked processes, each reading every n-th file:
    what the machine gives two processes at that moment, with nothing else to do (no messages,
    no saving). On a shared machine it can be far from 2x: another process busy on one core
    leaves both with less."""
    pids = []
    for k in range(processes):
        pid = os.fork()
        if pid == 0:  # the child reads its share and leaves at once (no clean-up of the parent's)
            code = 1
            try:
                reference_read(files[k::processes])
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    if any(os.waitpid(pid, 0)[1] for pid in pids):
        raise BenchError("a process of the split reference loop failed")


def scan_marks(marks: dict[str, float]):
    """An on_progress callback that notes the phases: walk done, first tags back, last tags back."""
    def on_progress(p) -> None:
        now = time.perf_counter()
        if p.state == "reading":
            marks.setdefault("walked", now)
            if p.read and "first_read" not in marks:
                marks["first_read"] = now
            if p.read == p.to_read:
                marks.setdefault("all_read", now)
    return on_progress


def our_scan(library: Path, db: Path, expect_added: int | None = None,
             expect_unchanged: int | None = None):
    """Scanner(workers=0).scan() into the catalog at db: (seconds, progress, CPU seconds of this
    process); progress.phases says where the time went."""
    from media import Catalog, Scanner

    marks: dict[str, float] = {}
    catalog = Catalog(db)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        progress = asyncio.run(Scanner(library, catalog, workers=0, on_progress=scan_marks(marks)).scan())
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
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
    check_scan(progress, expect_added, expect_unchanged)
    return elapsed, progress, cpu


def check_scan(progress, expect_added: int | None, expect_unchanged: int | None) -> None:
    if progress.state != "done":
        raise BenchError(f"our scan ended in state {progress.state!r}: {progress.error}")
    if expect_added is not None and progress.added != expect_added:
        raise BenchError(f"our scan added {progress.added} files, expected {expect_added} "
                         f"(skipped {progress.skipped}: {progress.problems[:3]})")
    if expect_unchanged is not None and (progress.unchanged != expect_unchanged or progress.to_read):
        raise BenchError(f"rescan: {progress.unchanged} unchanged and {progress.to_read} to read, "
                         f"expected {expect_unchanged} unchanged and none to read")


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


def fresh_db(db: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


# --- 1. the full scan against the mutagen loop --------------------------------------------------

def make_full_library(bases: list[Path], library: Path, n: int) -> list[Path]:
    """The full scan's tagged library (not timed); its files."""
    t0 = time.monotonic()
    files = make_tagged_library(library, n, bases)
    size = sum(p.stat().st_size for p in files)
    print(f"\n[full scan, {n} files] library: {len(files)} files ({size / 1e6:.1f} MB; "
          f"{', '.join(sorted({p.suffix for p in files}))}), made in {time.monotonic() - t0:.1f}s "
          f"(not timed); load average {load_average()}", flush=True)
    return files


def measure_full_scan(side: str, files: list[Path], library: Path, db: Path) -> dict:
    """One timed run of a side: its files/s, seconds and CPU seconds (ours: this process's and the
    workers')."""
    if side == "2 processes":
        elapsed, _ = timed(split_read, files, 2)
        print(f"  mutagen.File loop in 2 processes {elapsed:7.3f}s {len(files) / elapsed:7.0f} files/s", flush=True)
        return {"fps": len(files) / elapsed, "seconds": elapsed}
    if side == "reference":
        t0, cpu0 = time.perf_counter(), time.process_time()
        reference_read(files)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print(f"  reference: mutagen.File loop {elapsed:7.3f}s {len(files) / elapsed:7.0f} files/s, "
              f"CPU {cpu:.2f}s", flush=True)
        return {"fps": len(files) / elapsed, "seconds": elapsed, "cpu": cpu}
    before = children_cpu()
    elapsed, progress, cpu = our_scan(library, fresh_db(db), expect_added=len(files))
    workers = children_cpu() - before
    print(f"  ours:      Scanner.scan()    {elapsed:7.3f}s {len(files) / elapsed:7.0f} files/s, "
          f"CPU {cpu:.2f}s here + {workers:.2f}s workers ({phases(progress)})", flush=True)
    return {"fps": len(files) / elapsed, "seconds": elapsed, "cpu": cpu + workers, "workers": workers}


def full_scan(args: argparse.Namespace, bases: list[Path], tmp: Path, table: Summary, n: int) -> None:
    """[full scan]: our Scanner against a one-process mutagen loop, in paired rounds."""
    library = tmp / f"library-{n}"
    files = make_full_library(bases, library, n)
    db = tmp / f"catalog-{n}.db"
    reference_read(files)  # untimed: warm page cache and mutagen's imports
    our_scan(library, fresh_db(db), expect_added=len(files))  # untimed, as the reference's first run
    runs = alternating_rounds(args.rounds, ("reference", "ours", "2 processes"),
                              lambda side, _: measure_full_scan(side, files, library, db), 0)
    refs, ours, split = runs["reference"], runs["ours"], runs["2 processes"]
    paired = paired_median(refs, ours, "fps")
    table.check(paired >= TARGET_SCAN_RATIO, f"first scan, {n} files, files/s: median of pairs",
                f"{statistics.median(r['fps'] for r in refs):.0f}",
                f"{statistics.median(o['fps'] for o in ours):.0f}", f"{paired:.2f}", f">= {TARGET_SCAN_RATIO}")
    best_ref, best_ours = max(r["fps"] for r in refs), max(o["fps"] for o in ours)
    table.info("  best of each side", f"{best_ref:.0f}", f"{best_ours:.0f}", f"{best_ours / best_ref:.2f}")
    table.info("  the machine's ceiling: the loop in 2 processes", f"{statistics.median(r['fps'] for r in refs):.0f}",
               f"{statistics.median(x['fps'] for x in split):.0f}", f"{paired_median(refs, split, 'fps'):.2f}")
    ref_cpu, our_cpu = statistics.median(r["cpu"] for r in refs), statistics.median(o["cpu"] for o in ours)
    table.info("  CPU per file, us (ours: all processes)", f"{ref_cpu / n * 1e6:.0f}", f"{our_cpu / n * 1e6:.0f}")
    cores = os.cpu_count() or 1  # ours on every core, nothing else running, no part of it in series:
    table.info(f"  the CPU's ceiling: {cores} x ref CPU / our CPU", "", "", f"{cores * ref_cpu / our_cpu:.2f}")
    shutil.rmtree(library, ignore_errors=True)


# --- 2. the no-change rescan against os.walk + os.stat --------------------------------------------

def make_rescan_library(tmp: Path, files: int) -> tuple[Path, Path, int]:
    """The rescan's library of hard links, scanned once (not timed): (its root, its catalog, files)."""
    t0 = time.monotonic()
    tiny = make_bases(tmp / "tiny", 0.2)
    big = tmp / "big"
    n = make_linked_library(big, files, tiny)
    db = tmp / "big.db"
    first, progress, _ = our_scan(big, db, expect_added=n)
    print(f"\n[rescan] library: {n} hard links of {len(tiny)} tiny files, made in "
          f"{time.monotonic() - t0 - first:.1f}s; first scan (not timed) {first:.1f}s "
          f"({n / first:.0f} files/s; {phases(progress)})", flush=True)
    return big, db, n


def rescan(args: argparse.Namespace, tmp: Path, table: Summary) -> None:
    """[rescan]: a scan with nothing changed against a bare os.walk + os.stat, best runs."""
    big, db, n = make_rescan_library(tmp, args.rescan_files)
    walk_times, rescan_times = [], []
    walk_stat(big)  # warm, untimed
    for i in range(args.rounds):
        elapsed, count = timed(walk_stat, big)
        walk_times.append(elapsed)
        print(f"  reference run {i + 1}: os.walk + os.stat  {elapsed:7.3f}s  ({count} files)", flush=True)
        elapsed, progress, _ = our_scan(big, db, expect_added=0, expect_unchanged=n)
        rescan_times.append(elapsed)
        print(f"  ours run {i + 1}:      no-change rescan    {elapsed:7.3f}s  "
              f"(unchanged {progress.unchanged}, to read {progress.to_read}; {phases(progress)})", flush=True)
    walk_best, rescan_best = min(walk_times), min(rescan_times)
    table.check(rescan_best < TARGET_RESCAN_SECONDS, f"no-change rescan, {n} files (s)", f"{walk_best:.3f}",
                f"{rescan_best:.3f}", f"{rescan_best / walk_best:.2f}", f"< {TARGET_RESCAN_SECONDS:g} s")
    shutil.rmtree(big, ignore_errors=True)


# --- 3. scale: a real server's scans, and their memory ------------------------------------------

class Watch:
    """While a server scans: the peak RSS of it and of the processes under it (the scan's reader
    processes), and how long it takes to answer GET /api/v1/library/scan, asked every 0.1 s."""

    def __init__(self, server: Proc, base: str) -> None:
        self.server, self.base = server, base
        self.kinds: dict[int, str] = {server.pid: "server"}
        self.peaks: dict[int, int] = {}
        self.tree_pss = 0  # the largest sum of their Pss seen
        self.answers: list[float] = []

    def until_done(self, timeout: float) -> dict:
        """Poll until the scan is done; its last progress."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server.alive():
                raise BenchError(f"our server exited:\n{self.server.log_tail()}")
            self._look()
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{self.base}/api/v1/library/scan", timeout=30) as resp:
                progress = json.loads(resp.read())
            self.answers.append(time.perf_counter() - t0)
            if progress["state"] == "done":
                self._look()
                return progress
            if progress["state"] in ("failed", "stopped"):
                raise BenchError(f"our scan ended in state {progress['state']!r}: {progress.get('error')}")
            time.sleep(0.1)
        raise BenchError(f"our scan not done within {timeout:.0f}s")

    def _look(self) -> None:
        """Note the processes under the server (pids above its own: they started after it), then
        the peak RSS of each."""
        for child in children(self.server.pid):
            self.kinds.setdefault(child, "reader")
        for pid in self.kinds:
            if (kib := peak_kib(pid)) is not None:
                self.peaks[pid] = max(kib, self.peaks.get(pid, 0))
        self.tree_pss = max(self.tree_pss, sum(pss_kib(pid) for pid in self.kinds))

    def peak(self, kind: str) -> int | None:
        """The largest peak RSS among the processes of that kind, in KiB."""
        found = [kib for pid, kib in self.peaks.items() if self.kinds[pid] == kind]
        return max(found) if found else None


def server_scan(library: Path, data: Path, log: Path, procs: list[Proc], n: int) -> tuple[dict, Watch]:
    """A real server started on the library: its start-up scan (a first scan with a new data
    folder, a rescan with a used one), watched until done; the server is stopped after."""
    server, base = start_server(library, data, log, procs)
    try:
        watch = Watch(server, base)
        progress = watch.until_done(timeout=120 + n / 200)
    finally:
        server.stop()
        procs.remove(server)
    if progress["files"] != n or progress["skipped"]:
        raise BenchError(f"the server found {progress['files']} files ({progress['skipped']} skipped), "
                         f"expected {n}")
    return progress, watch


def scale_size(tmp: Path, audio: bytes, procs: list[Proc], n: int) -> dict:
    """[scale] at n files: the library, the references, the server's first scan and rescan."""
    library = tmp / f"tiny-{n}"
    t0 = time.monotonic()
    make_tiny_library(library, n, audio)
    print(f"\n[scale, {n} files] {n} tiny mp3 files with tags of their own, made in "
          f"{time.monotonic() - t0:.1f}s (not timed); load average {load_average()}", flush=True)
    ref_seconds, _ = timed(reference_read, sorted(library.rglob("*.mp3")))
    walk_seconds, _ = timed(walk_stat, library)
    data = tmp / f"data-{n}"
    first, first_watch = server_scan(library, data, tmp / f"server-{n}-first.log", procs, n)
    again, again_watch = server_scan(library, data, tmp / f"server-{n}-rescan.log", procs, n)
    if again["unchanged"] != n:
        raise BenchError(f"the rescan found {again['unchanged']} files unchanged, expected {n}")
    shutil.rmtree(library, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    figures = {"n": n, "ref": ref_seconds, "first": first["seconds"], "walk": walk_seconds,
               "rescan": again["seconds"], "first_watch": first_watch, "rescan_watch": again_watch}
    print(f"  mutagen loop {ref_seconds:.2f}s; our first scan {first['seconds']:.2f}s "
          f"({ratio(ref_seconds, first['seconds']):.2f}x); os.walk+stat {walk_seconds:.2f}s; "
          f"our rescan {again['seconds']:.2f}s; load average {load_average()}", flush=True)
    return figures


def scale(args: argparse.Namespace, tmp: Path, procs: list[Proc], table: Summary) -> None:
    """[scale]: each size's figures in one table, so the slope shows."""
    audio = make_tiny_mp3(tmp / "tiny-base")
    rows = [("files", "mutagen loop s", "first scan s", "files/s", "x loop", "walk+stat s", "rescan s",
             "server MiB first/rescan", "reader MiB", "all Pss MiB", "answers p50/max ms")]
    for n in args.scale:
        f = scale_size(tmp, audio, procs, n)
        first, again = f["first_watch"], f["rescan_watch"]
        answers = first.answers + again.answers
        rows.append((f"{n:,}", f"{f['ref']:.2f}", f"{f['first']:.2f}", f"{n / f['first']:.0f}",
                     f"{ratio(f['ref'], f['first']):.2f}", f"{f['walk']:.2f}", f"{f['rescan']:.2f}",
                     f"{mib(first.peak('server'))}/{mib(again.peak('server'))}", mib(first.peak("reader")), mib(max(first.tree_pss, again.tree_pss)),
                     f"{percentile(answers, 50) * 1000:.0f}/{max(answers) * 1000:.0f}"))
        table.check(max(answers) < TARGET_ANSWER_SECONDS, f"scale {n} files: slowest answer during the scans (s)",
                    "", f"{max(answers):.3f}", "", f"< {TARGET_ANSWER_SECONDS:g}")
    print("\n[scale] a real server's first scan and no-change rescan (peak RSS: VmHWM of each process; "
          "all Pss: the largest sum of the Pss of the server and every process under it, sampled; answers: "
          "GET /api/v1/library/scan every 0.1 s during both scans)")
    print_table(rows)


# --- main -------------------------------------------------------------------------------------

def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    """The benchmark proper, in the temp folder `tmp`: 0 when every target passes, 1 when one fails
    (BenchError when it cannot run)."""
    t_start = time.monotonic()
    cores = os.cpu_count()
    print(f"scan_bench: {cores} cores (Scanner(workers=0) uses one worker process per core; "
          f"the reference is one process). Temp folder {tmp}; load average {load_average()}", flush=True)
    table = Summary()
    if args.files:
        bases = make_bases(tmp / "bases", args.seconds)
        for n in args.files:
            full_scan(args, bases, tmp, table, n)
    if args.rescan_files:
        rescan(args, tmp, table)
    if args.scale:
        scale(args, tmp, procs, table)
    return table.finish(f"\nSUMMARY ({args.rounds} rounds; reference = 1-process mutagen loop / bare "
                        f"os.walk+stat; {cores} cores; load average at the end {load_average()}; "
                        f"total {time.monotonic() - t_start:.0f}s)",
                        "  (full scan: ours/ref is the files/s ratio; rescan: ours/ref is the time ratio)")


def sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=sizes, default=[2400, 20000],
                    help="sizes of the full-scan libraries, comma-separated (each >= 2000; '' for none)")
    ap.add_argument("--rescan-files", type=int, default=20000, help="files of the no-change rescan (0: none)")
    ap.add_argument("--scale", type=sizes, default=[],
                    help="sizes for a real server's first scan and rescan, e.g. 2000,20000,200000")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each side")
    ap.add_argument("--seconds", type=float, default=1.5, help="length of the full-scan base files")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    return run_bench("scan_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    sys.exit(main())
