"""A track's waveform for a seek bar: the loudest sample of each of N equal stretches of it.

ffmpeg decodes the file to mono 16-bit PCM at 8 kHz (`-f s16le -ac 1 -ar 8000`), and the peaks
are taken as the samples come, so memory stays bounded whatever the length: pydub's AudioSegment
would hold a whole decode in memory (an hour at 44.1 kHz stereo is 635 MB), and its arithmetic
is audioop's, which Python 3.13 removes; the stdlib's array does it here. `Envelope` keeps the
loudest sample of each block of `block` samples, at most FINEST blocks (2 bytes each): when they
would be more, neighbours are merged in pairs and the block doubles. An hour ends with blocks of
512 samples (64 ms), a dozen per point even at the most points asked for (4096); a track under
8 s keeps every sample.

Peaks are the absolute sample value over full scale, 0..1, before any gain: a player that wants
the loudest bar full height divides by the largest. Mixing to mono and resampling to 8 kHz make
them approximate (sound above 4 kHz and out of phase between channels counts less), which a seek
bar cannot show anyway.

The ffmpeg run goes through the pool like every other: it waits behind listeners for a slot
(a later deadline), and while a listener's audio is urgent it is paused (its output is never due).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from array import array
from dataclasses import dataclass

from media.ffmpeg import FfmpegPool

RATE = 8000  # samples per second decoded: ample for peaks, and little to read
FINEST = 65536  # blocks kept at most, whatever the length (128 KiB)
FULL_SCALE = 32768
FEED_BYTES = 65536  # PCM gathered before it is looked at (4 s of it)
BEHIND_LISTENERS = 10.0  # seconds: a waveform waits in the pool's line behind audio needed sooner
NEVER_DUE = 24 * 3600.0  # seconds: a listener's urgent audio always goes first


@dataclass(frozen=True)
class Waveform:
    duration: float  # seconds decoded
    peaks: list[float]  # 0..1, one per point


class Envelope:
    """The loudest absolute sample of each block of `block` samples, fed as PCM bytes come."""

    def __init__(self) -> None:
        self.block = 1
        self.maxima = array("H")
        self._rest = b""  # bytes of a block not yet complete

    @property
    def samples(self) -> int:
        return len(self.maxima) * self.block + len(self._rest) // 2

    def feed(self, data: bytes) -> None:
        data = self._rest + data if self._rest else data
        start = 0
        while len(data) - start >= 2 * self.block:
            size = 2 * self.block
            room = FINEST - len(self.maxima)  # blocks that fit before the next merge
            end = start + min((len(data) - start) // size, room) * size
            self.maxima.extend(_block_maxima(_samples(data[start:end]), self.block))
            start = end
            if len(self.maxima) == FINEST:
                self._halve()
        self._rest = data[start:]

    def _halve(self) -> None:
        m = self.maxima
        self.maxima = array("H", map(max, m[0::2], m[1::2]))
        self.block *= 2

    def peaks(self, points: int) -> list[float]:
        """`points` peaks over equal stretches of the samples fed; the unfinished last block
        counts as one of its own."""
        maxima, rest = self.maxima, self._rest[:len(self._rest) // 2 * 2]
        if rest:
            maxima = maxima + array("H", [max(map(abs, _samples(rest)))])
        total, block = self.samples, self.block
        out = []
        for i in range(points):
            first = min(i * total // points // block, len(maxima) - 1)
            last = max(first + 1, -(-((i + 1) * total // points) // block))
            out.append(round(max(maxima[first:last], default=0) / FULL_SCALE, 3))
        return out


def _samples(data: bytes) -> array:
    samples = array("h", data)
    if sys.byteorder == "big":  # s16le
        samples.byteswap()
    return samples


def _block_maxima(samples: array, block: int) -> array:
    """The loudest absolute sample of each block (`block` a power of two dividing the count).
    Blocks of one or two samples by pairs, in C loops: a slice per sample costs ten times more."""
    if block > 2:
        return array("H", [max(max(s), -min(s)) for s in (samples[i:i + block]
                                                           for i in range(0, len(samples), block))])
    level = array("H", map(abs, samples))
    while block > 1:
        level = array("H", map(max, level[0::2], level[1::2]))
        block //= 2
    return level


def decode_arguments(path: str) -> list[str]:
    return ["-i", path, "-map", "0:a:0", "-vn", "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"]


async def waveform(pool: FfmpegPool, path: str, points: int) -> Waveform:
    """The track's peaks at `points` points, decoded by one ffmpeg run from the pool. Raises
    Busy when no slot frees in time, FfmpegFailed when the file cannot be decoded."""
    envelope = Envelope()
    stream = pool.stream(decode_arguments(path), deadline=time.monotonic() + BEHIND_LISTENERS,
                         due=lambda: time.monotonic() + NEVER_DUE)
    pending = bytearray()  # ffmpeg writes a few hundred bytes at a time: fed by FEED_BYTES
    async with contextlib.aclosing(stream) as chunks:
        async for chunk in chunks:
            pending += chunk
            if len(pending) >= FEED_BYTES:
                # A few ms of Python: in a thread, where the event loop takes the GIL back every
                # switch interval (5 ms), so listeners' requests go on meanwhile.
                await asyncio.to_thread(envelope.feed, bytes(pending))
                pending.clear()
    await asyncio.to_thread(envelope.feed, bytes(pending))
    peaks = await asyncio.to_thread(envelope.peaks, points)
    return Waveform(round(envelope.samples / RATE, 3), peaks)
