"""HLS planning, no I/O: which variants a track gets, where its segments start and end, and the
text of its playlists (RFC 8216).

Segments are cut on codec frame boundaries (1024 samples for AAC, 1152 for MP3), so every
segment holds whole frames and the #EXTINF of each is exactly its frames' duration; only the last
segment is shortened to end at the track's true duration. Nothing here runs ffmpeg: the segment
maker asks the plan what to produce, and the HTTP layer asks it what to list.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

AAC_FRAME = 1024  # samples per AAC-LC frame
MP3_FRAME = 1152  # samples per MPEG-1 Layer III frame
AAC_RATES = (44100, 48000)  # what AAC variants are encoded at


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
    def frame_seconds(self) -> float:
        return self.frame_samples / self.sample_rate


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
    remuxed as is (mp3 and AAC), listed first: it is the original quality at no encoding cost."""
    rate = sample_rate if sample_rate in AAC_RATES else 48000
    out = []
    if codec in ("mp3", "aac") and sample_rate:
        frame = MP3_FRAME if codec == "mp3" else AAC_FRAME
        out.append(Variant("original", codec, bitrate or 128, sample_rate, frame, copy=True))
    out += [Variant(f"aac{kbps}", "aac", kbps, rate, AAC_FRAME) for kbps in sorted(set(aac_bitrates))]
    return out


# The first segments are short and grow to the target: the first is what a listener waits
# for when pressing play (ffmpeg makes 2 s of audio in about a third of the time of 6 s), and
# each next one must be made while the ones before it play. Growing gently keeps that true
# when many listeners start at once and each gets a small share of the CPU: a segment twice
# as long as the audio before it would need twice real time.
RAMP_SECONDS = (2.0, 2.0, 3.0, 4.0, 5.0)
FIRST_SEGMENT_SECONDS = RAMP_SECONDS[0]


def segments(duration: float, variant: Variant, target_seconds: float) -> list[Segment]:
    """The segments of one variant: after the short ramp, as close to `target_seconds` as whole
    frames allow."""
    if duration <= 0:
        return []
    per_segment = max(1, round(target_seconds / variant.frame_seconds))
    total_frames = math.ceil(duration / variant.frame_seconds - 1e-9)
    sizes = [min(per_segment, max(1, round(s / variant.frame_seconds))) for s in RAMP_SECONDS]
    starts, frame = [], 0
    while frame < total_frames:
        starts.append(frame)
        frame += sizes[len(starts) - 1] if len(starts) <= len(sizes) else per_segment
    out = []
    for index, first in enumerate(starts):
        frames = (starts[index + 1] if index + 1 < len(starts) else total_frames) - first
        start = first * variant.frame_seconds
        end = min((first + frames) * variant.frame_seconds, duration)
        out.append(Segment(index, first, frames, start, end - start))
    return out


def target_duration(plan: list[Segment]) -> int:
    """#EXT-X-TARGETDURATION: every #EXTINF rounded to the nearest integer must not exceed it."""
    return max((math.floor(s.duration + 0.5) for s in plan), default=1) or 1


def master_playlist(variants: list[Variant], variant_uri: str) -> str:
    """`variant_uri` is formatted with `name=` for each variant's playlist URI."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:
        # BANDWIDTH is the peak: packed audio's few bytes of framing and the encoder's swings.
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={v.bitrate * 1100},AVERAGE-BANDWIDTH="
                     f"{v.bitrate * 1000},CODECS=\"{v.codecs_attribute}\"")
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
