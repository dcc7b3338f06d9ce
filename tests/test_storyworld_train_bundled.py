"""The bundled storyworld-tiny weights: they load through the engine, render a storyworld scene from
its start image, and the analyzers read the frames back above chance (fixed seed; thresholds are
what the committed weights achieve, with margin - see assets/models/storyworld-tiny/MODEL_CARD.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from storyworld.analyze import prompt_match
from storyworld.drift import drift_score
from storyworld.train.cache import ASSETS
from storyworld.train.evaluate import SVI_LORA, chain, make_renderer, start_image

CAPTIONS = ("a red circle bounces on a beach by day while a person waves",
            "a yellow square rests in a forest at night",
            "a blue star spins in a desert at dusk")
CHANCE_PLACE_TIME = 1 / 15  # 5 places x 3 times
# Measured on the committed weights (seeds 0-2, shot, 12 steps): 0.65 / 1.00 / 0.94 of frames, mean 0.86.
PLACE_TIME_MIN = 0.6


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundled")
    r = make_renderer("shot")
    out = {}
    for i, caption in enumerate(CAPTIONS):
        start_image(caption, tmp / f"s{i}.png", seed=i)
        out[caption] = chain(r, tmp / f"s{i}.png", [caption], seed=i)[0]
    return out


def test_bundle_is_trained_and_small():
    index = json.loads((ASSETS / "model_index.json").read_text())
    assert "random init" not in index["_note"]
    total = sum(p.stat().st_size for p in ASSETS.rglob("*.safetensors"))
    assert total < 100 * 2**20


def test_bundled_weights_render_frames_the_analyzers_read(renders):
    place_time = []
    for caption, frames in renders.items():
        assert frames.shape == (17, 96, 128, 3) and frames.dtype == np.uint8
        assert frames.std() > 5  # a picture, not a flat field
        place_time += [(m.place and m.time) for m in (prompt_match(f, caption) for f in frames)]
    assert np.mean(place_time) >= PLACE_TIME_MIN > CHANCE_PLACE_TIME


def test_svi_lora_loads_and_changes_the_render(renders, tmp_path):
    if not (ASSETS / SVI_LORA).is_file():
        pytest.fail(f"{ASSETS / SVI_LORA} missing")
    caption = CAPTIONS[0]
    start_image(caption, tmp_path / "s.png", seed=0)
    frames = chain(make_renderer("shot", svi=True), tmp_path / "s.png", [caption], seed=0)[0]
    assert frames.shape == renders[caption].shape
    assert np.abs(frames.astype(int) - renders[caption]).mean() > 0.3  # the LoRA is not a no-op (measured 8.5)
    assert drift_score([renders[caption], frames])[1] < 1.5  # and not a different world (measured 0.71)
