"""HLS planning on its own: variants, frame-aligned segments, playlists that obey RFC 8216."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.hls_plan import (
    AAC_FRAME, DURATION_ROUNDING, FIRST_SEGMENT_SECONDS, MIN_SEGMENT_SECONDS, MP3_FRAME, MP3_LSF_FRAME,
    PTS_CLOCK, RAMP_SECONDS, master_playlist, media_playlist, segments, target_duration, variants_for,
)

LADDER = [64, 128, 256]


def test_variants_by_source_codec():
    mp3 = variants_for("mp3", 44100, 320, [128, 64, 256])
    assert [v.name for v in mp3] == ["original", "aac64", "aac128", "aac256"]
    assert mp3[0].copy and mp3[0].frame_samples == MP3_FRAME and mp3[0].bitrate == 320
    assert all(v.sample_rate == 44100 and v.frame_samples == AAC_FRAME for v in mp3[1:])
    flac = variants_for("flac", 96000, 2000, [128])
    assert [v.name for v in flac] == ["aac128"] and flac[0].sample_rate == 48000  # no copy, resampled
    opus = variants_for("opus", 48000, 96, [64, 128])
    assert not any(v.copy for v in opus)
    aac = variants_for("aac", 44100, 256, [128])
    assert aac[0].copy and aac[0].codec == "aac"
    # MPEG-2 Layer III (below 32 kHz) has frames of 576 samples.
    assert variants_for("mp3", 22050, 64, [])[0].frame_samples == MP3_LSF_FRAME


@pytest.mark.parametrize("codec, bitrate, names", [
    ("aac", 128, ["original", "aac64"]),  # aac128 would be the original again, at no saving
    ("mp3", 160, ["original", "aac64", "aac128"]),  # aac256 from 160k: more bytes, no more music
    ("mp3", 192, ["original", "aac64", "aac128"]),
    ("mp3", 64, ["original"]),
    ("mp3", 320, ["original", "aac64", "aac128", "aac256"]),
    ("mp3", None, ["original", "aac64", "aac128", "aac256"]),  # bitrate unknown: nothing to compare
    ("flac", 900, ["aac64", "aac128", "aac256"]),  # lossless: the whole ladder
    ("alac", 1000, ["aac64", "aac128", "aac256"]),
])
def test_ladder_is_honest(codec, bitrate, names):
    variants = variants_for(codec, 44100, bitrate, LADDER)
    assert [v.name for v in variants] == names
    master = master_playlist(variants, "{name}/index.m3u8")
    rungs = [line for line in master.splitlines() if line.startswith("#EXT-X-STREAM-INF:")]
    assert len(set(rungs)) == len(rungs)  # no two rungs a player cannot tell apart


@settings(deadline=None, max_examples=200)  # long tracks plan thousands of segments
@given(duration=st.floats(0.05, 3600), target=st.sampled_from([2.0, 3.0, 4.0, 6.0, 10.0, 30.0]),
       codec=st.sampled_from(["mp3", "aac", "flac", "opus"]),
       rate=st.sampled_from([8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000]))
def test_segments_tile_the_track_on_frame_boundaries(duration, target, codec, rate):
    for variant in variants_for(codec, rate, 128, [64, 256]):
        plan = segments(duration, variant, target)
        f = variant.frame_seconds
        assert plan[0].start == 0 and plan[0].first_frame == 0
        # Contiguous, whole frames, no gaps or overlaps.
        for a, b in zip(plan, plan[1:]):
            assert b.first_frame == a.first_frame + a.frames
            assert math.isclose(b.start, a.start + a.duration, abs_tol=1e-9)
        # Truthful: the durations add up to the track's duration (to the catalog's millisecond).
        assert abs(sum(s.duration for s in plan) - duration) <= DURATION_ROUNDING + 1e-6
        # The first ones are short (fast start) and grow, never past the target; the others but
        # the last two are the same whole number of frames, close to the target.
        assert plan[0].duration <= FIRST_SEGMENT_SECONDS + f
        ramp = len(RAMP_SECONDS)
        for segment, seconds in zip(plan[:-1], RAMP_SECONDS):
            assert segment.duration <= min(seconds, target) + f
        assert all(a.frames <= b.frames for a, b in zip(plan[:ramp], plan[1:-2]))
        sizes = {s.frames for s in plan[ramp:-2]}
        assert len(sizes) <= 1
        if sizes:
            assert abs(sizes.pop() * f - target) <= f
        # No crumbs: every segment a player can open on its own, about a second at least
        # (the last may end within its last frame), unless the track is shorter than that.
        if len(plan) > 1:
            assert all(s.duration >= MIN_SEGMENT_SECONDS - 2 * f for s in plan), [s.duration for s in plan]
        assert all(s.duration > 0 for s in plan)
        assert all(math.floor(s.duration + 0.5) <= target_duration(plan) for s in plan)
        assert target_duration(plan) <= max(target, FIRST_SEGMENT_SECONDS)
        # Timestamps follow the frame count: every frame on its own tick, none drifting.
        ticks = [variant.pts(s.first_frame) for s in plan]
        assert all(abs(t - s.start * PTS_CLOCK) <= 0.5 + 1e-6 * s.start for t, s in zip(ticks, plan))
        assert all(abs(b - a - s.frames * f * PTS_CLOCK) <= 1 for a, b, s in zip(ticks, ticks[1:], plan))
        assert all(variant.pts(i + 1) > variant.pts(i) for i in range(plan[-1].first_frame, plan[-1].first_frame + 50))


@pytest.mark.parametrize("rate", [44100, 48000])
def test_a_tail_of_one_frame_is_evened_out(rate):
    """A 48 kHz track one AAC frame past a segment boundary got a last segment of 21 ms."""
    variant = variants_for("opus", rate, 96, [128])[0]
    boundary = segments(60.0, variant, 6.0)[-1].first_frame
    plan = segments((boundary + 1) * variant.frame_seconds, variant, 6.0)
    assert plan[-1].duration >= MIN_SEGMENT_SECONDS - variant.frame_seconds
    assert plan[-2].frames + plan[-1].frames == segments(60.0, variant, 6.0)[-2].frames + 1


def test_a_millisecond_rounded_duration_adds_no_frame():
    """A 160 kbit/s mp3 of 1533 frames (40.0457 s) is 40.046 s in the catalog: still 1533."""
    variant = variants_for("mp3", 44100, 160, [])[0]
    plan = segments(40.046, variant, 6.0)
    assert plan[-1].first_frame + plan[-1].frames == 1533


def test_six_second_aac_segments_at_44100():
    variant = variants_for("flac", 44100, 900, [128])[0]
    plan = segments(150.0, variant, 6.0)
    # 86 * 1024 / 44100 = 1.997 s: a quick first segment, then growing to 6 s
    assert [s.frames for s in plan[:6]] == [86, 86, 129, 172, 215, 258]
    assert {s.frames for s in plan[5:-1]} == {258}  # 258 * 1024 / 44100 = 5.9907 s each
    assert math.isclose(plan[5].duration, 258 * 1024 / 44100)
    ramp = sum(s.duration for s in plan[:5])
    assert len(plan) == 5 + math.ceil((150.0 - ramp) / plan[5].duration)
    assert target_duration(plan) == 6


def test_playlists_follow_rfc_8216():
    variants = variants_for("mp3", 44100, 192, [64, 128])
    master = master_playlist(variants, "{name}/index.m3u8").splitlines()
    assert master[0] == "#EXTM3U"
    infs = [line for line in master if line.startswith("#EXT-X-STREAM-INF:")]
    assert len(infs) == 3 and all("BANDWIDTH=" in i and "CODECS=" in i for i in infs)
    assert 'CODECS="mp4a.40.34"' in infs[0] and 'CODECS="mp4a.40.2"' in infs[1]
    assert master[master.index(infs[0]) + 1] == "original/index.m3u8"

    plan = segments(61.3, variants[1], 6.0)
    media = media_playlist(plan, "{index}.ts").splitlines()
    assert media[:3] == ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-PLAYLIST-TYPE:VOD"]
    assert "#EXT-X-TARGETDURATION:6" in media and media[-1] == "#EXT-X-ENDLIST"
    extinf = [float(line[8:].rstrip(",")) for line in media if line.startswith("#EXTINF:")]
    uris = [line for line in media if line and not line.startswith("#")]
    assert uris == [f"{i}.ts" for i in range(len(plan))]
    assert math.isclose(sum(extinf), 61.3, abs_tol=1e-5)


@pytest.mark.parametrize("duration", [0.0, -1.0])
def test_no_audio_no_segments(duration):
    assert segments(duration, variants_for("flac", 44100, 900, [128])[0], 6.0) == []
