"""wav2vec2 audio features for the talk preset (MultiTalk / SVI-Talk, SVI_SPEC 1.7).

Computed once per audio asset, on the video frame grid: the CNN feature encoder runs at its
natural ~50 Hz, its output is linearly interpolated (align_corners=True) to N video frames
*before* the feature projection and the transformer, and the 12 layer outputs
(`hidden_states[1:]`) are stacked to (N, 12, 768). Per clip, each frame gets a +-2 frame window
(A: (F, 5, 12, 768)) which `split_window` regroups into the first-latent and per-latent blocks
the audio projection expects.

Clip start indices follow the clean scheme of SVI_SPEC 2.7: the planner's MediaPieces place clip
k's frame 0 at asset frame (F - m) k (plus the segment's offset), so the audio of the m carried
frames is the audio clip k-1 ended on, and no frame lags.

Weights come from a local folder only (`local_files_only=True`); nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn

from .audio import SAMPLE_RATE, AudioError, LoadedAudio, fps_fraction, load_audio, piece_source_frames
from . import track_for

WAV2VEC_FPS = 25  # MultiTalk hard-codes 25 fps; the talk variant renders at 25 fps
WINDOW_RADIUS = 2  # +-2 frames of context per video frame (audio_window 5)
VAE_STRIDE = 4  # pixel frames per latent frame after the first


@dataclass(frozen=True, eq=False)
class Wav2VecEncoder:
    """A local wav2vec2 model with its feature extractor, in eval mode."""

    model: "torch.nn.Module"  # transformers Wav2Vec2Model
    extractor: object  # transformers Wav2Vec2FeatureExtractor
    folder: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def load_wav2vec(folder: str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> Wav2VecEncoder:
    """Load a transformers wav2vec2 folder (e.g. chinese-wav2vec2-base) from disk only.

    The folder needs config.json and the weights (model.safetensors or pytorch_model.bin); without
    preprocessor_config.json the standard 16 kHz extractor with per-utterance normalisation is used.
    """
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"wav2vec2 folder not found: {folder} (the talk preset needs chinese-wav2vec2-base "
                                f"there; nothing is downloaded)")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"wav2vec2 folder {folder} has no config.json")
    if not any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        raise FileNotFoundError(f"wav2vec2 folder {folder} has no weights (model.safetensors or pytorch_model.bin)")
    model = Wav2Vec2Model.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    model.to(device).eval()
    if (folder / "preprocessor_config.json").is_file():
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
    else:
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                             do_normalize=True, return_attention_mask=False)
    return Wav2VecEncoder(model, extractor, str(folder))


def frames_for_samples(n_samples: int, sr: int, fps: float | Fraction) -> int:
    """N = int(duration * fps), as MultiTalk computes `video_length` (exact integer arithmetic)."""
    f = fps_fraction(fps)
    return (n_samples * f.numerator) // (sr * f.denominator)


@torch.no_grad()
def hidden_states(model, input_values: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(seq_len, L, C) layer outputs of `model` with the CNN features resampled to `seq_len` frames.

    This is MultiTalk's modified `Wav2Vec2Model.forward` (`linear_interpolation` between the CNN and
    the feature projection) followed by `torch.stack(hidden_states[1:], 1)`; it runs the layers of
    the stock transformers model in order instead of patching its class.

    Args:
        input_values: (1, n) normalised waveform from the feature extractor.
        seq_len: N, the number of video frames.
    """
    if input_values.ndim != 2 or input_values.shape[0] != 1:
        raise ValueError(f"input_values must be (1, n), got {tuple(input_values.shape)}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    feats = model.feature_extractor(input_values)  # (1, 512, T50)
    feats = Fn.interpolate(feats, size=seq_len, mode="linear", align_corners=True)  # (1, 512, N)
    feats = feats.transpose(1, 2)  # (1, N, 512)
    h, _ = model.feature_projection(feats)  # (1, N, C)
    enc = model.encoder
    h = h + enc.pos_conv_embed(h)
    stable = model.config.do_stable_layer_norm
    if not stable:  # post-norm encoder normalises before layer 0; pre-norm (large models) after the last
        h = enc.layer_norm(h)
    h = enc.dropout(h)
    outs = []
    for layer in enc.layers:
        h = layer(h, attention_mask=None)  # (1, N, C)
        outs.append(h)
    if stable:  # transformers' hidden_states[-1] is the final-normed output for pre-norm encoders
        outs[-1] = enc.layer_norm(outs[-1])
    return torch.stack(outs, dim=2)[0]  # (N, L, C)


@dataclass(frozen=True, eq=False)
class Wav2VecTrack:
    """wav2vec2 features of one audio asset on the video frame grid."""

    features: torch.Tensor  # (N, L, C) float32 on the CPU; row j = video frame j
    fps: float
    path: str | None = None

    @property
    def n_frames(self) -> int:
        return self.features.shape[0]


def wav2vec_track(source: str | os.PathLike | LoadedAudio, encoder: Wav2VecEncoder,
                  fps: float = WAV2VEC_FPS, *, allow_silent: bool = False) -> Wav2VecTrack:
    """Features of a whole audio asset, computed once (the official code redoes this every clip)."""
    audio = source if isinstance(source, LoadedAudio) else load_audio(source, SAMPLE_RATE, allow_silent=allow_silent)
    if audio.sr != SAMPLE_RATE:
        raise AudioError(f"{audio.path or 'audio'}: wav2vec2 needs {SAMPLE_RATE} Hz audio, got {audio.sr} Hz")
    n = frames_for_samples(len(audio.samples), audio.sr, fps)
    if n < 1:
        raise AudioError(f"{audio.path or 'audio'}: shorter than one video frame at {fps} fps")
    values = encoder.extractor(audio.samples, sampling_rate=audio.sr, return_tensors="np").input_values  # (1, n)
    x = torch.from_numpy(np.asarray(values, dtype=np.float32)).to(encoder.device, encoder.dtype)  # (1, n_samples)
    feats = hidden_states(encoder.model, x, n)  # (N, L, C)
    return Wav2VecTrack(feats.float().cpu(), float(fps), audio.path)


def window_indices(start: int, frames: int, n_total: int, radius: int = WINDOW_RADIUS) -> torch.Tensor:
    """(frames, 2 radius + 1) official window: idx[j, o] = clamp(start + j + o - radius, 0, N - 1)."""
    j = torch.arange(frames)[:, None]
    o = torch.arange(-radius, radius + 1)[None, :]
    return (start + j + o).clamp(0, n_total - 1)


def clip_window(tracks: Wav2VecTrack | Mapping[str, Wav2VecTrack], pieces: Sequence, frames: int,
                radius: int = WINDOW_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's audio window A (frames, 2 radius + 1, L, C) and which frames have audio (frames,).

    A covered clip frame j at asset frame s_j gets asset frames clamp(s_j + o) for o in
    [-radius, radius]: with one piece covering the clip from asset frame s this is exactly the
    official window at start index s (past the audio's end the last frame repeats). Uncovered frames
    are zeros: the null audio of CFG.
    """
    windows, covered, shape = None, torch.zeros(frames, dtype=torch.bool), None
    for piece in pieces:
        track = _track_for(tracks, piece)
        if windows is None:
            shape = tuple(track.features.shape[1:])
            windows = torch.zeros((frames, 2 * radius + 1, *shape), dtype=track.features.dtype)
        elif tuple(track.features.shape[1:]) != shape:
            raise AudioError(f"{piece.path}: wav2vec feature shape differs from the clip's other audio")
        if piece.dst_start < 0 or piece.dst_start + piece.length > frames:
            raise ValueError(f"piece [{piece.dst_start}, {piece.dst_start + piece.length}) lies outside the "
                             f"clip's {frames} frames")
        src = torch.from_numpy(piece_source_frames(piece, track.fps))  # (length,)
        o = torch.arange(-radius, radius + 1)
        idx = (src[:, None] + o[None, :]).clamp(0, track.n_frames - 1)  # (length, 2r+1)
        windows[piece.dst_start:piece.dst_start + piece.length] = track.features[idx]
        covered[piece.dst_start:piece.dst_start + piece.length] = True
    if windows is None:
        if isinstance(tracks, Wav2VecTrack):
            shape = tuple(tracks.features.shape[1:])
        else:
            shape = next(iter(tracks.values())).features.shape[1:] if tracks else (12, 768)
        windows = torch.zeros((frames, 2 * radius + 1, *shape))
    return windows, covered


def split_window(window: torch.Tensor, vae_stride: int = VAE_STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Regroup A (F, 5, L, C) into MultiTalk's (first (1, 5, L, C), latter (T-1, 8, L, C)).

    The first latent frame sees pixel frame 0's whole window. Latent t >= 1 covers pixel frames
    4t-3 .. 4t; it takes offsets {-2,-1,0} of its first frame, offset 0 of the two middle frames and
    offsets {0,+1,+2} of its last frame: 8 vectors (SVI_SPEC 1.7).
    """
    frames, width = window.shape[:2]
    if (frames - 1) % vae_stride:
        raise ValueError(f"a clip needs {vae_stride}n+1 frames, got {frames}")
    if width % 2 == 0:
        raise ValueError(f"window width must be odd, got {width}")
    mid = width // 2
    first = window[0:1]  # (1, 5, L, C)
    groups = window[1:].reshape(-1, vae_stride, *window.shape[1:])  # (T-1, 4, 5, L, C)
    latter = torch.cat([
        groups[:, 0, :mid + 1],  # (T-1, 3, L, C) offsets -2, -1, 0 of the first frame
        groups[:, 1:-1, mid],  # (T-1, 2, L, C) offset 0 of the middle frames
        groups[:, -1, mid:],  # (T-1, 3, L, C) offsets 0, +1, +2 of the last frame
    ], dim=1)  # (T-1, 8, L, C)
    return first, latter


def clip_audio_embedding(tracks: Wav2VecTrack | Mapping[str, Wav2VecTrack], pieces: Sequence,
                         frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(first (1, 1, 5, L, C), latter (1, T-1, 8, L, C)): one clip's input to `AudioProjModel`."""
    window, _ = clip_window(tracks, pieces, frames)
    first, latter = split_window(window)
    return first[None], latter[None]


def _track_for(tracks, piece):
    return track_for(tracks, piece, AudioError, "wav2vec")
