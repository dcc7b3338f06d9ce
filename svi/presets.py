"""Named model configurations and the official SVI defaults they carry (SVI_SPEC 2.3, 2.4, 2.10).

A `Preset` names a model (where its weights live, clip length, sampler settings); a `Variant` is
one SVI LoRA on it with its own conditioning defaults. `resolve_spec` flattens the two into the
`ModelSpec` that `svi.plan` and the renderer consume. Pure data: no torch here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

# The negative prompt of every official script and the demo (SVI_SPEC 2.3).
WAN_NEGATIVE_PROMPT = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, "
    "static, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, "
    "extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, "
    "fused fingers, still picture, messy background, three legs, many people in the background, "
    "walking backwards"
)

PADDING_MODES = ("zeros", "ref")  # official ref_pad_num 0 and -1 (SVI_SPEC 1.6)


@dataclass(frozen=True)
class Variant:
    name: str
    lora_file: str | None  # file name looked up in the LoRA folders; None: base model only
    motion_frames: int  # m: frames carried into the next clip; keep it at the training value (FAQ)
    padding: str  # "zeros" lets scenes change (film/tom); "ref" anchors to the start image
    text_cfg: float
    audio_cfg: float | None = None  # talk only: three-pass MultiTalk guidance (SVI_SPEC 2.6)
    fps: int = 24
    max_long: int = 832  # bounds on the long and short output side (both, unlike calculate_dimensions)
    max_short: int = 480
    fixed_prompt: str | None = None  # talk/dance were trained on one caption
    needs: tuple[str, ...] = ()  # "audio" / "pose": conditions the variant requires
    description: str = ""
    # The variant's LoRA acts only on the denoising steps with sigma below this; None: on every step.
    # Layout and colour are settled in the high-noise steps: a LoRA that pulls objects off their colour
    # costs less there, but also corrects less (storyworld-tiny: MODEL_CARD.md, session 18).
    lora_below_sigma: float | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    weights_dir: str  # folder name under SVI_WEIGHTS_DIR, or an absolute path (bundled models)
    frames_per_clip: int  # F, 4n+1 for the Wan VAE's 4x temporal compression
    steps: int
    shift: float  # flow-matching sigma shift
    text_len: int  # tokens the text encoder pads/truncates to
    negative_prompt: str
    variants: dict[str, Variant]
    default_variant: str
    dtype: str = "float32"  # DiT compute dtype; the VAE always runs in fp32 (SVI_SPEC 6.1.4, DevLog tip 4)
    extra_files: tuple[str, ...] = ()  # relative paths some variants need beside the base folder
    # Where the talk/dance adapters come from: "folder" = audio_adapter/ and pose_encoder/ subfolders
    # of the model (tiny); "release" = multitalk.safetensors + wav2vec2 folder, dwpose in the dance LoRA.
    adapters: str = "folder"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the planner and the renderer need to know about the model, flattened."""

    preset: str
    variant: str
    weights_dir: str
    frames_per_clip: int
    motion_frames: int
    padding: str
    steps: int
    shift: float
    text_cfg: float
    audio_cfg: float | None
    fps: int
    max_long: int
    max_short: int
    text_len: int
    negative_prompt: str
    dtype: str
    lora_file: str | None
    fixed_prompt: str | None = None
    needs: tuple[str, ...] = ()
    extra_loras: tuple[tuple[str, float], ...] = field(default=())  # user LoRAs (path, scale)
    adapters: str = "folder"
    lora_below_sigma: float | None = None  # the variant LoRA's step window (Variant.lora_below_sigma)

    @property
    def new_frames_per_clip(self) -> int:
        return self.frames_per_clip - self.motion_frames

    @property
    def model_id(self) -> str:
        return f"{self.preset}/{self.variant}"

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return output_size(width, height, self.max_long, self.max_short)


