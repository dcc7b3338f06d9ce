"""Drift figures: how far each clip of a long video has wandered from clip 1 in look.

Per clip: colour statistics (mean and spread of R, G, B), sharpness (variance of the Laplacian),
high-frequency artefact energy (share of spectral power above a quarter of the sampling rate, where
grid and noise artefacts live) and saturation. Each clip is compared with clip 1; `score` sums the
colour shift and the absolute log-ratios, so an unchanged clip scores 0 and every kind of decay
(blur, noise, over-saturation, colour cast) raises it. Content-free: works on any frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

HF_CUTOFF = 0.25  # cycles per pixel (Nyquist is 0.5)
_EPS = 1e-8


@dataclass(frozen=True)
class ClipStats:
    mean_rgb: tuple[float, float, float]  # 0..1
    std_rgb: tuple[float, float, float]  # 0..1
    sharpness: float  # variance of the Laplacian of the luma (0..1 scale)
    hf_energy: float  # share of (non-DC) spectral power above HF_CUTOFF
    saturation: float  # mean HSV saturation


@dataclass(frozen=True)
class DriftFigures:
    clip: int  # index in the sequence (0 is the reference)
    colour_shift: float  # |mean - mean_ref| + |std - std_ref| (RGB vectors, 0..1 units)
    sharpness_ratio: float  # sharpness / reference sharpness
    hf_ratio: float  # hf_energy / reference hf_energy
    saturation_ratio: float  # saturation / reference saturation

    @property
    def score(self) -> float:
        """0 for a clip that looks like the reference; grows with any kind of drift."""
        return float(self.colour_shift + abs(np.log(self.sharpness_ratio)) + abs(np.log(self.hf_ratio))
                     + abs(np.log(self.saturation_ratio)))


def _frames(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] == 0:
        raise ValueError(f"a clip must be (N, H, W, 3) RGB with N >= 1, got shape {f.shape}")
    return f.astype(np.float32) / 255.0


def clip_stats(frames: np.ndarray) -> ClipStats:
    """Look statistics of one clip (N, H, W, 3), uint8 or float 0..255."""
    f = _frames(frames)
    px = f.reshape(-1, 3)
    luma = f @ np.array([0.299, 0.587, 0.114], np.float32)  # (N, H, W)
    sharp = float(np.mean([ndimage.laplace(y).var() for y in luma]))
    h, w = luma.shape[1:]
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)  # (h, w//2+1) cycles per pixel
    power = np.abs(np.fft.rfft2(luma - luma.mean((1, 2), keepdims=True))) ** 2  # (N, h, w//2+1)
    total = power[:, radius > 0].sum(-1)
    hf = float(np.mean(power[:, radius > HF_CUTOFF].sum(-1) / np.maximum(total, _EPS)))
    mx, mn = f.max(-1), f.min(-1)
    sat = float(np.mean(np.where(mx > _EPS, (mx - mn) / np.maximum(mx, _EPS), 0.0)))
    return ClipStats(tuple(px.mean(0).tolist()), tuple(px.std(0).tolist()), sharp, hf, sat)


def compare(stats: ClipStats, ref: ClipStats, clip: int = 0) -> DriftFigures:
    def ratio(a: float, b: float) -> float:
        return float((a + _EPS) / (b + _EPS))

    shift = float(np.linalg.norm(np.subtract(stats.mean_rgb, ref.mean_rgb))
                  + np.linalg.norm(np.subtract(stats.std_rgb, ref.std_rgb)))
    return DriftFigures(clip, shift, ratio(stats.sharpness, ref.sharpness), ratio(stats.hf_energy, ref.hf_energy),
                        ratio(stats.saturation, ref.saturation))


def drift_figures(clips: Sequence[np.ndarray | ClipStats]) -> list[DriftFigures]:
    """Drift of every clip against the first (whose figures are exactly 0 / 1)."""
    if len(clips) == 0:
        raise ValueError("drift_figures needs at least one clip")
    stats = [c if isinstance(c, ClipStats) else clip_stats(c) for c in clips]
    return [compare(s, stats[0], i) for i, s in enumerate(stats)]


def drift_score(clips: Sequence[np.ndarray | ClipStats]) -> np.ndarray:
    """(len(clips),) drift score per clip against the first."""
    return np.array([d.score for d in drift_figures(clips)])
