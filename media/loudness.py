"""EBU R128 loudness of every track and album, measured in the background after a scan.

Each track is measured by one ffmpeg run of the `ebur128` filter (`peak=true`): its integrated
loudness (LUFS) and its true peak (linear, 1.0 is full scale). The pool's runs hand back stdout
only, so the filter's per-frame metadata (`metadata=1`, running values) is printed there by
`ametadata` instead of its summary going to stderr: the last frame carries the whole track's
integrated loudness and peak, the summary's figures (asetnsamples makes frames of a second, so
that is a few hundred lines; without padding, which would add silence). The metadata gives the
peak to 0.001 of full scale.

An album's loudness is the duration-weighted mean of its tracks' integrated loudness in the
energy domain, 10·log10(Σ dᵢ·10^(Lᵢ/10) / Σ dᵢ), and its peak the loudest track's: no second
decode of the album (measuring the concatenation would decode every track again, and again
whenever one of them changes), and a value that follows at once when a track is added or
re-measured. It differs from the concatenation's gated figure only by where the relative gate
falls (per track here, -10 LU below each track rather than below the album), a few tenths of
an LU for albums with long quiet passages.

The catalog keeps them in track columns (schema 9): `loudness`, `loudness_peak`, `loudness_of`
(the file version measured: its content fingerprint, or size and mtime), `album_loudness` and
`album_loudness_peak` (on each of the album's tracks: the albums table is rebuilt by every
regroup). A pass measures only tracks whose `loudness_of` is not their file's version now; a
file ffmpeg cannot read is remembered as measured (no values) until it changes. Each batch
saved is one `loudness.put` change-log row, which a replica applies with `save`, once REPLICATED
is set: a replica that does not know the operation stops following (media.replica), so the rows
are written only when this version's replica applies them. Until then a region has the values a
snapshot brings, and none measured after it.

Runs go through the ffmpeg pool behind listeners: a later deadline in its line, and paused
(SIGSTOP) while a listener's audio is urgent, as its output is never due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from media import listeners
from media.catalog import Catalog, clean_float
from media.ffmpeg import Busy, FfmpegFailed, FfmpegPool

log = logging.getLogger(__name__)

BEHIND_LISTENERS = 60.0  # seconds: the job's runs wait in the pool's line behind audio needed sooner
NEVER_DUE = 24 * 3600.0  # seconds: a listener's urgent audio always goes first
BUSY_PAUSE = 2.0  # seconds to wait after the pool refused a run (Busy) before asking again
SAVE_EVERY = 2.0  # seconds between saves of measured tracks
LOG_EVERY = 10.0  # seconds between progress lines
ABSENT_RETRY = 600.0  # seconds between passes while tracks' files are not in the library folder
REPLICATED = True  # media.replica applies "loudness.put" (see save)
COLUMNS = ("loudness", "loudness_peak", "loudness_of", "album_loudness", "album_loudness_peak")
# A track's file version: the content fingerprint, or size and mtime when it has none.
VERSION_SQL = "coalesce(fingerprint, size || ':' || mtime_ns)"


@dataclass(frozen=True)
class Loudness:
    lufs: float | None  # integrated loudness; None for silence (every block below the gate)
    peak: float  # true peak, linear (1.0: full scale)


def measure_arguments(path: str) -> list[str]:
    return ["-i", path, "-map", "0:a:0", "-vn", "-af",
            "asetnsamples=n=48000:p=0,ebur128=peak=true:metadata=1,ametadata=mode=print:file=-",
            "-f", "null", "-"]


def parse_metadata(text: str) -> Loudness:
    """The last frame's integrated loudness and true peak from ametadata's printout."""
    lufs = peak = None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "lavfi.r128.I":
            lufs = float(value)
        elif key == "lavfi.r128.true_peak":
            peak = float(value)
    if lufs is None or peak is None:
        raise FfmpegFailed("ebur128 gave no measurement (no audio?)")
    # The filter shows -70 LUFS (its absolute gate) when no block passed it: silence.
    return Loudness(None if lufs <= -70.0 else round(lufs, 2), round(peak, 3))


async def measure(pool: FfmpegPool, path: str) -> Loudness:
    """One file's loudness, measured by one pooled ffmpeg run behind listeners' work. Raises Busy
    when no slot frees in time, FfmpegFailed when the file cannot be decoded."""
    out = bytearray()
    stream = pool.stream(measure_arguments(path), deadline=time.monotonic() + BEHIND_LISTENERS,
                         due=lambda: time.monotonic() + NEVER_DUE)
    async with contextlib.aclosing(stream) as chunks:
        async for chunk in chunks:
            out += chunk
    return parse_metadata(out.decode("utf-8", "replace"))


def album_value(tracks: list[tuple[float | None, float | None, float | None]]) -> tuple[float | None, float | None]:
    """(LUFS, peak) of an album from its tracks' (LUFS, peak, duration): loudness averaged in the
    energy domain weighted by duration, the loudest peak. Tracks not measured (None) are left out."""
    energy = seconds = 0.0
    peaks = [p for _, p, _ in tracks if p is not None]
    for lufs, _, duration in tracks:
        if lufs is not None and duration:
            energy += duration * 10 ** (lufs / 10)
            seconds += duration
    lufs = round(10 * math.log10(energy / seconds), 2) if seconds else None
    return lufs, (max(peaks) if peaks else None)


# --- catalog side (run in the writer thread, inside one transaction) ---------------------------

def to_measure(db: sqlite_utils.Database) -> list[tuple[str, str, str]]:
    """(id, relative path, file version) of the tracks with no measurement of their file as it is."""
    return list(db.execute(f"SELECT id, path, {VERSION_SQL} FROM tracks WHERE loudness_of IS NULL "
                           f"OR loudness_of != {VERSION_SQL} ORDER BY album_id, path"))


def save(db: sqlite_utils.Database, rows: list[dict[str, Any]], *, log_change: bool | None = None) -> None:
    """Set the loudness columns given in each row (`id` and any of COLUMNS) of existing tracks; in
    the change log as `loudness.put` (when REPLICATED) unless a replica applies the master's row
    (`log_change=False`)."""
    for row in rows:
        names = [c for c in COLUMNS if c in row]
        if names:
            db.execute(f"UPDATE tracks SET {', '.join(c + ' = ?' for c in names)} WHERE id = ?",
                       [clean_float(row[c]) for c in names] + [row["id"]])  # (made rounded; kept so)
    if rows and (REPLICATED if log_change is None else log_change):
        listeners.append_change(db, None, "loudness.put", {"tracks": rows})


def save_albums(db: sqlite_utils.Database) -> int:
    """Derive every album's value again from its tracks and save those that changed; how many
    tracks changed (an album can gain, lose or re-measure tracks, by a scan or a regroup)."""
    albums: dict[str, list] = defaultdict(list)
    rows = db.execute("SELECT id, album_id, loudness, loudness_peak, duration, album_loudness, "
                      "album_loudness_peak FROM tracks")
    for track_id, album_id, lufs, peak, duration, album_lufs, album_peak in rows:
        albums[album_id].append((track_id, (lufs, peak, duration), (album_lufs, album_peak)))
    changed = []
    for tracks in albums.values():
        value = album_value([measured for _, measured, _ in tracks])
        changed += [{"id": track_id, "album_loudness": value[0], "album_loudness_peak": value[1]}
                    for track_id, _, held in tracks if held != value]
    save(db, changed)
    return len(changed)


# --- the background job ------------------------------------------------------------------------

@dataclass
class LoudnessJob:
    """Measures, pass after pass, the tracks that need it; counters for the metrics page."""

    catalog: Catalog
    pool: FfmpegPool
    library: Path
    measured: int = 0  # tracks measured since start (failures included)
    failed: int = 0  # files ffmpeg could not measure
    absent: int = 0  # tracks of the last pass whose file is not in the library folder (left for later)
    pending: int = 0  # tracks left in the current pass
    passes: int = 0
    seconds: float = 0.0  # wall time of passes, summed
    running: bool = False
    _done: list[dict[str, Any]] = field(default_factory=list)

    async def run_pass(self, stop: Callable[[], bool] = lambda: False) -> int:
        """Measure every track lacking a measurement of its file as it is, one at a time, then
        the albums; how many tracks were measured."""
        started = last_save = last_log = time.monotonic()
        todo = await asyncio.to_thread(self._on_disk, await self.catalog.db.read(to_measure))
        self.pending, self.running, count = len(todo), True, 0
        try:
            for track_id, relpath, version in todo:
                if stop():
                    break
                self._done.append(await self._measure_one(track_id, relpath, version))
                count, self.measured, self.pending = count + 1, self.measured + 1, self.pending - 1
                now = time.monotonic()
                if now - last_save >= SAVE_EVERY:
                    await self._flush()
                    last_save = now
                if now - last_log >= LOG_EVERY:
                    _log_progress(count, len(todo), now - started)
                    last_log = now
            await self._flush()
            await self.catalog.db.write(save_albums)
        finally:
            self.running, self.passes = False, self.passes + 1
            self.seconds += time.monotonic() - started
        if todo:
            _log_progress(count, len(todo), time.monotonic() - started, "done")
        return count

    def _on_disk(self, todo: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """The tracks whose file is in the library folder. The others (a drive not mounted, files
        not copied yet) are not measured, nor marked: an ffmpeg run for each would only fail (a
        core busy for an hour on a big library, a warning a track), and they are measured in a
        pass once they are there."""
        present = [t for t in todo if os.path.isfile(self.library / t[1])]
        self.absent = len(todo) - len(present)
        if self.absent:
            log.warning("loudness: %d tracks' files are not in %s; they are measured once they are",
                        self.absent, self.library)
        return present

    async def _measure_one(self, track_id: str, relpath: str, version: str) -> dict[str, Any]:
        """The track's row of values; Busy (every slot taken by listeners) waits and asks again."""
        while True:
            try:
                found = await measure(self.pool, str(self.library / relpath))
                return {"id": track_id, "loudness": found.lufs, "loudness_peak": found.peak, "loudness_of": version}
            except Busy:
                await asyncio.sleep(BUSY_PAUSE)
            except (FfmpegFailed, OSError, ValueError) as exc:
                self.failed += 1
                log.warning("loudness: %s could not be measured: %s", relpath, exc)
                return {"id": track_id, "loudness": None, "loudness_peak": None, "loudness_of": version}

    async def _flush(self) -> None:
        if self._done:
            rows, self._done = self._done, []
            await self.catalog.db.write(save, rows)

    async def follow(self, scanning: Callable[[], bool], wait: float = 0.5) -> None:
        """Run a pass now and after every change of the catalog (while files are absent, at
        least every ABSENT_RETRY seconds), once no scan is running."""
        while True:
            while scanning():
                await asyncio.sleep(wait)
            seen = self.catalog.generation
            try:
                await self.run_pass(stop=scanning)
            except Exception:  # noqa: BLE001 - logged; the next change of the catalog tries again
                log.exception("loudness: the pass failed")
            # Files not there (a drive not mounted) are looked for again now and then too: their
            # coming back changes nothing in the catalog.
            await self.catalog.changed(seen, ABSENT_RETRY if self.absent else None)

    def counters(self) -> dict[str, float]:
        return {"measured": self.measured, "failed": self.failed, "absent": self.absent, "pending": self.pending,
                "passes": self.passes, "seconds": round(self.seconds, 3)}


def _log_progress(count: int, total: int, seconds: float, state: str = "measuring") -> None:
    log.info("loudness: %s, %d of %d tracks measured in %.1fs (%.2f tracks/s)", state, count, total,
             seconds, count / seconds if seconds else 0.0)
