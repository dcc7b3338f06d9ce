"""storyworld's generator: determinism, outputs, motions, conditioning inputs and the palette rules."""

from __future__ import annotations

import numpy as np
import pytest

import storyworld as sw
from storyworld.audio import SAMPLE_RATE, loudness_envelope
from storyworld.backdrop import render_backdrop
from storyworld.skeleton import BODY, NUM_LANDMARKS, action_keypoints

CAPS = ["a red circle bounces on a beach at dusk while a person waves",
        "a blue star spins in a forest by day while a person dances as the camera pans left"]


def test_same_seed_same_arrays_other_seed_other_arrays():
    a = sw.render(CAPS, 9, seed=5)
    b = sw.render(CAPS, 9, seed=5)
    c = sw.render(CAPS, 9, seed=6)
    for field in ("frames", "audio", "keypoints"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert [t.to_dict() for t in a.truth] == [t.to_dict() for t in b.truth]
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.audio, c.audio)
    r1, r2 = sw.render_random(11, 2, 5), sw.render_random(11, 2, 5)
    assert np.array_equal(r1.frames, r2.frames) and r1.captions == r2.captions


@pytest.mark.parametrize("size", [(128, 96), (96, 96), (160, 120)])
def test_outputs_have_the_documented_shapes(size):
    w, h = size
    v = sw.render(CAPS, [6, 4], seed=1, width=w, height=h, fps=8)
    assert v.frames.shape == (10, h, w, 3) and v.frames.dtype == np.uint8
    assert v.size == (w, h) and v.fps == 8
    assert v.audio.dtype == np.float32 and v.audio.shape == (10 * SAMPLE_RATE // 8,)
    assert np.abs(v.audio).max() <= 1.0
    assert v.keypoints.shape == (10, NUM_LANDMARKS, 3)
    assert [(c.start, c.end) for c in v.captions] == [(0, 6), (6, 10)]
    assert [c.text for c in v.captions] == CAPS
    assert v.caption_at(5) == CAPS[0] and v.caption_at(6) == CAPS[1]
    assert len(v.truth) == 10 and v.truth[7].scene == 1 and v.truth[7].place == "forest"
    body = v.keypoints[:, list(BODY), :2]
    assert (body > 0).all() and (body < 1).all()  # the figure is in the frame


def test_scene_cut_changes_the_picture_and_the_figure_is_optional():
    v = sw.render(["a red circle rests on a beach by day while a person stands",
                   "a red circle rests in a city at night"], 4, seed=2)
    jump = np.abs(v.frames[4].astype(int) - v.frames[3].astype(int)).mean()
    within = np.abs(v.frames[3].astype(int) - v.frames[2].astype(int)).mean()
    assert jump > 10 * within + 5
    assert all(t.figure for t in v.truth[:4]) and not any(t.figure for t in v.truth[4:])
    assert (v.keypoints[4:] == 0).all() and (v.keypoints[:4, :, 2] == 1).all()
    assert all(t.mouth == 0 for t in v.truth[4:])


def test_motions_follow_their_words():
    def track(motion, shape="square"):
        v = sw.render(f"a green {shape} {motion} in a desert by day", 9, seed=3)
        return v.truth
    left, right = track("moves left"), track("moves right")
    assert np.all(np.diff([t.object_xy[0] for t in left]) < 0)
    assert np.all(np.diff([t.object_xy[0] for t in right]) > 0)
    grows = track("grows")
    assert np.all(np.diff([t.object_size for t in grows]) > 0)
    assert np.ptp([t.object_xy[1] for t in track("bounces")]) > 0.1
    spins = track("spins", "star")
    assert np.ptp([t.object_angle for t in spins]) > 1.0
    rests = track("rests")
    assert len({t.object_xy for t in rests}) == 1 and len({t.object_size for t in rests}) == 1


def test_camera_pan_slides_the_land_not_the_sky():
    v = sw.render("a red square rests in a city by day as the camera pans right", 9, seed=4)
    offsets = [t.pan_offset for t in v.truth]
    assert offsets[0] == 0 and np.all(np.diff(offsets) > 0)
    first, last = v.frames[0].astype(int), v.frames[-1].astype(int)
    assert np.abs(first[20:80] - last[20:80]).mean() > 5  # the skyline and the road markings moved
    assert np.abs(first[:6] - last[:6]).mean() < 1  # the top of the sky did not
    still = sw.render("a red square rests in a city by day", 3, seed=4)
    assert all(t.pan_offset == 0 for t in still.truth)


def test_mouth_follows_the_audio_loudness():
    v = sw.render(CAPS[0], 40, seed=8)
    env = loudness_envelope(v.audio, 40, v.fps)
    assert np.allclose([t.mouth for t in v.truth], env)
    assert env.std() > 0.2 and (env < 0.05).any() and (env > 0.7).any()  # speech: pauses and loud syllables


def test_external_keypoints_and_audio_drive_the_figure():
    kp = action_keypoints("jumps", 6, 8, 40.0, 128, 96, np.random.default_rng(0))
    audio = np.zeros(6 * SAMPLE_RATE // 8, np.float32)
    audio[2 * 2000:3 * 2000] = 0.5 * np.sin(np.arange(2000) * 0.3)  # one loud frame
    v = sw.render("a red square rests in a desert by day while a person stands", 6, seed=0, keypoints=kp[..., :2],
                  audio=audio)
    assert np.allclose(v.keypoints[..., :2], kp[..., :2])
    mouth = [t.mouth for t in v.truth]
    assert mouth[2] > 0.9 and max(mouth[:2] + mouth[3:]) == 0.0
    with pytest.raises(ValueError, match="keypoints must be"):
        sw.render(CAPS[0], 9, keypoints=kp)  # 6 frames of keypoints for 9 frames of video
    with pytest.raises(ValueError, match="mono"):
        sw.render(CAPS[0], 6, audio=np.zeros((2, 100)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=32), "at least 64"),
    (dict(fps=2), "fps"),
    (dict(frames_per_scene=[3]), "one per scene"),
    (dict(frames_per_scene=0), "positive"),
])
def test_bad_arguments_are_named(kwargs, message):
    kw = dict(scenes=CAPS, frames_per_scene=3, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        sw.render(**kw)


def test_bad_caption_is_a_caption_error():
    with pytest.raises(sw.CaptionError):
        sw.render("a red blob rests on a beach by day", 3)


def test_backgrounds_keep_clear_of_object_colours_head_and_ink():
    """The design rule every analyzer leans on, checked over every place, time and many offsets."""
    palette = np.array(list(sw.COLOURS.values()), float)
    pairwise = np.linalg.norm(palette[:, None] - palette[None], axis=-1)
    assert pairwise[~np.eye(len(palette), dtype=bool)].min() > 100
    for place in sw.PLACES:
        for time in sw.TIMES:
            b = render_backdrop(place, time, 96, 128, x0=137.0, pan_px=400)
            px = np.concatenate([b.frame(o).reshape(-1, 3) for o in range(0, 401, 50)]).astype(float)
            to_palette = np.linalg.norm(px[:, None] - palette[None], axis=-1).min()
            to_white = np.linalg.norm(px - 255, axis=-1).min()
            to_black = np.linalg.norm(px, axis=-1).min()
            assert to_palette > 70 and to_white > 70 and to_black > 65, (place, time, to_palette, to_white, to_black)
