"""MPEG-TS segments of the mp3 original variant, read back by an independent reader here and
by ffprobe: valid packets and tables, exact PTS, continuity counters that run on from segment
to segment although each segment is muxed alone."""

from __future__ import annotations

import subprocess

import pytest

from media import mpegts
from media.hls_plan import segments, variants_for
from media.packed_audio import mp3_frames
from media.segmenter import copy_segment


def read_ts(data: bytes, counters: dict[int, int] | None = None) -> list[tuple[int, bytes]]:
    """(PTS, payload) of each audio PES. Checks sync bytes, table CRCs and, across calls that
    share `counters`, that every PID's continuity counter goes up by one per payload packet."""
    assert len(data) % 188 == 0
    counters = {} if counters is None else counters
    pes: list[tuple[int, bytes]] = []
    current = bytearray()
    for at in range(0, len(data), 188):
        packet = data[at:at + 188]
        assert packet[0] == 0x47
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        start = bool(packet[1] & 0x40)
        control, cc = packet[3] >> 4, packet[3] & 0x0F
        payload = packet[4:]
        if control & 0x2:  # adaptation field first
            payload = payload[1 + payload[0]:]
        if control & 0x1:
            if pid in counters:
                assert cc == (counters[pid] + 1) % 16, (pid, counters[pid], cc)
            counters[pid] = cc
        if pid in (0, mpegts.PMT_PID):
            section = payload[1 + payload[0]:]
            length = ((section[1] & 0x0F) << 8) | section[2]
            assert mpegts.crc32_mpeg2(section[:3 + length]) == 0  # CRC over the whole section
        elif pid == mpegts.AUDIO_PID:
            if start and current:
                pes.append(_pes(bytes(current)))
                current = bytearray()
            current += payload
    if current:
        pes.append(_pes(bytes(current)))
    return pes


def _pes(data: bytes) -> tuple[int, bytes]:
    assert data[:4] == b"\x00\x00\x01\xc0"
    length = int.from_bytes(data[4:6], "big")
    assert length == len(data) - 6
    p = data[9:14]
    pts = ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
    return pts, data[9 + data[8]:]


def test_crc_of_a_known_section():
    # The PAT every ffmpeg-made transport stream starts with (program 1, PMT on PID 0x1000).
    pat = bytes.fromhex("00b00d0001c100000001f000")
    assert mpegts.crc32_mpeg2(pat).to_bytes(4, "big").hex() == "2ab104b2"


@pytest.fixture(scope="module")
def mp3_stream(tmp_path_factory, ffmpeg) -> bytes:
    path = tmp_path_factory.mktemp("ts") / "tone.mp3"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=20",
                    "-ac", "2", "-c:a", "libmp3lame", "-b:a", "160k", str(path)], check=True)
    return subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-c:a", "copy", "-f", "mp3",
                           "-write_xing", "0", "-id3v2_version", "0", "pipe:1"],
                          capture_output=True, check=True).stdout


def test_segments_carry_every_frame_with_exact_pts_and_continuous_counters(mp3_stream):
    frames = mp3_frames(mp3_stream)
    variant = variants_for("mp3", 44100, 160, [])[0]
    plan = segments(len(frames) * variant.frame_seconds, variant, 6.0)
    counters: dict[int, int] = {}
    payload = b""
    sent = 0
    for s in plan:
        body = copy_segment(mp3_stream, variant, plan, s.index)
        sent += len(body)
        pes = read_ts(body, counters)  # counters carried over: continuity across segments
        assert pes[0][0] == variant.pts(s.first_frame)
        first = s.first_frame
        for pts, data in pes:  # each PES stamped with its first frame's own time
            assert pts == variant.pts(first)
            first += len(mp3_frames(data))
        assert first == s.first_frame + s.frames
        payload += b"".join(data for _, data in pes)
    assert payload == mp3_stream  # byte for byte, in order
    # The master playlist's AVERAGE-BANDWIDTH counts the transport stream's overhead.
    seconds = len(frames) * variant.frame_seconds
    assert len(mp3_stream) * 8 / seconds < 160_500 < sent * 8 / seconds <= 160_000 * variant.container_overhead


def test_ffprobe_reads_a_segment_alone(mp3_stream, ffmpeg, tmp_path):
    variant = variants_for("mp3", 44100, 160, [])[0]
    plan = segments(len(mp3_frames(mp3_stream)) * variant.frame_seconds, variant, 6.0)
    path = tmp_path / "5.ts"
    path.write_bytes(copy_segment(mp3_stream, variant, plan, 5))
    out = subprocess.run([ffmpeg, "-v", "warning", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
