"""A file that is still being written, and a way to wait for more of it.

What arrives (a file pulled from another node, say) is written into a file of its own, so a file
of any size costs no memory; readers open their own handles on it and wait for the length they
need, and keep reading after it ends and is removed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from media.errors import MediaError


class CutShort(MediaError):
    """The file ended before its announced size."""


class GrowingFile:
    def __init__(self, size: int, path: Path) -> None:
        self.size = size  # announced: what it holds once complete
        self.path = path
        self.length = 0  # bytes written so far
        self.failure: BaseException | None = None
        self.finished = False
        # Unbuffered: what `length` counts is in the file, where readers' own handles read it.
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by end())
        self._grew = asyncio.Event()
        self.kept = asyncio.get_running_loop().create_future()  # done once ended well (kept elsewhere)
        self.kept.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, whoever waits

    async def add(self, chunk: bytes) -> None:
        await asyncio.to_thread(_write_all, self._file, chunk)
        self.length += len(chunk)
        self._wake()

    def reader(self):
        """A handle of its own on the file: it stays readable after the file ends and is removed
        (call it before any await once the file is found)."""
        return open(self.path, "rb", buffering=0)  # noqa: SIM115 (the reader closes it)

    def end(self, failure: BaseException | None = None) -> None:
        """Done (kept, or failed): the file is removed; readers keep their handles."""
        self.failure, self.finished = failure, True
        self._file.close()
        self.path.unlink(missing_ok=True)
        self._wake()
        if failure is None:
            self.kept.set_result(None)
        else:
            self.kept.set_exception(failure)

    def _wake(self) -> None:
        self._grew.set()
        self._grew = asyncio.Event()

    async def until(self, length: int) -> None:
        """Wait until the first `length` bytes are here; raises what made the file fail."""
        while self.length < length and not self.finished:
            await self._grew.wait()
        if self.failure is not None:
            raise self.failure
        if self.length < length:
            raise CutShort(f"the file ended after {self.length} bytes, not {self.size}")


def _write_all(file, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[file.write(view):]
