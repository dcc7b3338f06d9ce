"""storyworld.train at CI size: each stage runs a few steps, logs, checkpoints, exports something the
engine loads, and resumes exactly; the cache builds the renderer's own conditioning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from storyworld.train import cache as cache_stage
from storyworld.train import dit as dit_stage
from storyworld.train import vae as vae_stage
from storyworld.train.bundle import bundle
from storyworld.train.common import read_losses
from storyworld.train.evaluate import chain, make_renderer, start_image

from .conftest import BUNDLED_WIDTH


def _state(path):
    return torch.load(path / "state.pt", weights_only=False)


def test_vae_batches_are_a_function_of_seed_and_step():
    a, b = vae_stage.batch(3, 5, 2), vae_stage.batch(3, 5, 2)
    assert torch.equal(a, b) and a.shape == (2, 3, 5, 32, 32)
    assert not torch.equal(a, vae_stage.batch(3, 6, 2))
    assert vae_stage.batch(3, 7, 1).shape == (2, 3, 1, 96, 128)  # every 8th step: twice as many whole frames
    assert a.min() >= -1 and a.max() <= 1


def test_vae_stage_logs_exports_and_resumes_exactly(tmp_path):
    common = ["--batch", "1", "--every", "1", "--stats-clips", "1", "--seed", "1"]
    vae_stage.main(["--out", str(tmp_path / "straight"), "--steps", "2", *common])
    vae_stage.main(["--out", str(tmp_path / "split"), "--steps", "1", *common])
    vae_stage.main(["--out", str(tmp_path / "split"), "--steps", "2", "--resume", *common])
    straight, split = _state(tmp_path / "straight"), _state(tmp_path / "split")
    assert straight["step"] == split["step"] == 2
    for k, v in straight["modules"]["vae"].items():
        assert torch.equal(v, split["modules"]["vae"][k]), k
    losses = read_losses(tmp_path / "split" / "losses.jsonl")
    assert [r["step"] for r in losses] == [1, 2] and all(np.isfinite(r["loss"]) for r in losses)
    cfg = json.loads((tmp_path / "split" / "vae" / "config.json").read_text())
    assert len(cfg["latents_mean"]) == len(cfg["latents_std"]) == 16 and min(cfg["latents_std"]) > 0
    assert "fg_l1" in losses[-1] and 0 < losses[-1]["fg_l1"] < 2
    # round 3's VAE: 4x in space (a 96x128 frame is 24x32 latent cells), 4x in time
    vae = vae_stage.build(0).eval()
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 17, 96, 128)).latent_dist.mode()
    assert z.shape == (1, 16, 5, 24, 32)
    with pytest.raises(ValueError, match="--seed"):
        vae_stage.main(["--out", str(tmp_path / "split"), "--steps", "3", "--resume", "--batch", "1", "--seed", "2"])
    # a resumed phase takes its learning rate from the command line, not from the checkpoint
    vae_stage.main(["--out", str(tmp_path / "split"), "--steps", "3", "--resume", "--lr", "1e-5", *common])
    assert [r["lr"] for r in read_losses(tmp_path / "split" / "losses.jsonl")] == [1e-3, 1e-3, 1e-5]


def test_vae_stage_with_fewer_latent_channels(tmp_path):
    """--z-dim 4: the exported VAE and its latent statistics have 4 channels."""
    vae_stage.main(["--out", str(tmp_path), "--steps", "1", "--batch", "1", "--stats-clips", "1", "--z-dim", "4"])
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert cfg["z_dim"] == 4 and len(cfg["latents_mean"]) == len(cfg["latents_std"]) == 4
    with torch.no_grad():
        z = vae_stage.build(0, 4).eval().encode(torch.zeros(1, 3, 5, 32, 32)).latent_dist.mode()
    assert z.shape == (1, 4, 2, 8, 8)


def test_a_2x_in_time_vae_starts_from_a_4x_run(tmp_path):
    """--temporal 2 --init <4x run>: every weight but the dropped time convolution carries over, a
    17-frame clip becomes 9 latent frames, and the export says 2x so the engine sizes clips by it."""
    vae_stage.main(["--out", str(tmp_path / "4x"), "--steps", "1", "--batch", "1", "--stats-clips", "1"])
    vae_stage.main(["--out", str(tmp_path / "2x"), "--init", str(tmp_path / "4x"), "--temporal", "2", "--steps", "1",
                    "--batch", "1", "--stats-clips", "1", "--lr", "1e-12", "--clip-frames", "5"])
    four = torch.load(tmp_path / "4x" / "state.pt", weights_only=False)["modules"]["vae"]
    two = torch.load(tmp_path / "2x" / "state.pt", weights_only=False)["modules"]["vae"]
    assert sorted(set(four) - set(two)) == ["decoder.up_blocks.1.upsamplers.0.time_conv.bias",
                                            "decoder.up_blocks.1.upsamplers.0.time_conv.weight",
                                            "encoder.down_blocks.1.time_conv.bias", "encoder.down_blocks.1.time_conv.weight"]
    assert set(two) <= set(four)
    assert all(torch.allclose(two[k], four[k], atol=1e-6) for k in two)  # lr 1e-12: one step moves nothing
    cfg = json.loads((tmp_path / "2x" / "vae" / "config.json").read_text())
    assert cfg["scale_factor_temporal"] == 2 and cfg["temperal_downsample"] == [False, True]
    vae = vae_stage.build(0, temporal=2).eval()
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 17, 32, 32)).latent_dist.mode()
        assert z.shape == (1, 16, 9, 8, 8)
        assert vae.decode(z).sample.shape == (1, 3, 17, 32, 32)
    # weights that fit neither layout are an error, not a silent partial load
    broken = {k: v for k, v in four.items() if not k.startswith("decoder.conv_out")}
    with pytest.raises(RuntimeError, match="conv_out"):
        vae_stage.load_weights(vae_stage.build(0, temporal=2), broken)


def test_palette_loss_reads_hue_as_the_analyzer_does():
    """The palette term is ~0 on the true clip and large where an object's pixels lean to a neighbouring
    palette colour, by far more than the L1 of that same shift would suggest."""
    from storyworld.maps import PALETTE, PALETTE_NAMES
    frame = np.full((32, 32, 3), (90, 140, 200), np.uint8)  # sky-ish backdrop, no palette colour
    yellow, orange = PALETTE[PALETTE_NAMES.index("yellow")], PALETTE[PALETTE_NAMES.index("orange")]
    frame[8:24, 8:24] = yellow
    x = torch.from_numpy(frame).float().div(127.5).sub(1).permute(2, 0, 1)[None, :, None]  # (1, 3, 1, H, W)
    assert vae_stage.palette_loss(x, x).item() < 1e-3
    toward_orange = x.clone()
    toward_orange[..., 8:24, 8:24] += torch.from_numpy((orange - yellow) * 0.6 / 127.5).float()[None, :, None, None, None]
    backdrop_off = x.clone()
    backdrop_off[..., :8, :] += 0.5  # a backdrop error: not the palette term's business
    assert vae_stage.palette_loss(toward_orange, x).item() > 1.0
    assert vae_stage.palette_loss(backdrop_off, x).item() < 1e-3


def test_cut_first_swaps_only_frame_zero():
    """--cut-first: the clip is the same clip, but frame 0 comes from another video (and nothing else
    changes, so the training sees a cut right after the first frame)."""
    plain = vae_stage.batch(0, 0, 1, crop=0, frames=5, image_every=0)
    cut = vae_stage.batch(0, 0, 1, crop=0, frames=5, image_every=0, cut_first=1.0)
    assert plain.shape == cut.shape == (1, 3, 5, 96, 128)
    assert torch.equal(plain[:, :, 1:], cut[:, :, 1:])
    assert (plain[:, :, 0] - cut[:, :, 0]).abs().mean() > 0.05


def test_a_deeper_vae_starts_as_the_same_function(tmp_path):
    """--res-blocks 2 --init <1-block run>: the old weights carry over, each new block starts as the
    identity (so latents and reconstructions are unchanged, and a DiT trained on them stays valid), and
    training then moves the new blocks."""
    vae_stage.main(["--out", str(tmp_path / "one"), "--steps", "1", "--batch", "1", "--stats-clips", "1"])
    state = torch.load(tmp_path / "one" / "state.pt", weights_only=False)["modules"]["vae"]
    one, two = vae_stage.build(0).eval(), vae_stage.build(1, res_blocks=2).eval()
    one.load_state_dict(state)
    added = vae_stage.load_weights(two, state)
    assert len(added) == 6  # one new block in each of the 3 encoder and 3 decoder stages
    x = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z1, z2 = one.encode(x).latent_dist.mode(), two.encode(x).latent_dist.mode()
        assert torch.equal(z1, z2)
        assert torch.equal(one.decode(z1).sample, two.decode(z2).sample)
    vae_stage.main(["--out", str(tmp_path / "two"), "--init", str(tmp_path / "one"), "--res-blocks", "2", "--steps",
                    "1", "--batch", "1", "--stats-clips", "1", "--clip-frames", "5", "--image-every", "0"])
    trained = torch.load(tmp_path / "two" / "state.pt", weights_only=False)["modules"]["vae"]
    assert trained["encoder.down_blocks.1.conv2.weight"].abs().sum() > 0  # the identity block learns


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    cache_stage.main(["--out", str(out), "--n", "4", "--shard", "2", "--p-film", "0.5", "--threads", "1"])
    return out


def test_cache_holds_the_renderers_conditioning(small_cache):
    from svi.encoders import to_model_pixels, vae_encode
    from svi.render import condition_mask, condition_video

    data = cache_stage.load_cache(small_cache)
    c = cache_stage.load_encoders(cache_stage.ASSETS, None)
    h, w = 96 // c.vae_scale_spatial, 128 // c.vae_scale_spatial  # the bundled VAE's grid (24x32 at 4x)
    assert data["x0"].shape == (4, 16, 5, h, w) and data["y"].shape == (4, 20, 5, h, w)
    assert data["text"].shape == (4, 32, 64) and data["negative"].shape == (32, 64)
    assert {m["mode"] for m in data["meta"]} <= {"shot", "film"}
    assert torch.equal(data["y"][:, :4].float(), condition_mask(5, h, w, "cpu", torch.float32).expand(4, -1, -1, -1, -1))
    # Rebuild sample 0 by hand with the inference functions: the cache must agree.
    spec = cache_stage.sample_spec(0, 0, 0.5)
    import storyworld as sw

    frames = torch.from_numpy(sw.render_random(spec.video_seed, 1, 33, width=128, height=96, fps=8).frames)
    clip = frames[spec.start:spec.start + 17]
    m, pad = cache_stage.MODES[spec.mode]
    y = vae_encode(c, condition_video(clip[:m], frames[0], 17, pad))
    assert torch.allclose(data["y"][0, 4:].float(), y[0], atol=2e-2)
    assert torch.allclose(data["x0"][0].float(), vae_encode(c, to_model_pixels(clip))[0], atol=2e-2)


def test_dit_stage_trains_exports_and_resumes_exactly(small_cache, tmp_path):
    common = ["--cache", str(small_cache), "--batch", "2", "--every", "1", "--warmup", "2", "--threads", "1"]
    dit_stage.main(["--out", str(tmp_path / "straight"), "--steps", "3", *common])
    dit_stage.main(["--out", str(tmp_path / "split"), "--steps", "2", *common])
    dit_stage.main(["--out", str(tmp_path / "split"), "--steps", "3", "--resume", *common])
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "split")
    for name in ("dit", "ema"):
        for k, v in a["modules"][name].items():
            assert torch.allclose(v, b["modules"][name][k], atol=1e-6), (name, k)
    losses = read_losses(tmp_path / "split" / "losses.jsonl")
    assert [r["step"] for r in losses] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in losses)
    # The export is a drop-in transformer: bundle it and render a clip through the engine.
    folder = bundle(tmp_path / "model", dit=tmp_path / "split" / "transformer")
    img = tmp_path / "start.png"
    start_image("a red circle rests on a beach by day", img)
    frames = chain(make_renderer("shot", folder=folder, steps=2), img, ["a red circle rests on a beach by day"])
    assert frames[0].shape == (17, 96, 128, 3) and frames[0].dtype == np.uint8
    # no --predict: the init's (the bundled DiT predicts x0 since round 4)
    assert make_renderer("shot", folder=folder).c.prediction == make_renderer("shot").c.prediction == "sample"


def test_a_slim_checkpoint_resumes_with_bf16_weights_and_a_rewarmed_optimiser(small_cache, tmp_path):
    """The committed train-state (storyworld.train.common.slim_state): no AdamW moments, bf16 weights,
    a quarter of the size; --resume continues from it and warms the learning rate up again."""
    from storyworld.train.common import slim_state

    common = ["--cache", str(small_cache), "--batch", "2", "--every", "1", "--warmup", "2", "--threads", "1"]
    dit_stage.main(["--out", str(tmp_path / "run"), "--steps", "2", *common])
    slim = slim_state(tmp_path / "run", tmp_path / "slim")
    full_size, slim_size = (tmp_path / "run" / "state.pt").stat().st_size, slim.stat().st_size
    assert slim_size < 0.3 * full_size
    state = _state(tmp_path / "slim")
    assert "opt" not in state and state["step"] == 2
    assert all(v.dtype == torch.bfloat16 for v in state["modules"]["ema"].values() if v.is_floating_point())
    dit_stage.main(["--out", str(tmp_path / "slim"), "--steps", "4", "--resume", *common])
    rows = read_losses(tmp_path / "slim" / "losses.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    lr = 5e-4  # the stage's default: half of it on the first step after the slim resume, then all
    assert [r["lr"] for r in rows[2:]] == pytest.approx([lr / 2, lr])
    before, after = state["modules"]["dit"], _state(tmp_path / "slim")["modules"]["dit"]
    assert any(not torch.equal(before[k].float(), after[k]) for k in before)  # it trained on, in fp32


def test_dit_stage_can_train_an_x0_predicting_dit_whose_export_says_so(small_cache, tmp_path):
    """--predict sample: the export's config carries the prediction, so the engine and the LoRA
    trainer (finetune.model.TrainModule) turn its x0 into the velocity they integrate."""
    from finetune.model import TrainModule
    from svi.models import PREDICTION_KEY

    dit_stage.main(["--out", str(tmp_path / "x0"), "--steps", "2", "--predict", "sample", "--cache", str(small_cache),
                    "--batch", "2", "--every", "1", "--warmup", "2", "--threads", "1"])
    assert json.loads((tmp_path / "x0" / "transformer" / "config.json").read_text())[PREDICTION_KEY] == "sample"
    folder = bundle(tmp_path / "model", dit=tmp_path / "x0" / "transformer")
    renderer = make_renderer("shot", folder=folder, steps=2)
    assert renderer.c.prediction == "sample"
    module = TrainModule(renderer.c.transformer)
    module.transformer.proj_out.weight.data.zero_()
    module.transformer.proj_out.bias.data.fill_(0.25)  # the DiT now says x0 = 0.25 everywhere
    h, w = 96 // renderer.c.vae_scale_spatial, 128 // renderer.c.vae_scale_spatial
    x_t = torch.randn(2, 16, 5, h, w)
    with torch.no_grad():
        v = module(x_t, torch.tensor([600.0, 20.0]), torch.randn(2, 8, 64), torch.randn(2, 5, 64),
                   torch.randn(2, 20, 5, h, w))
    assert torch.allclose(v[0], (x_t[0] - 0.25) / 0.6, atol=1e-4)
    assert torch.allclose(v[1], (x_t[1] - 0.25) / 0.05, atol=1e-3)  # sigma 0.02 is under the floor


def test_foreground_weight_covers_the_object_and_little_else():
    import storyworld as sw
    from storyworld.analyze import read_object
    from storyworld.train.data import to_pixels

    frame = sw.render(["a red square rests on a beach by day"], 1, 4, width=128, height=96, fps=8).frames[0]
    w = vae_stage.foreground_weight(to_pixels(frame[None, None]), 10.0)
    assert w.shape == (1, 1, 1, 96, 128) and set(w.unique().tolist()) == {1.0, 11.0}
    obj = read_object(frame)
    assert w[0, 0, 0, int(obj.y * 96), int(obj.x * 128)] == 11.0  # the object's centre is weighted
    assert 0.005 < (w > 1).float().mean() < 0.3  # ...and the backdrop is not
    assert vae_stage.foreground_weight(to_pixels(frame[None, None]), 0.0) is None


def test_latent_foreground_marks_the_cells_the_object_covers_in_each_chunk():
    """A latent cell is foreground when any pixel of its 4x4 square, in any frame of its chunk, is."""
    import storyworld as sw
    from storyworld.analyze import read_object

    spec = cache_stage.sample_spec(0, 3, 0.0)
    meta = {"video_seed": spec.video_seed, "start": spec.start}
    fg = dit_stage.latent_foreground(meta, (5, 24, 32))
    assert fg.shape == (5, 24, 32) and fg.dtype == torch.bool
    assert 0.02 < fg.float().mean() < 0.5  # the object and the figure, not the backdrop
    clip = sw.render_random(spec.video_seed, 1, 33, width=128, height=96, fps=8).frames[spec.start:spec.start + 17]
    for t, frame in ((0, clip[0]), (4, clip[16])):  # frame 0 is latent frame 0; frame 16 ends the last chunk
        obj = read_object(frame)
        assert obj is not None and fg[t, int(obj.y * 96) // 4, int(obj.x * 128) // 4]


def test_foreground_weighted_flow_loss_counts_object_cells_more_at_the_same_scale(small_cache):
    from svi.scheduler import FlowMatchScheduler

    data = dit_stage.Batches(small_cache, 0, foreground=True)
    b = data.get(0, 2, 0.0)
    assert b["fg"].shape == (2, 1, *b["x0"].shape[2:]) and (small_cache / "fg.pt").is_file()
    dit = dit_stage.build(cache_stage.ASSETS / "transformer", 0).eval()
    sched = FlowMatchScheduler(shift=5.0)
    w = torch.ones(1000)
    with torch.no_grad():
        plain = dit_stage.flow_loss(dit, sched, b, w, "sample")
        weighted = dit_stage.flow_loss(dit, sched, b, w, "sample", fg_weight=4.0)
        # no foreground anywhere: the normalised weights are all 1, so the loss is the plain one
        flat = dit_stage.flow_loss(dit, sched, {**b, "fg": torch.zeros_like(b["fg"])}, w, "sample", fg_weight=4.0)
    assert torch.allclose(flat, plain, rtol=1e-5)
    assert not torch.allclose(weighted, plain, rtol=1e-3)
    assert 0.2 * plain < weighted < 5 * plain  # normalised: the same scale


def test_dit_lr_anneals_from_a_fixed_step_also_across_a_resume(small_cache, tmp_path):
    """--lr-end decays from --anneal-start to --steps; a resumed phase computes the lr from the step,
    not from where it resumed (the first call stops before the decay starts)."""
    common = ["--cache", str(small_cache), "--batch", "2", "--every", "1", "--warmup", "1", "--threads", "1",
              "--lr", "1e-3", "--lr-end", "1e-4", "--anneal-start", "2", "--fg-weight", "2"]
    dit_stage.main(["--out", str(tmp_path / "run"), "--steps", "2", *common])
    dit_stage.main(["--out", str(tmp_path / "run"), "--steps", "5", "--resume", *common])
    rows = read_losses(tmp_path / "run" / "losses.jsonl")
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 1e-3, 1e-3, 7e-4, 4e-4])
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_dit_patch_change_carries_the_blocks_over():
    from storyworld.train.cache import ASSETS

    source = dit_stage.build(ASSETS / "transformer", 0)
    other = 2 if tuple(source.config.patch_size) == (1, 4, 4) else 4  # the bundled DiT is patch 4 since round 3
    dit = dit_stage.build(ASSETS / "transformer", 0, patch=other)
    assert tuple(dit.config.patch_size) == (1, other, other) and dit.patch_embedding.weight.shape[-2:] == (other, other)
    src = source.state_dict()
    for k, v in dit.state_dict().items():
        if k.startswith("blocks.") or k.startswith("condition_embedder."):
            assert torch.equal(v, src[k]), k
    # the same 16 px token grid over the matching VAE's latents (4x4 patch: 24x32 cells, 2x2: 12x16)
    h, w = 6 * other, 8 * other
    with torch.no_grad():
        out = dit(torch.randn(1, 36, 5, h, w), torch.tensor([500.0]), torch.randn(1, 8, 64),
                  torch.randn(1, 5, 64), return_dict=False)[0]
    assert out.shape == (1, 16, 5, h, w)


@pytest.mark.parametrize("z_dim", [16, 4])
def test_a_4x_vae_and_a_patch_4_dit_render_through_the_engine(tmp_path, z_dim):
    """Round 3's layout end to end: the renderer sizes latents from the VAE's own config (and its
    channel count), and the pose encoder's /16 still lands on the DiT's token grid."""
    from storyworld.train.cache import ASSETS

    vae_stage.main(["--out", str(tmp_path / "vae"), "--steps", "1", "--batch", "1", "--stats-clips", "1",
                    "--z-dim", str(z_dim)])
    dit = dit_stage.build(ASSETS / "transformer", 0, patch=4, z_dim=z_dim)
    assert (dit.config.in_channels, dit.config.out_channels) == (2 * z_dim + 4, z_dim)
    dit.save_pretrained(tmp_path / "dit")
    folder = bundle(tmp_path / "model", vae=tmp_path / "vae" / "vae", dit=tmp_path / "dit")
    caption = "a blue square rests in a desert by day while a person dances"
    img = tmp_path / "start.png"
    start_image(caption, img)
    frames = chain(make_renderer("shot", folder=folder, steps=1), img, [caption])
    assert frames[0].shape == (17, 96, 128, 3)


def test_svi_stage_runs_the_finetuner_and_resumes(tmp_path):
    from safetensors.torch import load_file

    from storyworld.train import svi as svi_stage

    args = ["--out", str(tmp_path / "svi"), "--videos", "2", "--every", "1", "--eval-every", "0"]
    assert svi_stage.main([*args, "--steps", "1"]) == 0
    assert svi_stage.main([*args, "--steps", "2", "--resume"]) == 0
    rows = [json.loads(ln) for ln in (tmp_path / "svi" / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert [r["step"] for r in rows if "loss" in r][-1] == 2
    assert any("lora" in k for k in load_file(tmp_path / "svi" / "lora.safetensors"))


def test_vae_decoder_phase_keeps_the_encoder_fixed(tmp_path):
    common = ["--batch", "1", "--every", "1", "--stats-clips", "1"]
    vae_stage.main(["--out", str(tmp_path / "full"), "--steps", "1", *common])
    vae_stage.main(["--out", str(tmp_path / "dec"), "--steps", "1", "--decoder-from", str(tmp_path / "full"),
                    "--clip-frames", "9", "--roundtrip", "0.5", *common])
    before, after = _state(tmp_path / "full")["modules"]["vae"], _state(tmp_path / "dec")["modules"]["vae"]
    enc = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    dec = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)
    # the latent normalisation is a property of the encoder, so it is unchanged by the decoder phase
    stats = [json.loads((tmp_path / d / "vae" / "config.json").read_text())["latents_mean"] for d in ("full", "dec")]
    assert np.allclose(stats[0], stats[1], atol=1e-5)
    assert read_losses(tmp_path / "dec" / "losses.jsonl")[-1]["roundtrip"] > 0  # the second pass was trained on


def test_roundtrip_loss_adds_the_second_pass_and_trains_the_decoder_through_the_frozen_encoder():
    vae = vae_stage.build(0).train()
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    x = vae_stage.batch(0, 1, 1, crop=32, frames=5, image_every=0)
    plain, parts0 = vae_stage.vae_loss(vae, x, 1e-4, True, 10.0)
    both, parts = vae_stage.vae_loss(vae, x, 1e-4, True, 10.0, roundtrip=0.5)
    assert "roundtrip" not in parts0 and parts["roundtrip"] > 0
    assert float((both - plain).detach()) == pytest.approx(0.5 * parts["roundtrip"], rel=1e-4)
    (both - plain).backward()  # the second pass alone still reaches the decoder (through both decodes)
    assert all(p.grad is None for p in vae.encoder.parameters())
    assert sum(float(p.grad.abs().sum()) for p in vae.decoder.parameters() if p.grad is not None) > 0


def test_vae_whole_frame_phase_starts_from_a_run_and_trains_every_weight(tmp_path):
    assert vae_stage.batch(3, 5, 2, crop=0, frames=9, image_every=0).shape == (2, 3, 9, 96, 128)
    common = ["--batch", "1", "--every", "1", "--stats-clips", "1"]
    vae_stage.main(["--out", str(tmp_path / "first"), "--steps", "1", *common])
    vae_stage.main(["--out", str(tmp_path / "whole"), "--steps", "1", "--init", str(tmp_path / "first"),
                    "--crop", "0", "--clip-frames", "5", "--image-every", "0", "--lr", "1e-5", *common])
    assert read_losses(tmp_path / "whole" / "losses.jsonl")[0]["frames"] == 5
    before, after = _state(tmp_path / "first")["modules"]["vae"], _state(tmp_path / "whole")["modules"]["vae"]
    fresh = vae_stage.build(0).state_dict()
    # one step at lr 1e-5 stays within 1e-4 of where it started: the first run's weights, not a fresh init
    assert all((after[k] - before[k]).abs().max() < 1e-4 for k in before)
    assert any((after[k] - fresh[k]).abs().max() > 1e-4 for k in before)
    for prefix in ("encoder.", "decoder."):  # and the phase trains both halves
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix


def test_a_patch_change_rebundles_the_pose_encoder_for_its_tokens(small_cache, tmp_path):
    """The token grid follows the DiT's patch over the 4x VAE's latents: 2x2 makes 8 px tokens (the
    bundled round 7), 4x4 makes 16 px (round 5). A DiT trained with the other patch than the bundled
    one is bundled with a pose encoder re-seeded for its grid and without the LoRAs of the old grid,
    and pose features land on that grid in a real forward."""
    from svi.conditioning.runtime import load_pose_encoder
    from svi.conditioning.pose_encoder import attach_pose
    from storyworld.train.bundle import token_px

    bundled = token_px(cache_stage.ASSETS)
    assert bundled in (8, 16)
    patch = 4 if bundled == 8 else 2
    px = 4 * patch
    dit_stage.main(["--out", str(tmp_path / "p"), "--steps", "1", "--patch", str(patch), "--cache", str(small_cache),
                    "--batch", "2", "--every", "1", "--threads", "1"])
    folder = bundle(tmp_path / "model", dit=tmp_path / "p" / "transformer")
    assert token_px(folder) == px
    assert json.loads((folder / "pose_encoder" / "config.json").read_text())["token_px"] == px
    assert not any((folder / n).exists() for n in ("svi-lora.safetensors", "svi-talk.safetensors",
                                                   "svi-dance.safetensors"))
    encoder = load_pose_encoder(folder / "pose_encoder")
    maps = np.zeros((17, 96, 128, 3), np.uint8)
    maps[:, 30:70, 60:64] = 255  # a bone
    with torch.no_grad():
        feats = encoder(maps)
    assert feats.shape == (1, BUNDLED_WIDTH, 5, 96 // px, 128 // px)
    renderer = make_renderer("shot", folder=folder, steps=1)
    dit = renderer.c.transformer
    handle = attach_pose(dit)
    args = (torch.randn(1, 36, 5, 24, 32), torch.tensor([500.0]), torch.randn(1, 32, 64), torch.randn(1, 5, 64))
    with torch.no_grad():
        plain = dit(*args, return_dict=False)[0]
        with handle.use(feats):
            posed = dit(*args, return_dict=False)[0]
    assert posed.shape == plain.shape == (1, 16, 5, 24, 32) and not torch.allclose(posed, plain)
    handle.remove()
    # the bundled 16 px grid keeps its adapters as they are
    again = bundle(tmp_path / "again", dit=cache_stage.ASSETS / "transformer")
    assert (again / "svi-dance.safetensors").is_file()


def test_object_crops_are_centred_on_the_object():
    """--object-crops 1: every crop window holds the object's pixels (a random 64 px window of a
    128x96 frame misses a small object about half the time)."""
    from storyworld.maps import palette_labels

    x = vae_stage.batch(5, 0, 6, crop=64, frames=5, image_every=0, object_crops=1.0)
    frames = x.permute(0, 2, 3, 4, 1).add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    assert x.shape == (6, 3, 5, 64, 64)
    assert all((palette_labels(clip[len(clip) // 2]) >= 0).sum() > 20 for clip in frames)
    assert torch.equal(x, vae_stage.batch(5, 0, 6, crop=64, frames=5, image_every=0, object_crops=1.0))


def test_a_dit_of_another_width_trains_bundles_and_renders_with_adapters_at_its_width(small_cache, tmp_path):
    """--head-dim 32: a 128-wide DiT (4 heads x 32, round 4's width) trained from scratch next to the
    bundled 256-wide one (as many dimensions as a 4x4 token has latent values). The bundle re-seeds
    the audio adapter and pose encoder at the new width and drops the LoRAs that fit only the old one."""
    from svi.conditioning.runtime import AudioConditioner, load_audio_adapter
    from storyworld.train.cache import ASSETS

    assert BUNDLED_WIDTH == 256
    dit_stage.main(["--out", str(tmp_path / "narrow"), "--steps", "1", "--head-dim", "32", "--cache", str(small_cache),
                    "--batch", "2", "--every", "1", "--threads", "1"])
    cfg = json.loads((tmp_path / "narrow" / "transformer" / "config.json").read_text())
    assert (cfg["attention_head_dim"], cfg["added_kv_proj_dim"], cfg["ffn_dim"]) == (32, 128, 256)
    folder = bundle(tmp_path / "model", dit=tmp_path / "narrow" / "transformer")
    assert json.loads((folder / "audio_adapter" / "config.json").read_text())["dim"] == 128
    assert json.loads((folder / "pose_encoder" / "config.json").read_text())["dim"] == 128
    assert not any((folder / n).exists() for n in ("svi-lora.safetensors", "svi-talk.safetensors",
                                                   "svi-dance.safetensors"))
    renderer = make_renderer("shot", folder=folder, steps=1)
    caption = "a green ring rests on a beach by day while a person stands"
    start_image(caption, tmp_path / "start.png")
    assert chain(renderer, tmp_path / "start.png", [caption])[0].shape == (17, 96, 128, 3)
    audio = AudioConditioner(load_audio_adapter(folder / "audio_adapter"), renderer.c.transformer, 8.0)
    assert audio.adapter.cfg.dim == 128  # its blocks attached to the 128-wide DiT's
    # the same width again keeps what the folder has
    again = bundle(tmp_path / "again", base=ASSETS, dit=ASSETS / "transformer")
    assert (again / "svi-talk.safetensors").is_file()


def test_breakdown_groups_scores_by_caption_field():
    from storyworld.train.evaluate import breakdown

    cases = [("a cyan star grows in a desert at dusk", 0.0), ("a cyan ring rests on a beach by day", 0.5),
             ("a red star grows in a city at night while a person waves", 1.0)]
    b = breakdown(cases)
    assert b["colour"] == {"cyan": (0.25, 2), "red": (1.0, 1)}
    assert b["shape"] == {"ring": (0.5, 1), "star": (0.5, 2)}
    assert b["motion"]["grows"] == (0.5, 2) and b["motion"]["rests"] == (0.5, 1)
    with pytest.raises(Exception, match="word"):  # a caption outside the grammar is an error, not a silent skip
        breakdown([("a mauve blob floats", 1.0)])
