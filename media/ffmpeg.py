"""ffmpeg: where it is, and running it with a bound on how many run at once.

Every ffmpeg the server starts goes through one FfmpegPool: at most `slots` run together, work
beyond that waits for at most `queue_seconds` and is then refused (Busy, which HTTP answers with
503 and Retry-After), and a run whose caller goes away is killed and reaped.

Only the event loop's child watcher reaps these processes. Nothing here calls asyncio's
Process.kill() or send_signal(): they go through subprocess.Popen.send_signal(), which first
polls the child (waitpid WNOHANG, bpo-38630), and so reaps an ffmpeg that has just exited
before the watcher does; the watcher then logs "Unknown child process pid N, will report
returncode 255" and reports 255 for it. Signals go through _signal, and a start cut short by
cancellation is finished and reaped before the cancellation goes on (see _spawn).

The line is ordered by deadline, not by arrival: a listener who presses play needs audio now,
one who is playing on needs the next segment only when the current one ends. Earliest deadline
first keeps every listener ahead of the playhead when many start at once, where first come first
served lets the last starters' follow-up segments wait behind everyone's.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable

from media.errors import MediaError

log = logging.getLogger(__name__)


class Busy(MediaError):
    """Every ffmpeg slot stayed taken for the whole queueing time."""


class FfmpegFailed(MediaError):
    """ffmpeg exited with an error; the message has its last words."""


class FfmpegPool:
    def __init__(self, binary: str, slots: int, queue_seconds: float) -> None:
        self.binary = binary
        self.slots = slots
        self.queue_seconds = queue_seconds
        self.running = 0
        self.queued = 0
        self.runs = 0
        self.seconds = 0.0  # ffmpeg wall time, summed
        self._line: list[tuple[float, int, asyncio.Future]] = []  # (deadline, arrival, waiter)
        self._arrivals = itertools.count()
        self.paused = 0  # processes set aside: blocked, using no CPU, holding no slot
        self.pauser = Pauser()

    def first_deadline(self) -> float | None:
        """The deadline of the most urgent work waiting for a slot, if any."""
        while self._line and self._line[0][2].done():
            heapq.heappop(self._line)  # gave up waiting
        return self._line[0][0] if self._line else None

    @contextlib.asynccontextmanager
    async def _slot(self, deadline: float | None):
        """Hold one ffmpeg slot: wait (earliest deadline first) for at most queue_seconds, then Busy."""
        if self.running >= self.slots:  # a freed slot goes straight to a waiter, so none wait otherwise
            await self._wait_in_line(time.monotonic() if deadline is None else deadline)
        else:
            self.running += 1
        self.runs += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds += time.monotonic() - started
            self._release()

    @contextlib.asynccontextmanager
    async def set_aside(self, deadline: Callable[[], float]):
        """For the holder of a slot whose ffmpeg will wait a while without using the CPU (blocked
        on its full pipe): the slot serves others meanwhile, and is taken back on the way out,
        waiting in line by `deadline()` as it is then."""
        self.paused += 1
        self._release()
        try:
            yield
        finally:
            self.paused -= 1
            try:
                if self.running >= self.slots:
                    await self._wait_in_line(deadline())
                else:
                    self.running += 1
            except BaseException:
                self.running += 1  # held again, over the bound for a moment, so that it can be released
                raise

    async def _wait_in_line(self, deadline: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._line, (deadline, next(self._arrivals), waiter))
        self.queued += 1
        try:
            await asyncio.wait_for(waiter, self.queue_seconds)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()  # left in the line, skipped when its turn comes
            if isinstance(exc, TimeoutError):
                raise Busy(f"all {self.slots} ffmpeg slots stayed busy for {self.queue_seconds} s") from None
            raise
        finally:
            self.queued -= 1

    def _release(self) -> None:
        """Hand the slot to the waiter with the earliest deadline, or free it."""
        while self._line:
            _, _, waiter = heapq.heappop(self._line)
            if not waiter.done():
                waiter.set_result(None)  # running stays the same: the slot changes hands
                return
        self.running -= 1

    async def run(self, arguments: list[str], deadline: float | None = None) -> bytes:
        """Run ffmpeg with these arguments to completion; its stdout. `deadline` (time.monotonic())
        is when the result is needed; None means now."""
        async with self._slot(deadline):
            return await _run([self.binary, "-nostdin", "-v", "error", *arguments])

    async def stream(self, arguments: list[str], chunk: int = 65536, deadline: float | None = None,
                     due: Callable[[], float] | None = None):
        """Run ffmpeg and yield its stdout as it comes; it is killed if the consumer stops early.
        `due()` (time.monotonic()), when given, says when the output being made now is needed:
        while others need theirs much sooner, this process is paused (see Pauser)."""
        async with self._slot(deadline):
            process = await _spawn([self.binary, "-nostdin", "-v", "error", *arguments])
            if due is not None:
                self.pauser.add(process, due)
            read_all = False
            try:
                while data := await process.stdout.read(chunk):
                    yield data
                err = await process.stderr.read()
                read_all = True
                if await process.wait() != 0:
                    last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
                    raise FfmpegFailed(f"ffmpeg failed: {last[0]}")
            finally:
                if due is not None:
                    self.pauser.remove(process)
                if not read_all:  # the consumer stopped early: ffmpeg may run, or have exited unread
                    await _kill(process)


class Pauser:
    """Earliest deadline first among running ffmpeg processes, which the kernel would otherwise
    share the CPU between alike: while some process's output is needed within URGENT seconds,
    those whose output is not needed for RELAXED seconds are stopped (SIGSTOP), and they go on
    (SIGCONT) as soon as nothing is that urgent. Looked at every TICK seconds."""

    URGENT, RELAXED, TICK = 1.0, 3.0, 0.1

    def __init__(self) -> None:
        self._due: dict[int, Callable[[], float]] = {}  # pid -> when its output is needed
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._stopped: set[int] = set()
        self._task: asyncio.Task | None = None
        self.stops = 0

    def add(self, process: asyncio.subprocess.Process, due: Callable[[], float]) -> None:
        self._due[process.pid] = due
        self._processes[process.pid] = process
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="ffmpeg-pauser")

    def remove(self, process: asyncio.subprocess.Process) -> None:
        self._due.pop(process.pid, None)
        if process.pid in self._stopped:
            self._stopped.discard(process.pid)
            self._signal(process.pid, signal.SIGCONT)
        self._processes.pop(process.pid, None)

    async def _watch(self) -> None:
        try:
            while self._due:
                self._decide(time.monotonic())
                await asyncio.sleep(self.TICK)
        finally:
            for pid in list(self._stopped):
                self._signal(pid, signal.SIGCONT)
            self._stopped.clear()
            self._task = None

    def _decide(self, now: float) -> None:
        left = {pid: due() - now for pid, due in list(self._due.items())}
        urgent = any(t < self.URGENT for t in left.values())
        for pid, t in left.items():
            if urgent and t > self.RELAXED:
                if pid not in self._stopped:
                    self._stopped.add(pid)
                    self.stops += 1
                    self._signal(pid, signal.SIGSTOP)
            elif pid in self._stopped:
                self._stopped.discard(pid)
                self._signal(pid, signal.SIGCONT)

    async def close(self) -> None:
        """Stop watching; every process stopped goes on (so it can end)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _signal(self, pid: int, sig: int) -> None:
        process = self._processes.get(pid)
        if process is not None:
            _signal(process, sig)


