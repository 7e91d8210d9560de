"""Making one HLS segment of an AAC variant with ffmpeg, independently of every other segment.

Each segment is encoded from a little before its start (PREROLL_FRAMES), and only its own frames
are kept: the encoder's priming and the pre-roll are dropped frame-exactly (packed audio lets us
count frames). So segment 40 can be made before segment 0, by another ffmpeg run, and the
segments still join without inserted silence: the decoder sees, at every boundary, frames of
the same audio encoded from the same history. Only the first segment keeps the priming frame,
as every AAC stream does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from media import frame_index, mpegts
from media.cache import MediaCache
from media.ffmpeg import FfmpegFailed, FfmpegPool
from media.frame_index import FrameIndex
from media.hls_plan import Segment, Variant
from media.packed_audio import split_adts, timestamp_tag

log = logging.getLogger(__name__)

PREROLL_FRAMES = 8  # about 0.19 s: enough for the encoder state to match a continuous run
# ffmpeg 9's input seek is not sample-exact in AAC-in-MP4 sources: the first frame it decodes
# starts up to one source frame (1024 samples) after the seek point, with a true timestamp the
# encoder then ignores, so a run's audio came early by up to 23 ms, differently per run. So a run
# seeks this much earlier and trims to the sample by timestamp (atrim). Debian's 5.1 is exact.
SEEK_MARGIN = 0.1
PRIMING_FRAMES = 1  # ffmpeg's AAC encoder starts with one frame of encoder delay
SCAN_CHUNK = 1 << 20  # a stream is written and indexed a MiB at a time, never held whole


class SegmentError(FfmpegFailed):
    """A segment could not be made from what ffmpeg gave (answered like an ffmpeg failure)."""


async def make_aac_segment(ffmpeg: FfmpegPool, source: Path, variant: Variant, segment: Segment) -> bytes:
    """The bytes of one packed-audio segment: a timestamp tag, then the segment's ADTS frames."""
    return (await make_aac_segments(ffmpeg, source, variant, [segment]))[0]


async def make_aac_segments(ffmpeg: FfmpegPool, source: Path, variant: Variant,
                            run: list[Segment], needed_by: float | None = None) -> list[bytes]:
    """Consecutive segments from one ffmpeg run (see aac_segments), all at once."""
    async with contextlib.aclosing(aac_segments(ffmpeg, source, variant, run, needed_by)) as made:
        return [body async for body in made]


async def aac_segments(ffmpeg: FfmpegPool, source: Path, variant: Variant, following: Sequence[Segment],
                       needed_by: float | None = None,
                       due: Callable[[int], float] | None = None) -> AsyncIterator[bytes]:
    """Consecutive segments from one ffmpeg run, each yielded as soon as ffmpeg has encoded it.

    Within the run they join as one encoding does, and the run's first segment joins its
    predecessor through the pre-roll. Several segments per run spare ffmpeg's start-up and the
    pre-roll, which cost more than the encoding of 6 s. `needed_by` orders the run among others
    waiting for ffmpeg (see FfmpegPool). The consumer sets the pace: ffmpeg waits (blocked on
    its full pipe) while the consumer does not ask for more, and stopping early (closing the
    generator) kills it."""
    arguments, skip = _run_arguments(source, variant, following)
    done = 0
    kept: list[bytes] = []
    making = None if due is None else (lambda: due(following[min(done, len(following) - 1)].index))
    async with (contextlib.aclosing(ffmpeg.stream(arguments, deadline=needed_by, due=making)) as chunks,
                contextlib.aclosing(_adts_frames(chunks, source)) as frames):
        async for frame in frames:
            if skip:
                skip -= 1
                continue
            kept.append(frame)
            segment = following[done]
            # The track's start keeps the priming frame every AAC stream has.
            if len(kept) == segment.frames + (PRIMING_FRAMES if segment.index == 0 else 0):
                yield _packed(variant, segment, kept)
                done, kept = done + 1, []
                if done == len(following):
                    return
    segment = following[done]
    if not kept or segment is not following[-1]:  # only the track's last segment may come up short
        raise SegmentError(f"ffmpeg ended early, in segment {segment.index} of {source}")
    yield _packed(variant, segment, kept)


