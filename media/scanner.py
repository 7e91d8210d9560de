"""The library scanner: walk, diff against the catalog, read what changed, save, regroup.

Incremental: a file whose size and mtime are what the catalog holds is not opened again. Tolerant:
a broken file becomes a line in `progress.problems`, never an aborted scan. Tag reading runs in
worker processes (mutagen is pure Python, so threads would share one core), in tasks large at first
and smaller towards the end (few round trips, and the workers run out of work together); until
the workers are ready (their first start boots a forkserver) this process reads, in a thread. What
is read is saved while the reading goes on, so little is left to save when it ends.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import io
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.popen_forkserver
import multiprocessing.resource_tracker
import multiprocessing.spawn
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from media.catalog import Catalog
from media.formats import container_for, cover_rank
import media.tags
from media.tags import read_files

log = logging.getLogger(__name__)

CHUNK = 64  # files a task holds at least, and what this process reads at a time
CHUNK_MAX = 512  # files a task holds at most: tasks shrink from here towards CHUNK near the end
TASKS_AHEAD = 8  # a task holds 1/(TASKS_AHEAD x workers) of the files still to read (within those bounds)
TASKS_IN_FLIGHT = 2  # tasks given to each worker at a time: the one it reads, the one it reads next
IN_THREAD_BELOW = 64  # fewer changed files than this are read in a thread: no process start-up
SAVE_EVERY = 1.0  # seconds at most from a save's start to the next one's
SAVE_ENOUGH = 2000  # records that start the next save before SAVE_EVERY (commits of fewer cost more a record)
HURRY_AFTER = 0.8  # once this share of the files is read, each save follows the last at once
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


def _worker_context() -> multiprocessing.context.BaseContext:
    """Worker processes come from a forkserver, and import only what reading tags needs.

    Not plain fork: this process has threads (SQLite, executors) and forking it is unsafe. Not
    spawn: every worker would start a fresh interpreter and import mutagen. The forkserver is a
    clean single-threaded process that imports mutagen once and forks the workers from it; it
    lives as long as the scans that use it (_Helpers), so a scan pays its start: kept small,
    as the workers' (_WorkerPopen, _WORKER_BOOT). As with any multiprocessing, a script that
    scans must keep its top level under `if __name__ == "__main__"`.
    """
    context = _WorkerContext()
    # What each worker would import otherwise: the pool's worker loop, then mutagen and the rest.
    context.set_forkserver_preload(["concurrent.futures.process", *media.tags.THIRD_PARTY])
    return context


class _WorkerPopen(multiprocessing.popen_forkserver.Popen):
    """Python's forkserver start of a process (its _launch, as in Python 3.11-3.13) without the
    main script: Python has every child import it (run.py: the whole server, 0.7 s of CPU per
    worker per scan; a benchmark's script and its imports) for what it may define, and a worker
    runs only media.tags."""

    def _launch(self, process_obj: Any) -> None:
        pf = multiprocessing.popen_forkserver
        prep_data = multiprocessing.spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        pf.set_spawning_popen(self)
        try:
            pf.reduction.dump(prep_data, buf)
            pf.reduction.dump(process_obj, buf)
        finally:
            pf.set_spawning_popen(None)
        self.sentinel, w = pf.forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)  # the child's sentinel of this process, as Python keeps it
        self.finalizer = pf.util.Finalize(self, pf.util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = pf.forkserver.read_signed(self.sentinel)


class _WorkerProcess(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _WorkerPopen:
        return _WorkerPopen(process_obj)

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to the worker as Python's own class: unpickling this one would import this module
        # (and the media package with it) there.
        return object.__new__, (multiprocessing.context.ForkServerProcess,), dict(self.__dict__)


class _WorkerContext(multiprocessing.context.ForkServerContext):
    Process = _WorkerProcess


# A worker's start (the pool's initializer: exec of this, with MEDIA the package's folder): the
# tag reader's modules without the media package's __init__, which imports the whole domain
# (SQLite, sqlite-utils, the catalog: 0.2 s of CPU and 14 MiB a process, for nothing here).
_WORKER_BOOT = """
import sys, types
if "media" not in sys.modules:
    package = types.ModuleType("media")
    package.__path__ = [MEDIA]
    sys.modules["media"] = package
import media.tags
media.tags.quiet_worker()
"""


class _Helpers:
    """multiprocessing's forkserver and resource tracker: two processes every scan's pool in this
    process shares, started with the first pool and stopped once the last one is shut down, so that
    between scans the server's process tree holds neither (33.5 and 12.8 MiB, issue 15)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools = 0  # pools started and not yet retired

    def start_pool(self, workers: int) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            self._pools += 1
        pool = None
        try:
            boot = {"MEDIA": os.path.dirname(media.tags.__file__)}
            pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=_worker_context(),
                                                          initializer=exec, initargs=(_WORKER_BOOT, boot))
            for _ in range(workers):  # workers start on demand: ask for all of them now
                pool.submit(os.getpid)
        except BaseException:
            self.retire(pool)
            raise
        return pool

    def retire(self, pool: concurrent.futures.ProcessPoolExecutor | None) -> None:
        """Shut `pool` down and wait until its workers have exited (each ends the task it is
        reading) and the forkserver has reaped them; then, if no other pool is in use, stop the
        forkserver and the tracker. Blocks: runs in a thread."""
        try:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # its queues' semaphores go with it
        finally:
            with self._lock:
                self._pools -= 1
                if self._pools == 0:
                    _stop_helpers()


