"""Load the Wan I2V components from a local diffusers-format folder and keep them resident.

Folder layout (what `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers` ships and what svi.tiny writes)::

    transformer/   config.json + diffusion_pytorch_model*.safetensors   WanTransformer3DModel
    vae/           config.json + diffusion_pytorch_model*.safetensors   AutoencoderKLWan
    text_encoder/  config.json + model*.safetensors                     UMT5EncoderModel
    tokenizer/     tokenizer.json (or spiece.model) + tokenizer_config.json
    image_encoder/ config.json + model*.safetensors                     CLIPVisionModel

Nothing is ever downloaded: a missing or partial folder raises `MissingWeightsError` listing every
missing file. Precision is decided once here (SVI_SPEC 6.1.4): the DiT and text encoder in the
preset dtype, the VAE and CLIP in fp32, never flipped afterwards.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .presets import ModelSpec, model_folder

COMPONENTS = {
    # subfolder: (config file, weight-file stem)
    "transformer": ("config.json", "diffusion_pytorch_model"),
    "vae": ("config.json", "diffusion_pytorch_model"),
    "text_encoder": ("config.json", "model"),
    "image_encoder": ("config.json", "model"),
}
# CLIP normalisation constants (SVI_SPEC 1.4); the image encoder config carries its input size.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MissingWeightsError(FileNotFoundError):
    def __init__(self, folder: Path, missing: list[str]):
        self.folder, self.missing = folder, missing
        super().__init__(
            f"model weights incomplete in {folder}: missing " + ", ".join(missing)
            + ". Put a diffusers-format Wan I2V folder there (or set SVI_WEIGHTS_DIR); nothing is downloaded."
        )


def missing_files(folder: Path) -> list[str]:
    """Relative paths of the files a complete model folder lacks (weights shards included)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} (folder)"]
    missing = []
    for sub, (config, stem) in COMPONENTS.items():
        d = folder / sub
        if not (d / config).is_file():
            missing.append(f"{sub}/{config}")
        index = d / f"{stem}.safetensors.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError):
                missing.append(f"{sub}/{index.name} (unreadable index)")
                continue
            missing += [f"{sub}/{s}" for s in shards if not (d / s).is_file()]
        elif not (d / f"{stem}.safetensors").is_file():
            missing.append(f"{sub}/{stem}.safetensors")
    tok = folder / "tokenizer"
    if not any((tok / f).is_file() for f in ("tokenizer.json", "spiece.model")):
        missing.append("tokenizer/tokenizer.json")
    return missing


# The DiT config key that says what it outputs (svi.scheduler.PREDICTIONS); diffusers keeps
# underscore keys through save / load / from_config and passes none of them to __init__.
PREDICTION_KEY = "_svi_prediction"


def prediction_type(transformer: torch.nn.Module) -> str:
    """"flow" (the velocity: Wan, and any DiT whose config does not say) or "sample" (x0)."""
    return transformer.config.get(PREDICTION_KEY, "flow")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def vae_scale_spatial(vae_config) -> int:
    """Pixels per latent cell side of an AutoencoderKLWan config: one halving per stage after the first."""
    return 2 ** (len(vae_config["dim_mult"]) - 1)


def token_px(vae_config, transformer_config) -> int:
    """Pixels per DiT token side: the VAE's spatial factor x the patch (16 for Wan 2.1: 8 x 2; 8 for
    storyworld-tiny's 4x VAE under a 2x2 patch). Where pose features must land (the pose encoder)."""
    return vae_scale_spatial(vae_config) * int(transformer_config["patch_size"][-1])


@dataclass
class WanComponents:
    """The resident models of one preset, on one device, in their fixed dtypes."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    image_encoder: torch.nn.Module
    device: torch.device
    dtype: torch.dtype  # DiT compute dtype
    folder: Path

    @property
    def clip_size(self) -> int:
        return int(self.image_encoder.config.image_size)

    @property
    def vae_scale_spatial(self) -> int:
        return vae_scale_spatial(self.vae.config)

    @property
    def vae_scale_temporal(self) -> int:
        return 2 ** sum(bool(x) for x in self.vae.config.temperal_downsample)

    @property
    def token_px(self) -> int:
        return token_px(self.vae.config, self.transformer.config)

    @property
    def prediction(self) -> str:
        return prediction_type(self.transformer)

    def latents_mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, device=self.device).view(1, cfg.z_dim, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=self.device).view(1, cfg.z_dim, 1, 1, 1)
        return mean, std


def load_components(spec: ModelSpec, device: torch.device | str | None = None,
                    folder: str | os.PathLike | None = None) -> WanComponents:
    """Load the five components of `spec`'s model from its local folder (or `folder`)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, CLIPVisionModel, UMT5EncoderModel

    folder = Path(folder) if folder is not None else model_folder(spec)
    missing = missing_files(folder)
    if missing:
        raise MissingWeightsError(folder, missing)
    device = torch.device(device) if device is not None else default_device()
    dtype = getattr(torch, spec.dtype)
    if device.type == "cpu" and dtype == torch.bfloat16:
        dtype = torch.float32  # bf16 matmuls are slow on most CPUs; only the tiny model runs here anyway
    common = dict(local_files_only=True)
    transformer = WanTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=dtype, **common)
    vae = AutoencoderKLWan.from_pretrained(folder / "vae", torch_dtype=torch.float32, **common)
    text_encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype, **common)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", **common)
    image_encoder = CLIPVisionModel.from_pretrained(folder / "image_encoder", dtype=torch.float32, **common)
    for m in (transformer, vae, text_encoder, image_encoder):
        m.to(device).eval().requires_grad_(False)
    return WanComponents(transformer, vae, text_encoder, tokenizer, image_encoder, device, dtype, folder)


def use_onednn_conv3d(module: torch.nn.Module) -> int:
    """Route the CPU 3D convolutions of `module` through oneDNN; returns how many were switched.

    PyTorch's heuristic sends batch-1 Conv3d with small channel*time*height products to the native
    `slow_conv3d` (im2col, barely threaded), which is 5-10x slower than oneDNN at the Wan VAE's
    shapes on this CPU and made the VAE 90% of a tiny-model clip. Handing the input over as an
    oneDNN tensor selects the fast kernel; the maths is the same fp32 convolution. CUDA is untouched.
    """
    import types

    def conv_forward(self, x, weight, bias):
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad or torch.is_grad_enabled():
            return torch.nn.Conv3d._conv_forward(self, x, weight, bias)
        if self.padding_mode != "zeros":
            return torch.nn.Conv3d._conv_forward(self, x, weight, bias)
        out = torch.nn.functional.conv3d(x.contiguous().to_mkldnn(), weight, bias, self.stride, self.padding,
                                         self.dilation, self.groups)
        return out.to_dense()

    n = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Conv3d):
            m._conv_forward = types.MethodType(conv_forward, m)
            n += 1
    return n
