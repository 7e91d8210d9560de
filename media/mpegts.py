"""MPEG-2 transport stream segments (ISO/IEC 13818-1) for the MP3 `original` HLS variant.

Why not packed audio for MP3, as for AAC: a packed segment's timestamp is its ID3 tag, and
ffmpeg's HLS demuxer (5.1 as in Debian, and 9) applies a new tag as soon as it reads the tag's
bytes, while its MP3 parser (which reads 1 KiB at a time) still holds the last frame or two of
the segment before; those frames get the new segment's time, and when the next boundary moves
fewer frames than the last, two frames land on one instant. A transport stream stamps every PES
packet with its own PTS, so each group of frames carries its exact time whatever a demuxer
reads ahead.

Each segment is muxed on its own, yet segments join as one stream: the continuity counters of
a segment start where the segments before it left them, worked out from their frame sizes
(`packets_before`), so no demuxer sees a gap (ffmpeg flags one as a corrupt packet).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

PACKET = 188
PAYLOAD = PACKET - 4
PMT_PID = 0x1000
AUDIO_PID = 0x100
# Frames per PES until this much: the last TS packet of each is part stuffing, so bigger PES
# cost less (3-5% in all at 64-320 kbit/s, with the 4-byte packet headers and PAT and PMT).
PES_BYTES = 8192
_PES_HEADER = 14  # start code, stream id, length, flags, header length and a PTS
_PCR_FIELD = 8  # adaptation field length, flags and the PCR, in each PES's first packet


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


def pes_groups(sizes: Sequence[int]) -> list[int]:
    """How many frames each PES of a segment holds: whole frames, about PES_BYTES each."""
    groups, count, size = [], 0, 0
    for frame in sizes:
        if count and size + frame > PES_BYTES:
            groups.append(count)
            count, size = 0, 0
        count += 1
        size += frame
    if count:
        groups.append(count)
    return groups


def _pes_packets(payload: int) -> int:
    """TS packets one PES of `payload` bytes of frames takes (see _packetize)."""
    length = _PES_HEADER + payload
    first = PAYLOAD - _PCR_FIELD
    return 1 if length <= first else 1 + -(-(length - first) // PAYLOAD)


def audio_packets(sizes: Sequence[int]) -> int:
    """TS packets on the audio PID of one segment whose frames have these sizes (the grouping
    of pes_groups, in one pass: it runs over every frame before a segment, per request)."""
    total, count, size = 0, 0, 0
    for frame in sizes:
        if count and size + frame > PES_BYTES:
            total += _pes_packets(size)
            count, size = 0, 0
        count += 1
        size += frame
    return total + (_pes_packets(size) if count else 0)


def segment(frames: Sequence[bytes | memoryview], pts: Sequence[int], index: int, audio_cc: int,
            stream_type: int) -> bytes:
    """One segment: PAT, PMT, then the frames in PES packets. `pts[i]` is frame i's 90 kHz
    timestamp, `index` the segment's number (PAT and PMT take one packet each per segment),
    `audio_cc` the audio packets before this segment, `stream_type` 0x03 (MPEG-1 audio) or
    0x04 (MPEG-2 audio)."""
    out = [_psi(0, index, _pat()), _psi(PMT_PID, index, _pmt(stream_type))]
    cc, i = audio_cc, 0
    for count in pes_groups([len(f) for f in frames]):
        payload = b"".join(frames[i:i + count])
        packets, cc = _packetize(_pes_header(len(payload), pts[i]) + payload, pts[i], cc)
        out.append(packets)
        i += count
    return b"".join(out)


def _packetize(pes: bytes, pcr: int, cc: int) -> tuple[bytes, int]:
    """The PES in TS packets; the first carries a PCR (the PES's own PTS: audio needs no decoder
    delay), the last is filled up with adaptation-field stuffing."""
    out = bytearray()
    pos, first = 0, True
    while pos < len(pes):
        room = PAYLOAD - (_PCR_FIELD if first else 0)
        chunk = pes[pos:pos + room]
        pos += len(chunk)
        stuffing = room - len(chunk)
        header = struct.pack(">BHB", 0x47, (0x4000 if first else 0) | AUDIO_PID, 0x30 | (cc & 0x0F))
        if first:
            field = bytes((0x10,)) + _pcr(pcr) + b"\xff" * stuffing
            out += header + bytes((len(field),)) + field + chunk
        elif stuffing:
            field = b"" if stuffing == 1 else bytes((0x00,)) + b"\xff" * (stuffing - 2)
            out += header + bytes((len(field),)) + field + chunk
        else:
            out += header[:3] + bytes((0x10 | (cc & 0x0F),)) + chunk
        cc += 1
        first = False
    return bytes(out), cc


def _pcr(ticks: int) -> bytes:
    base = ticks & ((1 << 33) - 1)
    return struct.pack(">IH", base >> 1, ((base & 1) << 15) | 0x7E00)


def _pes_header(payload: int, pts: int) -> bytes:
    pts &= (1 << 33) - 1
    stamp = bytes((0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF, 0x01 | ((pts >> 14) & 0xFE),
                   (pts >> 7) & 0xFF, 0x01 | ((pts << 1) & 0xFE)))
    # stream 0xC0 (audio 0), data aligned, a PTS only
    return b"\x00\x00\x01\xc0" + struct.pack(">H", payload + 8) + b"\x84\x80\x05" + stamp


def _pat() -> bytes:
    return _section(0x00, 1, struct.pack(">HH", 1, 0xE000 | PMT_PID))


def _pmt(stream_type: int) -> bytes:
    body = struct.pack(">HH", 0xE000 | AUDIO_PID, 0xF000)  # PCR on the audio PID, no descriptors
    body += struct.pack(">BHH", stream_type, 0xE000 | AUDIO_PID, 0xF000)
    return _section(0x02, 1, body)


def _section(table_id: int, number: int, body: bytes) -> bytes:
    head = struct.pack(">BHHBBB", table_id, 0xB000 | (len(body) + 9), number, 0xC1, 0, 0)
    data = head + body
    return data + struct.pack(">I", crc32_mpeg2(data))


def _psi(pid: int, index: int, section: bytes) -> bytes:
    header = struct.pack(">BHB", 0x47, 0x4000 | pid, 0x10 | (index & 0x0F))
    packet = header + b"\x00" + section
    return packet + b"\xff" * (PACKET - len(packet))