def _stop_helpers() -> None:
    """Stop the forkserver, then the tracker, by the methods Python's own tests use (a Python that
    lacks them keeps both, as before); each closes the pipe its process waits on, then reaps it.
    The next pool starts them again."""
    for helper in (getattr(multiprocessing.forkserver, "_forkserver", None),
                   getattr(multiprocessing.resource_tracker, "_resource_tracker", None)):
        stop = getattr(helper, "_stop", None)
        if stop is None:
            continue
        try:
            stop()
        except OSError as exc:
            log.warning("scan: could not stop %s: %s", type(helper).__name__, exc)


_HELPERS = _Helpers()  # one per process, as the processes it manages


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
        # A first scan reads every file: start the workers now, so they boot during the walk.
        workers = _Workers(self._start_pool) if first and self.workers > 1 else None
        try:
            walked = await self._walk(known, progress, started)
            workers = self._workers_for(walked.changed, workers)
            await self._read_changed(walked, progress, stop, workers)
        finally:
            if workers is not None:  # the scan ends with its processes gone
                await workers.gone()
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

    def _workers_for(self, changed: list[tuple[str, int, int]], workers: _Workers | None) -> _Workers | None:
        """The worker processes to read `changed` (those started already, or new ones); None for
        few files (read here, in a thread: no process start-up), and any started are let go."""
        if len(changed) < IN_THREAD_BELOW or self.workers == 1:
            if workers is not None:
                workers.close()
            return None
        return workers or _Workers(self._start_pool)

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
                            workers: _Workers | None) -> None:
        """Read the changed files and save them as they come in (and now and then regroup), so
        the catalog fills during a long scan; every record read is saved when this returns."""
        saver = _Saver(self.catalog, walked.images, progress)
        last_log = time.monotonic()
        try:
            async with contextlib.aclosing(self._read(walked.changed, stop, workers)) as results:
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

    def _start_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return _HELPERS.start_pool(self.workers)

    async def _read(self, changed: list[tuple[str, int, int]], stop: asyncio.Event, workers: _Workers | None):
        """Yield lists of read results as they complete: read in this process while the worker
        processes start (all of them without workers), then by the workers."""
        try:
            here = _ReadHere(str(self.library), changed, workers)
            while (chunk := await here.next()) is not None:
                if stop.is_set():
                    return
                yield chunk
            if workers is None or (here.position >= len(changed) and not here.reading):
                return  # all read here
            tasks = collections.deque(_tasks(changed[here.position:], self.workers))
            # here.next() stopped early: the workers are ready
            async with contextlib.aclosing(self._read_by(workers.ready.result(), tasks, here.reading, stop)) as read:
                async for chunk in read:
                    yield chunk
        finally:
            if workers is not None:
                workers.close()  # they get their stop signal now; the saves go on meanwhile

    async def _read_by(self, pool: concurrent.futures.ProcessPoolExecutor, tasks: collections.deque,
                       running: list[asyncio.Future], stop: asyncio.Event):
        """Yield the workers' results as they come, with TASKS_IN_FLIGHT tasks per worker given out
        at a time (one running, the next waiting): while the caller does not ask for more (the
        catalog's writer is behind), no more is read, so read records do not pile up in memory."""
        loop, root, in_flight = asyncio.get_running_loop(), str(self.library), set(running)
        try:
            while tasks or in_flight:
                while tasks and len(in_flight) < self.workers * TASKS_IN_FLIGHT:
                    in_flight.add(loop.run_in_executor(pool, read_files, root, tasks.popleft()))
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    if stop.is_set():
                        return
                    yield future.result()
        finally:
            for future in in_flight:
                future.cancel()

    def _notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


