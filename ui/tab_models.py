"""Models tab: presets and variants with the status of their weights, registered LoRAs (upload one
or use a finetune result), the device, and the speeds measured on it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gradio as gr

from svi.presets import PRESETS, weights_root

from .errors import UserError, user_errors
from .loras import registered_loras
from .services import Services

PRESET_HEADERS = ["preset", "variant", "ready", "base weights", "variant LoRA", "clip (F / m / fps)", "steps",
                  "what"]
LORA_HEADERS = ["name", "rank", "layers", "size (MB)", "added", "file"]


@dataclass
class ModelsHandles:
    loader: tuple = ()


def preset_rows() -> list[list]:
    from svi.engine import weights_report

    rows = []
    for r in weights_report():
        p = PRESETS[r["preset"]]
        v = p.variants[r["variant"]]
        rows.append([r["preset"], r["variant"], "yes" if r["ready"] else "no", r["base"],
                     "-" if r["lora"] == "-" else r["lora"], f"{p.frames_per_clip} / {v.motion_frames} / {v.fps}",
                     p.steps, v.description or p.description])
    return rows


def lora_rows(services: Services) -> list[list]:
    from svi.lora import read_lora

    rows = []
    for label, path in registered_loras(services):
        st = os.stat(path)
        try:
            lf = read_lora(path)
            rank, layers = lf.rank, lf.pairs
        except Exception as e:  # noqa: BLE001 - an unreadable file is listed with the reason
            rank, layers = None, f"unreadable: {e}"
        rows.append([label, rank, layers, round(st.st_size / 2**20, 2),
                     datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M"), path])
    return rows


def device_text(services: Services) -> str:
    import torch

    dev = services.device
    if dev.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        what = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        what = f"CPU, {torch.get_num_threads()} threads"
    lines = [f"**Device:** `{dev}` ({what}); torch {torch.__version__}",
             f"**Weights folder** (SVI_WEIGHTS_DIR): `{weights_root()}`",
             f"**Data folder** (SVI_DATA_DIR): `{services.settings.data_dir}`",
             f"**LoRA folder:** `{services.lora_dir}`"]
    if services.speeds is not None:
        for preset in PRESETS.values():
            for v in preset.variants:
                m = services.speeds.measured(f"{preset.name}/{v}", dev)
                if m:
                    lines.append(f"**Measured here:** {preset.name}/{v}: {m['step_s']:.2f} s per denoising step + "
                                 f"{m['overhead_s']:.1f} s per clip (encode/decode), over {m['clips']} clips")
    return "\n\n".join(lines)


def register_lora(services: Services, path: str | None, name: str | None = None) -> str:
    """Check a LoRA file (keys in a known SVI layout) and copy it into the LoRA folder."""
    from svi.lora import read_lora

    if not path:
        raise UserError("choose a .safetensors LoRA file")
    lf = read_lora(path)  # LoraError: not safetensors, or no LoRA pairs in a known layout
    if lf.pairs == 0:
        raise UserError(f"{Path(path).name}: no LoRA layers found")
    stem = (name or "").strip() or Path(path).stem
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in stem).strip("._") or "lora"
    dst = services.lora_dir / f"{safe}.safetensors"
    if dst.exists():
        raise UserError(f"a LoRA named {safe!r} is registered already; pick another name")
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(path, tmp)
    os.replace(tmp, dst)
    return str(dst)


def build_models(services: Services) -> ModelsHandles:
    device = gr.Markdown(elem_id="device-info")
    gr.Markdown("#### Presets and variants")
    presets = gr.Dataframe(headers=PRESET_HEADERS, interactive=False, wrap=True, elem_id="presets-table")
    gr.Markdown("#### Registered LoRAs (selectable in the storyboard settings)")
    loras = gr.Dataframe(headers=LORA_HEADERS, interactive=False, wrap=True, elem_id="loras-table")
    with gr.Row():
        lora_file = gr.File(label="LoRA (.safetensors)", file_types=[".safetensors"], type="filepath",
                            elem_id="lora-file")
        lora_name = gr.Textbox(label="Name (default: the file's)", elem_id="lora-name")
        with gr.Column():
            add_btn = gr.Button("Register LoRA", elem_id="register-lora")
            refresh_btn = gr.Button("Refresh", elem_id="refresh-models")

    def load():
        return device_text(services), preset_rows(), lora_rows(services)

    @user_errors
    def add(path, name):
        dst = register_lora(services, path, name)
        gr.Info(f"Registered {Path(dst).stem}")
        return lora_rows(services)

    outputs = [device, presets, loras]
    refresh_btn.click(load, None, outputs, api_visibility="private")
    add_btn.click(add, [lora_file, lora_name], [loras], api_name="register_lora")

    def models() -> dict:
        """Presets with the status of their weights, registered LoRAs, the device."""
        return {"presets": [dict(zip(PRESET_HEADERS, r)) for r in preset_rows()],
                "loras": [dict(zip(LORA_HEADERS, r)) for r in lora_rows(services)],
                "device": services.device}

    gr.api(models, api_name="models")
    return ModelsHandles(loader=(load, None, outputs))
