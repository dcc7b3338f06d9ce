"""Previews of timeline media: audio waveform peaks and skeleton line drawings of pose files.

Computed once per asset content (sha256) and kept in a small in-memory cache; the timeline draws
them in the browser. Pure data out (lists of numbers), so the JSON stays small: a waveform has
PEAKS_PER_S values per second of audio, a pose file SKELETONS_PER_S skeletons per second.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

PEAKS_PER_S = 25
SKELETONS_PER_S = 2
MAX_PEAKS = 20_000  # ~13 minutes of audio at 25/s; longer files are summarised more coarsely


def audio_preview(path: str | os.PathLike, sha256: str) -> dict:
    """{"kind": "audio", "duration": s, "rate": peaks per second, "peaks": [0..1, ...]}."""
    return _audio_preview(os.fspath(path), sha256)


@lru_cache(maxsize=64)
def _audio_preview(path: str, sha256: str) -> dict:
    from svi.conditioning.audio import decode_audio

    decoded = decode_audio(path)
    mono = np.abs(decoded.samples).max(axis=0)  # (n,) peak over channels
    duration = decoded.duration_s
    rate = PEAKS_PER_S if duration * PEAKS_PER_S <= MAX_PEAKS else MAX_PEAKS / duration
    n = max(1, int(np.ceil(duration * rate)))
    edges = np.linspace(0, mono.shape[0], n + 1).astype(np.int64)
    peaks = np.maximum.reduceat(mono, edges[:-1]) if mono.size else np.zeros(n)  # (n,)
    top = float(peaks.max()) or 1.0
    return {"kind": "audio", "duration": round(duration, 4), "rate": rate,
            "peaks": [round(float(p) / top, 3) for p in peaks]}


def pose_preview(path: str | os.PathLike, sha256: str) -> dict:
    """{"kind": "pose", "duration": s, "rate": skeletons per second, "aspect": w/h,
    "skeletons": [[x1, y1, x2, y2, ...] per sample, normalised]} (empty list: no person)."""
    return _pose_preview(os.fspath(path), sha256)


@lru_cache(maxsize=64)
def _pose_preview(path: str, sha256: str) -> dict:
    from svi.conditioning.pose import load_pose
    from svi.conditioning.pose_render import LIMB_SEQ, THRESHOLD, openpose18

    track = load_pose(path)
    scores = track.scores  # (T, 33)
    n = max(1, int(np.ceil(track.duration_s * SKELETONS_PER_S)))
    skeletons = []
    for i in range(n):
        f = min(track.n_frames - 1, int(round(i / SKELETONS_PER_S * track.fps)))
        kp, sc = openpose18(track.keypoints[f], scores[f])  # (18, 2), (18,)
        lines: list[float] = []
        for a, b in LIMB_SEQ[:-2]:  # the last two limbs (ears) are not drawn, as in DWPose
            if sc[a - 1] > THRESHOLD and sc[b - 1] > THRESHOLD:
                lines += [round(float(v), 3) for v in (*kp[a - 1], *kp[b - 1])]
        skeletons.append(lines)
    return {"kind": "pose", "duration": round(track.duration_s, 4), "rate": SKELETONS_PER_S,
            "aspect": round(track.width / track.height, 4), "skeletons": skeletons}
