"""MultiTalk audio branch: key layout, strict loading, maths against a reference, DiT wiring, audio CFG."""

from __future__ import annotations

import pytest
import torch

from svi.conditioning.audio_adapter import (
    AudioAdapter, AudioAdapterConfig, attach_audio, audio_cfg_batch, audio_guidance, frame_windows,
)
from svi.conditioning.wav2vec import split_window

SMALL = AudioAdapterConfig(dim=32, num_heads=2, num_layers=2, audio_layers=3, audio_dim=8, intermediate_dim=16,
                           context_tokens=4, token_dim=8)


def test_real_multitalk_key_layout_and_shapes():
    with torch.device("meta"):  # the full-size module without allocating 300 MB
        sd = AudioAdapter(AudioAdapterConfig()).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["audio_proj.proj1.weight"] == (512, 5 * 12 * 768)  # 46 080 inputs
    assert shapes["audio_proj.proj1_vf.weight"] == (512, 8 * 12 * 768)  # 73 728
    assert shapes["audio_proj.proj2.weight"] == (512, 512)
    assert shapes["audio_proj.proj3.weight"] == (32 * 768, 512)
    assert shapes["audio_proj.norm.weight"] == (768,)
    assert shapes["blocks.39.norm_x.weight"] == (5120,)
    assert shapes["blocks.0.audio_cross_attn.q_linear.weight"] == (5120, 5120)
    assert shapes["blocks.0.audio_cross_attn.kv_linear.weight"] == (10240, 768)
    assert shapes["blocks.0.audio_cross_attn.proj.bias"] == (5120,)
    per_block = {k.split(".", 2)[2] for k in sd if k.startswith("blocks.0.")}
    assert per_block == {f"{m}.{p}" for m in ("norm_x", "audio_cross_attn.q_linear", "audio_cross_attn.kv_linear",
                                               "audio_cross_attn.proj") for p in ("weight", "bias")}
    assert len(sd) == 10 + 40 * 8


def fabricated_multitalk(cfg: AudioAdapterConfig, prefix: str = "model.diffusion_model.") -> dict:
    """A DiT checkpoint in the MultiTalk layout: DiT keys plus the audio keys, values random."""
    g = torch.Generator().manual_seed(0)
    ckpt = {f"{prefix}{k}": torch.randn(v.shape, generator=g) for k, v in AudioAdapter(cfg).state_dict().items()}
    for i in range(cfg.num_layers):  # the DiT's own weights sit beside them and must be ignored
        ckpt[f"{prefix}blocks.{i}.self_attn.q.weight"] = torch.randn(cfg.dim, cfg.dim, generator=g)
        ckpt[f"{prefix}blocks.{i}.ffn.0.weight"] = torch.randn(4, cfg.dim, generator=g)
    ckpt[f"{prefix}patch_embedding.weight"] = torch.randn(cfg.dim, 36, 1, 2, 2, generator=g)
    return ckpt


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "dit."])
def test_fabricated_multitalk_checkpoint_loads_strictly(prefix):
    ckpt = fabricated_multitalk(SMALL, prefix)
    adapter = AudioAdapter(SMALL)
    used = adapter.load_multitalk(ckpt)
    assert len(used) == len(adapter.state_dict())
    torch.testing.assert_close(adapter.blocks[1].audio_cross_attn.kv_linear.weight,
                               ckpt[f"{prefix}blocks.1.audio_cross_attn.kv_linear.weight"])
    torch.testing.assert_close(adapter.audio_proj.proj1_vf.bias, ckpt[f"{prefix}audio_proj.proj1_vf.bias"])


def test_missing_or_misshapen_keys_are_named():
    ckpt = fabricated_multitalk(SMALL)
    del ckpt["model.diffusion_model.blocks.1.audio_cross_attn.proj.weight"]
    with pytest.raises(ValueError, match="missing key\\(s\\): blocks.1.audio_cross_attn.proj.weight"):
        AudioAdapter(SMALL).load_multitalk(ckpt)
    AudioAdapter(SMALL).load_multitalk(ckpt, strict=False)  # partial loads are allowed when asked
    ckpt = fabricated_multitalk(SMALL)
    ckpt["model.diffusion_model.audio_proj.proj2.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape mismatch: audio_proj.proj2.weight"):
        AudioAdapter(SMALL).load_multitalk(ckpt)
    ckpt = fabricated_multitalk(SMALL)
    ckpt["model.diffusion_model.blocks.7.norm_x.weight"] = torch.zeros(32)  # a block the DiT does not have
    with pytest.raises(ValueError, match="unexpected key\\(s\\): blocks.7.norm_x.weight"):
        AudioAdapter(SMALL).load_multitalk(ckpt)


