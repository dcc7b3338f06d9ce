"""Shared fixtures: the bundled tiny model, loaded once per test session, and small inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# the bundled DiT's shape, which fabricated LoRA and adapter fixtures must match (256 wide since round 5)
BUNDLED_DIT = json.loads((ROOT / "assets/models/storyworld-tiny/transformer/config.json").read_text())
BUNDLED_WIDTH = BUNDLED_DIT["num_attention_heads"] * BUNDLED_DIT["attention_head_dim"]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see app.py: spinning OpenMP threads starve each other


@pytest.fixture(scope="session")
def tiny_renderer():
    """A Renderer on the bundled storyworld-tiny model (shot variant), CPU."""
    from svi import resolve_spec
    from svi.engine import build_renderer

    renderer, _ = build_renderer(resolve_spec("storyworld-tiny", "shot"), "cpu")
    return renderer


@pytest.fixture(scope="session")
def start_image(tmp_path_factory) -> str:
    """A 128x96 picture with structure (gradient + disc), so frames differ where inputs differ."""
    path = tmp_path_factory.mktemp("img") / "start.png"
    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([x * 2, y * 2, 255 - x], axis=-1).astype(np.uint8)
    img[(x - 64) ** 2 + (y - 48) ** 2 < 200] = (220, 40, 40)
    Image.fromarray(img).save(path)
    return str(path)
