"""Packed audio segments (RFC 8216 §3.4): raw ADTS frames behind an ID3 tag carrying the
segment's timestamp. Frame-exact slicing is what lets segments made by different ffmpeg runs
join without gaps, so this module only splits ADTS streams into frames and writes that tag.
"""

from __future__ import annotations

import struct

PTS_CLOCK = 90_000  # MPEG-2 timestamps tick at 90 kHz
_PRIV_OWNER = b"com.apple.streaming.transportStreamTimestamp\x00"


def adts_frames(data: bytes) -> list[memoryview]:
    """Split an ADTS stream into its frames. Raises ValueError on anything that is not ADTS."""
    frames, used = split_adts(data)
    if used < len(data):
        raise ValueError(f"ADTS frame at byte {used} runs past the data")
    return frames


def split_adts(data: bytes) -> tuple[list[memoryview], int]:
    """The whole ADTS frames at the start of `data`, and how many bytes they take: the rest is
    the beginning of a frame still to come. Raises ValueError on anything that is not ADTS."""
    view = memoryview(data)
    frames = []
    i = 0
    while i + 7 <= len(data):
        if data[i] != 0xFF or data[i + 1] & 0xF6 != 0xF0:
            raise ValueError(f"not an ADTS frame header at byte {i}")
        length = ((data[i + 3] & 0x03) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        if length < 7:
            raise ValueError(f"not an ADTS frame header at byte {i}")
        if i + length > len(data):
            break
        frames.append(view[i:i + length])
        i += length
    return frames, i


def timestamp_tag(pts: int) -> bytes:
    """An ID3v2.4 tag whose PRIV frame holds the 33-bit, 90 kHz timestamp of the first frame
    (in ticks: see Variant.pts, which counts them from frames)."""
    pts &= (1 << 33) - 1
    payload = _PRIV_OWNER + struct.pack(">Q", pts)
    frame = b"PRIV" + _syncsafe(len(payload)) + b"\x00\x00" + payload
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


def _syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


# MPEG audio Layer III bit rates (kbit/s) by index, for MPEG-1 and for MPEG-2/2.5.
_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frames(data: bytes, limit: int | None = None) -> list[memoryview]:
    """Split a stream of MPEG audio Layer III frames (no tags) into its frames (the first
    `limit` of them: a segment needs none after its own)."""
    view = memoryview(data)
    frames: list[memoryview] = []
    lengths: dict[int, int] = {}  # header bytes -> frame length: a stream repeats a few headers
    end = len(data)
    limit = end if limit is None else limit
    i = 0
    while i + 4 <= end and len(frames) < limit:
        header = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]
        length = lengths.get(header)
        if length is None:
            length = lengths[header] = _mp3_frame_length(header, i)
        if i + length > end:
            break  # a cut last frame is left out
        frames.append(view[i:i + length])
        i += length
    return frames


def frame_lengths(data: bytes, codec: str, at: int = 0) -> tuple[list[int], int]:
    """The lengths of the whole frames (MP3 if `codec` is "mp3", else ADTS) at the start of
    `data`, and how many bytes they take: the rest begins a frame still to come. `at` is where
    `data` starts in the stream, for the errors, which are those of mp3_frames and split_adts."""
    return _mp3_lengths(data, at) if codec == "mp3" else _adts_lengths(data, at)


def _mp3_lengths(data: bytes, at: int) -> tuple[list[int], int]:
    lengths: list[int] = []
    known: dict[int, int] = {}  # header bytes -> frame length: a stream repeats a few headers
    i, end = 0, len(data)
    while i + 4 <= end:
        header = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]
        length = known.get(header)
        if length is None:
            length = known[header] = _mp3_frame_length(header, at + i)
        if i + length > end:
            break
        lengths.append(length)
        i += length
    return lengths, i


def _adts_lengths(data: bytes, at: int) -> tuple[list[int], int]:
    lengths: list[int] = []
    i, end = 0, len(data)
    while i + 7 <= end:
        if data[i] != 0xFF or data[i + 1] & 0xF6 != 0xF0:
            raise ValueError(f"not an ADTS frame header at byte {at + i}")
        length = ((data[i + 3] & 0x03) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        if length < 7:
            raise ValueError(f"not an ADTS frame header at byte {at + i}")
        if i + length > end:
            break
        lengths.append(length)
        i += length
    return lengths, i


def _mp3_frame_length(header: int, at: int) -> int:
    """The length of an MPEG audio Layer III frame from its first three header bytes."""
    b0, b1, b2 = header >> 16, (header >> 8) & 0xFF, header & 0xFF
    version = (b1 >> 3) & 0x03  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    if b0 != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or (b1 >> 1) & 0x03 != 1:
        raise ValueError(f"not an MPEG Layer III frame header at byte {at}")
    bitrate = _MP3_BITRATES[1 if version == 3 else 2][b2 >> 4] if b2 >> 4 != 15 else 0
    rate_index = (b2 >> 2) & 0x03
    if not bitrate or rate_index == 3:
        raise ValueError(f"free-format or reserved MPEG header at byte {at}")
    rate = _MP3_RATES[version][rate_index]
    return (144000 if version == 3 else 72000) * bitrate // rate + ((b2 >> 1) & 1)