def reference_proj(m, first, latter):
    """MultiTalk's AudioProjModel.forward, step by step (rearranges as views)."""
    B = first.shape[0]
    a = first.reshape(B * first.shape[1], -1)
    v = latter.reshape(B * latter.shape[1], -1)
    a = torch.relu(m.proj1(a)).reshape(B, -1, m.proj1.out_features)
    v = torch.relu(m.proj1_vf(v)).reshape(B, -1, m.proj1.out_features)
    c = torch.cat([a, v], 1)
    n_t = c.shape[1]
    c = torch.relu(m.proj2(c.reshape(B * n_t, -1)))
    tok = m.proj3(c).reshape(B * n_t, m.cfg.context_tokens, m.cfg.token_dim)
    return m.norm(tok).reshape(B, n_t, m.cfg.context_tokens, m.cfg.token_dim)


def reference_attention(att, x, audio, heads):
    """SingleStreamAttention at batch 1, one latent frame at a time, with an explicit softmax."""
    t, m, _ = audio.shape[1], audio.shape[2], None
    n, c = x.shape[1], x.shape[2]
    s, d = n // t, c // heads
    outs = []
    for f in range(t):
        q = att.q_linear(x[0, f * s:(f + 1) * s]).view(s, heads, d).transpose(0, 1)  # (H, S, D)
        kv = att.kv_linear(audio[0, f]).view(m, 2, heads, d)
        k, v = kv[:, 0].transpose(0, 1), kv[:, 1].transpose(0, 1)  # (H, M, D)
        w = torch.softmax(q @ k.transpose(1, 2) / d ** 0.5, dim=-1)
        outs.append((w @ v).transpose(0, 1).reshape(s, c))
    return att.proj(torch.cat(outs))[None]


def test_projection_and_frame_local_attention_match_the_multitalk_reference():
    torch.manual_seed(0)
    adapter = AudioAdapter(SMALL).eval()
    first, latter = torch.randn(2, 1, 5, 3, 8), torch.randn(2, 4, 8, 3, 8)  # T = 5 latent frames
    tokens = adapter.tokens(first, latter)
    assert tokens.shape == (2, 5, 4, 8)
    torch.testing.assert_close(tokens, reference_proj(adapter.audio_proj, first, latter))
    x = torch.randn(1, 5 * 6, 32)  # 5 latent frames of 2x3 patches
    att = adapter.blocks[0].audio_cross_attn
    torch.testing.assert_close(att(x, tokens[:1]), reference_attention(att, x, tokens[:1], 2), atol=1e-5, rtol=1e-5)
    # frame-local: changing frame 3's audio changes only frame 3's tokens
    changed = tokens[:1].clone()
    changed[:, 3] += 1
    diff = (att(x, changed) - att(x, tokens[:1])).abs().sum(-1)[0].view(5, 6).sum(-1)
    assert (diff[[0, 1, 2, 4]] == 0).all() and diff[3] > 0
    # batch of 2 = two batch-1 calls (the official code only runs batch 1)
    x2 = torch.randn(2, 30, 32)
    both = att(x2, tokens)
    torch.testing.assert_close(both[1:], att(x2[1:], tokens[1:]), atol=1e-6, rtol=1e-5)


def tiny_dit():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=64, num_layers=2,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()


