"""The library scanner: walk, diff against the catalog, read what changed, save, regroup.

Incremental: a file whose size and mtime are what the catalog holds is not opened again. Tolerant:
a broken file becomes a line in `progress.problems`, never an aborted scan. Tag reading runs in
processes forked for the scan (media.scan_workers), in tasks large at first and smaller towards
the end (few round trips, and the readers run out of work together). What is read is saved while
the reading goes on, so little is left to save when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from media import scan_workers
from media.catalog import Catalog
from media.formats import container_for, cover_rank
from media.tags import read_files

log = logging.getLogger(__name__)

CHUNK = 64  # files a task holds at least, and what this process reads at a time
CHUNK_MAX = 512  # files a task holds at most: tasks shrink from here towards CHUNK near the end
TASKS_AHEAD = 8  # a task holds 1/(TASKS_AHEAD x workers) of the files still to read (within those bounds)
IN_THREAD_BELOW = 64  # fewer changed files than this are read in a thread: no process start-up
INDEXES_AFTER = 1000  # a first scan of this many files fills the catalog first, then builds its indexes
INDEXES_BUILT_AT = 0.9  # once this share of its files is read
SAVE_EVERY = 1.0  # seconds at most from a save's start to the next one's
SAVE_ENOUGH = 2000  # records that start the next save before SAVE_EVERY (commits of fewer cost more a record)
HURRY_AFTER = 0.5  # once this share of the files is read, each save follows the last at once
# (what is left to save when the reading ends is the scan's serial tail: one core idle)
SAVE_MAX = 4000  # records a save takes at most (other writes wait; a commit rewrites the index pages it touched)
SAVE_BACKLOG = 2 * SAVE_MAX  # records waiting to be saved beyond which reading waits for the writer
REGROUP_EVERY = 10.0  # seconds at least between album/artist rebuilds during a long scan
REGROUP_SHARE = 0.05  # and at most this share of the time between them spent in them
LOG_EVERY = 5.0  # seconds between progress lines in the log during a long scan
MAX_PROBLEMS = 500


@dataclasses.dataclass
class ScanProgress:
    state: str = "idle"  # idle | walking | reading | saving | done | failed | stopped
    started_at: float | None = None
    finished_at: float | None = None
    files: int = 0  # audio files found in the folder
    to_read: int = 0  # new or changed files
    read: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    problems: list[dict[str, str]] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.state in ("walking", "reading", "saving")

    @property
    def seconds(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    def problem(self, path: str, reason: str) -> None:
        self.skipped += 1
        log.warning("scan: skipped %s: %s", path, reason)
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append({"path": path, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["running"] = self.running
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclasses.dataclass
class Walked:
    """What a walk of the library found, set against the files the catalog holds."""
    files: int = 0  # audio files in the folder
    # new or changed files: (relative path, size, mtime_ns)
    changed: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    updates: set[str] = dataclasses.field(default_factory=set)  # those of them the catalog holds
    images: dict[str, str] = dataclasses.field(default_factory=dict)  # folder -> its best cover image


def walk(root: Path, progress: ScanProgress, known: dict[str, tuple[int, int]]) -> Walked:
    """Walk the library against `known` ({relative path: (size, mtime_ns)} of the files the catalog
    holds): each audio file found is taken out of it, so what is left in it afterwards is gone,
    and only new and changed files are kept (a rescan of a big library holds no second copy of
    it). Symlinks are followed only while they stay inside the library, and each real folder is
    visited once (no loops)."""
    real_root = os.path.realpath(root)
    walked, covers = Walked(), {}
    seen_dirs: set[tuple[int, int]] = set()
    stack = [(str(root), "")]
    while stack:
        folder, rel = stack.pop()
        for entry in _scandir_once(folder, rel, seen_dirs, progress):
            relpath = _usable_relpath(entry.name, rel, progress)
            if relpath is None:
                continue
            try:
                if entry.is_symlink() and not _inside(os.path.realpath(entry.path), real_root):
                    progress.problem(relpath, "symlink points outside the library")
                elif entry.is_dir():
                    stack.append((entry.path, relpath))
                elif (rank := cover_rank(entry.name)) is not None:
                    best = covers.get(rel or ".")
                    if best is None or rank < best[0]:
                        covers[rel or "."] = (rank, relpath)
                elif container_for(entry.name) is not None:
                    _found(walked, relpath, entry.stat(), known)
            except OSError as exc:
                progress.problem(relpath, f"cannot be read: {exc.strerror or exc}")
    walked.images = {folder: path for folder, (_, path) in covers.items()}
    return walked


def _found(walked: Walked, relpath: str, st: os.stat_result, known: dict[str, tuple[int, int]]) -> None:
    walked.files += 1
    held = known.pop(relpath, None)
    if held != (st.st_size, st.st_mtime_ns):
        walked.changed.append((relpath, st.st_size, st.st_mtime_ns))
        if held is not None:
            walked.updates.add(relpath)


def _scandir_once(folder: str, rel: str, seen_dirs: set[tuple[int, int]],
                  progress: ScanProgress) -> list[os.DirEntry[str]]:
    """The entries of a folder not visited yet (a symlink may lead back to one); none, and a
    problem noted, when it cannot be read."""
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen_dirs:
            return []
        seen_dirs.add((st.st_dev, st.st_ino))
        return list(os.scandir(folder))
    except OSError as exc:
        progress.problem(rel or ".", f"folder cannot be read: {exc.strerror or exc}")
        return []


def _usable_relpath(name: str, rel: str, progress: ScanProgress) -> str | None:
    """An entry's path relative to the library, or None for one to pass over."""
    if name.startswith("."):  # hidden files, and .part files of uploads in progress
        return None
    relpath = f"{rel}/{name}" if rel else name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # the catalog and every URL hold UTF-8 text
        progress.problem(relpath.encode("utf-8", "replace").decode(), "file name is not valid UTF-8")
        return None
    return relpath


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Scanner:
    """Runs scans of one library into one catalog; one scan at a time."""

    def __init__(self, library: Path, catalog: Catalog, *, workers: int = 0,
                 on_progress: Callable[[ScanProgress], None] | None = None) -> None:
        self.library = library
        self.catalog = catalog
        self.workers = workers or os.cpu_count() or 1
        self.on_progress = on_progress
        self.progress = ScanProgress()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[ScanProgress] | None = None

    @property
    def running(self) -> bool:
        return self._lock.locked() or (self._task is not None and not self._task.done())

    def start(self) -> asyncio.Task[ScanProgress]:
        """Start a scan in the background, or return the one already running or starting:
        any number of callers at once get one scan."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.scan(), name=f"scan {self.library}")
        return self._task

    async def close(self) -> None:
        """Stop a background scan (what it read so far stays saved)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def scan(self, stop: asyncio.Event | None = None) -> ScanProgress:
        async with self._lock:
            progress = self.progress = ScanProgress(state="walking", started_at=time.time())
            self._notify()
            try:
                await self._scan(progress, stop or asyncio.Event())
            except asyncio.CancelledError:
                progress.state = "stopped"
                raise
            except Exception as exc:
                progress.state, progress.error = "failed", f"{type(exc).__name__}: {exc}"
                log.exception("scan of %s failed", self.library)
            finally:
                progress.finished_at = time.time()
                self._notify()
            return progress

    async def _scan(self, progress: ScanProgress, stop: asyncio.Event) -> None:
        started = time.perf_counter()
        known = await self.catalog.file_index()  # the walk takes out what it finds: the rest is gone
        first = not known
        walked = await self._walk(known, progress, started)
        indexes = _DeferredIndexes(self.catalog, self.library)
        if first and len(walked.changed) >= INDEXES_AFTER:
            await indexes.defer()
        try:
            await self._read_changed(walked, progress, stop, indexes)
        finally:
            await indexes.build()  # before the regroup, which uses them (cut short: the next open builds them)
        if stop.is_set():
            progress.state = "stopped"
            await self.catalog.finish_scan(walked.images)
            log.info("scan of %s stopped after %d of %d files", self.library, progress.read, len(walked.changed))
            return

        progress.state = "saving"
        # Files that broke since the last scan leave the catalog too: what is listed must play.
        gone = [*known, *(p["path"] for p in progress.problems if p["path"] in walked.updates)]
        progress.removed = len(gone)
        if gone:
            await self.catalog.save_scan([], gone)
        if walked.changed or gone or first:
            await self.catalog.finish_scan(walked.images)
        progress.state = "done"
        log.info("scan of %s done in %.2fs: %d files, %d added, %d updated, %d removed, "
                 "%d unchanged, %d skipped", self.library, time.perf_counter() - started,
                 progress.files, progress.added, progress.updated, progress.removed,
                 progress.unchanged, progress.skipped)

    async def _walk(self, known: dict[str, tuple[int, int]], progress: ScanProgress, started: float) -> Walked:
        """Walk the library and set it against the catalog (`known` is left with the files gone)."""
        walked = await asyncio.to_thread(walk, self.library, progress, known)
        progress.files = walked.files
        progress.unchanged = walked.files - len(walked.changed)
        progress.to_read = len(walked.changed)
        progress.state = "reading"
        log.info("scan of %s: %d audio files, %d new or changed, %d gone (walk %.2fs)", self.library,
                 walked.files, len(walked.changed), len(known), time.perf_counter() - started)
        self._notify()
        return walked

    async def _read_changed(self, walked: Walked, progress: ScanProgress, stop: asyncio.Event,
                            indexes: _DeferredIndexes) -> None:
        """Read the changed files and save them as they come in (and now and then regroup), so
        the catalog fills during a long scan; every record read is saved when this returns."""
        saver = _Saver(self.catalog, walked.images, progress, indexes)
        last_log = time.monotonic()
        try:
            async with contextlib.aclosing(self._read(walked.changed, stop)) as results:
                async for chunk in results:
                    saver.add(_tally(chunk, walked.updates, progress))
                    await saver.room()
                    if (now := time.monotonic()) - last_log >= LOG_EVERY:
                        log.info("scan of %s: %d of %d files read (%d%%), %d skipped", self.library,
                                 progress.read, progress.to_read, 100 * progress.read // progress.to_read,
                                 progress.skipped)
                        last_log = now
                    self._notify()
            await saver.finish()
        finally:
            saver.cancel()

    async def _read(self, changed: list[tuple[str, int, int]], stop: asyncio.Event):
        """Yield lists of read results as they come: from reader processes forked for this scan,
        or, for a few files or with one core, from here (in a thread)."""
        root = str(self.library)
        if len(changed) < IN_THREAD_BELOW or self.workers == 1 or not scan_workers.AVAILABLE:
            for start in range(0, len(changed), CHUNK):
                if stop.is_set():
                    return
                yield await asyncio.to_thread(read_files, root, changed[start:start + CHUNK])
            return
        readers = scan_workers.Readers(root, _tasks(changed, self.workers), self.workers)
        async with readers, contextlib.aclosing(readers.results()) as results:
            async for chunk in results:
                if stop.is_set():
                    return
                yield chunk

    def _notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


