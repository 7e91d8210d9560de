"""A compact index of a track's elementary stream, so a segment of a copy variant is cut from its
own byte range: without it, each cold segment read the whole stream and parsed it up to the
segment (ADTS: all of it), O(file) in time and memory per segment (issue 11, item 15).

The index holds where every frame starts (4 bytes a frame, or 8 past 4 GiB) and, for MP3 in
MPEG-TS, how many audio TS packets come before each segment of the plan (the segment's first
continuity counter). It is built in one pass over the stream, read in chunks, and stored as
bytes that are read back without copying (memoryview casts).
"""

from __future__ import annotations

import array
import hashlib
import struct
from collections.abc import Iterable, Sequence

from media import mpegts
from media.hls_plan import Segment
from media.packed_audio import frame_lengths

_HEADER = struct.Struct("<4sIQQQ")  # magic, item size, offsets, packet counts, error bytes
_MAGIC = b"FIX1"


class FrameIndex:
    """`offsets[k]:offsets[k + 1]` is frame k's bytes; `packets[i]` the audio TS packets before
    segment i; `error` why the scan stopped before the stream's end ('' if it did not)."""

    def __init__(self, codec: str, offsets: Sequence[int], packets: Sequence[int], error: str) -> None:
        self.codec, self.offsets, self.packets, self.error = codec, offsets, packets, error

    @property
    def frames(self) -> int:
        return len(self.offsets) - 1

    def span(self, segment: Segment) -> tuple[int, int]:
        """The segment's frames that the stream has (first, stop), as the whole-stream cut took
        them. Raises ValueError where that cut failed on the stream's bytes."""
        stop = segment.first_frame + segment.frames
        # ADTS was split whole, so any fault failed every segment; MP3 was parsed only up to
        # the segment's end, so a fault fails the segments that reach it.
        if self.error and (self.codec != "mp3" or stop > self.frames):
            raise ValueError(self.error)
        return min(segment.first_frame, self.frames), min(stop, self.frames)

    def byte_range(self, segment: Segment) -> tuple[int, int]:
        first, stop = self.span(segment)
        return self.offsets[first], self.offsets[stop]

    def to_bytes(self) -> bytes:
        offsets = array.array("I" if self.offsets[-1] < 1 << 32 else "Q", self.offsets)
        packets = array.array("Q", self.packets)
        error = self.error.encode()
        head = _HEADER.pack(_MAGIC, offsets.itemsize, len(offsets), len(packets), len(error))
        return head + offsets.tobytes() + packets.tobytes() + error

    @classmethod
    def from_bytes(cls, codec: str, data: bytes) -> FrameIndex:
        magic, itemsize, count, packets, error = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise ValueError("not a frame index")
        view = memoryview(data)
        at = _HEADER.size + itemsize * count
        offsets = view[_HEADER.size:at].cast("I" if itemsize == 4 else "Q")
        counts = view[at:at + 8 * packets].cast("Q")
        return cls(codec, offsets, counts, bytes(view[at + 8 * packets:at + 8 * packets + error]).decode())


def build(chunks: Iterable[bytes], codec: str, plan: Sequence[Segment]) -> FrameIndex:
    """The index of the stream that `chunks` make up, in one pass (a chunk at a time in memory)."""
    offsets, error = _offsets(chunks, codec)
    index = FrameIndex(codec, offsets, [], error)
    if codec == "mp3":
        index.packets = _packets_before(index, plan)
    return index


def _offsets(chunks: Iterable[bytes], codec: str) -> tuple[array.array, str]:
    offsets = array.array("Q", [0])
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        try:
            lengths, used = frame_lengths(data, codec, offsets[-1])
        except ValueError as exc:
            return offsets, str(exc)  # the frames before the fault are good (see span)
        for length in lengths:
            offsets.append(offsets[-1] + length)
        carry = data[used:]
    # MP3: a cut last frame is left out; ADTS: the split required whole frames to the end.
    error = f"ADTS frame at byte {offsets[-1]} runs past the data" if carry and codec != "mp3" else ""
    return offsets, error


def _packets_before(index: FrameIndex, plan: Sequence[Segment]) -> list[int]:
    """Each segment's first continuity counter: the audio packets of the segments before it
    (their frames that the stream has, as the whole-stream cut counted them)."""
    out, total, offsets, frames = [], 0, index.offsets, index.frames
    for segment in plan:
        out.append(total)
        first, stop = min(segment.first_frame, frames), min(segment.first_frame + segment.frames, frames)
        total += mpegts.audio_packets([offsets[k + 1] - offsets[k] for k in range(first, stop)])
    return out


def plan_digest(plan: Sequence[Segment]) -> str:
    """Names the plan in the index's cache key: the packet counts depend on its cuts."""
    cuts = array.array("Q", [n for s in plan for n in (s.first_frame, s.frames)])
    return hashlib.blake2b(cuts.tobytes(), digest_size=8).hexdigest()
