"""The streaming renderer on the real tiny Wan model: determinism, carry, padding, counts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from svi import plan, resolve_spec
from svi.planning import ClipOverride
from svi.render import Renderer, RenderCancelled, condition_mask, condition_video, frames_hash
from svi.timeline import PromptSegment, Storyboard

STEPS = 3  # enough to exercise the loop; speed matters more than image quality here


def board(image: str, seconds: float = 6.0, **settings) -> Storyboard:
    sb = Storyboard(image, (PromptSegment(0, seconds / 2, "a red circle on a beach"),
                            PromptSegment(seconds / 2, seconds, "a blue square in a forest")))
    return sb.with_settings(steps=STEPS, **settings)


def render_all(renderer: Renderer, clip_plan, **kw):
    return list(renderer.stream(clip_plan, **kw))


def test_same_storyboard_and_seed_give_identical_frames(tiny_renderer, start_image):
    p = plan(board(start_image, 4.0), tiny_renderer.spec)
    a = render_all(tiny_renderer, p)
    b = render_all(tiny_renderer, p)
    assert len(a) == len(p) == 2
    for x, y in zip(a, b):
        assert np.array_equal(x.frames, y.frames) and x.input_hash == y.input_hash
    other = render_all(tiny_renderer, plan(board(start_image, 4.0, seed=7), tiny_renderer.spec))
    assert not np.array_equal(a[0].frames, other[0].frames)


def test_frame_count_formula_and_carry_shapes(tiny_renderer, start_image):
    spec = tiny_renderer.spec
    F, m = spec.frames_per_clip, spec.motion_frames
    p = plan(board(start_image, 6.0), spec)
    results = render_all(tiny_renderer, p)
    n = len(results)
    assert n == 3
    assert sum(len(r.frames) for r in results) == (F - m) * n + m == p.total_frames
    assert len(results[0].frames) == F and all(len(r.frames) == F - m for r in results[1:])
    for r in results:
        assert r.carry.shape == (m, 96, 128, 3) and r.carry.dtype == np.uint8
        assert r.forwards == STEPS  # one batched (cond + uncond) forward per step
        assert set(r.timings) >= {"encode", "denoise", "decode", "total"}


def test_next_clip_is_conditioned_on_the_carry_of_the_previous(tiny_renderer, start_image):
    """Resuming at clip 1 with clip 0's carry reproduces the full run exactly; another carry does not."""
    p = plan(board(start_image, 4.0), tiny_renderer.spec)
    full = render_all(tiny_renderer, p)
    resumed = render_all(tiny_renderer, p, start_at=1, carry=full[0].carry)
    assert np.array_equal(resumed[0].frames, full[1].frames)
    assert resumed[0].input_hash == full[1].input_hash == p.clips[1].input_hash(frames_hash(full[0].carry))
    flipped = render_all(tiny_renderer, p, start_at=1, carry=np.ascontiguousarray(full[0].carry[:, ::-1]))
    assert not np.array_equal(flipped[0].frames, full[1].frames)
    assert flipped[0].input_hash != full[1].input_hash
    with pytest.raises(ValueError, match="carry"):
        render_all(tiny_renderer, p, start_at=1)


def test_film_variant_carries_five_frames(start_image):
    from svi.engine import build_renderer

    spec = resolve_spec("storyworld-tiny", "film")
    renderer, _ = build_renderer(spec, "cpu")
    p = plan(board(start_image, 3.0), spec)  # 24 frames wanted: 17 + 12
    results = render_all(renderer, p)
    assert spec.motion_frames == 5 and p.clips[1].condition_frames == 5
    assert [len(r.frames) for r in results] == [17, 12] and results[0].carry.shape[0] == 5


@pytest.mark.parametrize("padding", ["zeros", "ref"])
def test_condition_video_layout(padding):
    cond = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    ref = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8)
    video = condition_video(cond, ref, 17, padding)
    assert video.shape == (3, 17, 16, 16)
    assert torch.allclose(video[:, :5], cond.permute(3, 0, 1, 2).float() / 127.5 - 1)
    if padding == "zeros":
        assert video[:, 5:].abs().max() == 0  # mid-grey padding
    else:
        assert torch.allclose(video[:, 5:], (ref.permute(2, 0, 1).float() / 127.5 - 1)[:, None].expand(-1, 12, -1, -1))
    mask = condition_mask(5, 2, 2, "cpu", torch.float32)
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()  # only pixel frame 0 flagged


def test_padding_mode_changes_the_clip(tiny_renderer, start_image):
    p = plan(board(start_image, 2.0), tiny_renderer.spec)
    ref_pad = render_all(tiny_renderer, p)[0].frames
    zero_pad = render_all(tiny_renderer, replace(p, clips=(replace(p.clips[0], padding="zeros"),)))[0].frames
    assert not np.array_equal(ref_pad, zero_pad)


def test_each_unique_prompt_is_encoded_once(start_image):
    from svi.engine import build_renderer

    renderer, _ = build_renderer(resolve_spec("storyworld-tiny", "shot", steps=1), "cpu")
    sb = Storyboard(start_image, (PromptSegment(0, 4, "a"), PromptSegment(4, 8, "b"))).with_settings(steps=1)
    render_all(renderer, plan(sb, renderer.spec))  # 4 clips, 2 prompts + 1 negative
    assert renderer.prompt_encodes == 3