def _tasks(changed: list[tuple[str, int, int]], workers: int) -> list[list[tuple[str, int, int]]]:
    """The files split into tasks for `workers` processes: large first (fewer round trips), then
    smaller as fewer are left, so that the workers run out of work together."""
    tasks, start = [], 0
    while start < len(changed):
        size = min(CHUNK_MAX, max(CHUNK, (len(changed) - start) // (workers * TASKS_AHEAD)))
        tasks.append(changed[start:start + size])
        start += size
    return tasks


class _Saver:
    """Saves what is read while the reading goes on, in the catalog's writer, one save at a time,
    each taking the records that came in meanwhile (SAVE_MAX at most): the writer works beside the
    workers, and little is left to save once the last file is read. A save starts once SAVE_ENOUGH
    records wait or SAVE_EVERY after the last one started: a commit rewrites every index page it
    touched, so saves of 400 records cost 100-110 us a record of the writer's CPU, of 2,000 70-80
    (20,000 tracks); and each moves the catalog's generation, so readers' caches start over, and
    is a change regions apply. Near the end of the reading, and when the writer falls behind
    (room() then holds the reading back), each save follows the last at once. Now and then it regroups (albums, artists, search), so the catalog reads
    well during a long scan; a regroup is a pass over the whole library, so they come further apart
    as it grows (REGROUP_SHARE)."""

    def __init__(self, catalog: Catalog, folder_images: dict[str, str], progress: ScanProgress,
                 indexes: _DeferredIndexes) -> None:
        self.catalog, self.folder_images, self.progress, self.indexes = catalog, folder_images, progress, indexes
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._taken = asyncio.Event()  # set when a save takes records, or stops
        self._hurry = False  # each save follows the last at once
        self._due = asyncio.Event()  # set when the next save should not wait its turn
        self._next_regroup = time.monotonic() + REGROUP_EVERY

    def add(self, records: list[dict[str, Any]]) -> None:
        self._pending.extend(records)
        if self.progress.read >= HURRY_AFTER * self.progress.to_read:
            self._hurry = True
        if self._hurry or len(self._pending) >= SAVE_ENOUGH:
            self._due.set()
        if self._task is not None and self._task.done():
            self._task.result()  # a save that failed fails the scan
            self._task = None
        if self._task is None and self._pending:
            self._task = asyncio.create_task(self._save(), name="scan saves")

    async def room(self) -> None:
        """Return once fewer than SAVE_BACKLOG records wait to be saved."""
        while len(self._pending) >= SAVE_BACKLOG:
            self._taken.clear()
            self._hurry = True
            self.add([])  # raises if the saves failed; starts them if they stopped
            await self._taken.wait()

    async def _save(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:SAVE_MAX], self._pending[SAVE_MAX:]
                if not self._hurry and len(self._pending) < SAVE_ENOUGH:
                    self._due.clear()
                self._taken.set()
                began = time.monotonic()
                await self.catalog.save_scan(batch, [])
                if self.indexes.waiting and self.progress.read >= INDEXES_BUILT_AT * self.progress.to_read:
                    await self.indexes.build()
                if time.monotonic() >= self._next_regroup:
                    await self._regroup()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), began + SAVE_EVERY - time.monotonic())
        finally:
            self._taken.set()

    async def _regroup(self) -> None:
        began = time.monotonic()
        await self.catalog.finish_scan(self.folder_images)
        self._next_regroup = began + max(REGROUP_EVERY, (time.monotonic() - began) / REGROUP_SHARE)

    async def finish(self) -> None:
        """Return once every record added is saved."""
        self._hurry = True
        self._due.set()
        if self._task is not None:
            await self._task

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


