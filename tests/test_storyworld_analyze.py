"""storyworld's analyzers read generated frames back: checked against the generator's ground truth.

Each analyzer must be right on at least 95% of clean frames over a few hundred random scenes, and
stay right under mild noise and blur (they will read model-generated frames)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import storyworld as sw
from storyworld.analyze import prompt_match, read_object, read_place
from storyworld.pose import latent_rate_sync_bound, lip_sync, mouth_series, pose_error, read_figure
from storyworld.skeleton import BODY, action_keypoints

N_SCENES = 240


def _sample(n: int, seed0: int, size=(128, 96)):
    """(frame, truth) pairs: one random frame from each of n random 5-frame scenes."""
    rng = np.random.default_rng(seed0)
    out = []
    for s in range(n):
        v = sw.render_random(seed0 + s, 1, 5, width=size[0], height=size[1])
        i = int(rng.integers(5))
        out.append((v.frames[i], v.truth[i]))
    return out


def _degrade(frame: np.ndarray, rng: np.random.Generator, noise: float = 5.0, blur: float = 0.6) -> np.ndarray:
    f = ndimage.gaussian_filter(frame.astype(np.float32), (blur, blur, 0))
    return np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clean():
    return _sample(N_SCENES, 1000)


def _scene_accuracy(pairs) -> dict[str, float]:
    hits = {"place": 0, "time": 0, "colour": 0, "shape": 0, "position": 0}
    for frame, t in pairs:
        p, o = read_place(frame), read_object(frame)
        h, w = frame.shape[:2]
        hits["place"] += p.place == t.place
        hits["time"] += p.time == t.time
        if o is not None:
            hits["colour"] += o.colour == t.colour
            hits["shape"] += o.shape == t.shape
            hits["position"] += np.hypot((o.x - t.object_xy[0]) * w, (o.y - t.object_xy[1]) * h) < 0.03 * min(w, h)
    return {k: v / len(pairs) for k, v in hits.items()}


def test_scene_analyzers_on_clean_frames(clean):
    acc = _scene_accuracy(clean)
    assert min(acc.values()) >= 0.95, acc


def test_scene_analyzers_under_noise_and_blur():
    rng = np.random.default_rng(0)
    pairs = [(_degrade(f, rng), t) for f, t in _sample(80, 5000)]
    acc = _scene_accuracy(pairs)
    assert min(acc.values()) >= 0.95, acc


def test_scene_analyzers_at_96x96():
    acc = _scene_accuracy(_sample(40, 7000, size=(96, 96)))
    assert min(acc.values()) >= 0.95, acc


def test_object_size_is_read_in_generator_units(clean):
    ratios = [read_object(f).size / t.object_size for f, t in clean[:60]]
    assert 0.9 < np.median(ratios) < 1.1


def _pose_stats(pairs):
    errs, within, found, n = [], 0, 0, 0
    for frame, t in pairs:
        if not t.figure:
            continue
        n += 1
        e, f = pose_error(frame[None], t.keypoints[None])
        if not f[0]:
            continue
        found += 1
        errs.append(e[0])
        r = read_figure(frame, t.keypoints)
        h, w = frame.shape[:2]
        d = np.linalg.norm((r.body - t.keypoints[list(BODY), :2]) * [w, h], axis=-1) / min(w, h)
        within += int((d < 0.04).sum())
    return found / n, within / (13 * n), float(np.mean(errs))


def test_figure_keypoints_on_clean_frames(clean):
    found, within, mean_err = _pose_stats(clean[:50])
    assert found >= 0.95 and within >= 0.95, (found, within)
    assert mean_err < 0.015


def test_figure_keypoints_under_noise_and_blur(clean):
    rng = np.random.default_rng(1)
    found, within, mean_err = _pose_stats([(_degrade(f, rng), t) for f, t in clean[50:90]])
    assert found >= 0.95 and within >= 0.95, (found, within)
    assert mean_err < 0.02


def test_pose_error_sees_a_wrong_skeleton():
    v = sw.render("a red square rests in a desert by day while a person dances", 6, seed=4)
    right, _ = pose_error(v.frames, v.keypoints)
    other = action_keypoints("waves", 6, 8, 96.0, 128, 96, np.random.default_rng(9))  # other pose, other side
    wrong, _ = pose_error(v.frames, other)
    assert np.nanmax(right) < 0.02 and np.nanmin(wrong) > 0.2


def test_no_figure_no_reading():
    v = sw.render("a red square rests in a city at night", 2, seed=1)
    assert read_figure(v.frames[0]) is None
    errors, found = pose_error(v.frames, v.keypoints)  # zero visibility: skipped
    assert not found.any() and np.isnan(errors).all()
    assert np.isnan(mouth_series(v.frames)).all()


def test_mouth_follows_audio_clean_and_degraded():
    v = sw.render(["a red circle rests on a beach by day while a person stands",
                   "a blue cross spins in a city at night while a person dances"], 24, seed=2)
    truth = np.array([t.mouth for t in v.truth])
    m = mouth_series(v.frames)
    assert np.abs(m - truth).mean() < 0.08 and np.corrcoef(m, truth)[0, 1] > 0.97
    assert lip_sync(v.frames, v.audio, v.fps) > 0.95
    rng = np.random.default_rng(2)
    noisy = np.stack([_degrade(f, rng) for f in v.frames])
    assert lip_sync(noisy, v.audio, v.fps) > 0.9
    # A mouth that ignores the audio does not correlate with it.
    shuffled = v.frames[np.random.default_rng(3).permutation(len(v.frames))]
    assert abs(lip_sync(shuffled, v.audio, v.fps)) < 0.5


def test_latent_rate_sync_bound():
    """A mouth held per latent frame (frame 0, then runs of 4) correlates with speech well below 1,
    and exactly 1 when the grouping is per frame."""
    v = sw.render(["a red circle rests on a beach by day while a person stands"], 33, seed=1, width=128, height=96,
                  fps=8)
    bound = latent_rate_sync_bound(v.audio, 33, 8)
    assert 0.3 < bound < 0.9
    assert latent_rate_sync_bound(v.audio, 33, 8, group=1) == pytest.approx(1.0)
    assert np.isnan(latent_rate_sync_bound(np.zeros(16000 * 4, np.float32), 33, 8))  # silence: nothing to follow


def test_prompt_match():
    v = sw.render("a pink triangle moves left on a snow field at dusk", 3, seed=0)
    assert prompt_match(v.frames[1], v.captions[0].text).all
    m = prompt_match(v.frames[1], "a blue triangle moves left in a forest at dusk")
    assert (m.place, m.time, m.colour, m.shape) == (False, True, False, True)


def test_analyzers_reject_bad_frames():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        read_place(np.zeros((96, 128), np.uint8))
    with pytest.raises(ValueError, match="16x16"):
        read_object(np.zeros((8, 8, 3), np.uint8))
