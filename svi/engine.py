"""Assemble a ready Renderer for a ModelSpec: components, the variant's LoRA, user LoRAs."""

from __future__ import annotations

from pathlib import Path

import torch

from .lora import LoraFile, apply_loras
from .models import MissingWeightsError, load_components, missing_files, use_onednn_conv3d
from .presets import PRESETS, ModelSpec, lora_search_dirs, model_folder
from .render import Renderer


def find_variant_lora(spec: ModelSpec) -> Path | None:
    """The variant's released LoRA file, searched in the usual folders; None for base-only variants."""
    if spec.lora_file is None:
        return None
    dirs = lora_search_dirs(spec)
    for d in dirs:
        if (d / spec.lora_file).is_file():
            return d / spec.lora_file
    raise MissingWeightsError(dirs[0], [f"{spec.lora_file} (looked in {', '.join(map(str, dirs))})"])


def build_renderer(spec: ModelSpec, device: torch.device | str | None = None) -> tuple[Renderer, list[LoraFile]]:
    components = load_components(spec, device)
    if components.device.type == "cpu":
        use_onednn_conv3d(components.vae)
    loras = [(p, 1.0)] if (p := find_variant_lora(spec)) is not None else []
    loras += [(path, scale) for path, scale in spec.extra_loras]
    files = apply_loras(components.transformer, loras)
    return Renderer(components, spec), files


def weights_report() -> list[dict]:
    """Per preset and variant: where weights are looked for and what is missing (for `info` and the UI)."""
    rows = []
    for preset in PRESETS.values():
        folder = model_folder(preset)
        missing = missing_files(folder)
        for v in preset.variants.values():
            lora = "-"
            if v.lora_file:
                from .presets import resolve_spec

                spec = resolve_spec(preset.name, v.name)
                found = [d / v.lora_file for d in lora_search_dirs(spec) if (d / v.lora_file).is_file()]
                lora = str(found[0]) if found else f"missing {v.lora_file}"
            rows.append({"preset": preset.name, "variant": v.name, "folder": str(folder),
                         "base": "ok" if not missing else f"missing {len(missing)}: {', '.join(missing[:4])}",
                         "lora": lora, "ready": not missing and not lora.startswith("missing")})
    return rows
