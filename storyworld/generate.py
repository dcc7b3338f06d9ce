"""Write a storyworld dataset in the SVI folder layout.

    python -m storyworld.generate --out DIR --n 10 --seed 0 [--frames 33] [--scenes 1]
                                  [--size 128x96] [--fps 8] [--category storyworld]
                                  [--pix-fmt yuv444p|yuv420p]

gives DIR/<category>/<category>.csv (columns Filename, Video Description) beside, per video,
<stem>.mp4, <stem>.wav (16 kHz mono: the talk layout's video + wav pair), <stem>.pose.json (the
keypoint stream: the dance layout's pose) and <stem>.truth.json (captions per frame range, scene
specs, layouts and per-frame ground truth). A video of several scenes gets its captions joined
with " | " in the csv. dataset.json records the arguments, so the folder can be remade exactly.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .files import MP4_PIX_FMT, write_keypoints, write_mp4, write_wav
from .generator import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH, MIN_SIZE, Video, render_random

CSV_COLUMNS = ("Filename", "Video Description")
CAPTION_JOIN = " | "


@dataclass(frozen=True)
class DatasetConfig:
    out: str
    n: int = 10
    seed: int = 0
    frames: int = 33  # per scene: two storyworld-tiny clips of 17 frames with one motion frame
    scenes: int = 1
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    fps: int = DEFAULT_FPS
    category: str = "storyworld"
    pix_fmt: str = MP4_PIX_FMT  # yuv444p keeps 2-px colour detail; yuv420p plays in browsers

    def check(self) -> None:
        problems = []
        if self.n < 1:
            problems.append(f"--n must be >= 1, got {self.n}")
        if self.frames < 1 or self.scenes < 1:
            problems.append(f"--frames and --scenes must be >= 1, got {self.frames} and {self.scenes}")
        if self.width < MIN_SIZE or self.height < MIN_SIZE or self.width % 2 or self.height % 2:
            problems.append(f"--size must be even and at least {MIN_SIZE} a side, got {self.width}x{self.height}")
        if not self.category or any(c in self.category for c in "/\\") or self.category.startswith("."):
            problems.append(f"--category must be a plain folder name, got {self.category!r}")
        if self.pix_fmt not in ("yuv444p", "yuv420p"):
            problems.append(f"--pix-fmt must be yuv444p or yuv420p, got {self.pix_fmt!r}")
        if problems:
            raise ValueError("; ".join(problems))


def video_seed(seed: int, index: int) -> int:
    """Seed of video `index` of a dataset: independent streams per video."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def truth_document(video: Video, seed: int) -> dict:
    return {
        "seed": seed, "fps": video.fps, "width": video.size[0], "height": video.size[1],
        "sample_rate": video.sample_rate,
        "captions": [asdict(c) for c in video.captions],
        "scenes": [asdict(s) for s in video.scenes],
        "layouts": [asdict(lay) for lay in video.layouts],
        "frames": [{k: v for k, v in t.to_dict().items() if k != "keypoints"} for t in video.truth],
    }


def generate_dataset(cfg: DatasetConfig, progress: bool = True) -> Path:
    """Write the dataset; returns the category folder."""
    cfg.check()
    folder = Path(cfg.out) / cfg.category
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(cfg.n), desc="storyworld videos", disable=not progress):
        seed = video_seed(cfg.seed, i)
        video = render_random(seed, cfg.scenes, cfg.frames, width=cfg.width, height=cfg.height, fps=cfg.fps)
        stem = f"{cfg.category}_{i:05d}"
        write_mp4(folder / f"{stem}.mp4", video.frames, video.fps, pix_fmt=cfg.pix_fmt)
        write_wav(folder / f"{stem}.wav", video.audio, video.sample_rate)
        write_keypoints(folder / f"{stem}.pose.json", video.keypoints, video.fps, *video.size)
        (folder / f"{stem}.truth.json").write_text(json.dumps(truth_document(video, seed)))
        rows.append((f"{stem}.mp4", CAPTION_JOIN.join(c.text for c in video.captions)))
    with open(folder / f"{cfg.category}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    (folder / "dataset.json").write_text(json.dumps({"generator": "storyworld", **asdict(cfg)}, indent=2))
    return folder


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x96, got {text!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storyworld.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (the category folder is made inside)")
    ap.add_argument("--n", type=int, default=10, help="number of videos (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    ap.add_argument("--frames", type=int, default=33, help="frames per scene (default 33)")
    ap.add_argument("--scenes", type=int, default=1, help="scenes (captions) per video (default 1)")
    ap.add_argument("--size", type=_size, default=(DEFAULT_WIDTH, DEFAULT_HEIGHT), help="WxH (default 128x96)")
    ap.add_argument("--fps", type=int, default=DEFAULT_FPS, help="frames per second (default 8)")
    ap.add_argument("--category", default="storyworld", help="category folder and csv name")
    ap.add_argument("--pix-fmt", default=MP4_PIX_FMT, choices=("yuv444p", "yuv420p"),
                    help="H.264 chroma layout (default yuv444p: full colour resolution)")
    a = ap.parse_args(argv)
    cfg = DatasetConfig(out=a.out, n=a.n, seed=a.seed, frames=a.frames, scenes=a.scenes, width=a.size[0],
                        height=a.size[1], fps=a.fps, category=a.category, pix_fmt=a.pix_fmt)
    try:
        t0 = time.perf_counter()
        folder = generate_dataset(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_frames = cfg.n * cfg.scenes * cfg.frames
    print(f"wrote {cfg.n} videos ({n_frames} frames) to {folder} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