def test_same_dit_forwards_as_plain_wan_i2v(tiny_renderer, start_image):
    """Plain diffusers I2V runs cond and uncond as 2 forwards per step; we batch them into 1 of
    batch 2: the same number of sample-forwards per clip, so SVI adds no inference cost."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from PIL import Image
    from transformers import CLIPImageProcessor

    c = tiny_renderer.c
    calls: list[int] = []

    def count(module, args, kwargs):
        calls.append((args[0] if args else kwargs["hidden_states"]).shape[0])

    hook = c.transformer.register_forward_pre_hook(count, with_kwargs=True)
    try:
        p = plan(board(start_image, 2.0, cfg=5.0), tiny_renderer.spec)  # guidance on (the tiny preset's is 1)
        render_all(tiny_renderer, p)
        ours = list(calls)
        calls.clear()
        pipe = WanImageToVideoPipeline(
            tokenizer=c.tokenizer, text_encoder=c.text_encoder, vae=c.vae, transformer=c.transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), image_encoder=c.image_encoder,
            image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
        pipe.set_progress_bar_config(disable=True)
        pipe(image=Image.open(start_image), prompt="a", negative_prompt="b", height=96, width=128, num_frames=17,
             num_inference_steps=STEPS, guidance_scale=5.0, max_sequence_length=32, output_type="np")
        plain = list(calls)
    finally:
        hook.remove()
    assert ours == [2] * STEPS  # one call per step, cond + uncond batched
    assert plain == [1] * (2 * STEPS)
    assert sum(ours) == sum(plain)


def test_cancel_between_steps_raises_after_finished_clips(tiny_renderer, start_image):
    p = plan(board(start_image, 4.0), tiny_renderer.spec)
    seen = []
    with pytest.raises(RenderCancelled):
        for r in tiny_renderer.stream(p, should_stop=lambda: len(seen) == 1):
            seen.append(r)
    assert len(seen) == 1


def test_retake_override_changes_only_that_clip(tiny_renderer, start_image):
    sb = board(start_image, 4.0)
    base = render_all(tiny_renderer, plan(sb, tiny_renderer.spec))
    retake = render_all(tiny_renderer, plan(sb, tiny_renderer.spec, overrides={0: ClipOverride(seed=5)}))
    assert not np.array_equal(base[0].frames, retake[0].frames)
    assert base[0].input_hash != retake[0].input_hash


def test_on_step_reports_progress(tiny_renderer, start_image):
    events = []
    render_all(tiny_renderer, plan(board(start_image, 2.0), tiny_renderer.spec), on_step=lambda *e: events.append(e))
    assert events == [(0, i, STEPS) for i in range(1, STEPS + 1)]


def test_prompt_cleaning_matches_wan():
    from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean as wan_clean

    from svi.encoders import prompt_clean

    for text in ["  a &amp;amp; b\n\n c ", "caf\u00c3\u00a9  au lait", "plain"]:
        assert prompt_clean(text) == wan_clean(text)


def test_sample_prediction_velocity_is_exact_above_the_floor_and_floored_below():
    from svi.scheduler import SAMPLE_SIGMA_FLOOR, FlowMatchScheduler

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 5, 5, generator=g), torch.randn(2, 4, 3, 5, 5, generator=g)
    sched = FlowMatchScheduler()
    for sigma in (0.9, 0.3, SAMPLE_SIGMA_FLOOR):
        x_t = sched.add_noise(x0, eps, sigma)
        assert torch.allclose(sched.as_velocity(x0, x_t, sigma, "sample"), sched.velocity_target(x0, eps), atol=1e-5)
        # an x0 a little off gives a v off by that error / sigma: the sampler's step is what it moves
        assert torch.allclose(sched.as_velocity(x0 + 0.1, x_t, sigma, "sample"),
                              sched.velocity_target(x0, eps) - 0.1 / sigma, atol=1e-5)
    x_t = sched.add_noise(x0, eps, 0.005)
    assert torch.allclose(sched.as_velocity(x0 + 0.1, x_t, 0.005, "sample") - sched.as_velocity(x0, x_t, 0.005, "sample"),
                          torch.full_like(x0, -0.1 / SAMPLE_SIGMA_FLOOR), atol=1e-4)
    assert sched.as_velocity(x0, x_t, 0.3, "flow") is x0
    with pytest.raises(ValueError, match="prediction"):
        sched.as_velocity(x0, x_t, 0.3, "epsilon")


def test_a_sample_predicting_dit_lands_on_its_prediction(start_image):
    """The renderer reads what the DiT outputs from its config: pin the output to a constant and a
    "sample" DiT's clip ends on that constant whatever the noise (so two seeds decode alike), while
    the same DiT read as a velocity ("flow", Wan's way) ends on noise - constant."""
    from svi.engine import build_renderer
    from svi.models import PREDICTION_KEY

    renderer, _ = build_renderer(resolve_spec("storyworld-tiny", "shot"), "cpu")
    dit = renderer.c.transformer
    dit.proj_out.weight.data.zero_()
    dit.proj_out.bias.data.fill_(0.3)

    def first_clip(seed: int, prediction: str) -> np.ndarray:
        dit.register_to_config(**{PREDICTION_KEY: prediction})
        assert renderer.c.prediction == prediction
        return render_all(renderer, plan(board(start_image, 2.0, seed=seed), renderer.spec))[0].frames.astype(int)

    assert np.abs(first_clip(1, "sample") - first_clip(2, "sample")).max() <= 1
    assert np.abs(first_clip(1, "flow") - first_clip(2, "flow")).mean() > 5
