"""Audio loading: formats, mono/stereo, rate conversion, loudness, silent/corrupt/empty files, mux cuts."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from svi.conditioning.audio import (
    SAMPLE_RATE, TARGET_LUFS, AudioError, AudioTrack, audio_duration, audio_for_frames, decode_audio, load_audio,
    prepare_audio, timeline_audio,
)


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)  # (n, ch), channels differ


def write_m4a(path, x: np.ndarray, sr: int) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
        frame.sample_rate = sr
        for pkt in s.encode(frame):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_common_formats_load_at_16k_mono(tmp_path, fmt, ext):
    sr = 44100
    path = tmp_path / f"a.{ext}"
    sf.write(path, tone(1.5, sr, channels=2), sr, format=fmt)
    audio = load_audio(path)
    assert audio.sr == SAMPLE_RATE and audio.samples.ndim == 1 and audio.source_channels == 2
    # mp3 encoders pad a little; everything else is sample-exact after resampling.
    assert abs(audio.duration_s - 1.5) < (0.06 if ext == "mp3" else 1e-3)
    assert abs(audio_duration(path) - 1.5) < (0.06 if ext == "mp3" else 1e-3)
    spec = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spec) * SAMPLE_RATE / len(audio.samples) - 440) < 5  # still a 440 Hz tone


def test_m4a_goes_through_pyav(tmp_path):
    path = tmp_path / "a.m4a"
    write_m4a(path, tone(1.0, 48000), 48000)
    with pytest.raises(Exception):
        sf.read(path)  # libsndfile cannot: the PyAV path is what makes this work
    audio = load_audio(path)
    # PyAV writes this fixture without an edit list: 1024 priming samples plus the padding of the
    # last AAC frame remain (real m4a files carry the edit list, which decode_audio honours)
    assert 0 <= audio.duration_s - 1.0 <= 2048 / 48000
    assert audio.loudness_lufs is not None and abs(audio.gain_db) < 40


def test_stereo_is_the_channel_mean_and_rate_conversion_keeps_pitch_and_length():
    sr = 22050
    left, right = tone(2.0, sr, 300, 0.2), tone(2.0, sr, 300, 0.4)
    a = prepare_audio(np.stack([left, right]), sr, normalize=False)
    b = prepare_audio((left + right) / 2, sr, normalize=False)
    assert a.source_channels == 2 and b.source_channels == 1
    np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)
    assert len(a.samples) == 2 * SAMPLE_RATE
    spec = np.abs(np.fft.rfft(a.samples))
    assert abs(np.argmax(spec) * SAMPLE_RATE / len(a.samples) - 300) < 1
    assert abs(np.sqrt(np.mean(a.samples ** 2)) - 0.3 / np.sqrt(2)) < 0.01  # amplitude kept


def test_loudness_is_normalised_to_minus_23_lufs():
    import pyloudnorm

    for amp in (0.01, 0.5):
        a = prepare_audio(tone(3.0, SAMPLE_RATE, 1000, amp), SAMPLE_RATE)
        measured = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(a.samples.astype(np.float64))
        assert abs(measured - TARGET_LUFS) < 0.1
    loud, quiet = prepare_audio(tone(3.0, SAMPLE_RATE, amp=0.5), SAMPLE_RATE), prepare_audio(
        tone(3.0, SAMPLE_RATE, amp=0.01), SAMPLE_RATE)
    assert quiet.gain_db - loud.gain_db == pytest.approx(20 * np.log10(50), abs=0.05)


def test_short_audio_skips_normalisation_without_dividing_by_zero():
    a = prepare_audio(tone(0.2, SAMPLE_RATE), SAMPLE_RATE)  # under the 0.4 s gating block
    assert a.loudness_lufs is None and a.gain_db == 0.0
    np.testing.assert_array_equal(a.samples, tone(0.2, SAMPLE_RATE))


def test_silent_audio_is_an_error_unless_allowed(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SAMPLE_RATE * 2, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="silent.*allow_silent"):
        load_audio(path)
    a = load_audio(path, allow_silent=True)
    assert a.silent and a.gain_db == 0.0 and a.loudness_lufs is None and np.all(a.samples == 0)
    track = AudioTrack.from_audio(a, 25)
    assert np.all(track.features == 0)  # silence features are the zero vector


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 4,
                                     b"ID3\x03" + bytes(200)])
def test_corrupt_and_empty_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="bad.wav: (the file is empty|cannot decode)"):
        load_audio(path)


def test_zero_length_audio_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="zero length"):
        load_audio(path)


def test_missing_file_and_non_finite_samples(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    x = tone(1.0, SAMPLE_RATE)
    x[10] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        prepare_audio(x, SAMPLE_RATE)


def test_a_video_without_audio_is_reported(tmp_path):
    import av

    path = tmp_path / "silent_video.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for _ in range(4):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    with pytest.raises(AudioError, match="no audio stream"):
        decode_audio(path)


@pytest.mark.parametrize("fps", [8, 24, 25, 30])
def test_audio_for_frames_lasts_exactly_the_video(tmp_path, fps):
    sr = 44100
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (sr * 2, 2)).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    n_frames = 37
    samples, rate = audio_for_frames(path, 0.5, n_frames, fps)
    assert rate == sr and samples.shape == (math.floor(Fraction(n_frames * sr, fps) + Fraction(1, 2)), 2)
    start = round(0.5 * sr)
    avail = min(samples.shape[0], x.shape[0] - start)
    np.testing.assert_array_equal(samples[:avail], x[start:start + avail])
    assert np.all(samples[avail:] == 0)  # past the end: silence, same length
    before, _ = audio_for_frames(path, -0.25, 10, fps)  # before the start: leading silence
    lead = round(0.25 * sr)
    assert np.all(before[:lead] == 0)
    np.testing.assert_array_equal(before[lead:], x[:before.shape[0] - lead])


def test_timeline_audio_places_segments_on_the_frame_grid(tmp_path):
    from svi.timeline import AudioSegment

    sr, fps = 16000, 25
    a = np.full(sr, 0.25, np.float32)
    b = np.full((sr, 2), -0.5, np.float32)
    sf.write(tmp_path / "a.wav", a, sr, subtype="FLOAT")
    sf.write(tmp_path / "b.wav", b, sr, subtype="FLOAT")
    segs = [AudioSegment(0.2, 0.6, str(tmp_path / "a.wav"), 0.0), AudioSegment(1.0, 3.0, str(tmp_path / "b.wav"))]
    out, rate = timeline_audio(segs, 50, fps)
    assert rate == sr and out.shape == (2 * sr, 2)
    assert np.all(out[:3200] == 0) and np.all(out[3200:9600] == 0.25) and np.all(out[9600:16000] == 0)
    assert np.all(out[16000:] == -0.5)  # b runs to the end of the 2 s video
