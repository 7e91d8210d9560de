"""A scan's tag readers: processes forked from this one for one scan, gone when it ends.

mutagen is pure Python, so threads reading tags would share one core. A forked reader starts in
about a millisecond with all this process has imported (the forkserver and resource tracker it
replaces cost 0.18 s of CPU a scan: 75 us a file of a 2,400-file scan), and holds the scan's
list of tasks from the start: only a task's number goes to it (4 bytes down a pipe) and only its
results come back (a pickle up another).

Forking a process that has threads is safe here because the child runs nothing but the tag
reader and takes no lock another thread may have held at the fork: it logs nothing and warns
nothing (a handler's stream lock may be held; a reader's traceback goes to fd 2 raw), keeps only
its two pipes open (an inherited copy of a client's socket would keep that connection open after
the server closed it), leaves signals to the server (blocked across the fork, so none reaches the
server's event loop through the wakeup fd the child inherits before it lets go of it), never
collects what it inherited (gc.freeze: those objects' finalizers are the server's), and leaves by
os._exit (no atexit handler, no flush of inherited buffers).

A reader that dies (a file that exhausts its memory, say) takes nothing with it: its tasks are
read again, one file a task, by a new reader, and a file that ends a reader too is reported as a
problem. The server itself never reads them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import pickle
import signal
import struct
import traceback
import warnings
from typing import Any, NoReturn

from media.tags import read_files

log = logging.getLogger(__name__)

AVAILABLE = hasattr(os, "fork")
TASKS_IN_FLIGHT = 2  # tasks given to each reader at a time: the one it reads, the one it reads next

Results = list[tuple[str, dict[str, Any] | None, str | None]]
Task = list[tuple[str, int, int]]  # (relative path, size, mtime_ns) of each file
_INDEX = struct.Struct("<I")  # a task's number, down the task pipe
_LENGTH = struct.Struct("<I")  # a result's length, up the result pipe before its pickle
_SERVER_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # the server's to handle, not a reader's

# Python 3.12+ warns of any fork in a process with threads: this one is made safe (see above).
warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)


class Readers:
    """`count` forked readers of `tasks` (files under `root`), used as an async context manager:
    results() yields each task's results as they come. A reader is given its next task when its
    last result is taken, so while nobody asks for more, no more is read. Leaving the context
    kills the readers still reading and reaps them all."""

    def __init__(self, root: str, tasks: list[Task], count: int) -> None:
        self.root, self.tasks = root, list(tasks)  # grows: a dead reader's tasks, split one file each
        self.count = max(1, min(count, len(tasks)))
        self._queue = collections.deque(range(len(tasks)))
        self._readers: list[_Reader] = []

    async def __aenter__(self) -> Readers:
        try:
            for _ in range(self.count):
                self._readers.append(await _Reader.fork(self.root, self.tasks))
        except BaseException:
            await self._end()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._end()

    async def results(self):
        pending: dict[asyncio.Future, _Reader] = {}
        try:
            for _ in range(TASKS_IN_FLIGHT):  # a task each first: a few tasks go to as many readers
                for reader in self._readers:
                    self._give(reader)
            for reader in self._readers:
                pending[asyncio.ensure_future(reader.result())] = reader
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    reader = pending.pop(future)
                    got = future.result()
                    if got is not None:
                        self._give(reader)
                        pending[asyncio.ensure_future(reader.result())] = reader
                        yield got
                        continue
                    how = await reader.reap()
                    if reader.holding:  # it died reading them
                        problems = self._read_again(reader, how)
                        if problems:
                            yield problems
                    elif how:
                        log.warning("scan: reader process %d %s", reader.pid, how)
                    if self._queue:
                        replacement = await _Reader.fork(self.root, self.tasks)
                        self._readers.append(replacement)
                        for _ in range(TASKS_IN_FLIGHT):
                            self._give(replacement)
                        pending[asyncio.ensure_future(replacement.result())] = replacement
        finally:
            for future in pending:
                future.cancel()

    def _read_again(self, reader: _Reader, how: str) -> Results:
        """A dead reader's tasks, first in the queue again. It died on the first it held (tasks
        are read in order): of several files, those are read again one file a task; of one, that
        file is reported as a problem."""
        (died_on, *unread), problems, again = reader.holding, [], []
        task = self.tasks[died_on]
        if len(task) == 1:
            problems.append((task[0][0], None, f"reading it ended the scan's reader process ({how})"))  # logged as skipped
        else:
            again.extend(range(len(self.tasks), len(self.tasks) + len(task)))
            self.tasks.extend([item] for item in task)
            log.warning("scan: reader process %d %s while reading a task of %d files; they are read again, "
                        "one a task", reader.pid, how, len(task))
        reader.holding.clear()
        self._queue.extendleft(reversed(again + unread))
        return problems

    def _give(self, reader: _Reader) -> None:
        if self._queue:
            if reader.give(self._queue[0]):
                self._queue.popleft()
        else:
            reader.finish()

    async def _end(self) -> None:
        readers, self._readers = self._readers, []
        for reader in readers:
            reader.stop()
        await asyncio.gather(*(reader.reap() for reader in readers))


class _Reader:
    """One forked reader, seen from this process."""

    def __init__(self, pid: int, task_w: int) -> None:
        self.pid, self._task_w = pid, task_w
        self.holding: list[int] = []  # tasks given, results not yet taken
        self.exited = False  # its result pipe ended
        self._reaped: asyncio.Future[str] | None = None
        self._results: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None

    @classmethod
    async def fork(cls, root: str, tasks: list[Task]) -> _Reader:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SERVER_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in (task_r, task_w, result_r, result_w):
                os.close(fd)
            raise
        if pid == 0:
            _child(root, tasks, task_r, result_w, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(task_r)
        os.close(result_w)
        reader = cls(pid, task_w)
        pipe = os.fdopen(result_r, "rb", buffering=0)
        try:
            reader._results = asyncio.StreamReader()
            reader._transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader._results), pipe)
        except BaseException:
            pipe.close()
            reader.stop()
            await reader.reap()
            raise
        return reader

    def give(self, index: int) -> bool:
        """Hand it task `index`; False if it is gone."""
        try:
            os.write(self._task_w, _INDEX.pack(index))  # 4 bytes to a pipe holding 2 more at most: never blocks
        except OSError:  # BrokenPipeError: it exited; its result pipe ends too
            return False
        self.holding.append(index)
        return True

    def finish(self) -> None:
        """No more tasks: it exits once it has sent what it holds."""
        if self._task_w >= 0:
            os.close(self._task_w)
            self._task_w = -1

    async def result(self) -> Results | None:
        """The next task's results; None once it has exited."""
        try:
            length = _LENGTH.unpack(await self._results.readexactly(_LENGTH.size))[0]
            index, results = pickle.loads(await self._results.readexactly(length))
        except asyncio.IncompleteReadError:
            self.exited = True
            self.finish()
            return None
        self.holding.remove(index)
        return results

    def stop(self) -> None:
        """Kill it if it may still read, and close its pipes."""
        if not self.exited and (self.holding or self._task_w >= 0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.finish()
        if self._transport is not None:
            self._transport.close()

    def reap(self) -> asyncio.Future[str]:
        """Wait for its exit (it has closed its pipe, or was killed); how it ended when that was
        not a plain exit, else ''. Once, however many ask."""
        if self._reaped is None:
            self._reaped = asyncio.ensure_future(self._wait())
        return self._reaped

    async def _wait(self) -> str:
        _, status = await asyncio.to_thread(os.waitpid, self.pid, 0)  # a thread: a killed reader may take a moment
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}" if code else ""


def _child(root: str, tasks: list[Task], task_r: int, result_w: int, mask: set) -> NoReturn:
    """A forked reader's life: read each task whose number comes, send its results, exit at the
    end of the task pipe. Anything going wrong ends it (the server reads its tasks again)."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in _SERVER_SIGNALS:  # Ctrl-C and a stop reach the process group: it ends with the server's pipes
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        logging.disable(logging.CRITICAL)
        warnings.simplefilter("ignore")
        gc.freeze()
        _close_all_but(task_r, result_w)
        while head := os.read(task_r, _INDEX.size):
            index = _INDEX.unpack(head)[0]
            data = pickle.dumps((index, read_files(root, tasks[index])), protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(_LENGTH.pack(len(data)) + data)
            while view:
                view = view[os.write(result_w, view):]
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, f"scan reader {os.getpid()}: {traceback.format_exc()}".encode(errors="replace"))
    finally:
        os._exit(code)


def _close_all_but(*keep: int) -> None:
    """Close every fd above 2 but `keep` (up to the highest open one: without the close_range
    system call, Python closes each number up to the limit, which may be a billion)."""
    try:
        top = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1
    except (OSError, ValueError):
        top = os.sysconf("SC_OPEN_MAX")
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, top)
