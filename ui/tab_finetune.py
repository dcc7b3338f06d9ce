"""Finetune tab: dataset, base preset and variant, LoRA and error-recycling settings (pre-filled with
the SVI defaults of finetune.config), launch as a background process, live loss and bank-fill
plots, stop and resume; a finished run's LoRA is registered for the storyboard's LoRA picker.

Defaults come from finetune.config (the official values), except that a run started here from the
built-in storyworld data uses the bundled tiny preset and the scaled-down values of
finetune/configs/tiny.yaml (tiny-talk.yaml / tiny-dance.yaml for those variants), so "Launch" with no
changes finishes on a CPU in minutes.
"""

from __future__ import annotations

import csv
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from svi.presets import PRESETS

from .errors import UserError, user_errors
from .finetune_runs import run_name_ok
from .services import Services

DATASETS = ("storyworld (built in)", "a folder on the server", "uploaded videos with captions")
FOLDER_KINDS = ("svi", "talk", "dance")
STRATEGIES = ("l2", "fifo", "random")


@dataclass
class FinetuneHandles:
    loader: tuple = ()


def _defaults() -> dict:
    from finetune.config import knobs

    return {f"{section}.{name}": default for section, name, default, *_ in knobs()}


def uploaded_dataset(folder: Path, videos: list[str], captions: str) -> Path:
    """Lay uploaded videos out as an SVI dataset (finetune.data 'svi': category folder + csv)."""
    videos = [v for v in videos or [] if v]
    if not videos:
        raise UserError("upload at least one training video")
    lines = [ln.strip() for ln in (captions or "").splitlines() if ln.strip()]
    if lines and len(lines) != len(videos):
        raise UserError(f"{len(videos)} videos but {len(lines)} captions: give one caption per line, in the order "
                        f"of the videos (or none)")
    root = folder / "dataset"
    cat = root / "uploads"
    cat.mkdir(parents=True, exist_ok=True)
    with open(cat / "uploads.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Filename", "Video Description"])
        for i, src in enumerate(videos):
            name = f"{i:04d}_{Path(src).name}"
            shutil.copyfile(src, cat / name)
            w.writerow([name, lines[i] if lines else "A video from uploads category"])
    return root


