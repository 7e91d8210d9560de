"""Making one HLS segment of an AAC variant with ffmpeg, independently of every other segment.

Each segment is encoded from a little before its start (PREROLL_FRAMES), and only its own frames
are kept: the encoder's priming and the pre-roll are dropped frame-exactly (packed audio lets us
count frames). So segment 40 can be made before segment 0, by another ffmpeg run, and the
segments still join without inserted silence: the decoder sees, at every boundary, frames of
the same audio encoded from the same history. Only the first segment keeps the priming frame,
as every AAC stream does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from media.ffmpeg import FfmpegFailed, FfmpegPool
from media.hls_plan import Segment, Variant
from media.packed_audio import adts_frames, mp3_frames, timestamp_tag

log = logging.getLogger(__name__)

PREROLL_FRAMES = 8  # about 0.19 s: enough for the encoder state to match a continuous run
PRIMING_FRAMES = 1  # ffmpeg's AAC encoder starts with one frame of encoder delay


class SegmentError(FfmpegFailed):
    """A segment could not be made from what ffmpeg gave (answered like an ffmpeg failure)."""


async def make_aac_segment(ffmpeg: FfmpegPool, source: Path, variant: Variant, segment: Segment) -> bytes:
    """The bytes of one packed-audio segment: a timestamp tag, then the segment's ADTS frames."""
    return (await make_aac_segments(ffmpeg, source, variant, [segment]))[0]


async def make_aac_segments(ffmpeg: FfmpegPool, source: Path, variant: Variant,
                            run: list[Segment]) -> list[bytes]:
    """Consecutive segments from one ffmpeg run: within the run they join as one encoding does,
    and the run's first segment joins its predecessor through the pre-roll. Several segments
    per run spare ffmpeg's start-up and the pre-roll, which cost more than the encoding of 6 s."""
    first = run[0]
    preroll = min(PREROLL_FRAMES, first.first_frame)
    start = (first.first_frame - preroll) * variant.frame_seconds
    total = sum(s.frames for s in run)
    # One frame more than needed: the encoder pads the last one, and the padding is not ours.
    seconds = (preroll + total + 1) * variant.frame_seconds
    encoded = await ffmpeg.run(["-ss", f"{start:.6f}", "-i", str(source), "-t", f"{seconds:.6f}",
                                "-vn", "-ac", "2", "-ar", str(variant.sample_rate), "-c:a", "aac",
                                "-b:a", f"{variant.bitrate}k", "-f", "adts", "pipe:1"])
    frames = adts_frames(encoded)
    out = []
    position = PRIMING_FRAMES + preroll  # the first frame that is the run's own audio
    for segment in run:
        if segment.index == 0:  # the track's start keeps the priming every AAC stream has
            kept, position = frames[0:PRIMING_FRAMES + segment.frames], position + segment.frames
        else:
            kept, position = frames[position:position + segment.frames], position + segment.frames
        if not kept or (len(kept) < segment.frames and segment is not run[-1]):
            raise SegmentError(f"ffmpeg gave {len(frames)} frames for segments {first.index}-"
                               f"{run[-1].index} of {source}")
        # Timestamps count the first segment's priming frame, so frames line up across segments.
        first_pts = 0.0 if segment.index == 0 else segment.start + PRIMING_FRAMES * variant.frame_seconds
        out.append(timestamp_tag(first_pts) + b"".join(kept))
    return out


async def elementary_stream(ffmpeg: FfmpegPool, source: Path, codec: str) -> bytes:
    """The source's audio frames as they are, without container or tags: ADTS for AAC, bare
    frames for MP3 (no Xing header, which would decode as a frame of silence)."""
    if codec == "mp3":
        out = ["-c:a", "copy", "-f", "mp3", "-write_xing", "0", "-id3v2_version", "0"]
    else:
        out = ["-c:a", "copy", "-f", "adts"]
    return await ffmpeg.run(["-i", str(source), "-map", "0:a:0", "-map_metadata", "-1", *out, "pipe:1"])


def copy_segment(stream: bytes, variant: Variant, segment: Segment) -> bytes:
    """A segment of a copy variant: the source's own frames, cut on frame boundaries."""
    frames = mp3_frames(stream) if variant.codec == "mp3" else adts_frames(stream)
    kept = frames[segment.first_frame:segment.first_frame + segment.frames]
    if not kept:
        raise SegmentError(f"the source has {len(frames)} frames; segment {segment.index} starts past them")
    return timestamp_tag(segment.start) + b"".join(kept)
