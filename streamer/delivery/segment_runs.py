"""Runs of ffmpeg that make the segments of an AAC variant forward, ahead of the listener.

A segment nobody has made yet starts a run there: one ffmpeg that encodes from that point
forward and hands each segment over the moment it is encoded, storing it in the cache. The run
keeps going while its listener keeps asking, at most RUN_AHEAD segments past the last one
asked for; beyond that, or when others waiting for ffmpeg need a slot sooner than its listener
needs its next segment, it is set aside: it stops reading ffmpeg's output, so the blocked ffmpeg
uses no CPU, and gives its slot up until it may go on. It stops when the track ends, when its
listener has asked for nothing for IDLE_SECONDS or has seeked past it, when it would make a
segment that is already made, or when too many runs are set aside. Before it goes into a
segment, the run enters it in the cache's single flight, so a request for it joins the run
instead of starting another ffmpeg; when every request for that segment has gone, the run is
killed.

So one listener playing a track costs one ffmpeg start, and a listener who seeks far starts a
new run there (the old one stops once it is no longer asked for). Runs wait in the ffmpeg line
by when their listener needs audio (see media.ffmpeg): now for a start or a seek, and for a
listener playing on, when the segment before (which its player holds) ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from media import FfmpegPool, MediaCache
from media.hls_plan import Segment, Variant
from media.segmenter import SegmentError, aac_segments

log = logging.getLogger(__name__)

RUN_AHEAD = 3  # segments a run makes past the last one its listener asked for
IDLE_SECONDS = 30.0  # a run whose listener asks for nothing this long stops
PLAYHEADS_KEPT = 4096


class SegmentRuns:
    def __init__(self, pool: FfmpegPool, cache: MediaCache) -> None:
        self.pool = pool
        self.cache = cache
        self._playheads: dict[tuple[str, str], int] = {}  # (track, variant) -> last segment asked for
        self._needed_at: dict[tuple[str, str], float] = {}  # ... and when it needs that one
        self._wake: dict[tuple[str, str], asyncio.Event] = {}  # paused runs: set when the playhead moves
        self._coming: dict[tuple[str, str], int] = {}  # the segment a live run goes into next
        self._tasks: set[asyncio.Task] = set()

    def needed_by(self, track_id: str, variant: Variant, plan: list[Segment], index: int) -> float:
        """When the listener asking for segment `index` needs it (time.monotonic()), and note
        it as that listener's playhead. Now for a start or a seek; for a listener playing on
        (the segment before was the last one asked for), when the segment before it has played."""
        key = (track_id, variant.name)
        before = self._playheads.pop(key, None)
        self._playheads[key] = index
        if len(self._playheads) > PLAYHEADS_KEPT:
            self._needed_at.pop(next(iter(self._playheads)), None)
            self._playheads.pop(next(iter(self._playheads)))
        wake = self._wake.get(key)
        if wake is not None:
            wake.set()
        now = time.monotonic()
        needed = now + plan[index - 1].duration if index > 0 and before == index - 1 else now
        self._needed_at[key] = needed
        return needed

    async def make(self, track_id: str, key_of: Callable[[int], str], source: Path, variant: Variant,
                   plan: list[Segment], index: int, needed_by: float) -> bytes:
        """Segment `index`, from a run that starts at it. The caller holds the single flight of
        the segment itself; if it leaves (is cancelled), the run stops."""
        first = asyncio.get_running_loop().create_future()
        self._start(track_id, key_of, source, variant, plan, index, needed_by, first)
        return await first

    def make_ahead(self, track_id: str, key_of: Callable[[int], str], source: Path, variant: Variant,
                   plan: list[Segment], index: int) -> None:
        """Start a run at segment `index` before it is asked for, if ffmpeg has a slot to spare."""
        if self.pool.running >= self.pool.slots or self._coming.get((track_id, variant.name)) == index:
            return  # no slot to spare, or a run (set aside a moment) goes into it already
        first = self.cache.expect(key_of(index))
        if first is not None:
            self._start(track_id, key_of, source, variant, plan, index, None, first)

    def _start(self, track_id: str, key_of: Callable[[int], str], source: Path, variant: Variant,
               plan: list[Segment], index: int, needed_by: float | None, first: asyncio.Future) -> None:
        task = asyncio.create_task(self._run((track_id, variant.name), key_of, source, variant, plan, index,
                                             needed_by, first))
        _stop_when_abandoned(first, task)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def _run(self, listener: tuple[str, str], key_of: Callable[[int], str], source: Path,
                   variant: Variant, plan: list[Segment], index: int, needed_by: float | None,
                   promised: asyncio.Future) -> None:
        """Make segments from `index` on; `promised` is the future of the one being made."""
        try:
            async with contextlib.aclosing(aac_segments(self.pool, source, variant, plan[index:], needed_by,
                                                        lambda i: self._deadline(listener, plan, i))) as bodies:
                async for body in bodies:
                    if not promised.done():
                        promised.set_result(body)
                    index += 1
                    if index == len(plan):
                        return
                    self._coming[listener] = index
                    try:
                        if not await self._listener_keeps_up(listener, plan, index):
                            return
                    finally:
                        if self._coming.get(listener) == index:
                            del self._coming[listener]
                    promised = self.cache.expect(key_of(index))
                    if promised is None:  # made already, or being made by another run
                        return
                    _stop_when_abandoned(promised, asyncio.current_task())
            if not promised.done():
                raise SegmentError(f"ffmpeg ended before segment {index} of {source}")
        except BaseException as exc:
            if promised is not None and not promised.done():
                if isinstance(exc, asyncio.CancelledError):
                    promised.cancel()
                else:
                    promised.set_exception(exc)
            raise

    async def _listener_keeps_up(self, listener: tuple[str, str], plan: list[Segment], index: int) -> bool:
        """Whether to go on into segment `index`, waiting as long as needed: True, or False when
        the run should stop instead (its listener went idle or seeked past it). A run more than
        RUN_AHEAD segments past its listener waits until the listener comes closer, and one
        whose slot others need sooner than its listener needs segment `index` waits for its
        turn; either way its ffmpeg is set aside meanwhile (blocked, holding no slot)."""
        idle_until = time.monotonic() + IDLE_SECONDS
        while True:
            playhead = self._playheads.get(listener, -1)
            if index < playhead:
                return False  # the listener went past it (a seek): a run started there serves it
            ahead = index > playhead + RUN_AHEAD
            urgent = self.pool.first_deadline()
            if not ahead and (urgent is None or urgent >= self._due(listener, plan, index)):
                return True
            if time.monotonic() >= idle_until or self.pool.paused >= self.pool.slots:
                return False  # idle, or too many set aside already: stop, a later request restarts it
            async with self.pool.set_aside(lambda: self._due(listener, plan, index)):
                if ahead and not await self._moved(listener, idle_until):
                    return False

    def _due(self, listener: tuple[str, str], plan: list[Segment], index: int) -> float:
        """When the listener needs segment `index`: after the segments from its playhead on play."""
        playhead = max(self._playheads.get(listener, 0), 0)
        return time.monotonic() + sum(s.duration for s in plan[playhead:index])

    def _deadline(self, listener: tuple[str, str], plan: list[Segment], index: int) -> float:
        """When the listener needs segment `index`, as a moment (for the Pauser): the one it asked
        for last when needed_by said, each one after when the one before has played. Never, for a
        run set aside (it makes nothing meanwhile, so it must not count as urgent)."""
        if self._coming.get(listener) == index:
            return math.inf
        playhead = self._playheads.get(listener, 0)
        needed = self._needed_at.get(listener, time.monotonic())
        return needed + sum(s.duration for s in plan[playhead:index])

    async def _moved(self, listener: tuple[str, str], until: float) -> bool:
        """Wait until the listener's playhead moves: True, or False at `until`."""
        wake = self._wake.setdefault(listener, asyncio.Event())
        wake.clear()
        try:
            await asyncio.wait_for(wake.wait(), max(0.0, until - time.monotonic()))
            return True
        except TimeoutError:
            return False
        finally:
            self._wake.pop(listener, None)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a segment run failed: %s", task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _stop_when_abandoned(future: asyncio.Future, task: asyncio.Task) -> None:
    """When every request for the segment being made has gone, stop the run (and its ffmpeg)."""
    def abandoned(done: asyncio.Future) -> None:
        if done.cancelled() and not task.done():
            task.cancel()
    future.add_done_callback(abandoned)


RUNS = web.AppKey("segment_runs", SegmentRuns)