async def _run(command: list[str]) -> bytes:
    process = await _spawn(command)
    try:
        out, err = await process.communicate()
    except BaseException:
        await _kill(process)
        raise
    if process.returncode != 0:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        log.warning("ffmpeg failed (%d): %s: %s", process.returncode, " ".join(command[4:]), last[0])
        raise FfmpegFailed(f"ffmpeg failed: {last[0]}")
    return out


async def _spawn(command: list[str]) -> asyncio.subprocess.Process:
    """Start a process with its stdout and stderr piped. A caller cancelled while it starts
    has it killed and reaped before the cancellation goes on: asyncio would close the transport
    of a start cut short, and that close polls the child (Popen.poll()), which reaps one that
    has already exited behind the child watcher's back (see the module's docstring)."""
    starting = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        await _to_the_end(_reap_started(starting))
        raise


async def _reap_started(starting: asyncio.Future) -> None:
    try:
        process = await starting
    except Exception:  # it did not start: nothing to reap
        return
    await _kill_and_reap(process)


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill and reap ffmpeg, even through repeated cancellation (a killed process exits at once):
    no zombies."""
    await _to_the_end(_kill_and_reap(process))


async def _kill_and_reap(process: asyncio.subprocess.Process) -> None:
    """What it had written and nobody read is drained: asyncio's wait() also waits for the pipes
    to close."""
    _signal(process, signal.SIGKILL)
    await asyncio.gather(*(pipe.read() for pipe in (process.stdout, process.stderr) if pipe))
    await process.wait()


async def _to_the_end(work) -> None:
    """Run `work` to its end even if the caller is cancelled meanwhile, again and again; then
    pass the cancellation on."""
    done = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            await asyncio.shield(done)
            break
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _signal(process: asyncio.subprocess.Process, sig: int) -> None:
    """Send `sig` to a child the loop's watcher has not reported gone, without waiting for it
    (which would reap it: see the module's docstring). Only the watcher reaps our children, so
    while returncode is None the pid is still this child's: at most reaped a moment before the
    watcher's report comes through, and Linux hands pids out in turn, never again that soon."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


def find_ffmpeg(configured: str = "") -> str:
    if configured:
        found = shutil.which(configured)
        if not found:
            raise MediaError(f"ffmpeg {configured!r} was not found or is not executable")
        return found
    import imageio_ffmpeg  # imported lazily: it probes the filesystem on import

    return imageio_ffmpeg.get_ffmpeg_exe()
