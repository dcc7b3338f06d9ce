"""SVI-Dance pose encoder: the dwpose_embedding layout, strict loading, shapes, DiT injection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svi.conditioning.pose_encoder import PoseEncoder, attach_pose

REAL_SHAPES = {
    "dwpose_embedding.0.weight": (16, 3, 3, 3, 3), "dwpose_embedding.2.weight": (16, 16, 3, 3, 3),
    "dwpose_embedding.4.weight": (16, 16, 3, 3, 3), "dwpose_embedding.6.weight": (16, 16, 3, 3, 3),
    "dwpose_embedding.8.weight": (16, 16, 3, 3, 3), "dwpose_embedding.10.weight": (16, 16, 3, 3, 3),
    "dwpose_embedding.12.weight": (5120, 16, 1, 2, 2),
}


def test_layer_indices_and_shapes_are_the_svi_dance_ones():
    enc = PoseEncoder()
    sd = enc.state_dict()
    assert len(sd) == 14  # 7 convs x (weight, bias), SVI_SPEC 7
    for k, shape in REAL_SHAPES.items():
        assert tuple(sd[k].shape) == shape
        assert tuple(sd[k.replace("weight", "bias")].shape) == (shape[0],)
    assert sum(p.numel() for p in enc.parameters()) == 368_752  # "about 369 k"
    strides = [m.stride for m in enc.dwpose_embedding if isinstance(m, torch.nn.Conv3d)]
    assert strides == [(1, 1, 1)] * 3 + [(1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)]


def test_81_pose_frames_become_21_latent_frames_at_one_sixteenth():
    enc = PoseEncoder(dim=24)  # full layout, small output width
    maps = np.zeros((81, 32, 48, 3), np.uint8)
    maps[40, 10:20, 10:20] = 255
    feats = enc(maps)
    assert feats.shape == (1, 24, 21, 2, 3)
    assert enc.tokens(maps).shape == (1, 21 * 2 * 3, 24)
    x = enc.prepare(maps)
    assert x.shape == (1, 3, 84, 32, 48) and float(x.max()) == 1.0
    torch.testing.assert_close(x[:, :, :3], x[:, :, 3:4].expand(-1, -1, 3, -1, -1))  # frame 0 three times
    assert PoseEncoder(dim=8)(np.zeros((2, 17, 32, 32, 3), np.uint8)).shape == (2, 8, 5, 2, 2)  # tiny clip
    with pytest.raises(ValueError, match="4n\\+1"):
        enc(np.zeros((80, 32, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="multiple of 16"):
        enc(np.zeros((81, 40, 48, 3), np.uint8))


def test_an_8px_token_encoder_keeps_the_weights_and_lands_on_a_twice_finer_grid():
    """A 4x VAE under a 2x2 patch makes 8 px tokens: only layer 6's stride changes, so the same
    weights load and the features cover twice the rows and columns."""
    fine, coarse = PoseEncoder(dim=8, hidden=8, token_px=8), PoseEncoder(dim=8, hidden=8)
    fine.load_dwpose(coarse.state_dict())  # strict: every shape is the same
    strides = [m.stride for m in fine.dwpose_embedding if isinstance(m, torch.nn.Conv3d)]
    assert strides == [(1, 1, 1)] * 4 + [(2, 2, 2), (2, 2, 2), (1, 2, 2)]
    maps = np.zeros((17, 96, 128, 3), np.uint8)
    assert fine(maps).shape == (1, 8, 5, 12, 16) and coarse(maps).shape == (1, 8, 5, 6, 8)
    assert fine(np.zeros((17, 40, 48, 3), np.uint8)).shape == (1, 8, 5, 5, 6)  # 40 px is a multiple of 8
    with pytest.raises(ValueError, match="token_px"):
        PoseEncoder(dim=8, token_px=4)


def fabricated_dance(dim: int, prefix: str) -> dict:
    g = torch.Generator().manual_seed(1)
    ckpt = {f"{prefix}{k}": torch.randn(v.shape, generator=g) for k, v in PoseEncoder(dim).state_dict().items()}
    ckpt[f"{prefix}blocks.0.self_attn.q.lora_A.weight"] = torch.randn(4, dim, generator=g)  # the LoRA beside it
    return ckpt


@pytest.mark.parametrize("prefix", ["", "pipe.dit.", "model."])
def test_fabricated_svi_dance_checkpoint_loads_strictly(prefix):
    ckpt = fabricated_dance(32, prefix)
    enc = PoseEncoder(32)
    assert len(enc.load_dwpose(ckpt)) == 14
    torch.testing.assert_close(enc.dwpose_embedding[12].weight, ckpt[f"{prefix}dwpose_embedding.12.weight"])
    torch.testing.assert_close(enc.dwpose_embedding[6].bias, ckpt[f"{prefix}dwpose_embedding.6.bias"])


def test_missing_extra_and_misshapen_keys_are_named():
    ckpt = fabricated_dance(32, "pipe.dit.")
    del ckpt["pipe.dit.dwpose_embedding.10.bias"]
    with pytest.raises(ValueError, match="missing key\\(s\\): dwpose_embedding.10.bias"):
        PoseEncoder(32).load_dwpose(ckpt)
    ckpt = fabricated_dance(32, "")
    ckpt["dwpose_embedding.14.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key\\(s\\): dwpose_embedding.14.weight"):
        PoseEncoder(32).load_dwpose(ckpt)
    with pytest.raises(ValueError, match="shape mismatch: dwpose_embedding.12.weight"):
        PoseEncoder(64).load_dwpose(fabricated_dance(32, ""))


def test_pose_features_are_added_to_the_patch_tokens():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    dit = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                out_channels=4, text_dim=16, freq_dim=16, ffn_dim=64, num_layers=1,
                                cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()
    enc = PoseEncoder(dim=32)
    maps = np.random.default_rng(0).integers(0, 256, (17, 32, 32, 3), dtype=np.uint8)
    x, t, ctx = torch.randn(2, 4, 5, 4, 4), torch.tensor([300.0, 300.0]), torch.randn(2, 6, 16)  # CFG batch 2
    with torch.no_grad():
        feats = enc(maps)  # (1, 32, 5, 2, 2): pixel 32x32 -> latent 4x4 -> patches 2x2
        base = dit(x, t, ctx).sample
        captured = []
        probe = dit.blocks[0].register_forward_pre_hook(lambda m, a: captured.append(a[0]))
        handle = attach_pose(dit)
        with handle.use(feats):
            posed = dit(x, t, ctx).sample
        dit(x, t, ctx)
        probe.remove()
    tokens_in = captured[0] - captured[1]  # what block 0 received, with minus without the pose
    expected = enc.tokens(maps).detach().expand(2, -1, -1)  # both CFG branches get the pose
    torch.testing.assert_close(tokens_in, expected, atol=1e-5, rtol=1e-5)
    assert (posed - base).abs().max() > 1e-4
    handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(dit(x, t, ctx).sample, base)
    wrong = attach_pose(dit)
    with wrong.use(torch.zeros(1, 32, 4, 2, 2)), torch.no_grad(), pytest.raises(ValueError, match="patch grid"):
        dit(x, t, ctx)  # 4 latent frames of pose for a 5-frame latent
    wrong.remove()
