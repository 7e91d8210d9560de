"""HLS as strict players see it: every variant of every codec, decoded through ffmpeg's HLS
demuxer by two ffmpeg builds (the imageio one the server uses, and Debian's 5.1, a client
only), with no warning, with frames placed by their timestamps exactly where the frame count
puts them, and seamless across every segment boundary; every last segment opens on its own.

Besides the demo library: a 160 kbit/s CBR mp3 (it had two frames on one tick), a 22.05 kHz
mp3 (MPEG-2 Layer III, 576-sample frames) and a 48 kHz Opus track one AAC frame longer than a
segment boundary (it had a last segment of 21 ms that ffprobe could not open).
"""

from __future__ import annotations

import array
import asyncio
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from media import find_ffmpeg
from streamer import create_app
from tests.conftest import encode, library_path, settings_for, wait_for_scan

DEBIAN_FFMPEG = Path("/usr/bin/ffmpeg")
# A player that places frames by their timestamps: pad or drop wherever the timestamps and
# the samples disagree by more than a millisecond (a frame is 21-26 ms).
BY_TIMESTAMPS = "aresample=async=1:min_hard_comp=0.001:first_pts=0"


def _clients() -> list:
    debian = pytest.param(str(DEBIAN_FFMPEG), id="debian-ffmpeg", marks=pytest.mark.skipif(
        not DEBIAN_FFMPEG.exists(), reason="Debian's ffmpeg (/usr/bin/ffmpeg) is not installed: "
        "apt-get install -y ffmpeg (CI installs it)"))
    return [pytest.param(find_ffmpeg(), id="imageio-ffmpeg"), debian]


@pytest.fixture(scope="module")
def strict_library(tmp_path_factory, demo_library, ffmpeg) -> Path:
    root = tmp_path_factory.mktemp("strict") / "music"
    shutil.copytree(demo_library, root)
    extra = root / "Strict" / "Edges"
    encode(ffmpeg, extra / "01 CBR 160.mp3", 40.0,
           codec_args=("-ar", "44100", "-c:a", "libmp3lame", "-b:a", "160k"), freq=523)
    encode(ffmpeg, extra / "02 Low Rate.mp3", 12.0,
           codec_args=("-ar", "22050", "-c:a", "libmp3lame", "-b:a", "64k"), freq=330)
    # 1314 AAC frames at 48 kHz: one past the boundary after the 6th segment (ramp, then 6 s).
    encode(ffmpeg, extra / "03 One Frame Over.opus", 1314 * 1024 / 48000,
           codec_args=("-ar", "48000", "-c:a", "libopus", "-b:a", "96k"), freq=440)
    return root


