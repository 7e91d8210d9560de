"""ffmpeg: where it is, and running it with a bound on how many run at once.

Every ffmpeg the server starts goes through one FfmpegPool: at most `slots` run together, work
beyond that waits in line for at most `queue_seconds` and is then refused (Busy, which HTTP
answers with 503 and Retry-After), and a run whose caller goes away is killed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time

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
        self._semaphore = asyncio.Semaphore(slots)
        self.running = 0
        self.queued = 0
        self.runs = 0
        self.seconds = 0.0  # ffmpeg wall time, summed

    @contextlib.asynccontextmanager
    async def _slot(self):
        """Hold one ffmpeg slot: wait in line for at most queue_seconds, then Busy."""
        self.queued += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.queue_seconds)
        except TimeoutError:
            raise Busy(f"all {self.slots} ffmpeg slots stayed busy for {self.queue_seconds} s") from None
        finally:
            self.queued -= 1
        self.running += 1
        self.runs += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds += time.monotonic() - started
            self.running -= 1
            self._semaphore.release()

    async def run(self, arguments: list[str]) -> bytes:
        """Run ffmpeg with these arguments to completion; its stdout."""
        async with self._slot():
            return await _run([self.binary, "-nostdin", "-v", "error", *arguments])

    async def stream(self, arguments: list[str], chunk: int = 65536):
        """Run ffmpeg and yield its stdout as it comes; it is killed if the consumer stops early."""
        async with self._slot():
            process = await asyncio.create_subprocess_exec(
                self.binary, "-nostdin", "-v", "error", *arguments, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                while data := await process.stdout.read(chunk):
                    yield data
                err = await process.stderr.read()
                if await process.wait() != 0:
                    last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
                    raise FfmpegFailed(f"ffmpeg failed: {last[0]}")
            finally:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()  # reaped, whatever happened


async def _run(command: list[str]) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()  # no zombies, whatever happened
        raise
    if process.returncode != 0:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        log.warning("ffmpeg failed (%d): %s: %s", process.returncode, " ".join(command[4:]), last[0])
        raise FfmpegFailed(f"ffmpeg failed: {last[0]}")
    return out


def find_ffmpeg(configured: str = "") -> str:
    if configured:
        found = shutil.which(configured)
        if not found:
            raise MediaError(f"ffmpeg {configured!r} was not found or is not executable")
        return found
    import imageio_ffmpeg  # imported lazily: it probes the filesystem on import

    return imageio_ffmpeg.get_ffmpeg_exe()
