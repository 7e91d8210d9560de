"""HLS planning, no I/O: which variants a track gets, where its segments start and end, and the
text of its playlists (RFC 8216).

Segments are cut on codec frame boundaries (1024 samples for AAC, 1152 for MP3, 576 for MP3
below 32 kHz), so every segment holds whole frames and the #EXTINF of each is exactly its
frames' duration; only the last segment is shortened to end at the track's true duration, and
none is shorter than MIN_SEGMENT_SECONDS (players cannot open a segment of one frame on its
own). Timestamps are counted in frames and rounded once, to the 90 kHz clock. Nothing here runs
ffmpeg: the segment maker asks the plan what to produce, and the HTTP layer asks it what to list.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from media.packed_audio import PTS_CLOCK

AAC_FRAME = 1024  # samples per AAC-LC frame
MP3_FRAME = 1152  # samples per MPEG-1 Layer III frame
MP3_LSF_FRAME = 576  # samples per MPEG-2/2.5 Layer III frame (16-24 kHz and 8-12 kHz)
AAC_RATES = (44100, 48000)  # what AAC variants are encoded at
MIN_SEGMENT_SECONDS = 1.0  # a shorter tail is evened out with the segment before it
# The catalog keeps durations to the millisecond: a duration up to this much past a whole
# number of frames is that number of frames, not one frame more that no source has.
DURATION_ROUNDING = 0.0005
# Bumped whenever the same track and settings would be cut or encoded differently: segment URLs (and
# cache keys) carry it, so no player or cache mixes segments of two plans.
PLAN_REVISION = 4


@dataclasses.dataclass(frozen=True)
class Variant:
    """One rendition of a track. `name` is what appears in URLs."""

    name: str
    codec: str  # "aac" (encoded) or the source codec for a copy variant ("mp3", "aac")
    bitrate: int  # kbit/s, the average a player should expect
    sample_rate: int
    frame_samples: int
    copy: bool = False

    @property
    def codecs_attribute(self) -> str:
        """The CODECS value of #EXT-X-STREAM-INF (RFC 6381 names)."""
        return "mp4a.40.34" if self.codec == "mp3" else "mp4a.40.2"

    @property
    def container_overhead(self) -> float:
        """Bytes on the wire per byte of audio: MP3 originals go in MPEG-TS (see media.mpegts),
        3-5% more at 64-320 kbit/s; packed audio adds next to nothing."""
        return 1.05 if self.copy and self.codec == "mp3" else 1.0

    @property
    def frame_seconds(self) -> float:
        return self.frame_samples / self.sample_rate

    def pts(self, frame: int) -> int:
        """The 90 kHz timestamp of frame `frame`, from the frame count in integers and rounded
        once: frames are hundreds of ticks apart (960 for AAC at 96 kHz), so no two can share a
        tick, and no error adds up along the track."""
        return (2 * frame * self.frame_samples * PTS_CLOCK + self.sample_rate) // (2 * self.sample_rate)


@dataclasses.dataclass(frozen=True)
class Segment:
    index: int
    first_frame: int
    frames: int
    start: float  # seconds from the start of the track
    duration: float  # the #EXTINF value


def variants_for(codec: str, sample_rate: int | None, bitrate: int | None,
                 aac_bitrates: Iterable[int]) -> list[Variant]:
    """AAC variants at the configured bitrates, plus a copy variant when the source codec can be
    remuxed as is (mp3 and AAC), listed first: it is the original quality at no encoding cost.

    Next to the original, a transcode at or above the source's bitrate is more bytes for no
    more music (and at the same bitrate, a rung a player cannot tell from the original), so
    only the rungs below it are offered."""
    rate = sample_rate if sample_rate in AAC_RATES else 48000
    rungs = sorted(set(aac_bitrates))
    out = []
    if codec in ("mp3", "aac") and sample_rate:
        out.append(Variant("original", codec, bitrate or 128, sample_rate, _copy_frame(codec, sample_rate),
                           copy=True))
        if bitrate:  # unknown, nothing to compare with: the whole ladder
            rungs = [kbps for kbps in rungs if kbps < bitrate]
    out += [Variant(f"aac{kbps}", "aac", kbps, rate, AAC_FRAME) for kbps in rungs]
    return out


