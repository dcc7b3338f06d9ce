"""Per-clip audio and pose conditioning for the renderer (talk and dance variants).

Each conditioner owns its adapter, attaches it to the DiT once (hooks), and turns a ClipSpec's
MediaPieces into what one clip needs: audio tokens (and the null tokens for audio CFG) or pose
features. Media are decoded and featurised once per asset (memoised), then sliced per clip on
the plan's frame grid.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from .audio import AudioError, FeatureConfig, cached_track, slice_features
from .audio_adapter import AudioAdapter, AudioAdapterConfig, attach_audio, frame_windows
from .pose import conditioning_track, slice_pose
from .pose_encoder import PoseEncoder, attach_pose
from .pose_render import render_pose_maps
from .wav2vec import Wav2VecEncoder, clip_audio_embedding, split_window, wav2vec_track

ADAPTER_CONFIG = "config.json"
ADAPTER_WEIGHTS = "model.safetensors"


class AudioConditioner:
    """Audio tokens per clip from librosa features (tiny preset) or wav2vec2 (real talk preset)."""

    def __init__(self, adapter: AudioAdapter, transformer: torch.nn.Module, fps: float,
                 wav2vec: Wav2VecEncoder | None = None):
        p = next(transformer.parameters())
        self.adapter = adapter.to(p.device, p.dtype).eval().requires_grad_(False)
        self.handle = attach_audio(transformer, self.adapter)
        self.fps = fps
        self.wav2vec = wav2vec
        self.device, self.dtype = p.device, p.dtype

    def _windows(self, clip) -> tuple[torch.Tensor, torch.Tensor]:
        """(first (1, 1, 5, L, C), latter (1, T-1, 8, L, C)) audio windows of one clip."""
        if self.wav2vec is not None:
            tracks = {p.path: self._wav2vec_track(p.path) for p in clip.audio}
            return clip_audio_embedding(tracks, clip.audio, clip.frames)
        tracks = {p.path: cached_track(p.path, self.fps) for p in clip.audio}
        feats = torch.from_numpy(slice_features(tracks, clip.audio, clip.frames)) if tracks else \
            torch.zeros(clip.frames, FeatureConfig().dim)  # (F, D); zeros = silence
        first, latter = split_window(frame_windows(feats))  # (1, 5, 1, D), (T-1, 8, 1, D)
        return first[None], latter[None]

    def _wav2vec_track(self, path: str):
        return _memo_wav2vec(path, self.wav2vec)

    @torch.no_grad()
    def tokens(self, clip) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio tokens, null tokens), each (1, T, tokens, C); null = zero features through the
        projection, as the official CFG does (its audio tokens are not zero)."""
        first, latter = (t.to(self.device, self.dtype) for t in self._windows(clip))
        both = self.adapter.tokens(torch.cat([first, torch.zeros_like(first)]),
                                   torch.cat([latter, torch.zeros_like(latter)]))  # (2, T, tokens, C)
        return both[:1], both[1:]


@lru_cache(maxsize=8)
def _memo_wav2vec(path: str, encoder: Wav2VecEncoder):
    return wav2vec_track(path, encoder)


class PoseConditioner:
    """Pose features per clip: slice the keypoint track, draw pose maps, run the pose encoder."""

    def __init__(self, encoder: PoseEncoder, transformer: torch.nn.Module, fps: float):
        p = next(transformer.parameters())
        self.encoder = encoder.to(p.device, torch.float32).eval().requires_grad_(False)
        self.handle = attach_pose(transformer)
        self.fps = fps
        self.dtype = p.dtype

    @torch.no_grad()
    def features(self, clip, width: int, height: int) -> torch.Tensor:
        """(1, dim, T, H/token_px, W/token_px) features added to the patch tokens (both CFG branches)."""
        tracks = {p.path: conditioning_track(p.path) for p in clip.pose}
        frames = slice_pose(tracks, clip.pose, clip.frames, self.fps)
        maps = render_pose_maps(frames, width, height)  # (F, H, W, 3) uint8
        return self.encoder(maps).to(self.dtype)  # fp32 encoder, cast once (SVI_SPEC 1.8)


# ---------------------------------------------------------------------------------------------- files
def save_adapter(module: torch.nn.Module, config: dict, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, folder / ADAPTER_WEIGHTS)


def _load_folder(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    missing = [f.name for f in (folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS) if not f.is_file()]
    if missing:
        from ..models import MissingWeightsError

        raise MissingWeightsError(folder, missing)
    return json.loads((folder / ADAPTER_CONFIG).read_text()), load_file(folder / ADAPTER_WEIGHTS)


def load_audio_adapter(folder: Path) -> AudioAdapter:
    config, state = _load_folder(folder)
    adapter = AudioAdapter(AudioAdapterConfig(**config))
    adapter.load_multitalk(state)
    return adapter


def load_pose_encoder(folder: Path) -> PoseEncoder:
    config, state = _load_folder(folder)
    encoder = PoseEncoder(**config)
    encoder.load_dwpose(state)
    return encoder


def tiny_audio_config(dim: int, heads: int, layers: int) -> AudioAdapterConfig:
    """The tiny preset's audio adapter: MultiTalk's classes over librosa features (L=1, C=34)."""
    return AudioAdapterConfig(dim=dim, num_heads=heads, num_layers=layers, audio_layers=1,
                              audio_dim=FeatureConfig().dim, intermediate_dim=64, context_tokens=8, token_dim=32)


__all__ = ["AudioConditioner", "PoseConditioner", "AudioError", "load_audio_adapter", "load_pose_encoder",
           "save_adapter", "tiny_audio_config"]