def _run_arguments(source: Path, variant: Variant, following: Sequence[Segment]) -> tuple[list[str], int]:
    """ffmpeg's arguments for one run of segments, and how many frames it encodes before the
    run's own: the priming frame and the pre-roll, none at the track's start."""
    first = following[0]
    preroll = min(PREROLL_FRAMES, first.first_frame)
    start = (first.first_frame - preroll) * variant.frame_seconds
    total = sum(s.frames for s in following)
    # One frame more than needed: the encoder pads the last one, and the padding is not ours.
    seconds = (preroll + total + 1) * variant.frame_seconds
    # Written in 4 KiB blocks, not a write per frame (ffmpeg's default on a pipe): a twentieth
    # of the system calls and event-loop wake-ups, for a few ms more until a segment is complete.
    arguments = [*_exact_start(source, start), "-t", f"{seconds:.6f}", "-vn", "-ac", "2",
                 "-ar", str(variant.sample_rate), "-c:a", "aac", "-b:a", f"{variant.bitrate}k",
                 "-f", "adts", "-flush_packets", "0", "-blocksize", "4096", "pipe:1"]
    skip = 0 if first.index == 0 else PRIMING_FRAMES + preroll
    return arguments, skip


async def _adts_frames(chunks: AsyncIterator[bytes], source: Path) -> AsyncIterator[bytes]:
    """The ADTS frames of ffmpeg's output, each as soon as its chunk has come (a frame may
    straddle two chunks: its start waits for the rest)."""
    buffer = b""
    async for chunk in chunks:
        data = buffer + chunk
        try:
            frames, used = split_adts(data)
        except ValueError as exc:
            raise SegmentError(f"ffmpeg's output for {source} is not ADTS: {exc}") from None
        buffer = data[used:]
        for frame in frames:
            yield frame


def _exact_start(source: Path, start: float) -> list[str]:
    """Input arguments that make the decoded audio begin exactly at `start` seconds (see
    SEEK_MARGIN). From the beginning, no seek at all: ffmpeg 9 drops a first frame even there."""
    if start <= 0:
        return ["-i", str(source)]
    seek = max(0.0, start - SEEK_MARGIN)
    seek_arguments = ["-ss", f"{seek:.6f}"] if seek > 0 else []
    return [*seek_arguments, "-i", str(source), "-af", f"atrim=start={start - seek:.6f},asetpts=PTS-STARTPTS"]


def _packed(variant: Variant, segment: Segment, frames: list[bytes]) -> bytes:
    # Timestamps count the first segment's priming frame, so frames line up across segments.
    first_pts = 0 if segment.index == 0 else variant.pts(segment.first_frame + PRIMING_FRAMES)
    return timestamp_tag(first_pts) + b"".join(frames)


async def extract_stream(ffmpeg: FfmpegPool, source: Path, codec: str, dest: Path,
                         needed_by: float | None = None) -> None:
    """Write the source's audio frames as they are, without container or tags, into `dest` as
    ffmpeg makes them (never whole in memory): ADTS for AAC, bare frames for MP3 (no Xing
    header, which would decode as a frame of silence)."""
    if codec == "mp3":
        out = ["-c:a", "copy", "-f", "mp3", "-write_xing", "0", "-id3v2_version", "0"]
    else:
        out = ["-c:a", "copy", "-f", "adts"]
    arguments = ["-i", str(source), "-map", "0:a:0", "-map_metadata", "-1", *out, "pipe:1"]
    with open(dest, "wb") as file:
        pending = bytearray()  # written a MiB at a time: a thread hop per 64 KiB pipe read costs more
        async with contextlib.aclosing(ffmpeg.stream(arguments, deadline=needed_by)) as chunks:
            async for chunk in chunks:
                pending += chunk
                if len(pending) >= SCAN_CHUNK:
                    await asyncio.to_thread(file.write, pending)
                    pending = bytearray()
        await asyncio.to_thread(file.write, pending)


def copy_segment(stream: bytes, variant: Variant, plan: Sequence[Segment], index: int) -> bytes:
    """Segment `index` of a copy variant from the whole stream at hand (see copied_segment)."""
    frames = frame_index.build([stream], variant.codec, plan)
    start, stop = frames.byte_range(plan[index])
    return cut_segment(frames, stream[start:stop], variant, plan, index)


