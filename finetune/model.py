"""The trainable module: the DiT with its LoRA, plus the audio adapter / pose encoder when on.

One nn.Module holds everything that trains, so DDP / DeepSpeed / FSDP wrap (and all-reduce) the
adapters together with the LoRA. The adapters attach to the diffusers DiT with the hooks of
svi.conditioning (no copy of diffusers' block code), so the forward is the renderer's forward.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn as nn

from svi.models import prediction_type
from svi.scheduler import NUM_TRAIN_TIMESTEPS, FlowMatchScheduler


class TrainModule(nn.Module):
    """DiT (+ LoRA) and optional conditioning adapters; forward returns the predicted velocity.

    Args:
        transformer: diffusers WanTransformer3DModel with the LoRA added.
        audio: svi.conditioning.audio_adapter.AudioAdapter or None.
        pose: svi.conditioning.pose_encoder.PoseEncoder or None.
    """

    def __init__(self, transformer: nn.Module, audio: nn.Module | None = None, pose: nn.Module | None = None):
        super().__init__()
        self.transformer = transformer
        self.audio = audio
        self.pose = pose
        # A "sample" DiT's x0 is turned into v below. Below sigma 0.05 that v is floored
        # (svi.scheduler.SAMPLE_SIGMA_FLOOR) while error recycling's target stays the true velocity:
        # 1% of the training grid, 0.17% of its total loss weight, so the target is left as it is.
        self.prediction = prediction_type(transformer)
        self._audio_handle = self._pose_handle = None
        if audio is not None:
            from svi.conditioning.audio_adapter import attach_audio

            self._audio_handle = attach_audio(transformer, audio)
        if pose is not None:
            from svi.conditioning.pose_encoder import attach_pose

            self._pose_handle = attach_pose(transformer)

    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, clip: torch.Tensor,
                y: torch.Tensor, audio_first: torch.Tensor | None = None, audio_latter: torch.Tensor | None = None,
                pose: torch.Tensor | None = None, pose_keep: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, 16, T, h, w), timestep (B,), text (B, L, D), clip (B, tokens, D_img), y (B, 20, T, h, w);
        audio_first (B, 1, 5, L, C) / audio_latter (B, T-1, 8, L, C); pose uint8 (B, F, H, W, 3) with
        pose_keep (B,) 0/1 (dropped pose: features zeroed). Returns v_hat (B, 16, T, h, w)."""
        hidden = torch.cat([x_t, y.to(x_t.dtype)], dim=1)  # (B, 36, T, h, w)
        with ExitStack() as stack:
            if self.audio is not None and audio_first is not None:
                tokens = self.audio.tokens(audio_first, audio_latter)  # (B, T, tokens, C_tok)
                stack.enter_context(self._audio_handle.use(tokens))
            if self.pose is not None and pose is not None:
                feats = self.pose(pose)  # (B, dim, T, h/2, w/2): the patch grid
                if pose_keep is not None:
                    feats = feats * pose_keep.to(feats.dtype).view(-1, 1, 1, 1, 1)
                stack.enter_context(self._pose_handle.use(feats))
            out = self.transformer(hidden, timestep, text, clip, return_dict=False)[0]
        sigma = timestep.float().view(-1, 1, 1, 1, 1) / NUM_TRAIN_TIMESTEPS
        return FlowMatchScheduler.as_velocity(out, x_t, sigma, self.prediction)


def dit_width(transformer: nn.Module) -> int:
    cfg = transformer.config
    return int(cfg.num_attention_heads * cfg.attention_head_dim)


def build_audio_adapter(transformer: nn.Module, feature_dim: int, feature_layers: int = 1) -> nn.Module:
    """An AudioAdapter sized to the DiT. The 14B DiT gets MultiTalk's layout (12 x 768 wav2vec
    features); a small DiT (the tiny preset) a small adapter over the librosa features."""
    from svi.conditioning.audio_adapter import AudioAdapter, AudioAdapterConfig

    cfg = transformer.config
    dim = dit_width(transformer)
    if dim >= 1024:
        acfg = AudioAdapterConfig(dim=dim, num_heads=cfg.num_attention_heads, num_layers=cfg.num_layers,
                                  audio_layers=feature_layers, audio_dim=feature_dim)
    else:
        acfg = AudioAdapterConfig(dim=dim, num_heads=cfg.num_attention_heads, num_layers=cfg.num_layers,
                                  audio_layers=feature_layers, audio_dim=feature_dim, intermediate_dim=64,
                                  context_tokens=4, token_dim=64)
    return AudioAdapter(acfg)


def build_pose_encoder(transformer: nn.Module) -> nn.Module:
    from svi.conditioning.pose_encoder import PoseEncoder

    return PoseEncoder(dim=dit_width(transformer))
