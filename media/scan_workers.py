"""A scan's tag readers: processes forked from this one for one scan, gone when it ends.

mutagen is pure Python, so threads reading tags would share one core. A forked reader starts in
about a millisecond with all this process has imported (the forkserver and resource tracker it
replaces cost 0.18 s of CPU a scan: 75 us a file of a 2,400-file scan), and holds the scan's
list of tasks from the start: only a task's number goes to it (4 bytes down a pipe) and only its
results come back (a pickle up another).

Forking a process that has threads is safe here because the child runs nothing but the tag
reader: it takes no lock another thread may hold at the fork (no logging, SQLite or event loop),
keeps only its two pipes open (an inherited copy of a client's socket would keep that connection
open after the server closed it), leaves signals to the server (the inherited wakeup fd is the
server's event loop's), never collects what it inherited (gc.freeze: those objects' finalizers
are the server's), and leaves by os._exit (no atexit handler, no flush of inherited buffers).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import pickle
import signal
import struct
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


class Readers:
    """`count` forked readers of `tasks` (files under `root`), used as an async context manager:
    results() yields each task's results as they come. A reader is given its next task when its
    last result is taken, so while nobody asks for more, no more is read. A reader that dies
    leaves its tasks to be read here (in a thread); leaving the context kills those still reading
    and reaps them all."""

    def __init__(self, root: str, tasks: list[Task], count: int) -> None:
        self.root, self.tasks = root, tasks
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
                    if got is None:  # it exited: with tasks still held, it died
                        if reader.holding:
                            log.warning("scan: reader process %d ended with %d tasks unread; reading them here",
                                        reader.pid, len(reader.holding))
                            self._queue.extendleft(reversed(reader.holding))
                            reader.holding.clear()
                        continue
                    self._give(reader)
                    pending[asyncio.ensure_future(reader.result())] = reader
                    yield got
            while self._queue:  # what dead readers left
                yield await asyncio.to_thread(read_files, self.root, self.tasks[self._queue.popleft()])
        finally:
            for future in pending:
                future.cancel()

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
        statuses = await asyncio.to_thread(lambda: [os.waitpid(r.pid, 0)[1] for r in readers])
        for reader, status in zip(readers, statuses):
            code = os.waitstatus_to_exitcode(status)
            if code != 0 and not reader.killed:
                log.warning("scan: reader process %d exited with %d", reader.pid, code)


class _Reader:
    """One forked reader, seen from this process."""

    def __init__(self, pid: int, task_w: int) -> None:
        self.pid, self._task_w = pid, task_w
        self.holding: list[int] = []  # tasks given, results not yet taken
        self.exited = False  # its result pipe ended
        self.killed = False
        self._results: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None

    @classmethod
    async def fork(cls, root: str, tasks: list[Task]) -> _Reader:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns of forking with threads: see above
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except BaseException:
            for fd in (task_r, task_w, result_r, result_w):
                os.close(fd)
            raise
        if pid == 0:
            _child(root, tasks, task_r, result_w)
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
            await asyncio.to_thread(os.waitpid, pid, 0)
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
        """Kill it if it may still read, and close its pipes (reaping is the caller's)."""
        if not self.exited and (self.holding or self._task_w >= 0):
            self.killed = True
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.finish()
        if self._transport is not None:
            self._transport.close()


def _child(root: str, tasks: list[Task], task_r: int, result_w: int) -> NoReturn:
    """A forked reader's life: read each task whose number comes, send its results, exit at the
    end of the task pipe. Anything going wrong ends it; the server reads its tasks itself."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the server's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        gc.freeze()
        os.closerange(3, min(task_r, result_w))
        os.closerange(min(task_r, result_w) + 1, max(task_r, result_w))
        os.closerange(max(task_r, result_w) + 1, os.sysconf("SC_OPEN_MAX"))
        while head := os.read(task_r, _INDEX.size):
            index = _INDEX.unpack(head)[0]
            data = pickle.dumps((index, read_files(root, tasks[index])), protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(_LENGTH.pack(len(data)) + data)
            while view:
                view = view[os.write(result_w, view):]
        code = 0
    finally:
        os._exit(code)