class _DeferredIndexes:
    """A first scan's indexes (Catalog.defer_indexes), built once: by the saves when most files are
    read (INDEXES_BUILT_AT: the build then runs beside the readers' last tasks, not after them, and
    the few tracks saved after it pay for their upkeep), or when the reading ends."""

    def __init__(self, catalog: Catalog, library: Path) -> None:
        self.catalog, self.library = catalog, library
        self.waiting = False
        self._building: asyncio.Future[None] | None = None

    async def defer(self) -> None:
        self.waiting = await self.catalog.defer_indexes()

    async def build(self) -> None:
        if self.waiting and self._building is None:
            self._building = asyncio.ensure_future(self._build())
        if self._building is not None:
            await asyncio.shield(self._building)  # a stopped scan's saves are cancelled, not the build

    async def _build(self) -> None:
        began = time.perf_counter()
        await self.catalog.build_indexes()
        self.waiting = False
        log.info("scan of %s: indexes built in %.2fs", self.library, time.perf_counter() - began)


def _tally(results: list[tuple[str, dict[str, Any] | None, str | None]], updates: set[str],
           progress: ScanProgress) -> list[dict[str, Any]]:
    """Count one chunk of read results into progress (`updates`: the files the catalog held); return
    the records read."""
    records = []
    for relpath, record, reason in results:
        progress.read += 1
        if record is None:
            progress.problem(relpath, reason or "unreadable")
            continue
        records.append(record)
        if relpath in updates:
            progress.updated += 1
        else:
            progress.added += 1
    return records
