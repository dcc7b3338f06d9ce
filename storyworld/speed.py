"""Measure the generator's and the analyzers' speed on this machine.

    python -m storyworld.speed [--videos 8] [--frames 40] [--size 128x96]

Prints frames per second for rendering (audio, skeleton and ground truth included) and
milliseconds per frame for each analyzer. Speed is not asserted in tests; docs/storyworld.md
records the figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure(videos: int = 8, frames: int = 40, width: int = 128, height: int = 96) -> dict[str, float]:
    from . import render_random
    from .analyze import read_object, read_place
    from .drift import clip_stats
    from .pose import mouth_opening, read_figure

    render_random(0, 1, 2, width=width, height=height)  # warm caches and imports
    t0 = time.perf_counter()
    vids = [render_random(1 + i, 1, frames, width=width, height=height) for i in range(videos)]
    gen_s = time.perf_counter() - t0
    sample = [(v.frames[i], v.truth[i]) for v in vids for i in range(0, frames, max(1, frames // 5))]
    read_place(sample[0][0])  # builds the backdrop prototypes for this size once

    def per_frame(fn, pairs) -> float:
        t = time.perf_counter()
        for f, tr in pairs:
            fn(f, tr)
        return 1000 * (time.perf_counter() - t) / max(len(pairs), 1)

    with_figure = [p for p in sample if p[1].figure]
    out = {
        "generator_fps": videos * frames / gen_s,
        "place_ms": per_frame(lambda f, t: read_place(f), sample),
        "object_ms": per_frame(lambda f, t: read_object(f), sample),
        "figure_ms": per_frame(lambda f, t: read_figure(f, t.keypoints), with_figure),
        "mouth_ms": per_frame(lambda f, t: mouth_opening(f), with_figure),
    }
    t = time.perf_counter()
    for v in vids:
        clip_stats(v.frames)
    out["drift_ms"] = 1000 * (time.perf_counter() - t) / (videos * frames)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storyworld.speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--size", default="128x96")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    r = measure(a.videos, a.frames, w, h)
    print(f"storyworld speed at {w}x{h}: generator {r['generator_fps']:.0f} frames/s; per frame: place "
          f"{r['place_ms']:.1f} ms, object {r['object_ms']:.1f} ms, figure {r['figure_ms']:.1f} ms, mouth "
          f"{r['mouth_ms']:.1f} ms, drift stats {r['drift_ms']:.2f} ms")
    return 0 if np.isfinite(list(r.values())).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
