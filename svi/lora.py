"""Load the released SVI LoRA files (and our own) into a diffusers WanTransformer3DModel.

The released files come in several key layouts (SVI_SPEC 1.10): the Lightning module's
`pipe.dit.blocks.N....lora_A.default.weight`, with a DeepSpeed `_forward_module.` in front, or
the extract script's bare / `model.` / `module.` keys; others use `diffusion_model.`. diffusers'
Wan converter only recognises `diffusion_model.blocks.N....lora_A.weight` and silently loads
nothing otherwise, so every layout is normalised to that first, and the number of adapted layers
is checked after loading. Non-LoRA tensors (the dance pose encoder `dwpose_embedding.*`) are split
off and returned. Scale: alpha/r per layer where the file records alpha (diffusers folds it into
the weights), times the user's scale; the adapters are then fused so inference costs nothing.

A LoRA may also act on part of the denoising steps only (a `below_sigma` window): then nothing is
fused, since PEFT skips every unmerged adapter of a layer once any is merged, and a LoraSteps
switches adapters on and off as the sampler's sigma crosses each window.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open

# Prefixes written by the official trainers and tools, stripped repeatedly in any order.
KNOWN_PREFIXES = ("_forward_module.", "pipe.dit.", "diffusion_model.", "model.", "module.", "_orig_mod.", "dit.")
_ADAPTER_TOKEN = re.compile(r"\.(lora_[AB]|lora_down|lora_up)\.[^.]+\.weight$")


class LoraError(ValueError):
    pass


@dataclass
class LoraFile:
    path: Path
    lora: dict[str, torch.Tensor]  # Wan-original names: blocks.N.self_attn.q.lora_A.weight
    alphas: dict[str, torch.Tensor]  # blocks.N.self_attn.q.alpha
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # non-LoRA tensors, prefixes stripped
    adapter: str = ""  # the PEFT adapter name it was loaded under (set by apply_loras)

    @property
    def pairs(self) -> int:
        return sum(1 for k in self.lora if ".lora_A." in k or ".lora_down." in k)

    @property
    def rank(self) -> int | None:
        a = next((v for k, v in self.lora.items() if ".lora_A." in k), None)
        return None if a is None else int(a.shape[0])


def normalise_key(key: str) -> str:
    """`_forward_module.pipe.dit.blocks.0.ffn.0.lora_A.default.weight` -> `blocks.0.ffn.0.lora_A.weight`."""
    changed = True
    while changed:
        changed = False
        for p in KNOWN_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    # `.lora_A.default.weight` (PEFT adapter name) -> `.lora_A.weight`
    m = _ADAPTER_TOKEN.search(key)
    if m:
        key = key[: m.start()] + f".{m.group(1)}.weight"
    return key


def read_lora(path: str | os.PathLike) -> LoraFile:
    """Read a LoRA .safetensors file into normalised Wan-original names."""
    path = Path(path)
    if not path.is_file():
        raise LoraError(f"LoRA file not found: {path}")
    lora, alphas, extras = {}, {}, {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for raw in f.keys():
                key = normalise_key(raw)
                if "lora_" in key:
                    lora[key] = f.get_tensor(raw)
                elif key.endswith(".alpha"):
                    alphas[key] = f.get_tensor(raw)
                else:
                    extras[key] = f.get_tensor(raw)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise LoraError(f"{path}: not a readable safetensors file ({e})") from None
    if not lora:
        raise LoraError(f"{path}: no LoRA tensors found (keys must contain 'lora_A'/'lora_B')")
    diffusers_named = any(".attn1." in k or ".attn2." in k for k in lora)
    if not diffusers_named and not all(k.startswith("blocks.") for k in lora):
        odd = sorted(k for k in lora if not k.startswith("blocks."))[:3]
        raise LoraError(f"{path}: unrecognised LoRA key layout, e.g. {odd}")
    return LoraFile(path, lora, alphas, extras)


def _to_diffusers_state_dict(lf: LoraFile) -> dict[str, torch.Tensor]:
    from diffusers import WanImageToVideoPipeline

    if any(".attn1." in k or ".attn2." in k for k in lf.lora):  # already diffusers names
        return {f"transformer.{k}": v for k, v in lf.lora.items()}
    sd = {f"diffusion_model.{k}": v for k, v in {**lf.lora, **lf.alphas}.items()}
    return WanImageToVideoPipeline.lora_state_dict(sd)


def lora_layer_count(transformer: torch.nn.Module, adapter: str) -> int:
    """How many layers of `transformer` carry adapter `adapter` (PEFT tuner layers)."""
    return sum(1 for m in transformer.modules() if hasattr(m, "lora_A") and adapter in getattr(m, "lora_A", {}))


def apply_loras(transformer: torch.nn.Module, loras: list[tuple[str | os.PathLike, float]], *,
                fuse: bool = True) -> list[LoraFile]:
    """Load each (path, scale) as an adapter, check it adapted every layer it names, fuse all
    (fuse=False: leave them as active PEFT adapters, for LoraSteps to switch per step).

    Returns the LoraFiles (their `extras` hold non-LoRA tensors such as `dwpose_embedding.*`)."""
    files, names, scales = [], [], []
    for i, (path, scale) in enumerate(loras):
        lf = read_lora(path)
        name = f"svi_{i}_{re.sub(r'[^A-Za-z0-9_]', '_', Path(path).stem)}"
        sd = _to_diffusers_state_dict(lf)
        try:
            transformer.load_lora_adapter(sd, prefix="transformer", adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as e:
            raise LoraError(f"{path}: does not fit this model ({e})") from None
        got = lora_layer_count(transformer, name)
        if got != lf.pairs:
            raise LoraError(f"{path}: {lf.pairs} LoRA layers in the file but {got} matched the model; "
                            "the key layout or the model architecture does not match")
        lf.adapter = name
        files.append(lf)
        names.append(name)
        scales.append(float(scale))
    if names:
        transformer.set_adapters(names, scales)
        if fuse:
            transformer.fuse_lora(lora_scale=1.0, adapter_names=names)
    return files


@dataclass
class LoraSteps:
    """Adapters that act only on the denoising steps with sigma below their window (None: every step).

    The sampler calls `at(sigma)` before each step; PEFT's active set changes only when a window is
    crossed (twice a clip at most), and adapters switched off cost nothing (not run at scale 0)."""

    transformer: torch.nn.Module = field(repr=False)
    adapters: list[tuple[str, float, float | None]]  # (adapter name, scale, below_sigma)
    _on: tuple[bool, ...] | None = field(default=None, init=False)

    def at(self, sigma: float) -> None:
        on = tuple(below is None or sigma < below for _, _, below in self.adapters)
        if on == self._on:
            return
        self._on = on
        active = [(name, scale) for (name, scale, _), o in zip(self.adapters, on) if o]
        if active:
            self.transformer.enable_lora()
            self.transformer.set_adapters([n for n, _ in active], [s for _, s in active])
        else:
            self.transformer.disable_lora()


def load_loras(transformer: torch.nn.Module, loras: Sequence[tuple[str | os.PathLike, float, float | None]]
               ) -> tuple[list[LoraFile], LoraSteps | None]:
    """(path, scale, below_sigma) LoRAs: all fused when none has a window (no per-step cost), else all
    left unfused with the LoraSteps the sampler drives."""
    windowed = any(below is not None for _, _, below in loras)
    files = apply_loras(transformer, [(path, scale) for path, scale, _ in loras], fuse=not windowed)
    if not windowed:
        return files, None
    return files, LoraSteps(transformer, [(lf.adapter, float(scale), below)
                                          for lf, (_, scale, below) in zip(files, loras)])
