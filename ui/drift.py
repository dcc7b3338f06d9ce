"""Drift of a long render, clip by clip: colour and sharpness statistics relative to clip 1.

SVI's claim is that chained clips keep their look (no colour drift, no blur creeping in). These are
the cheap, model-free measures the UI plots per clip of the chosen takes:

- brightness: mean of all pixels (0..255)
- contrast: standard deviation of the grey image
- saturation: mean of max(R,G,B) - min(R,G,B)
- sharpness: variance of the 4-neighbour Laplacian of the grey image (falls as frames blur)

each as the percentage change from clip 1, plus the colour shift: the distance between the clip's
mean RGB and clip 1's (0..441).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("brightness", "contrast", "saturation", "sharpness")


@dataclass(frozen=True)
class ClipStats:
    mean_rgb: tuple[float, float, float]
    brightness: float
    contrast: float
    saturation: float
    sharpness: float


def clip_stats(frames: np.ndarray) -> ClipStats:
    """Statistics of uint8 frames (n, H, W, 3), averaged over the frames."""
    f = np.asarray(frames, dtype=np.float32)  # (n, H, W, 3)
    grey = f @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (n, H, W)
    lap = (-4 * grey[:, 1:-1, 1:-1] + grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1]
           + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:])  # (n, H-2, W-2)
    return ClipStats(mean_rgb=tuple(float(x) for x in f.mean(axis=(0, 1, 2))), brightness=float(f.mean()),
                     contrast=float(grey.std(axis=(1, 2)).mean()),
                     saturation=float((f.max(axis=-1) - f.min(axis=-1)).mean()),
                     sharpness=float(lap.var(axis=(1, 2)).mean()))


def drift_table(stats: dict[int, ClipStats]) -> list[dict]:
    """Long-format rows {clip (1-based), metric, value} relative to the first clip in `stats`."""
    if not stats:
        return []
    first = stats[min(stats)]
    rows = []
    for k in sorted(stats):
        s = stats[k]
        for m in METRICS:
            base = getattr(first, m)
            rows.append({"clip": k + 1, "metric": f"{m} change (%)",
                         "value": round(100.0 * (getattr(s, m) - base) / base, 3) if base else 0.0})
        shift = float(np.linalg.norm(np.subtract(s.mean_rgb, first.mean_rgb)))
        rows.append({"clip": k + 1, "metric": "colour shift (RGB distance)", "value": round(shift, 3)})
    return rows
