"""MultiTalk audio conditioning for the Wan DiT (SVI-Talk; SVI_SPEC 1.7, 2.6).

- `AudioProjModel` turns one clip's audio windows into 32 tokens per latent frame.
- `AudioBlock` (per DiT block: `norm_x` + `audio_cross_attn`) lets each latent frame's video tokens
  attend to its own audio tokens only, and is added after the text/image cross-attention and
  before the FFN, with no gate.
- `AudioAdapter` holds both with MultiTalk's parameter names (`audio_proj.*`,
  `blocks.{i}.norm_x.*`, `blocks.{i}.audio_cross_attn.{q_linear,kv_linear,proj}.*`), so the
  `multitalk.safetensors` keys load strictly, under any prefix.
- `attach_audio` inserts the blocks into a diffusers `WanTransformer3DModel` with hooks (no
  subclassing, no copy of diffusers' block code); `audio_guidance` is the three-way CFG.

Unlike the official code (xformers, batch 1: its kv batch is the frame axis), attention here is
torch SDPA with frames folded into the batch, so cond / null / drop-text run as one batch of 3.
The same classes at small widths serve the tiny preset (librosa features: L=1, C=34).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as Fn


@dataclass(frozen=True)
class AudioAdapterConfig:
    dim: int = 5120  # DiT width
    num_heads: int = 40
    num_layers: int = 40  # DiT blocks, one audio block each
    audio_layers: int = 12  # wav2vec2 hidden layers stacked per frame
    audio_dim: int = 768  # wav2vec2 width
    window: int = 5  # first latent frame: +-2 frames of pixel frame 0
    window_vf: int = 8  # later latent frames: 8 vectors from their 4 pixel frames (SVI_SPEC 1.7)
    intermediate_dim: int = 512
    context_tokens: int = 32  # audio tokens per latent frame
    token_dim: int = 768  # width of an audio token (MultiTalk output_dim)
    eps: float = 1e-6

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")


class AudioProjModel(nn.Module):
    """(first (B, 1, w, L, C), latter (B, T-1, w_vf, L, C)) -> tokens (B, T, 32, token_dim)."""

    def __init__(self, cfg: AudioAdapterConfig):
        super().__init__()
        self.cfg = cfg
        per_frame = cfg.audio_layers * cfg.audio_dim
        self.proj1 = nn.Linear(cfg.window * per_frame, cfg.intermediate_dim)
        self.proj1_vf = nn.Linear(cfg.window_vf * per_frame, cfg.intermediate_dim)
        self.proj2 = nn.Linear(cfg.intermediate_dim, cfg.intermediate_dim)
        self.proj3 = nn.Linear(cfg.intermediate_dim, cfg.context_tokens * cfg.token_dim)
        self.norm = nn.LayerNorm(cfg.token_dim)  # MultiTalk norm_output_audio=True

    def forward(self, first: torch.Tensor, latter: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if first.ndim != 5 or latter.ndim != 5 or first.shape[0] != latter.shape[0]:
            raise ValueError(f"expected first (B, 1, w, L, C) and latter (B, T-1, w_vf, L, C), got "
                             f"{tuple(first.shape)} and {tuple(latter.shape)}")
        b = first.shape[0]
        a = torch.relu(self.proj1(first.flatten(2)))  # (B, 1, I)
        v = torch.relu(self.proj1_vf(latter.flatten(2)))  # (B, T-1, I)
        h = torch.relu(self.proj2(torch.cat([a, v], dim=1)))  # (B, T, I)
        tokens = self.proj3(h).view(b, -1, cfg.context_tokens, cfg.token_dim)  # (B, T, 32, Ct)
        return self.norm(tokens)


class AudioCrossAttention(nn.Module):
    """Frame-local cross-attention: latent frame t's video tokens attend to its audio tokens only."""

    def __init__(self, dim: int, audio_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, 2 * dim)  # k then v, as MultiTalk's (B, N, 2, H, D) view
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """x (B, T*S, C) video tokens in (frame, row, col) order; audio (B, T, M, Ca) -> (B, T*S, C)."""
        b, n, c = x.shape
        t, m = audio.shape[1], audio.shape[2]
        if n % t:
            raise ValueError(f"{n} video tokens do not split into {t} latent frames")
        s, h = n // t, self.num_heads
        q = self.q_linear(x).view(b * t, s, h, c // h).transpose(1, 2)  # (B*T, H, S, D)
        kv = self.kv_linear(audio).view(b * t, m, 2, h, c // h)  # (B*T, M, 2, H, D)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B*T, H, M, D)
        out = Fn.scaled_dot_product_attention(q, k, v)  # (B*T, H, S, D)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))  # (B, T*S, C)


class AudioBlock(nn.Module):
    """`blocks.{i}.norm_x` + `blocks.{i}.audio_cross_attn`: returns the residual to add to x."""

    def __init__(self, cfg: AudioAdapterConfig):
        super().__init__()
        self.norm_x = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.audio_cross_attn = AudioCrossAttention(cfg.dim, cfg.token_dim, cfg.num_heads)

    def forward(self, x: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        normed = self.norm_x(x.float()).type_as(x)  # MultiTalk computes this norm in fp32
        return self.audio_cross_attn(normed, audio_tokens.to(x.dtype))


class AudioAdapter(nn.Module):
    """All MultiTalk audio parameters of a DiT: `audio_proj` and one `AudioBlock` per DiT block."""

    def __init__(self, cfg: AudioAdapterConfig = AudioAdapterConfig()):
        super().__init__()
        self.cfg = cfg
        self.audio_proj = AudioProjModel(cfg)
        self.blocks = nn.ModuleList(AudioBlock(cfg) for _ in range(cfg.num_layers))

    def tokens(self, first: torch.Tensor, latter: torch.Tensor) -> torch.Tensor:
        """Audio tokens (B, T, 32, token_dim) of a clip; constant over the denoising steps, so compute
        once per clip (the official code recomputes them every forward; SVI_SPEC 6.1.9)."""
        return self.audio_proj(first, latter)

    def load_multitalk(self, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True) -> list[str]:
        """Load MultiTalk audio weights from a full DiT state dict (any key prefix, e.g.
        `model.diffusion_model.`); returns the keys used. Missing keys or wrong shapes raise an error
        that names them; keys of the DiT itself are ignored."""
        return load_named(self, state_dict, ("audio_proj.", "blocks."), strict=strict,
                          what="MultiTalk audio", keep=_is_audio_key)


def _is_audio_key(key: str) -> bool:
    return key.startswith("audio_proj.") or ".norm_x." in key or ".audio_cross_attn." in key


def load_named(module: nn.Module, state_dict: Mapping[str, torch.Tensor], roots: tuple[str, ...], *,
               strict: bool, what: str, keep=lambda k: True) -> list[str]:
    """Copy tensors whose key, after any prefix, starts with one of `roots` and passes `keep`.

    The prefix is found per key (checkpoints nest DiT weights under `model.`, `dit.`,
    `model.diffusion_model.`, ...). Errors name each missing key, unexpected key and bad shape."""
    own = module.state_dict()
    found: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for root in roots:
            i = key.find(root)
            while i >= 0 and i > 0 and key[i - 1] != ".":
                i = key.find(root, i + 1)
            if i < 0:
                continue
            name = key[i:]
            if keep(name):
                if name in found:
                    raise ValueError(f"{what} checkpoint: key {name} appears twice (under two prefixes)")
                found[name] = value
            break
    missing = [k for k in own if k not in found]
    unexpected = [k for k in found if k not in own]
    bad = [f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if k in found and tuple(found[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing and strict:
        problems.append(f"missing key(s): {', '.join(missing[:8])}" + (f" (+{len(missing) - 8} more)"
                                                                       if len(missing) > 8 else ""))
    if unexpected and strict:
        problems.append(f"unexpected key(s): {', '.join(unexpected[:8])}")
    if bad:
        problems.append("shape mismatch: " + "; ".join(bad[:8]))
    if problems:
        raise ValueError(f"{what} checkpoint does not fit the model: " + " | ".join(problems))
    with torch.no_grad():
        for k, v in found.items():
            if k in own:
                own[k].copy_(v.to(own[k].dtype))
    return sorted(k for k in found if k in own)


# ---------------------------------------------------------------------------------------------- DiT wiring
class AudioHandle:
    """Audio blocks attached to a diffusers WanTransformer3DModel. Set the tokens for the batch
    being denoised (`with handle.use(tokens): transformer(...)`); without tokens the blocks are off."""

    def __init__(self, adapter: AudioAdapter, hooks: list):
        self.adapter = adapter
        self._hooks = hooks
        self.tokens: torch.Tensor | None = None

    @contextmanager
    def use(self, tokens: torch.Tensor | None):
        previous, self.tokens = self.tokens, tokens
        try:
            yield self
        finally:
            self.tokens = previous

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


def attach_audio(transformer: nn.Module, adapter: AudioAdapter) -> AudioHandle:
    """Insert `adapter.blocks[i]` into DiT block i: x += audio_cross_attn(norm_x(x)) after the
    cross-attention residual and before the FFN.

    diffusers' WanTransformerBlock computes `x = x + attn2(norm2(x))` then the FFN. A pre-hook on
    `norm2` records x (after self-attention); a forward hook on `attn2` returns attn2's output plus
    the audio residual of x + that output, so the block's own addition yields x1 + audio(x1)."""
    blocks = getattr(transformer, "blocks", None)
    if blocks is None or len(blocks) != len(adapter.blocks):
        raise ValueError(f"the DiT has {len(blocks) if blocks is not None else 'no'} blocks, the audio adapter "
                         f"{len(adapter.blocks)}")
    handle = AudioHandle(adapter, [])
    for block, audio_block in zip(blocks, adapter.blocks):
        state: dict[str, torch.Tensor] = {}

        def before_norm2(_mod, args, state=state):
            state["x"] = args[0]  # (B, L, C) hidden states after self-attention (fp32 view)

        def after_attn2(_mod, _args, output, state=state, audio_block=audio_block):
            x = state.pop("x", None)
            if handle.tokens is None or x is None:
                return output
            x1 = x.type_as(output) + output  # (B, L, C): the block's hidden states after cross-attention
            return output + audio_block(x1, handle.tokens)

        handle._hooks.append(block.norm2.register_forward_pre_hook(before_norm2))
        handle._hooks.append(block.attn2.register_forward_hook(after_attn2))
    return handle


# ---------------------------------------------------------------------------------------------- guidance
def audio_cfg_batch(pos_text: torch.Tensor, neg_text: torch.Tensor, audio_tokens: torch.Tensor,
                    null_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Text contexts and audio tokens of the three MultiTalk passes as one batch of 3:
    [pos text + audio, neg text + null audio, neg text + audio] (SVI_SPEC 2.6)."""
    text = torch.cat([pos_text, neg_text, neg_text], dim=0)
    audio = torch.cat([audio_tokens, null_tokens, audio_tokens], dim=0)
    return text, audio


def audio_guidance(v: torch.Tensor, text_scale: float, audio_scale: float) -> torch.Tensor:
    """v (3, ...) from the batch of `audio_cfg_batch` -> guided velocity (1, ...):
    v_u + s_text (v_c - v_dt) + s_audio (v_dt - v_u), computed in fp32."""
    if v.shape[0] != 3:
        raise ValueError(f"expected the 3 passes [cond, uncond, drop-text] on dim 0, got {tuple(v.shape)}")
    v_c, v_u, v_dt = v.float().chunk(3, dim=0)
    return (v_u + text_scale * (v_c - v_dt) + audio_scale * (v_dt - v_u)).to(v.dtype)


def frame_windows(features: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(F, D) per-frame features of one clip -> (F, 2 radius + 1, 1, D) windows clamped to the clip:
    the librosa features of the tiny preset in the shape the wav2vec path gives."""
    f = features.shape[0]
    idx = (torch.arange(f)[:, None] + torch.arange(-radius, radius + 1)[None, :]).clamp(0, f - 1)
    return features[idx][:, :, None, :]
