"""Assemble a ready Renderer for a ModelSpec: components, the variant's LoRA, user LoRAs."""

from __future__ import annotations

from pathlib import Path

import torch

from .lora import LoraFile, load_loras
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
    loras = [(p, 1.0, spec.lora_below_sigma)] if (p := find_variant_lora(spec)) is not None else []
    loras += [(path, scale, None) for path, scale in spec.extra_loras]
    files, lora_steps = load_loras(components.transformer, loras)
    audio, pose = build_conditioners(spec, components, files)
    return Renderer(components, spec, audio=audio, pose=pose, lora_steps=lora_steps), files


def build_conditioners(spec: ModelSpec, components, lora_files: list[LoraFile]):
    """The talk variant's audio adapter and the dance variant's pose encoder, attached to the DiT."""
    from .conditioning.runtime import AudioConditioner, PoseConditioner, load_audio_adapter, load_pose_encoder

    folder, audio, pose = components.folder, None, None
    if "audio" in spec.needs:
        wav2vec = None
        if spec.adapters == "folder":
            adapter = load_audio_adapter(folder / "audio_adapter")
        else:  # the release layout: MultiTalk weights beside the DiT, wav2vec2 in its own folder
            from safetensors.torch import load_file

            from .conditioning.audio_adapter import AudioAdapter
            from .conditioning.wav2vec import load_wav2vec

            state = load_file(_find(spec, "multitalk.safetensors"))
            wav2vec = load_wav2vec(_find(spec, "chinese-wav2vec2-base"), components.device)
            adapter = AudioAdapter(multitalk_config(state, components.transformer, wav2vec.model.config))
            try:
                adapter.load_multitalk(state)
            except ValueError as e:
                raise MissingWeightsError(folder, [f"multitalk.safetensors ({e})"]) from None
        trained = {k: v for lf in lora_files for k, v in lf.extras.items()
                   if k.startswith("audio_proj.") or ".audio_cross_attn." in k or ".norm_x." in k}
        if trained:  # a fine-tuned talk LoRA carries its audio adapter: it replaces the base one
            adapter.load_multitalk(trained)
        audio = AudioConditioner(adapter, components.transformer, spec.fps, wav2vec)
    if "pose" in spec.needs:
        if spec.adapters == "folder":
            encoder = load_pose_encoder(folder / "pose_encoder")
            trained = {k: v for lf in lora_files for k, v in lf.extras.items() if k.startswith("dwpose_embedding.")}
            if trained:  # a fine-tuned dance LoRA carries its pose encoder
                encoder.load_dwpose(trained)
        else:  # svi-dance ships dwpose_embedding.* inside its LoRA file
            from .conditioning.pose_encoder import PoseEncoder

            extras = {k: v for lf in lora_files for k, v in lf.extras.items()}
            # the token grid decides where the encoder lands (svi-dance's own: 16 px); the weights'
            # shapes do not depend on it, so one file serves either grid
            encoder = PoseEncoder(dim=components.transformer.config.num_attention_heads
                                  * components.transformer.config.attention_head_dim,
                                  token_px=components.token_px)
            try:
                encoder.load_dwpose(extras)
            except ValueError as e:
                raise MissingWeightsError(folder, [f"dwpose_embedding.* in {spec.lora_file} ({e})"]) from None
        pose = PoseConditioner(encoder, components.transformer, spec.fps)
    return audio, pose


def multitalk_config(state: dict, transformer, wav2vec_config):
    """The audio adapter's shape: widths from the DiT and wav2vec2, token layout from the file itself
    (so scaled-down checkpoints in the MultiTalk layout load as well as the 14B one)."""
    from .conditioning.audio_adapter import AudioAdapterConfig

    def shape(suffix: str):
        for k, v in state.items():
            if k.endswith(suffix):
                return tuple(v.shape)
        raise MissingWeightsError(Path("multitalk.safetensors"), [f"*{suffix}"])

    token_dim = shape("audio_proj.norm.weight")[0]
    tc = transformer.config
    return AudioAdapterConfig(
        dim=tc.num_attention_heads * tc.attention_head_dim, num_heads=tc.num_attention_heads,
        num_layers=tc.num_layers, audio_layers=wav2vec_config.num_hidden_layers,
        audio_dim=wav2vec_config.hidden_size, intermediate_dim=shape("audio_proj.proj2.weight")[0],
        context_tokens=shape("audio_proj.proj3.weight")[0] // token_dim, token_dim=token_dim)


def _find(spec: ModelSpec, name: str) -> Path:
    dirs = [model_folder(spec), *lora_search_dirs(spec)]
    for d in dirs:
        if (d / name).exists():
            return d / name
    raise MissingWeightsError(dirs[0], [f"{name} (looked in {', '.join(map(str, dict.fromkeys(dirs)))})"])


def weights_report() -> list[dict]:
    """Per preset and variant: where weights are looked for and what is missing (for `info` and the UI)."""
    from .presets import resolve_spec

    rows = []
    for preset in PRESETS.values():
        folder = model_folder(preset)
        missing = missing_files(folder)
        for v in preset.variants.values():
            spec = resolve_spec(preset.name, v.name)
            lora = "-"
            if v.lora_file:
                found = [d / v.lora_file for d in lora_search_dirs(spec) if (d / v.lora_file).is_file()]
                lora = str(found[0]) if found else f"missing {v.lora_file}"
            extra = []
            wanted = {"audio": ("audio_adapter",) if preset.adapters == "folder"
                      else ("multitalk.safetensors", "chinese-wav2vec2-base"),
                      "pose": ("pose_encoder",) if preset.adapters == "folder" else ()}
            for need in v.needs:
                for name in wanted[need]:
                    if not any((d / name).exists() for d in [folder, *lora_search_dirs(spec)]):
                        extra.append(name)
            rows.append({"preset": preset.name, "variant": v.name, "folder": str(folder),
                         "base": "ok" if not missing else f"missing {len(missing)}: {', '.join(missing[:4])}",
                         "lora": lora, "extra_missing": extra,
                         "ready": not missing and not lora.startswith("missing") and not extra})
    return rows
