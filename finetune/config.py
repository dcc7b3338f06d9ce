"""One typed configuration for an error-recycling fine-tuning run (SVI_SPEC 3.1, 3.8).

`TrainConfig` nests five frozen sections: `model`, `data`, `lora`, `train` and `recycling` (the
latter is `finetune.recycling.RecyclingConfig`). Every knob carries its help text and the value the
official SVI scripts use, so `--help` and the saved run config explain themselves. Precedence:
dataclass defaults < config file (YAML or JSON) < command-line flags.

Defaults are the official ones (Wan 2.1 14B, rank 128, lr 1e-4, ...) except where the official
value needs the 14B model: `preset` defaults to the bundled `storyworld-tiny`, so a bare command
trains something on a laptop. `finetune/configs/*.yaml` hold ready-made runs (tiny CPU run and the
four official variants).
"""

from __future__ import annotations

import json
import os
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .recycling import RecyclingConfig

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def storyworld_recipe(variant: str | None) -> Path:
    """The bundled model's recipe for a variant trained on storyworld: talk and dance have their own
    (audio adapter with the mouth-weighted loss; pose encoder), the rest use tiny.yaml."""
    own = CONFIGS_DIR / f"tiny-{variant}.yaml"
    return own if variant in ("talk", "dance") and own.is_file() else CONFIGS_DIR / "tiny.yaml"

DATA_KINDS = ("svi", "talk", "dance", "storyworld")
PRECISIONS = ("no", "bf16", "fp16")
REF_SOURCES = ("clip", "video")
LORA_TARGETS_SVI = "q,k,v,o,ffn.0,ffn.2"


class ConfigError(ValueError):
    """A configuration value or file the user must fix; the message names the key."""