@pytest.fixture
async def strict_server(aiohttp_client, strict_library, tmp_path):
    app = create_app(settings_for(strict_library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    return client


async def run(*cmd: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    return proc.returncode, out, err.decode(errors="replace")


def samples(raw: bytes) -> array.array:
    pcm = array.array("h")
    pcm.frombytes(raw)
    return pcm


async def decode_hls(client: str, url: str, rate: int) -> array.array:
    """The variant through ffmpeg's HLS demuxer, twice in one run: as is into the null muxer,
    which warns about frames whose timestamps do not increase, and placed by timestamps into
    PCM. Any warning or error fails."""
    code, out, err = await run(client, "-nostdin", "-v", "warning", "-i", url,
                               "-map", "0:a:0", "-f", "null", "-",
                               "-map", "0:a:0", "-af", BY_TIMESTAMPS, "-ac", "1", "-ar", str(rate),
                               "-f", "s16le", "pipe:1")
    assert code == 0 and not err.strip(), f"{url}:\n{err}"
    return samples(out)


async def decode_file(client: str, path: Path | None, rate: int, data: bytes | None = None,
                      fmt: str | None = None) -> array.array:
    source = ["-f", fmt, "-i", "pipe:0"] if fmt else ["-i", str(path)]
    code, out, err = await run(client, "-nostdin", "-v", "error", *source, "-ac", "1", "-ar", str(rate),
                               "-f", "s16le", "pipe:1", stdin=data)
    assert code == 0, err
    return samples(out)


def error(a: array.array, b: array.array, start: int, length: int, offset: int) -> float:
    """RMS of (a shifted by offset) - b over a window, relative to b's RMS there."""
    diff = sum((a[start + offset + i] - b[start + i]) ** 2 for i in range(length))
    energy = sum(b[start + i] ** 2 for i in range(length)) or 1
    return math.sqrt(diff / energy)


def unpacked(segment: bytes) -> bytes:
    """A packed-audio segment's frames, without its ID3 timestamp tag."""
    assert segment[:3] == b"ID3"
    size = (segment[6] << 21) | (segment[7] << 14) | (segment[8] << 7) | segment[9]
    return segment[10 + size:]


async def playlist(http, url: str) -> tuple[list[float], list[str]]:
    resp = await http.get(url)
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    extinf = [float(line[8:].rstrip(",")) for line in lines if line.startswith("#EXTINF:")]
    return extinf, [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("client", _clients())
async def test_every_variant_decodes_without_warnings_placed_by_timestamps(strict_server, client, ffmpeg):
    http = strict_server
    host, port = http.server.host, http.server.port
    tracks = (await (await http.get("/api/v1/tracks?limit=100")).json())["items"]
    assert {t["codec"] for t in tracks} >= {"mp3", "aac", "flac", "vorbis", "opus"}
    checked = 0
    for track in tracks:
        _, uris = await playlist(http, f"/hls/{track['id']}/master.m3u8")
        for uri in uris:
            base = f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}"
            name = uri.split("/")[1]
            extinf, names = await playlist(http, f"/hls/{track['id']}/{uri}")
            assert len(extinf) == 1 or min(extinf) > 0.9, (track["title"], name, extinf)  # no crumbs
            rate = _variant_rate(track, name)
            hls = await decode_hls(client, f"http://{host}:{port}/hls/{track['id']}/{uri}", rate)
            bodies = [await (await http.get(f"{base}/{n}")).read() for n in names]
            await _last_segment_opens_alone(client, bodies[-1], names[-1])
            if name == "original":
                # The source's own frames: decoded through HLS, bit for bit what decoding them
                # in one piece gives (a frame off its place would pad or drop samples here).
                whole = await _elementary(http, ffmpeg, track)
                reference = await decode_file(client, None, rate, whole, "mp3" if track["codec"] == "mp3" else "aac")
                assert hls == reference, (track["title"], name, len(hls), len(reference))
            else:
                await _seamless(client, http, track, name, rate, extinf, bodies, hls)
            checked += 1
    assert checked >= 30


def _variant_rate(track: dict, name: str) -> int:
    rate = track["sample_rate"]
    if name == "original":
        return rate
    return rate if rate in (44100, 48000) else 48000


async def _last_segment_opens_alone(client: str, body: bytes, name: str) -> None:
    """ffprobe and ffmpeg must open any segment on its own (a crumb of one frame they could not)."""
    code, _, err = await run(client, "-nostdin", "-v", "warning", "-i", "pipe:0", "-f", "null", "-",
                             stdin=body)
    assert code == 0 and not err.strip(), (name, err)
    ffprobe = Path(client).with_name("ffprobe")  # Debian's has one next to it; the wheel has none
    if ffprobe.exists():
        code, _, err = await run(str(ffprobe), "-v", "warning", "-i", "pipe:0", stdin=body)
        assert code == 0 and not err.strip(), (name, err)


async def _elementary(http, ffmpeg: str, track: dict) -> bytes:
    """The source's frames as the original variant cuts them (no container, no tags)."""
    path = await library_path(http, track)
    out = ["-f", "mp3", "-write_xing", "0", "-id3v2_version", "0"] if track["codec"] == "mp3" else ["-f", "adts"]
    code, data, err = await run(ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-map_metadata", "-1",
                                "-c:a", "copy", *out, "pipe:1")
    assert code == 0, err
    return data


async def _seamless(client: str, http, track: dict, name: str, rate: int, extinf: list[float],
                    bodies: list[bytes], hls: array.array) -> None:
    """An AAC variant: placed by timestamps, bit for bit the segments decoded as one stream;
    and against the source, no gap, repeat or click at any boundary (as test_segmenter)."""
    joined = b"".join(unpacked(b) for b in bodies)
    assert hls == await decode_file(client, None, rate, joined, "aac"), (track["title"], name)
    original = await decode_file(client, await library_path(http, track), rate)
    offset = 1024  # the priming frame the first segment keeps
    ends = [round(sum(extinf[:i + 1]) * rate) for i in range(len(extinf))]
    starts = [0] + ends[:-1]
    window = 1024
    fits = [(s + e) // 2 for s, e in zip(starts, ends)
            if (s + e) // 2 + window + offset < min(len(hls), len(original) + offset)]
    baseline = sorted(error(hls, original, m, window, offset) for m in fits)[len(fits) // 2]
    for index, boundary in enumerate(starts[1:], 1):
        if boundary + window + offset > len(hls) or boundary + window > len(original):
            continue
        around = error(hls, original, boundary - window, 2 * window, offset)
        # A frame out of place or repeated measures above 1 here (music shifted by a frame), a
        # frame of silence 0.7; the codec's own error measures 0.01-0.4 (aac64 made from a 128k
        # AAC the most), the same mid-segment. How close the joins come is test_segmenter's.
        assert around < 0.6, (track["title"], name, index, around, baseline)