def build_finetune(services: Services) -> FinetuneHandles:
    runs = services.finetune
    d = _defaults()
    with gr.Row():
        with gr.Column(scale=2):
            run_name = gr.Textbox(label="Run name", value=time.strftime("run-%Y%m%d-%H%M"), elem_id="ft-name")
            dataset = gr.Radio(list(DATASETS), value=DATASETS[0], label="Training data", elem_id="ft-dataset")
            with gr.Group(visible=True) as sw_box:
                with gr.Row():
                    sw_videos = gr.Number(value=32, precision=0, label="Generated videos", elem_id="ft-sw-videos")
                    sw_frames = gr.Number(value=33, precision=0, label="Frames per video", elem_id="ft-sw-frames")
            with gr.Group(visible=False) as folder_box:
                folder_kind = gr.Dropdown(list(FOLDER_KINDS), value="svi", label="Layout (svi: category folders "
                                          "+ csv; talk: video + wav; dance: video + pose)", elem_id="ft-kind")
                folder_root = gr.Textbox(label="Dataset folder (on the server)", elem_id="ft-root")
            with gr.Group(visible=False) as upload_box:
                up_videos = gr.File(label="Training videos", file_count="multiple", type="filepath",
                                    elem_id="ft-videos")
                up_captions = gr.Textbox(label="Captions, one per line in video order (blank: generic)", lines=4,
                                         elem_id="ft-captions")
            with gr.Row():
                preset = gr.Dropdown(list(PRESETS), value="storyworld-tiny", label="Base preset", elem_id="ft-preset")
                variant = gr.Dropdown(list(PRESETS["storyworld-tiny"].variants), value="shot", label="Variant",
                                      elem_id="ft-variant")
        with gr.Column(scale=2):
            gr.Markdown("LoRA and training (storyworld defaults: finetune/configs/tiny.yaml; SVI values in brackets)")
            with gr.Row():
                rank = gr.Number(value=16, precision=0, label=f"LoRA rank [SVI {d['lora.rank']}]", elem_id="ft-rank")
                alpha = gr.Number(value=16, label=f"LoRA alpha [SVI {d['lora.alpha']:g}]", elem_id="ft-alpha")
            with gr.Row():
                steps = gr.Number(value=300, precision=0, label="Max steps", elem_id="ft-steps")
                lr = gr.Number(value=5e-4, label=f"Learning rate [SVI {d['train.lr']:g}]", elem_id="ft-lr")
                ckpt = gr.Number(value=100, precision=0, label="Checkpoint every", elem_id="ft-ckpt")
            recycling = gr.Checkbox(value=d["train.error_recycling"], label="Error recycling (SVI)",
                                    elem_id="ft-recycling")
            with gr.Row():
                strategy = gr.Dropdown(list(STRATEGIES), value=d["recycling.strategy"], label="Bank replacement",
                                       elem_id="ft-strategy")
                buffer_k = gr.Number(value=20, precision=0, label=f"Bank size K per grid [SVI {d['recycling.buffer_k']}]",
                                     elem_id="ft-k")
                warmup = gr.Number(value=d["recycling.warmup_iter"], precision=0, label="Warm-up steps",
                                   elem_id="ft-warmup")
            with gr.Row():
                noise_p = gr.Number(value=d["recycling.noise_prob"], label="p(noise error)", elem_id="ft-pn")
                latent_p = gr.Number(value=d["recycling.latent_prob"], label="p(latent error)", elem_id="ft-pl")
                y_p = gr.Number(value=d["recycling.y_prob"], label="p(condition error)", elem_id="ft-py")
                clean_p = gr.Number(value=d["recycling.clean_prob"], label="p(clean step)", elem_id="ft-pc")
            with gr.Row():
                launch_btn = gr.Button("Launch", variant="primary", elem_id="ft-launch")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="ft-stop")
                resume_btn = gr.Button("Resume", elem_id="ft-resume")
    with gr.Row():
        run_pick = gr.Dropdown([], value=None, label="Run", elem_id="ft-run")
        refresh_btn = gr.Button("Refresh", elem_id="ft-refresh")
    run_status = gr.Markdown(elem_id="ft-status")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="value", color="series", label="Loss", height=260, elem_id="ft-loss")
        bank_plot = gr.LinePlot(x="step", y="bank_fill", label="Error-bank fill", height=260, elem_id="ft-bank")
    timer = gr.Timer(2.0, active=False)

    # ------------------------------------------------------------------ handlers
    def one(name):
        """The dropdown's value as a run name (an empty dropdown sends [] or None)."""
        return name if isinstance(name, str) and name else None

    def show_dataset(which):
        return (gr.Group(visible=which == DATASETS[0]), gr.Group(visible=which == DATASETS[1]),
                gr.Group(visible=which == DATASETS[2]))

    def variants(p):
        pr = PRESETS.get(p)
        return gr.Dropdown(choices=list(pr.variants) if pr else [], value=pr.default_variant if pr else None)

    @user_errors
    def launch(name, which, swv, swf, kind, root, vids, caps, p, v, r, a, n, lr_, ck, rec, strat, k, wu, pn, pl, py,
               pc):
        name = run_name_ok(name)
        options = {"model.preset": p, "model.variant": v, "lora.rank": int(r), "lora.alpha": float(a),
                   "train.max_steps": int(n) if n else None, "train.lr": float(lr_),
                   "train.checkpoint_every": int(ck) if ck else None, "train.error_recycling": bool(rec),
                   "recycling.strategy": strat, "recycling.buffer_k": int(k), "recycling.warmup_iter": int(wu),
                   "recycling.noise_prob": pn, "recycling.latent_prob": pl, "recycling.y_prob": py,
                   "recycling.clean_prob": pc}
        config = None
        if which == DATASETS[0]:
            options.update({"data.kind": "storyworld", "data.storyworld_videos": int(swv),
                            "data.storyworld_frames": int(swf)})
            from finetune.config import storyworld_recipe

            recipe = storyworld_recipe(v)
            config = str(recipe) if recipe.is_file() else None
        elif which == DATASETS[1]:
            if not root or not Path(root).is_dir():
                raise UserError(f"dataset folder not found on the server: {root!r}")
            options.update({"data.kind": kind, "data.root": root})
        else:
            if (runs.runs_dir / name).exists():
                raise UserError(f"a run named {name!r} exists; pick another name")
            options.update({"data.kind": "svi", "data.root": str(uploaded_dataset(runs.runs_dir / name, vids, caps))})
        info = runs.launch(name, options, config_file=config)
        return run_choices(info.name), status_text(info.name), gr.Timer(active=True)

    @user_errors
    def stop(name):
        name = one(name)
        if not name:
            raise UserError("pick a run first")
        info = runs.stop(name)
        return status_text(info.name), gr.Timer(active=False)

    @user_errors
    def resume(name):
        name = one(name)
        if not name:
            raise UserError("pick a run first")
        info = runs.resume(name)
        return status_text(info.name), gr.Timer(active=True)

    def run_choices(selected=None):
        names = runs.names()
        return gr.Dropdown(choices=names, value=selected if selected in names else (names[0] if names else None))

    def status_text(name) -> str:
        if not name:
            return "No run selected."
        try:
            info = runs.info(name)
        except UserError as e:
            return str(e)
        total = f" of {info.total_steps}" if info.total_steps else ""
        text = f"**{info.name}**: {info.state}, step {info.step}{total}."
        if info.lora:
            text += f" LoRA registered: `{Path(info.lora).name}` (pick it in Storyboard → Settings → LoRAs)."
        if info.message:
            text += f"\n\n{info.message}"
        return text

    def plots(name):
        rows = runs.metrics(name) if name else []
        loss = [{"step": r["step"], "value": r[key], "series": key} for r in rows
                for key in ("loss", "eval_loss") if isinstance(r.get(key), (int, float))]
        bank = [{"step": r["step"], "bank_fill": r["bank_fill"]} for r in rows if "bank_fill" in r]
        # typed even when empty: an empty frame of objects makes the plot's axes categorical for good
        loss_df = pd.DataFrame(loss, columns=["step", "value", "series"]).astype(
            {"step": "int64", "value": "float64", "series": "string"})
        bank_df = pd.DataFrame(bank, columns=["step", "bank_fill"]).astype({"step": "int64", "bank_fill": "int64"})
        return loss_df, bank_df

    def tick(name):
        name = one(name)
        active = False
        if name:
            try:
                active = runs.info(name).state not in ("done", "failed", "stopped")
            except UserError:
                active = False
        return (status_text(name), *plots(name), gr.Timer(active=active))

    # ------------------------------------------------------------------ wiring
    inputs = [run_name, dataset, sw_videos, sw_frames, folder_kind, folder_root, up_videos, up_captions, preset,
              variant, rank, alpha, steps, lr, ckpt, recycling, strategy, buffer_k, warmup, noise_p, latent_p, y_p,
              clean_p]
    dataset.change(show_dataset, [dataset], [sw_box, folder_box, upload_box], api_visibility="private")
    preset.input(variants, [preset], [variant], api_visibility="private")
    launch_btn.click(launch, inputs, [run_pick, run_status, timer], api_visibility="private")
    stop_btn.click(stop, [run_pick], [run_status, timer], api_visibility="private")
    resume_btn.click(resume, [run_pick], [run_status, timer], api_visibility="private")
    watched = [run_status, loss_plot, bank_plot, timer]
    run_pick.change(tick, [run_pick], watched, api_visibility="private")
    refresh_btn.click(tick, [run_pick], watched, api_visibility="private")
    timer.tick(tick, [run_pick], watched, api_visibility="private")

    # ------------------------------------------------------------------ API
    @user_errors
    def finetune_launch(name: str, options: dict) -> dict:
        """Launch a run: options are finetune.config knobs as {"section.knob": value}, e.g.
        {"data.kind": "storyworld", "train.max_steps": 50, "lora.rank": 16}."""
        return runs.launch(run_name_ok(name), options).to_dict()

    @user_errors
    def finetune_status(name: str) -> dict:
        """State, step, registered LoRA and the metrics rows (loss, bank_fill, ...) of a run."""
        return {**runs.info(name).to_dict(), "metrics": runs.metrics(name)}

    @user_errors
    def finetune_stop(name: str) -> dict:
        """Stop a run (steps since its last checkpoint are lost; resume continues from it)."""
        return runs.stop(name).to_dict()

    @user_errors
    def finetune_resume(name: str) -> dict:
        """Resume a stopped run from its latest checkpoint."""
        return runs.resume(name).to_dict()

    for fn in (finetune_launch, finetune_status, finetune_stop, finetune_resume):
        gr.api(fn, api_name=fn.__name__)

    def load():
        names = runs.names()
        return gr.Dropdown(choices=names, value=names[0] if names else None)

    return FinetuneHandles(loader=(load, None, [run_pick]))