def _copy_frame(codec: str, sample_rate: int) -> int:
    if codec == "aac":
        return AAC_FRAME
    return MP3_FRAME if sample_rate >= 32000 else MP3_LSF_FRAME


# The first segments are short and grow to the target: the first is what a listener waits
# for when pressing play (ffmpeg makes 2 s of audio in about a third of the time of 6 s), and
# each next one must be made while the ones before it play. Growing gently keeps that true
# when many listeners start at once and each gets a small share of the CPU: a segment twice
# as long as the audio before it would need twice real time.
RAMP_SECONDS = (2.0, 2.0, 3.0, 4.0, 5.0)
FIRST_SEGMENT_SECONDS = RAMP_SECONDS[0]


def segments(duration: float, variant: Variant, target_seconds: float) -> list[Segment]:
    """The segments of one variant: after the short ramp, as close to `target_seconds` as whole
    frames allow, and the last one no shorter than MIN_SEGMENT_SECONDS (unless it is the only one)."""
    if duration <= 0:
        return []
    per_segment = max(1, round(target_seconds / variant.frame_seconds))
    total_frames = max(1, math.ceil((duration - DURATION_ROUNDING) / variant.frame_seconds - 1e-9))
    sizes = [min(per_segment, max(1, round(s / variant.frame_seconds))) for s in RAMP_SECONDS]
    starts, frame = [], 0
    while frame < total_frames:
        starts.append(frame)
        frame += sizes[len(starts) - 1] if len(starts) <= len(sizes) else per_segment
    _even_out_tail(starts, total_frames, math.floor(MIN_SEGMENT_SECONDS / variant.frame_seconds))
    out = []
    for index, first in enumerate(starts):
        frames = (starts[index + 1] if index + 1 < len(starts) else total_frames) - first
        start = first * variant.frame_seconds
        end = min((first + frames) * variant.frame_seconds, duration)
        out.append(Segment(index, first, frames, start, end - start))
    return out


def _even_out_tail(starts: list[int], total_frames: int, min_frames: int) -> None:
    """Move the last segment's start back so it holds at least `min_frames`, taking them from
    the segment before, which never grows (so no #EXTINF passes the target). Every segment but
    the last holds at least 2 s, twice `min_frames` (1 s, rounded down to whole frames), so the
    one before keeps at least `min_frames` too."""
    if len(starts) > 1 and total_frames - starts[-1] < min_frames:
        starts[-1] = max(starts[-2] + min_frames, total_frames - min_frames)


def target_duration(plan: list[Segment]) -> int:
    """#EXT-X-TARGETDURATION: every #EXTINF rounded to the nearest integer must not exceed it."""
    return max((math.floor(s.duration + 0.5) for s in plan), default=1) or 1


def master_playlist(variants: list[Variant], variant_uri: str) -> str:
    """`variant_uri` is formatted with `name=` for each variant's playlist URI."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:
        # BANDWIDTH is the peak: packed audio's few bytes of framing and the encoder's swings.
        average = round(v.bitrate * 1000 * v.container_overhead)
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={round(average * 1.1)},AVERAGE-BANDWIDTH="
                     f"{average},CODECS=\"{v.codecs_attribute}\"")
        lines.append(variant_uri.format(name=v.name))
    return "\n".join(lines) + "\n"


def media_playlist(plan: list[Segment], segment_uri: str) -> str:
    """A VOD media playlist; `segment_uri` is formatted with `index=` for each segment."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-PLAYLIST-TYPE:VOD",
             f"#EXT-X-TARGETDURATION:{target_duration(plan)}", "#EXT-X-MEDIA-SEQUENCE:0"]
    for s in plan:
        lines.append(f"#EXTINF:{s.duration:.6f},")
        lines.append(segment_uri.format(index=s.index))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
