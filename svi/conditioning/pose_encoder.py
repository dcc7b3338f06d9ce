"""The SVI-Dance pose encoder (UniAnimate-DiT style `dwpose_embedding`, SVI_SPEC 1.8).

Pose maps (B, F, H, W, 3) uint8 -> tokens added to the DiT's patch-embedded video tokens, in both
CFG branches. The layer indices of the Sequential are those of the svi-dance checkpoint
(`dwpose_embedding.{0,2,4,6,8,10,12}.{weight,bias}`), so it loads strictly. The same class at a
small `dim` is the tiny preset's pose adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn

from .audio_adapter import load_named

PREPEND_FRAMES = 3  # copies of pose frame 0 put in front: 81 + 3 = 84 frames -> 21 latent frames


TOKEN_PX = (8, 16)  # pixels per DiT token the encoder can land on: 16 = Wan's 8x VAE x 2x2 patch


class PoseEncoder(nn.Module):
    """`dwpose_embedding`: Conv3d/SiLU stack; time /4, space /`token_px`, channels -> the DiT width.

    `token_px` is the DiT token's side in pixels (VAE spatial factor x patch): 16 for Wan (and the
    svi-dance weights); 8 for a 4x VAE under a 2x2 patch, where layer 6 keeps the resolution. Only
    a stride changes, so every weight keeps its shape and loads either way."""

    def __init__(self, dim: int = 5120, hidden: int = 16, token_px: int = 16):
        super().__init__()
        if token_px not in TOKEN_PX:
            raise ValueError(f"token_px must be one of {TOKEN_PX}, got {token_px}")
        self.dim, self.token_px = dim, token_px
        c = hidden
        self.dwpose_embedding = nn.Sequential(
            nn.Conv3d(3, c, 3, stride=1, padding=1), nn.SiLU(),  # 0
            nn.Conv3d(c, c, 3, stride=1, padding=1), nn.SiLU(),  # 2
            nn.Conv3d(c, c, 3, stride=1, padding=1), nn.SiLU(),  # 4
            nn.Conv3d(c, c, 3, stride=(1, 2, 2) if token_px == 16 else 1, padding=1), nn.SiLU(),  # 6: space /2 (16 px)
            nn.Conv3d(c, c, 3, stride=2, padding=1), nn.SiLU(),  # 8: time /2, space /2
            nn.Conv3d(c, c, 3, stride=2, padding=1), nn.SiLU(),  # 10: time /2, space /2
            nn.Conv3d(c, dim, (1, 2, 2), stride=(1, 2, 2), padding=0),  # 12: space /2, to the DiT width
        )

    def prepare(self, pose_maps: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, F, H, W, 3) or (F, H, W, 3) pose maps -> float (B, 3, F + 3, H, W) in [0, 1],
        with frame 0 repeated 3 times in front (the official input layout)."""
        x = torch.as_tensor(pose_maps)
        if x.ndim == 4:
            x = x[None]
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"pose maps must be (B, F, H, W, 3), got {tuple(x.shape)}")
        f, h, w = x.shape[1:4]
        if (f - 1) % 4:
            raise ValueError(f"a clip needs 4n+1 pose frames, got {f}")
        if h % self.token_px or w % self.token_px:
            raise ValueError(f"pose map size must be a multiple of {self.token_px}, got {w}x{h}")
        x = x.permute(0, 4, 1, 2, 3).float()  # (B, 3, F, H, W), 0..255
        x = torch.cat([x[:, :, :1].expand(-1, -1, PREPEND_FRAMES, -1, -1), x], dim=2)  # (B, 3, F+3, H, W)
        return x / 255.0

    def forward(self, pose_maps: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Pose features (B, dim, T, H/token_px, W/token_px), T = (F - 1) / 4 + 1, the layout of the DiT's patch
        embedding output; flattened in (t, h, w) order they are the (B, L, dim) tokens."""
        p = next(self.parameters())
        x = self.prepare(pose_maps).to(p.device, p.dtype)  # (B, 3, F+3, H, W)
        return self.dwpose_embedding(x)  # (B, dim, T, H/token_px, W/token_px)

    def tokens(self, pose_maps) -> torch.Tensor:
        """(B, L, dim) tokens in the DiT's (frame, row, col) order."""
        return self.forward(pose_maps).flatten(2).transpose(1, 2)

    def load_dwpose(self, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True) -> list[str]:
        """Load `dwpose_embedding.*` from an svi-dance checkpoint (any key prefix); a missing key,
        an extra one or a wrong shape raises an error that names it."""
        return load_named(self, state_dict, ("dwpose_embedding.",), strict=strict, what="dwpose_embedding")


class PoseHandle:
    """A pose encoder's output added to a diffusers WanTransformer3DModel's patch embedding."""

    def __init__(self, hook=None):
        self._hook = hook
        self.features: torch.Tensor | None = None

    @contextmanager
    def use(self, features: torch.Tensor | None):
        """Add `features` (B, dim, T, h, w) (from `PoseEncoder.forward`, computed once per clip) to
        every forward inside the block; batch 1 broadcasts over a CFG batch (both branches)."""
        previous, self.features = self.features, features
        try:
            yield self
        finally:
            self.features = previous

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def attach_pose(transformer: nn.Module) -> PoseHandle:
    """Hook `transformer.patch_embedding` so its output (B, dim, T, h, w) gains the pose features:
    the same as adding the flattened pose tokens to the patch tokens before block 0."""
    handle = PoseHandle()

    def add_pose(_mod, _args, output):
        f = handle.features
        if f is None:
            return output
        if f.shape[1:] != output.shape[1:]:
            raise ValueError(f"pose features {tuple(f.shape)} do not match the patch grid {tuple(output.shape)}")
        return output + f.to(output.dtype)

    handle._hook = transformer.patch_embedding.register_forward_hook(add_pose)
    return handle
