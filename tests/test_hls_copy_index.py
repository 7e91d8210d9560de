"""Segments of the `original` (copy) HLS variant are cut through a frame index from their own
byte range of the stored stream (issue 11, item 15): byte for byte what cutting them out of the
whole stream gave, and a cold segment of a long file reads about its own size, not the file."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from media import mpegts
from media.cache import MediaCache
from media.frame_index import build
from media.hls_plan import Segment, Variant, segments, variants_for
from media.packed_audio import adts_frames, mp3_frames, timestamp_tag
from media.segmenter import copied_segment, cut_segment
from streamer import create_app
from streamer.http.keys import CACHE
from tests.conftest import library_path, settings_for, wait_for_scan


def whole_stream_segment(stream: bytes, variant: Variant, plan: Sequence[Segment], index: int) -> bytes:
    """The cut before the index (copy_segment as of 80effe6): frames parsed from
    the stream's start, continuity counters summed over every segment before."""
    segment = plan[index]
    end = segment.first_frame + segment.frames
    frames = mp3_frames(stream, end) if variant.codec == "mp3" else adts_frames(stream)
    kept = frames[segment.first_frame:end]
    assert kept
    if variant.codec != "mp3":
        return timestamp_tag(variant.pts(segment.first_frame)) + b"".join(kept)
    sizes = list(map(len, frames))
    before = sum(mpegts.audio_packets(sizes[s.first_frame:s.first_frame + s.frames]) for s in plan[:index])
    pts = [variant.pts(segment.first_frame + i) for i in range(len(kept))]
    return mpegts.segment(kept, pts, index, before, 0x03 if variant.sample_rate >= 32000 else 0x04)


def elementary(ffmpeg: str, path: Path, codec: str) -> bytes:
    """The source's frames as the server extracts them (media.segmenter.elementary_stream)."""
    out = ["-f", "mp3", "-write_xing", "0", "-id3v2_version", "0"] if codec == "mp3" else ["-f", "adts"]
    return subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-map_metadata", "-1",
                           "-c:a", "copy", *out, "pipe:1"], capture_output=True, check=True).stdout


def original_plan(track: dict) -> tuple[Variant, list[Segment]]:
    variant = variants_for(track["codec"], track["sample_rate"], track["bitrate"], [])[0]
    assert variant.copy
    return variant, segments(track["duration"], variant, 6.0)


async def never(dest: Path) -> None:
    raise AssertionError("the stream was extracted again")


@pytest.mark.parametrize("codec", ["mp3", "aac"])
async def test_every_segment_cut_through_the_index_equals_the_whole_stream_cut(demo_server, ffmpeg,
                                                                                codec, tmp_path):
    tracks = (await (await demo_server.get("/api/v1/tracks?limit=100")).json())["items"]
    track = next(t for t in tracks if t["codec"] == codec)
    stream = elementary(ffmpeg, await library_path(demo_server, track), codec)
    variant, plan = original_plan(track)
    reference = [whole_stream_segment(stream, variant, plan, s.index) for s in plan]
    # Built from odd chunks: frames straddle every chunk boundary.
    chunked = build((stream[i:i + 997] for i in range(0, len(stream), 997)), codec, plan)
    for s in plan:
        start, stop = chunked.byte_range(s)
        assert cut_segment(chunked, stream[start:stop], variant, plan, s.index) == reference[s.index]
    # Through the cache: extracted into it, then read back by a new cache (a restart): each
    # segment is its range of the stored file.
    cache = MediaCache(tmp_path / "cache", 1 << 30)

    async def extract(dest: Path) -> None:
        dest.write_bytes(stream)
    assert await copied_segment(cache, "frames/t/v", extract, variant, plan, len(plan) - 1) == reference[-1]
    await cache.written()
    cache.close()
    restarted = MediaCache(tmp_path / "cache", 1 << 30)
    assert [await copied_segment(restarted, "frames/t/v", never, variant, plan, s.index) for s in plan] == reference
    restarted.close()


@pytest.fixture(scope="module")
def long_library(tmp_path_factory, ffmpeg) -> Path:
    """40 minutes of a 32 kbit/s mp3 (9.6 MB, over the hot cache's 8 MiB per value), in 4 s."""
    root = tmp_path_factory.mktemp("long") / "music"
    root.mkdir()
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", "2400",
                    "-c:a", "libmp3lame", "-b:a", "32k", str(root / "long.mp3")], check=True)
    return root


def bytes_read() -> int:
    """What this process (server and client alike) has read with read system calls: files and sockets."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


async def segment_urls(client, track: dict) -> list[str]:
    master = await (await client.get(f"/hls/{track['id']}/master.m3u8")).text()
    uri = next(line for line in master.splitlines() if "/original/" in line)
    playlist = await (await client.get(f"/hls/{track['id']}/{uri}")).text()
    base = f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}"
    return [f"{base}/{line}" for line in playlist.splitlines() if line and not line.startswith("#")]


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts bytes read through /proc/self/io")
async def test_a_cold_last_segment_reads_its_own_range_not_the_file(aiohttp_client, long_library, tmp_path,
                                                                    ffmpeg):
    settings = settings_for(long_library, tmp_path / "data")
    first = await aiohttp_client(create_app(settings))
    await wait_for_scan(first.server.app)
    track = (await (await first.get("/api/v1/tracks")).json())["items"][0]
    urls = await segment_urls(first, track)
    assert (await first.get(urls[0])).status == 200  # extracts the stream into the cache
    await first.server.app[CACHE].written()
    await first.close()
    stream = elementary(ffmpeg, long_library / "long.mp3", "mp3")
    assert len(stream) > 9_000_000

    # A restarted server: nothing in memory, the stream and its index on disk.
    second = await aiohttp_client(create_app(settings_for(long_library, tmp_path / "data", scan_on_start=False)))
    urls = await segment_urls(second, track)
    variant, plan = original_plan(track)
    # Read: the body (by the client), the segment's range of the stream, a few database pages
    # and, the first time only, the index (368 kB: 4 bytes a frame). Measured 415 kB and 36 kB
    # for bodies of 20 and 25 kB; before the index, each read the whole 9.6 MB stream.
    for index, index_bytes in ((len(plan) - 1, 400_000), (len(plan) - 2, 0)):
        before = bytes_read()
        body = await (await second.get(urls[index])).read()
        read = bytes_read() - before
        assert body == whole_stream_segment(stream, variant, plan, index)
        assert read < 2 * len(body) + index_bytes + 64_000, (index, read, len(body), len(stream))
