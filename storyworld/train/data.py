"""Training batches from the storyworld generator (numpy uint8 -> torch), pure functions of a seed."""

from __future__ import annotations

import numpy as np
import torch

import storyworld as sw

WIDTH, HEIGHT, FPS = 128, 96, 8  # the storyworld-tiny preset's output size (max_long 128, max_short 96) and rate


def video_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def random_clip(rng: np.random.Generator, frames: int, scene_frames: int | None = None) -> np.ndarray:
    """(frames, H, W, 3) uint8: a window of a random one-scene storyworld video."""
    scene_frames = max(frames, scene_frames or frames)
    video = sw.render_random(video_seed(rng), 1, scene_frames, width=WIDTH, height=HEIGHT, fps=FPS)
    start = int(rng.integers(0, scene_frames - frames + 1))
    return video.frames[start:start + frames]


def to_pixels(clips: np.ndarray) -> torch.Tensor:
    """uint8 (B, F, H, W, 3) -> float (B, 3, F, H, W) in [-1, 1] (svi.encoders.to_model_pixels, batched)."""
    return torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