class _Workers:
    """A scan's worker processes, started in a thread: the first start in a process boots the
    forkserver, which imports the tag reader (a fraction of a second, seconds on a busy machine)
    that the event loop must not wait for. The scan reads here meanwhile. Let go, they are retired
    in a thread too (their exit, then the forkserver's and tracker's: _Helpers.retire)."""

    def __init__(self, start: Callable[[], concurrent.futures.ProcessPoolExecutor]) -> None:
        self.ready: asyncio.Future[concurrent.futures.ProcessPoolExecutor] = (
            asyncio.get_running_loop().run_in_executor(None, start))
        self._gone: asyncio.Future[None] | None = None

    def close(self) -> None:
        """Let the workers go, now or once they have started: no new task, and they exit once done
        with those they hold."""
        if self._gone is None:
            self._gone = self.ready.get_loop().create_future()
            self.ready.add_done_callback(self._retire)

    async def gone(self) -> None:
        """Let the workers go, and return once they, and the helpers if no other pool uses them,
        have exited."""
        self.close()
        await asyncio.shield(self._gone)

    def _retire(self, ready: asyncio.Future[concurrent.futures.ProcessPoolExecutor]) -> None:
        if ready.cancelled() or ready.exception() is not None:  # none started (none counted)
            self._gone.set_result(None)
            return
        retired = ready.get_loop().run_in_executor(None, _HELPERS.retire, ready.result())
        retired.add_done_callback(self._retired)

    def _retired(self, retired: asyncio.Future[None]) -> None:
        if not retired.cancelled() and retired.exception() is not None:
            log.error("scan: worker processes not retired", exc_info=retired.exception())
        self._gone.set_result(None)


class _ReadHere:
    """Reading in this process (in a thread), a chunk at a time from the front of the list, for as
    long as the worker processes are not ready; with no workers, all of it."""

    def __init__(self, root: str, changed: list[tuple[str, int, int]], workers: _Workers | None) -> None:
        self.root, self.changed, self.workers = root, changed, workers
        self.position = 0  # the files before it are read here
        self.reading: list[asyncio.Future] = []  # a chunk still being read here when the workers came

    async def next(self) -> list[tuple[str, dict[str, Any] | None, str | None]] | None:
        """The next chunk's results; None once all is read, or once the workers are ready."""
        ready = self.workers.ready if self.workers is not None else None
        if (ready is not None and ready.done()) or self.position >= len(self.changed):
            return None
        chunk = self.changed[self.position:self.position + CHUNK]
        self.position += len(chunk)
        reading = asyncio.ensure_future(asyncio.to_thread(read_files, self.root, chunk))
        if ready is not None:
            await asyncio.wait((reading, ready), return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                self.reading = [reading]
                return None
        return await reading


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

    def __init__(self, catalog: Catalog, folder_images: dict[str, str], progress: ScanProgress) -> None:
        self.catalog, self.folder_images, self.progress = catalog, folder_images, progress
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
