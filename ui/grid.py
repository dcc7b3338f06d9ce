"""The clip grid of a model in seconds: where clips start and end on the timeline.

Clip k of F frames (m carried) appends output frames [out_start, out_end) with out_end = F + k(F-m)
(svi.planning); the timeline snaps segment edges to these ends so that prompts change exactly at
clip boundaries, as `plan` would quantise them anyway.
"""

from __future__ import annotations

import math

from svi.presets import ModelSpec


def clip_end_s(spec: ModelSpec, k: int) -> float:
    """End of clip k (0-based) in seconds."""
    return (spec.frames_per_clip + k * (spec.frames_per_clip - spec.motion_frames)) / spec.fps


def clip_edges(spec: ModelSpec, until_s: float) -> list[float]:
    """0 and the end of every clip up to the first end at or past `until_s`."""
    edges = [0.0]
    k = 0
    while edges[-1] < until_s - 1e-9 or len(edges) < 2:
        edges.append(clip_end_s(spec, k))
        k += 1
    return edges


def clips_for(spec: ModelSpec, duration_s: float) -> int:
    """How many clips `plan` makes for a storyboard of `duration_s` (svi.planning.clip_count)."""
    from svi.planning import clip_count

    return clip_count(duration_s, spec.fps, spec.frames_per_clip, spec.motion_frames)


def snap(t: float, spec: ModelSpec) -> float:
    """The clip edge nearest to `t` seconds."""
    if t <= 0:
        return 0.0
    step = (spec.frames_per_clip - spec.motion_frames) / spec.fps
    first = spec.frames_per_clip / spec.fps
    if t < first / 2:
        return 0.0
    k = max(0, round((t - first) / step))
    return clip_end_s(spec, int(k)) if math.isfinite(t) else 0.0


def fmt_s(t: float) -> str:
    """Seconds as people read clip edges: at most 3 decimals, no trailing zeros (2.125, 4, 0.5)."""
    return f"{round(float(t), 3):.3f}".rstrip("0").rstrip(".")