def cut_segment(frames: FrameIndex, data: bytes, variant: Variant, plan: Sequence[Segment], index: int) -> bytes:
    """Segment `index` of a copy variant: the source's own frames, cut on frame boundaries, from
    `data`, the stream's bytes in the segment's byte_range. AAC as packed audio; MP3 in an
    MPEG-TS (see media.mpegts for why)."""
    segment = plan[index]
    first, stop = frames.span(segment)
    if first == stop:
        raise SegmentError(f"the source has {frames.frames} frames; segment {segment.index} starts past them")
    if variant.codec != "mp3":
        return timestamp_tag(variant.pts(segment.first_frame)) + bytes(data)
    view, base = memoryview(data), frames.offsets[first]
    kept = [view[frames.offsets[k] - base:frames.offsets[k + 1] - base] for k in range(first, stop)]
    pts = [variant.pts(segment.first_frame + i) for i in range(len(kept))]
    return mpegts.segment(kept, pts, index, frames.packets[index], _mpeg_audio_stream_type(variant))


async def copied_segment(cache: MediaCache, stream_key: str, extract: Callable[[Path], Awaitable[None]],
                         variant: Variant, plan: Sequence[Segment], index: int) -> bytes:
    """Segment `index` of a copy variant, reading only its own bytes of the stream that
    `extract` writes into a file (see extract_stream), stored once per file version under
    `stream_key`; the frame index beside it (built once) says where they are."""
    handle = await cache.open_file(stream_key) or await _extracted(cache, stream_key, extract)
    frames, data = await _read_stored(cache, stream_key, handle, variant, plan, index)
    return await asyncio.to_thread(cut_segment, frames, data, variant, plan, index)


async def _extracted(cache: MediaCache, stream_key: str, extract: Callable[[Path], Awaitable[None]]):
    """The stream, extracted into the cache as a file (once for any number of requests), opened."""
    async def make() -> bytes:
        with tempfile.TemporaryDirectory(prefix="frames-") as folder:
            path = Path(folder) / "stream"
            await extract(path)
            await cache.keep_path(stream_key, path)
        return b"extracted"  # get_or_make is here for its single flight: the value is a mere mark

    await cache.get_or_make(f"extracted/{stream_key}", make)
    handle = await cache.open_file(stream_key)
    if handle is None:  # evicted since, while the mark stayed: extracted again, alone
        await make()
        handle = await cache.open_file(stream_key)
    if handle is None:
        raise SegmentError(f"{stream_key} left the cache as soon as it was stored")
    return handle


async def _read_stored(cache: MediaCache, stream_key: str, handle, variant: Variant, plan: Sequence[Segment],
                       index: int) -> tuple[FrameIndex, bytes]:
    """The index and segment `index`'s bytes of the stream stored in the open file `handle`."""
    try:
        frames = await _frame_index(cache, stream_key, os.fstat(handle.fileno()).st_size, variant, plan)
        start, stop = frames.byte_range(plan[index])
    except BaseException:
        handle.close()
        raise

    def read() -> bytes:
        with handle:  # closed by the thread that reads, also when the request has gone
            return os.pread(handle.fileno(), stop - start, start)
    data = await asyncio.to_thread(read)
    if len(data) != stop - start:
        raise SegmentError(f"{stream_key} ends before byte {stop}")
    return frames, data


async def _frame_index(cache: MediaCache, stream_key: str, size: int, variant: Variant,
                       plan: Sequence[Segment]) -> FrameIndex:
    """The stream's frame index, built once by reading the stored stream in chunks, and kept in
    the cache; its key names the stream's size, so an index never serves another extraction."""
    def scan(handle) -> bytes:
        with handle:
            chunks = iter(lambda: handle.read(SCAN_CHUNK), b"")
            return frame_index.build(chunks, variant.codec, plan).to_bytes()

    async def make() -> bytes:
        handle = await cache.open_file(stream_key)
        if handle is None:
            raise SegmentError(f"{stream_key} left the cache while its frames were being indexed")
        return await asyncio.to_thread(scan, handle)

    key = f"index/{stream_key}/{size}/{frame_index.plan_digest(plan)}"
    return FrameIndex.from_bytes(variant.codec, await cache.get_or_make(key, make))


def _mpeg_audio_stream_type(variant: Variant) -> int:
    return 0x03 if variant.sample_rate >= 32000 else 0x04  # MPEG-1 audio, or MPEG-2's lower rates
