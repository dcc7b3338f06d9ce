"""Drift figures: zero for identical clips, growing with every kind of decay."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import storyworld as sw
from storyworld.drift import clip_stats, drift_figures, drift_score


@pytest.fixture(scope="module")
def clip():
    return sw.render("a yellow star spins in a city by day while a person dances", 8, seed=3).frames


def test_identical_clips_do_not_drift(clip):
    figs = drift_figures([clip, clip.copy(), clip_stats(clip)])
    for d in figs:
        assert d.colour_shift == 0 and d.sharpness_ratio == 1 and d.hf_ratio == 1 and d.saturation_ratio == 1
        assert d.score == 0
    assert [d.clip for d in figs] == [0, 1, 2]


def _monotone(scores) -> bool:
    return bool(np.all(np.diff(scores) > 0))


def test_blur_drifts_more_the_more_it_blurs(clip):
    clips = [clip] + [ndimage.gaussian_filter(clip.astype(np.float32), (0, s, s, 0)) for s in (0.4, 0.8, 1.6)]
    figs = drift_figures(clips)
    assert _monotone(drift_score(clips))
    assert all(a.sharpness_ratio > b.sharpness_ratio for a, b in zip(figs, figs[1:]))
    assert figs[-1].hf_ratio < 0.5


def test_noise_drifts_more_the_louder_it_is(clip):
    rng = np.random.default_rng(0)
    clips = [clip] + [np.clip(clip + rng.normal(0, s, clip.shape), 0, 255) for s in (3, 8, 20)]
    figs = drift_figures(clips)
    assert _monotone(drift_score(clips))
    assert figs[-1].hf_ratio > 1.5 and figs[-1].sharpness_ratio > 1.5


def test_colour_cast_and_saturation(clip):
    f = clip.astype(np.float32)
    casts = [clip] + [np.clip(f * (1 + k, 1, 1 - k), 0, 255) for k in (0.05, 0.1, 0.2)]
    figs = drift_figures(casts)
    # A cast moves the colour statistics steadily; saturation may go either way (blue sky greys while
    # grey road warms), so only the colour shift is monotone, and every cast scores.
    assert _monotone([d.colour_shift for d in figs]) and all(d.score > 0.05 for d in figs[1:])
    grey = f.mean(-1, keepdims=True)
    saturated = [clip] + [np.clip(grey + (f - grey) * k, 0, 255) for k in (1.2, 1.5, 2.0)]
    figs = drift_figures(saturated)
    assert _monotone([d.saturation_ratio for d in figs]) and _monotone(drift_score(saturated))


def test_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        drift_figures([])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        clip_stats(np.zeros((2, 8, 8)))
