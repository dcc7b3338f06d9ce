"""Audio on the video frame grid: sample-exact frames, and per-clip slices that tile the audio."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svi.conditioning.audio import (
    AudioTrack, FeatureConfig, frame_bounds, frame_features, frames_covering, piece_source_frames, slice_features,
)
from svi.planning import MediaPiece, plan
from svi.presets import resolve_spec
from svi.timeline import AudioSegment, PromptSegment, Settings, Storyboard

FPS_CHOICES = [8, 12, 24, 25, 30, Fraction(30000, 1001)]


@given(fps=st.sampled_from(FPS_CHOICES), sr=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
       start=st.integers(0, 10**6), n=st.integers(1, 300))
def test_frame_bounds_are_round_j_sr_over_fps_and_tile(fps, sr, start, n):
    b = frame_bounds(start, n, sr, fps)
    exact = [math.floor(Fraction(j * sr) / Fraction(fps) + Fraction(1, 2)) for j in (start, start + n // 2, start + n)]
    assert [b[0], b[n // 2], b[n]] == exact
    lengths = np.diff(b)
    nominal = Fraction(sr) / Fraction(fps)
    assert set(lengths.tolist()) <= {math.floor(nominal), math.ceil(nominal)}
    # consecutive windows share their boundary: no gap and no overlap, whatever the split
    np.testing.assert_array_equal(frame_bounds(start, n // 2, sr, fps), b[:n // 2 + 1])
    np.testing.assert_array_equal(frame_bounds(start + n // 2, n - n // 2, sr, fps), b[n // 2:])


@given(fps=st.sampled_from(FPS_CHOICES), sr=st.sampled_from([16000, 44100]), n=st.integers(0, 10**6))
def test_frames_covering_counts_frames_that_start_inside_the_audio(fps, sr, n):
    k = frames_covering(n, sr, fps)
    if n == 0:
        assert k == 0
        return
    b = frame_bounds(0, k, sr, fps)
    assert b[k - 1] < n <= b[k]


@pytest.mark.parametrize("fps", [8, 24, 25, Fraction(30000, 1001)])
def test_loudness_feature_reads_exactly_the_frames_samples(fps):
    """A signal whose amplitude changes exactly on the frame boundaries: each frame's RMS feature is
    the level of its own span only, so a grid off by one sample anywhere would show."""
    sr, n = 16000, 60
    b = frame_bounds(0, n, sr, fps)
    levels_db = np.linspace(-70, -3, n)
    rng = np.random.default_rng(1)
    x = np.zeros(b[-1], np.float32)
    for j in range(n):
        x[b[j]:b[j + 1]] = 10 ** (levels_db[j] / 20) * rng.choice([-1.0, 1.0], b[j + 1] - b[j])  # RMS = level
    cfg = FeatureConfig()
    feats = frame_features(x, sr, fps, cfg)
    assert feats.shape == (n, cfg.dim)
    expected = (levels_db - cfg.rms_floor_db) / -cfg.rms_floor_db
    np.testing.assert_allclose(feats[:, cfg.loudness_index], expected, atol=1e-5)


def test_mel_bands_follow_pitch_and_onsets_mark_attacks():
    sr, fps = 16000, 25
    t = np.arange(sr) / sr
    low = np.sin(2 * np.pi * 200 * t) * 0.3
    high = np.sin(2 * np.pi * 3000 * t) * 0.3
    x = np.concatenate([np.zeros(sr // 2), low, high]).astype(np.float32)
    cfg = FeatureConfig()
    f = frame_features(x, sr, fps, cfg)
    mel = f[:, :cfg.n_mels]
    assert np.argmax(mel[25:50].mean(0)) < np.argmax(mel[55:75].mean(0))  # 200 Hz sits below 3 kHz
    onset = f[:, cfg.onset_index]
    assert np.all(onset[:10] == 0)  # silence
    assert 11 <= int(np.argmax(onset[:25])) <= 13  # the attack at 0.5 s = frame 12.5 (window spans 1.3 frames)
    assert 36 <= int(np.argmax(onset[25:50])) + 25 <= 38  # the switch to 3 kHz at 1.5 s brings new bands
    assert onset[40:60].max() < 0.05  # a steady tone has no onsets


def _coded_track(n_frames: int, fps: float, path: str) -> AudioTrack:
    """A track whose feature row j holds (j + 1) everywhere: slices reveal which asset frame they took."""
    feats = np.repeat(np.arange(1, n_frames + 1, dtype=np.float32)[:, None], 3, axis=1)
    return AudioTrack(feats, float(fps), 16000, np.zeros(1, np.float32), path=path)


def _board(segments, duration):
    return Storyboard(start_image="start.png", prompts=(PromptSegment(0.0, duration, "a person talking"),),
                      audio=tuple(segments), settings=Settings(duration=duration))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(preset=st.sampled_from([("storyworld-tiny", "shot"), ("wan2.1-i2v-14b-480p", "talk")]),
       fps=st.sampled_from([8, 16, 24, 25, 30]), m_frac=st.floats(0.0, 0.95), start=st.floats(0, 3),
       length=st.floats(0.5, 12), offset_frames=st.integers(0, 40), half=st.booleans(),
       audio_s=st.floats(1, 14))
def test_clip_slices_tile_the_audio_without_gap_or_duplicate(preset, fps, m_frac, start, length, offset_frames,
                                                            half, audio_s):
    spec = resolve_spec(*preset)
    F = spec.frames_per_clip
    m = 1 + int(m_frac * (F - 2))  # any m in [1, F-1]
    spec = replace(spec, fps=fps, motion_frames=m)
    offset = (offset_frames + (0.5 if half else 0.0)) / fps  # half-frame offsets round the same in every clip
    seg = AudioSegment(start, start + length, "voice.wav", offset)
    duration = start + length + 1.0
    track = _coded_track(max(1, round(audio_s * fps)), fps, "voice.wav")
    clip_plan = plan(_board([seg], duration), spec, asset_hash=lambda p: "h" * 64)

    out, prev = [], None
    for clip in clip_plan.clips:
        sl = slice_features(track, clip.audio, clip.frames)  # (F, D)
        assert sl.shape == (F, 3)
        if prev is not None:  # the m carried frames hear exactly what clip k-1 ended on
            np.testing.assert_array_equal(sl[:m], prev[-m:])
        out.append(sl[clip.skip_frames:])
        prev = sl
    got = np.concatenate(out)[:, 0]  # (total_frames,) asset frame + 1, or 0 for silence
    assert len(got) == clip_plan.total_frames

    s0, s1 = round(seg.start * fps), round(seg.end * fps)
    base = math.floor(offset * fps + 0.5 + 1e-6)
    expected = np.zeros(len(got), np.float32)
    for g in range(s0, min(s1, len(got))):
        src = base + g - s0
        if 0 <= src < track.n_frames:
            expected[g] = src + 1
    np.testing.assert_array_equal(got, expected)


def test_two_audio_assets_and_uncovered_frames():
    a, b = _coded_track(100, 25, "a.wav"), _coded_track(100, 25, "b.wav")
    b = replace(b, features=b.features + 1000)
    pieces = (MediaPiece("a.wav", "x", 2, 5, 1.0), MediaPiece("b.wav", "y", 10, 3, 0.0))
    sl = slice_features({"a.wav": a, "b.wav": b}, pieces, 17)[:, 0]
    np.testing.assert_array_equal(sl, [0, 0, 26, 27, 28, 29, 30, 0, 0, 0, 1001, 1002, 1003, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="no audio track"):
        slice_features({"a.wav": a}, pieces, 17)
    with pytest.raises(ValueError, match="outside"):
        slice_features(a, (MediaPiece("a.wav", "x", 15, 5, 0.0),), 17)
    assert np.all(slice_features(a, (), 17) == 0)


def test_speed_maps_clip_frames_to_asset_time():
    piece = MediaPiece("a.wav", "x", 0, 6, 2.0, speed=1.5)
    # asset time 2.0 + i * 1.5 / 10 s at 10 fps -> frames 20, 21.5, 23, 24.5, 26, 27.5 (half rounds up)
    np.testing.assert_array_equal(piece_source_frames(piece, 10), [20, 22, 23, 25, 26, 28])