def knob(default: Any, help: str, svi: str | None = None, choices: tuple | None = None) -> Any:
    """A config field with its help text and the official SVI value (None: SVI has no such knob)."""
    meta = {"help": help, "svi": svi, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    preset: str = knob("storyworld-tiny", "model preset to fine-tune (svi.presets)", svi="wan2.1-i2v-14b-480p")
    variant: str | None = knob(None, "preset variant whose motion frames, padding and caption the data follow; "
                                     "default: the preset's default variant", svi="shot/film/talk/dance")
    model_dir: str | None = knob(None, "diffusers-format model folder overriding the preset's (nothing is downloaded)")
    mixed_precision: str | None = knob(None, "mixed precision of the DiT forward: no, bf16 or fp16; default: the "
                                             "accelerate launch config's, else no", svi="bf16",
                                       choices=PRECISIONS + (None,))
    gradient_checkpointing: bool = knob(False, "recompute DiT block activations in the backward pass "
                                               "(saves memory, costs time)", svi="on (plus CPU offload)")

    def check(self) -> None:
        if self.mixed_precision not in PRECISIONS + (None,):
            raise ConfigError(f"model.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")


@dataclass(frozen=True)
class DataConfig:
    kind: str = knob("svi", "dataset layout: svi (category folders + csv), talk (video + wav), dance "
                            "(video + pose json) or storyworld (generated on the fly)", choices=DATA_KINDS)
    root: str | None = knob(None, "dataset folder (not needed for kind=storyworld)", svi="data/toy_train/...")
    frames: int | None = knob(None, "frames per training clip, 4n+1; default: the preset's clip length", svi="81")
    height: int | None = knob(None, "training height in px (multiple of 16); default: the preset's short side",
                              svi="480 (dance 832)")
    width: int | None = knob(None, "training width in px (multiple of 16); default: the preset's long side",
                             svi="832 (talk 640, dance 480)")
    motion_frames: int | None = knob(None, "condition frames m taken from the clip start; default: the variant's",
                                     svi="shot 1, film 5")
    p_motion: float = knob(0.9, "when m > 1: probability of conditioning on m frames instead of 1",
                           svi="0.9 (p_motion_threshold)")
    padding: str | None = knob(None, "padding of the condition video after the m frames: ref (a random frame) or "
                                     "zeros; default: the variant's", svi="shot/talk/dance ref (-1), film zeros (0)",
                               choices=("ref", "zeros", None))
    ref_from: str = knob("clip", "where the random padding frame comes from: clip (a frame of the training clip, as "
                                 "SVI) or video (any frame of the video, DevLog tip 5)", svi="clip",
                         choices=REF_SOURCES)
    caption: str | None = knob(None, "fixed caption for every clip; default: csv captions (svi), the variant's "
                                     "fixed prompt or 'the person is speaking/dancing' (talk/dance)")
    views_per_video: int = knob(4, "augmented views (crop, window, padding frame) drawn per video and encoded once "
                                   "into the cache; epoch e uses view e mod V; 0 re-draws and re-encodes every step "
                                   "like the official code", svi="0 (no cache)")
    cache_dir: str | None = knob(None, "encoding cache folder (latents, text, CLIP, y); default: OUTPUT/cache")
    memory_cache_items: int = knob(256, "encoded samples also kept in RAM (LRU) besides the disk cache")
    storyworld_videos: int = knob(64, "kind=storyworld: number of generated videos")
    storyworld_frames: int = knob(33, "kind=storyworld: frames per generated video (>= frames)")
    storyworld_seed: int = knob(0, "kind=storyworld: dataset seed")
    audio_drop_prob: float = knob(0.1, "talk: probability of zeroing the audio features of a step", svi="0.1")
    pose_drop_prob: float = knob(0.145, "dance: probability of zeroing the pose maps of a step",
                                 svi="1-(0.95*0.9)")
    roundtrip_prob: float = knob(0.0, "probability that a step's condition frames come as a chain hands them on: "
                                      "decoded through the VAE's temporal path and re-encoded (an error the DiT's "
                                      "banks never hold; worth it when the VAE's round trip is lossy); 0: off")
    y_drop_prob: float = knob(0.0, "probability of zeroing y and the CLIP feature of a step (no y error then)",
                              svi="dance 0.1, others 0")

    def check(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ConfigError(f"data.kind must be one of {DATA_KINDS}, got {self.kind!r}")
        if self.kind != "storyworld" and not self.root:
            raise ConfigError(f"data.root (--data-root) is required for data.kind={self.kind!r}")
        if self.frames is not None and (self.frames < 1 or (self.frames - 1) % 4):
            raise ConfigError(f"data.frames must be 4n+1 (the Wan VAE compresses time by 4), got {self.frames}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (v < 16 or v % 16):
                raise ConfigError(f"data.{name} must be a positive multiple of 16 (VAE x8, patch x2), got {v}")
        if self.motion_frames is not None and self.motion_frames < 1:
            raise ConfigError(f"data.motion_frames must be >= 1, got {self.motion_frames}")
        if self.padding not in ("ref", "zeros", None):
            raise ConfigError(f"data.padding must be 'ref' or 'zeros', got {self.padding!r}")
        if self.ref_from not in REF_SOURCES:
            raise ConfigError(f"data.ref_from must be one of {REF_SOURCES}, got {self.ref_from!r}")
        for name in ("p_motion", "audio_drop_prob", "pose_drop_prob", "y_drop_prob", "roundtrip_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1], got {v}")
        if self.views_per_video < 0:
            raise ConfigError(f"data.views_per_video must be >= 0, got {self.views_per_video}")
        if self.storyworld_videos < 1:
            raise ConfigError(f"data.storyworld_videos must be >= 1, got {self.storyworld_videos}")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = knob(128, "LoRA rank r", svi="128")
    alpha: float = knob(128.0, "LoRA alpha; the update is scaled by alpha / r", svi="128")
    targets: str = knob(LORA_TARGETS_SVI, "comma-separated Wan module names to adapt in every block (q, k, v, o "
                                          "of self- and cross-attention, ffn.0, ffn.2; or qualified, e.g. "
                                          "self_attn.q)", svi=LORA_TARGETS_SVI)
    export_dtype: str = knob("float32", "dtype of the exported lora.safetensors", choices=("float32", "bfloat16",
                                                                                          "float16"))
    train_audio_adapter: bool | None = knob(None, "train the audio adapter (talk); default: on for the tiny "
                                                  "preset (its adapter starts untrained), off for Wan (MultiTalk "
                                                  "weights stay frozen, as SVI-Talk)", svi="off")
    train_pose_encoder: bool = knob(True, "train the pose encoder (dance) with the LoRA", svi="on")
    adapter_weights: str | None = knob(None, "safetensors file with initial audio adapter / dwpose_embedding "
                                             "weights (multitalk.safetensors, UniAnimate); none: random init",
                                       svi="multitalk.safetensors / UniAnimate-Wan2.1-14B-Lora-12000.ckpt")

    def check(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive, got {self.alpha}")
        if not [t for t in self.targets.split(",") if t.strip()]:
            raise ConfigError("lora.targets names no module")


@dataclass(frozen=True)
class TrainSettings:
    output_dir: str = knob("runs/finetune", "run folder: config.json, metrics.jsonl, checkpoints/, lora.safetensors",
                           svi="./experiments/train/svi-<variant>")
    max_steps: int | None = knob(None, "optimizer steps to run; default: epochs x steps per epoch")
    epochs: int = knob(10, "passes over the videos when max_steps is not set", svi="10 (dance 20)")
    batch_size: int = knob(1, "clips per process per step (global batch = batch_size x processes)", svi="1")
    lr: float = knob(1e-4, "AdamW learning rate, constant (no schedule, no warm-up)", svi="1e-4")
    weight_decay: float = knob(0.01, "AdamW weight decay", svi="0.01")
    max_grad_norm: float = knob(1.0, "gradient clipping by global norm (0: off)", svi="1.0")
    seed: int = knob(0, "seed of data order, augmentation, timesteps, noise and injections")
    mouth_weight: float = knob(0.0, "talk: extra loss weight on the latent pixels around the speaker's mouth "
                               "(1 + mouth_weight at its centre; needs keypoints: storyworld or a pose file); 0: off")
    condition_frame_loss: bool = knob(True, "count the latent frames the condition supplies in the loss; off: only "
                                            "the frames the model must invent (their targets are the true latents, "
                                            "while y's copy carries bank errors). storyworld-tiny: off kept more colour "
                                            "but held a chain less well", svi="on (every frame)")
    max_sigma: float | None = knob(None, "train only on noise levels with sigma below this: for a LoRA that acts "
                                         "only on those steps at inference (a variant's lora_below_sigma); "
                                         "default: every level", svi="every level")
    error_recycling: bool = knob(True, "error-recycling fine-tuning; off: a plain LoRA fine-tune on the same data",
                                 svi="on (--use_error_recycling)")
    overlap_recycling: bool = knob(True, "insert errors into the banks on a worker thread while the backward pass "
                                         "runs (after the warm-up; same results as in series)", svi="off (serial)")
    checkpoint_every: int = knob(100, "save a checkpoint every N steps (0: only at the end)", svi="100")
    keep_checkpoints: int = knob(3, "checkpoints kept (oldest deleted first; 0 keeps all)")
    log_every: int = knob(1, "write a metrics line every N steps")
    eval_every: int = knob(50, "fixed-probe loss (same clip, timesteps and noise every time) every N steps; 0: off")
    resume: str | None = knob(None, "resume from a checkpoint folder, or 'latest' in output_dir")
    device: str | None = knob(None, "force 'cpu' (else accelerate picks the GPU of this process)")
    cpu_threads: int | None = knob(None, "torch intra-op threads when training on the CPU; 1 suits tiny models on a "
                                         "busy machine (thread barriers cost more than the small ops they split)")
    bank_device: str = knob("cpu", "where the error banks live: cpu (host RAM, as SVI) or accelerator (GPU memory, "
                                   "no host copies)", svi="cpu", choices=("cpu", "accelerator"))
    progress: bool = knob(True, "tqdm progress bar on the main process")

    def check(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1, got {self.max_steps}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"train.lr must be > 0, weight_decay and max_grad_norm >= 0 "
                              f"(got {self.lr}, {self.weight_decay}, {self.max_grad_norm})")
        if not self.mouth_weight >= 0:  # also rejects NaN
            raise ConfigError(f"train.mouth_weight must be >= 0, got {self.mouth_weight}")
        for name in ("checkpoint_every", "keep_checkpoints", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"train.cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.max_sigma is not None and not 0.0 < self.max_sigma <= 1.0:
            raise ConfigError(f"train.max_sigma must be in (0, 1], got {self.max_sigma}")
        if self.log_every < 1:
            raise ConfigError(f"train.log_every must be >= 1, got {self.log_every}")
        if self.bank_device not in ("cpu", "accelerator"):
            raise ConfigError(f"train.bank_device must be 'cpu' or 'accelerator', got {self.bank_device!r}")
        if self.device not in (None, "cpu"):
            raise ConfigError(f"train.device may only force 'cpu' (GPUs come from accelerate), got {self.device!r}")


# Help for RecyclingConfig, whose defaults are the released scripts' (finetune/recycling.py).
RECYCLING_HELP: dict[str, tuple[str, str | None]] = {
    "noise_prob": ("probability of adding a B_noise error to the noise", None),
    "y_prob": ("probability of adding a B_x0 error to the condition frames y", None),
    "latent_prob": ("probability of adding a B_x0 error to the clean latent", None),
    "clean_prob": ("probability of a clean step (no injection at all)", "0.2 (film 0.5)"),
    "clean_buffer_update_prob": ("probability that a clean step's errors enter the banks", None),
    "y_error_num": ("latent frames of y that receive an error", "3 (dance 1)"),
    "use_last_y_error": ("take the bank error's last y_error_num frames instead of a random window", None),
    "y_error_sample_from_all_grids": ("draw y errors from every grid (else the step's grid)", None),
    "error_modulate_factor": ("injected errors scaled by U(1-f, 1+f)", None),
    "num_grids": ("bank grids: the nearest of this many inference timesteps", None),
    "buffer_k": ("errors kept per grid (K); banks take 2 x grids x K x latent bytes", "500 (error_buffer_k)"),
    "strategy": ("replacement once a grid is full: random, fifo or l2 (replace the most similar)", "l2 (l2_batch)"),
    "bank_dtype": ("storage precision of the banks", "bf16 (model output dtype)"),
    "warmup_iter": ("first steps whose errors are gathered from all processes", "50 (buffer_warmup_iter)"),
}

SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "lora": LoraSettings, "train": TrainSettings,
                             "recycling": RecyclingConfig}
FLAG_PREFIX = {"model": "", "data": "", "lora": "lora-", "train": "", "recycling": ""}
# Data knobs whose plain names would read ambiguously on the command line.
FLAG_RENAME = {("data", "root"): "data-root", ("data", "kind"): "data-kind", ("data", "caption"): "caption",
               ("train", "seed"): "seed", ("train", "device"): "device"}


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    recycling: RecyclingConfig = field(default_factory=RecyclingConfig)

    def check(self) -> "TrainConfig":
        for section in (self.model, self.data, self.lora, self.train):
            section.check()
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: "TrainConfig | None" = None) -> "TrainConfig":
        """Sections from a nested dict; unknown sections or keys are errors that name them."""
        base = base or cls()
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of sections {list(SECTIONS)}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; known: {list(SECTIONS)}")
        updates = {}
        for name, values in data.items():
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
            updates[name] = _replace_section(getattr(base, name), name, values)
        try:
            return replace(base, **updates)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


def _replace_section(section: Any, name: str, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(section)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in config section {name!r}; known: {sorted(known)}")
    hints = typing.get_type_hints(type(section))
    clean = {k: coerce(v, hints[k], f"{name}.{k}") for k, v in values.items()}
    try:
        return replace(section, **clean)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config section {name!r}: {e}") from None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert a file or flag value to the field's type (int, float, bool, str, optional)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{where} may not be empty")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def load_config_file(path: str | os.PathLike, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from a YAML (.yaml/.yml) or JSON file over `base` (default: the defaults)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - yaml and json raise different types; both mean a bad file
        raise ConfigError(f"{path}: not a valid {path.suffix.lstrip('.') or 'config'} file ({e})") from None
    try:
        return TrainConfig.from_dict(data, base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def knobs() -> list[tuple[str, str, Any, str, str | None, tuple | None, Any]]:
    """(section, field, default, help, svi default, choices, type hint) for every knob, in order."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if cls is RecyclingConfig:
                help_text, svi = RECYCLING_HELP.get(f.name, (f.name.replace("_", " "), None))
                svi = svi if svi is not None else str(default)  # RecyclingConfig defaults are SVI's
                choices = ("random", "fifo", "l2") if f.name == "strategy" else None
            else:
                help_text, svi, choices = f.metadata["help"], f.metadata["svi"], f.metadata["choices"]
            out.append((section, f.name, default, help_text, svi, choices, hints[f.name]))
    return out


def flag_name(section: str, name: str) -> str:
    return "--" + FLAG_RENAME.get((section, name), FLAG_PREFIX[section] + name.replace("_", "-"))
