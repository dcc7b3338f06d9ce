"""Speech-like audio at 16 kHz and the loudness envelope that opens the figure's mouth.

The waveform is syllables (raised-cosine bursts of a voiced harmonic source shaped by two formants,
with a short noise burst at each onset) grouped into words and phrases with pauses, so its loudness
envelope at video frame rate swings between silence and full voice like speech does. The envelope
is defined on the video frame grid: frame i covers samples [round(i*sr/fps), round((i+1)*sr/fps)),
so audio and frames never drift apart.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
# Loudness mapping of the mouth: RMS in dBFS from FLOOR_DB (closed) to FULL_DB (fully open).
FLOOR_DB = -45.0
FULL_DB = -12.0


def speech_like(duration_s: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A speech-like mono waveform, float32 in [-1, 1], `round(duration_s * sample_rate)` samples."""
    if duration_s < 0 or not np.isfinite(duration_s):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s}")
    n = int(round(duration_s * sample_rate))
    env = np.zeros(n, np.float64)
    f1 = np.full(n, 500.0)
    f2 = np.full(n, 1500.0)
    noise_env = np.zeros(n, np.float64)
    pos = int(rng.uniform(0.0, 0.3) * sample_rate)
    while pos < n:
        for _ in range(rng.integers(2, 7)):  # words in a phrase
            for _ in range(rng.integers(1, 4)):  # syllables in a word
                length = int(rng.uniform(0.12, 0.28) * sample_rate)
                end = min(n, pos + length)
                if end <= pos:
                    break
                shape = np.sin(np.linspace(0, np.pi, length))[: end - pos] ** 1.5
                env[pos:end] = np.maximum(env[pos:end], rng.uniform(0.45, 1.0) * shape)
                f1[pos:end] = rng.uniform(300, 800)
                f2[pos:end] = rng.uniform(900, 2300)
                burst = min(end - pos, int(0.02 * sample_rate))
                noise_env[pos:pos + burst] = rng.uniform(0.1, 0.3) * np.exp(-np.arange(burst) / (0.006 * sample_rate))
                pos = end + int(rng.uniform(0.02, 0.06) * sample_rate)
            pos += int(rng.uniform(0.08, 0.22) * sample_rate)
        pos += int(rng.uniform(0.3, 0.8) * sample_rate)  # breath between phrases
    t = np.arange(n) / sample_rate
    base_f0 = rng.uniform(110, 210)
    f0 = base_f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6.3)))  # (n,) intonation
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate  # (n,)
    # Harmonic k is sin(k*phase): the Chebyshev recursion s_k = 2cos(phase)s_{k-1} - s_{k-2} gives them
    # all without a sin per harmonic; formant gains change slowly, so they are computed every 4 ms.
    hop = max(1, sample_rate // 250)
    idx = np.minimum(np.arange(0, n, hop), max(n - 1, 0))  # control-rate sample positions
    two_cos = 2 * np.cos(phase)
    s_prev, s_k = np.zeros(n), np.sin(phase)
    voiced = np.zeros(n, np.float64)
    for k in range(1, 25):
        fk = k * f0[idx]
        gain = (np.exp(-0.5 * ((fk - f1[idx]) / 120) ** 2) + 0.5 * np.exp(-0.5 * ((fk - f2[idx]) / 180) ** 2)
                + 0.05) / k ** 0.5 * (fk < sample_rate / 2)
        voiced += np.repeat(gain, hop)[:n] * s_k
        s_prev, s_k = s_k, two_cos * s_k - s_prev
    voiced /= max(np.abs(voiced).max(), 1e-9)
    wave = env * voiced + noise_env * rng.standard_normal(n)
    peak = np.abs(wave).max() if n else 0.0
    if peak > 0:
        wave *= 0.8 / peak
    return wave.astype(np.float32)


def frame_bounds(n_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_frames + 1,) sample index of each frame's start (and the end of the last)."""
    return np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(np.int64)


def frame_rms(wave: np.ndarray, n_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_frames,) RMS of the samples under each video frame; 0 where the audio has ended."""
    w = np.asarray(wave, np.float64)
    if w.ndim != 1:
        raise ValueError(f"wave must be mono (1-D), got shape {w.shape}")
    b = np.minimum(frame_bounds(n_frames, fps, sample_rate), w.shape[0])
    sq = np.concatenate([[0.0], np.cumsum(w * w)])
    counts = np.maximum(b[1:] - b[:-1], 1)
    return np.sqrt((sq[b[1:]] - sq[b[:-1]]) / counts)


def loudness_envelope(wave: np.ndarray, n_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_frames,) mouth opening in [0, 1] from loudness: 0 at or below FLOOR_DB, 1 at FULL_DB dBFS.

    An absolute scale (not normalised per clip) so that silence stays closed in every clip."""
    db = 20 * np.log10(np.maximum(frame_rms(wave, n_frames, fps, sample_rate), 1e-9))
    return np.clip((db - FLOOR_DB) / (FULL_DB - FLOOR_DB), 0.0, 1.0).astype(np.float32)
