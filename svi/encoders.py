"""The conditioning encoders around the DiT: text (umT5), image (CLIP) and video (Wan VAE).

Stateless functions over `WanComponents`; the renderer decides what to cache. Shapes follow
SVI_SPEC 1.2 to 1.4 and section 7.
"""

from __future__ import annotations

import html
import re

import ftfy
import torch
import torch.nn.functional as Fn

from .models import CLIP_MEAN, CLIP_STD, WanComponents


def prompt_clean(text: str) -> str:
    """Wan's text cleaning (ftfy, double html-unescape, whitespace collapse; SVI_SPEC 1.3). Written out
    because importing it from diffusers' pipeline module drags in the CLIP image processor."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(ftfy.fix_text(text))).strip()).strip()


@torch.no_grad()
def encode_prompts(c: WanComponents, texts: list[str], text_len: int) -> torch.Tensor:
    """(B, text_len, D) umT5 embeddings; positions past each prompt's true length are zero (SVI_SPEC 1.3)."""
    cleaned = [prompt_clean(t) for t in texts]
    tok = c.tokenizer(cleaned, padding="max_length", max_length=text_len, truncation=True,
                      add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = tok.input_ids.to(c.device), tok.attention_mask.to(c.device)
    hidden = c.text_encoder(ids, mask).last_hidden_state  # (B, L, D)
    return (hidden * mask[..., None].to(hidden.dtype)).to(c.dtype)


def to_model_pixels(frames_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (3, n, H, W) in [-1, 1]."""
    return frames_u8.permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """float (3, n, H, W) in [-1, 1] -> uint8 (n, H, W, 3), rounded.

    The official code truncates, which biases every carried frame half a level darker; over many
    clips that is a drift SVI never saw in training, so we round."""
    return video.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0)


@torch.no_grad()
def clip_features(c: WanComponents, frame_u8: torch.Tensor) -> torch.Tensor:
    """(1, tokens, D) CLIP penultimate hidden states of one uint8 (H, W, 3) frame.

    Bicubic resize to the encoder's square input without keeping aspect (as SVI), all on device."""
    x = frame_u8.permute(2, 0, 1)[None].float().div(255.0)  # (1, 3, H, W) in [0, 1]
    x = Fn.interpolate(x, size=(c.clip_size, c.clip_size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    out = c.image_encoder(pixel_values=(x - mean) / std, output_hidden_states=True)
    return out.hidden_states[-2].to(c.dtype)  # all blocks but the last, no final norm (SVI_SPEC 1.4)


@torch.no_grad()
def vae_encode(c: WanComponents, video: torch.Tensor) -> torch.Tensor:
    """float (3, F, H, W) in [-1, 1] -> normalised latents (1, 16, T, h, w), fp32, posterior mode."""
    mean, std = c.latents_mean_std()
    mu = c.vae.encode(video[None].to(c.device, torch.float32)).latent_dist.mode()
    return (mu - mean) / std


@torch.no_grad()
def vae_decode(c: WanComponents, latents: torch.Tensor) -> torch.Tensor:
    """normalised latents (1, 16, T, h, w) -> float video (3, F, H, W) in [-1, 1], fp32."""
    mean, std = c.latents_mean_std()
    return c.vae.decode(latents.float() * std + mean).sample[0]