def output_size(width: int, height: int, max_long: int, max_short: int, multiple: int = 16) -> tuple[int, int]:
    """Output (W, H) for a start image: aspect kept, long side <= max_long and short side <=
    max_short, both floored to `multiple` (VAE x8, patch x2). Never upscales.

    The official `calculate_dimensions` bounds only the width, so a tall image explodes (SVI_SPEC 6.2)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    long_side, short_side = max(width, height), min(width, height)
    scale = min(1.0, max_long / long_side, max_short / short_side)
    w = max(multiple, int(math.floor(width * scale / multiple)) * multiple)
    h = max(multiple, int(math.floor(height * scale / multiple)) * multiple)
    return w, h


_WAN_DEFAULTS = dict(max_long=832, max_short=480)

PRESETS: dict[str, Preset] = {
    "storyworld-tiny": Preset(
        name="storyworld-tiny",
        description="Bundled tiny Wan-architecture model for the CPU, trained on storyworld (MODEL_CARD.md).",
        weights_dir=str(ASSETS_DIR / "models" / "storyworld-tiny"),
        frames_per_clip=17,  # 5 latent frames: 2 s of new video per clip at 8 fps
        steps=12,
        shift=5.0,
        text_len=32,
        negative_prompt="blurry, noisy, distorted",
        # Text guidance 1 (one forward per step) for shot / film / base: since round 4 the DiT predicts
        # x0, and guidance extrapolates it past what it can draw, blurring the objects (round 4,
        # bench/conditioning.py colour 26.6% at 1, 17.7% at 2.5, 8.9% at 5; bench/drift.py SVI/base
        # 0.38 at 1, 0.88 at 5; MODEL_CARD.md). Dance keeps round 3's guidance. Talk: audio guidance 2
        # for the mouth-weighted talk LoRA (round 4's, lip sync over 12 talking clips: 0.55 at 2, 0.53
        # at 3, 0.36 at 5; round 5's: 0.60 at 2).
        # The shot / film LoRA acts on every step. On the 6 low-noise steps of 12 only (lora_below_sigma
        # 0.85; benches: --lora-below-sigma) it keeps more colour (48 captions: 73.0% against 67.3%; the
        # base 78.5%) but loses much of the drift correction (50 clips, one prompt: 0.073 against 0.061
        # over the whole chain, the base 0.127; prompt stream, last 3 clips: 0.114 against 0.075, the
        # base 0.163), and holding a long chain is what SVI is for (MODEL_CARD.md, session 18).
        variants={
            "shot": Variant("shot", "svi-lora.safetensors", 1, "ref", 1.0, fps=8, max_long=128, max_short=96,
                            description="SVI LoRA: one scene, anchored to the start image"),
            "film": Variant("film", "svi-lora.safetensors", 5, "zeros", 1.0, fps=8, max_long=128, max_short=96,
                            description="SVI LoRA: scene changes allowed, 5 motion frames"),
            "base": Variant("base", None, 1, "ref", 1.0, fps=8, max_long=128, max_short=96,
                            description="the base I2V model without the SVI LoRA (for comparison)"),
            "talk": Variant("talk", "svi-talk.safetensors", 1, "ref", 2.0, audio_cfg=2.0, fps=8, max_long=128,
                            max_short=96, needs=("audio",),
                            description="mouth follows the audio track (LoRA + audio adapter trained on storyworld)"),
            "dance": Variant("dance", "svi-dance.safetensors", 1, "ref", 2.0, fps=8, max_long=128, max_short=96,
                             needs=("pose",),
                             description="figure follows the skeleton track (LoRA + pose encoder trained on storyworld)"),
        },
        default_variant="shot",
    ),
    "wan2.1-i2v-14b-480p": Preset(
        name="wan2.1-i2v-14b-480p",
        description="Wan 2.1 I2V 14B 480P (diffusers format) with the released SVI LoRAs.",
        weights_dir="Wan2.1-I2V-14B-480P-Diffusers",
        frames_per_clip=81,
        steps=50,
        shift=5.0,
        text_len=512,
        negative_prompt=WAN_NEGATIVE_PROMPT,
        dtype="bfloat16",
        variants={
            "shot": Variant("shot", "svi-shot.safetensors", 1, "ref", 5.0, fps=24, **_WAN_DEFAULTS,
                            description="single scene, consistent subject, one prompt"),
            "film": Variant("film", "svi-film-opt-10212025.safetensors", 5, "zeros", 5.0, fps=24, **_WAN_DEFAULTS,
                            description="prompt stream with scene transitions"),
            "tom": Variant("tom", "svi-tom.safetensors", 1, "zeros", 5.0, fps=24, **_WAN_DEFAULTS,
                           description="cartoon (Tom and Jerry) prompt stream"),
            "talk": Variant("talk", "svi-talk.safetensors", 1, "ref", 2.0, audio_cfg=5.0, fps=25,
                            max_long=640, max_short=480, fixed_prompt="a person is talking", needs=("audio",),
                            description="talking head from an audio track (MultiTalk branch)"),
            "dance": Variant("dance", "svi-dance.safetensors", 1, "ref", 2.0, fps=25, max_long=832, max_short=480,
                             fixed_prompt="the person is dancing", needs=("pose",),
                             description="dance from a skeleton stream (pose encoder)"),
        },
        default_variant="film",
        extra_files=("multitalk.safetensors", "chinese-wav2vec2-base"),
        adapters="release",
    ),
}

DEFAULT_PRESET = "storyworld-tiny"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None


def resolve_spec(preset: str = DEFAULT_PRESET, variant: str | None = None, *, steps: int | None = None,
                 cfg: float | None = None, negative_prompt: str | None = None,
                 extra_loras: tuple[tuple[str, float], ...] = ()) -> ModelSpec:
    p = get_preset(preset)
    vname = variant or p.default_variant
    if vname not in p.variants:
        raise ValueError(f"preset {preset!r} has no variant {vname!r}; known: {', '.join(p.variants)}")
    v = p.variants[vname]
    spec = ModelSpec(
        preset=p.name, variant=v.name, weights_dir=p.weights_dir, frames_per_clip=p.frames_per_clip,
        motion_frames=v.motion_frames, padding=v.padding, steps=p.steps, shift=p.shift, text_cfg=v.text_cfg,
        audio_cfg=v.audio_cfg, fps=v.fps, max_long=v.max_long, max_short=v.max_short, text_len=p.text_len,
        negative_prompt=p.negative_prompt, dtype=p.dtype, lora_file=v.lora_file, fixed_prompt=v.fixed_prompt,
        needs=v.needs, extra_loras=tuple(extra_loras), adapters=p.adapters, lora_below_sigma=v.lora_below_sigma,
    )
    changes = {k: val for k, val in (("steps", steps), ("text_cfg", cfg), ("negative_prompt", negative_prompt))
               if val is not None}
    return replace(spec, **changes) if changes else spec


def weights_root() -> Path:
    """SVI_WEIGHTS_DIR, where real model weights are looked up (default ~/.cache/svi-storyboard/weights)."""
    return Path(os.environ.get("SVI_WEIGHTS_DIR") or Path.home() / ".cache" / "svi-storyboard" / "weights")


def model_folder(spec_or_preset: ModelSpec | Preset) -> Path:
    d = Path(spec_or_preset.weights_dir)
    return d if d.is_absolute() else weights_root() / d


def lora_search_dirs(spec: ModelSpec) -> list[Path]:
    """Where a variant's LoRA file may be: beside the model, or in the official release layout."""
    root = weights_root()
    return [model_folder(spec), root / "Stable-Video-Infinity" / "version-1.0", root / "svi", root]