def reference_block(block, audio_block, tokens, hidden, context, temb, rotary):
    """diffusers' WanTransformerBlock.forward with MultiTalk's audio step written in (SVI_SPEC 1.5.6)."""
    shift, scale, gate, c_shift, c_scale, c_gate = (block.scale_shift_table + temb.float()).chunk(6, dim=1)
    h = (block.norm1(hidden.float()) * (1 + scale) + shift).type_as(hidden)
    hidden = (hidden.float() + block.attn1(h, None, None, rotary) * gate).type_as(hidden)
    hidden = hidden + block.attn2(block.norm2(hidden.float()).type_as(hidden), context, None, None)
    hidden = hidden + audio_block(hidden, tokens)  # x += audio_cross_attn(norm_x(x)), no gate
    h = (block.norm3(hidden.float()) * (1 + c_scale) + c_shift).type_as(hidden)
    return (hidden.float() + block.ffn(h).float() * c_gate).type_as(hidden)


def test_attach_audio_inserts_after_cross_attention_and_before_the_ffn():
    dit = tiny_dit()
    cfg = AudioAdapterConfig(dim=32, num_heads=2, num_layers=2, audio_layers=1, audio_dim=6, intermediate_dim=16,
                             context_tokens=4, token_dim=8)
    adapter = AudioAdapter(cfg).eval()
    x = torch.randn(1, 4, 3, 8, 8)  # latent (B, C, T, h, w): 3 latent frames of 4x4 patches
    ctx, t = torch.randn(1, 7, 16), torch.tensor([500.0])
    tokens = adapter.tokens(torch.randn(1, 1, 5, 1, 6), torch.randn(1, 2, 8, 1, 6))  # (1, 3, 4, 8)

    captured = {}
    hook = dit.blocks[1].register_forward_pre_hook(lambda m, a: captured.setdefault("args", a))
    with torch.no_grad():
        base = dit(x, t, ctx).sample
    hook.remove()
    handle = attach_audio(dit, adapter)
    with torch.no_grad():
        off = dit(x, t, ctx).sample  # no tokens set: the audio blocks are off
        with handle.use(tokens):
            on = dit(x, t, ctx).sample
            block_out = dit.blocks[1](*captured["args"])
        expected = reference_block(dit.blocks[1], adapter.blocks[1], tokens, *captured["args"])
    torch.testing.assert_close(off, base)
    assert (on - base).abs().max() > 1e-4
    torch.testing.assert_close(block_out, expected)
    handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(dit(x, t, ctx).sample, base)
    with pytest.raises(ValueError, match="blocks"):
        attach_audio(dit, AudioAdapter(SMALL.__class__(**{**SMALL.__dict__, "num_layers": 3})))


def test_audio_guidance_is_the_three_pass_formula_in_one_batch():
    torch.manual_seed(0)
    v_c, v_u, v_dt = torch.randn(3, 1, 4, 2, 3, 3).unbind(0)
    v = torch.cat([v_c, v_u, v_dt])
    got = audio_guidance(v, 2.0, 5.0)
    torch.testing.assert_close(got, v_u + 2.0 * (v_c - v_dt) + 5.0 * (v_dt - v_u))
    torch.testing.assert_close(audio_guidance(v, 1.0, 1.0), v_c)  # both scales 1: the conditional pass
    pos, neg = torch.ones(1, 5, 16), torch.zeros(1, 5, 16)
    a, null = torch.ones(1, 3, 4, 8), torch.zeros(1, 3, 4, 8)
    text, audio = audio_cfg_batch(pos, neg, a, null)
    assert text[:, 0, 0].tolist() == [1, 0, 0] and audio[:, 0, 0, 0].tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="3 passes"):
        audio_guidance(v[:2], 2.0, 5.0)


def test_tiny_preset_windows_from_librosa_features():
    feats = torch.arange(17, dtype=torch.float32)[:, None].repeat(1, 34)  # (F, D), row j = j
    first, latter = split_window(frame_windows(feats))
    assert first.shape == (1, 5, 1, 34) and latter.shape == (4, 8, 1, 34)
    assert first[0, :, 0, 0].tolist() == [0, 0, 0, 1, 2]  # clamped inside the clip
    assert latter[3, :, 0, 0].tolist() == [11, 12, 13, 14, 15, 16, 16, 16]
    cfg = AudioAdapterConfig(dim=32, num_heads=2, num_layers=1, audio_layers=1, audio_dim=34, intermediate_dim=16,
                             context_tokens=4, token_dim=8)
    assert AudioAdapter(cfg).tokens(first[None], latter[None]).shape == (1, 5, 4, 8)
