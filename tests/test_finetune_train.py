"""The error-recycling trainer end to end on the tiny model: a short run (loss falls, banks fill as
configured, the LoRA loads into the renderer and changes it), export round trip, exact resume,
plain mode, the CLI, and two DDP processes under accelerate launch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from finetune.config import ConfigError, TrainConfig, load_config_file
from finetune.data import storyworld_available
from finetune.train import find_checkpoint, list_checkpoints, train, with_overrides

from .conftest import ROOT
from .test_finetune_data import write_clip, write_keypoint_json, write_svi_folder, write_wav

STEPS, K = 30, 3


def tiny_config(data_root: Path, out: Path, cache: Path, **sections) -> TrainConfig:
    """9-frame 48x64 clips, rank-8 LoRA, small fifo banks: seconds per run on a CPU."""
    cfg = with_overrides(
        TrainConfig(),
        model={"preset": "storyworld-tiny", "variant": "shot"},
        data={"kind": "svi", "root": str(data_root), "frames": 9, "height": 48, "width": 64, "views_per_video": 1,
              "cache_dir": str(cache)},
        lora={"rank": 8, "alpha": 8.0},
        train={"output_dir": str(out), "max_steps": STEPS, "lr": 2e-3, "checkpoint_every": 15, "eval_every": 10,
               "device": "cpu", "progress": False, "seed": 3, "cpu_threads": 1},
        recycling={"buffer_k": K, "strategy": "fifo", "warmup_iter": 5, "bank_dtype": "float32", "clean_prob": 0.2,
                   "y_error_num": 2},
    )
    return with_overrides(cfg, **sections) if sections else cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_svi_folder(tmp_path_factory.mktemp("ftdata"), n_videos=3, frames=14)


@pytest.fixture(scope="module")
def short_run(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ftrun")
    cfg = tiny_config(data_dir, root / "run", root / "cache")
    threads = torch.get_num_threads()
    try:
        return cfg, train(cfg, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def keep_thread_count():
    """Runs here use cpu_threads=1 (tiny ops on a shared CPU); leave the session's setting as it was."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- the short run
def test_short_run_writes_its_folder_and_the_loss_falls(short_run):
    cfg, res = short_run
    out = res.output_dir
    assert res.steps == STEPS
    assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.jsonl", "status.json", "checkpoints",
                                              "lora.safetensors"}
    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())) == cfg
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == STEPS
    assert [p.name for p in list_checkpoints(out)] == ["step_0000015", "step_0000030"]
    rows = metrics(out)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] is not None for r in steps)
    # the fixed probe (same clip, timesteps and noise every time) improves
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(evals) == 4 and res.eval_losses[0][0] == 0
    assert evals[-1] < evals[0] * 0.97, evals
    # injections happen once the banks have errors, with their norms logged
    # (y errors come from any grid, latent errors only from the step's own grid)
    assert sum(r["y_injected"] for r in steps) > 5 and sum(r["latent_injected"] for r in steps) >= 1
    assert all(r["y_error_norm"] > 0 for r in steps if r["y_injected"])
    assert all(r["warmup"] == (r["step"] <= 5) for r in steps)


def test_banks_fill_exactly_as_configured(short_run):
    """Each kept error goes to its step's grid; a grid holds min(K, errors sent to it)."""
    _, res = short_run
    steps = [r for r in metrics(res.output_dir) if "loss" in r]
    sent = Counter()
    for r in steps:
        assert r["bank_inserted_local"] in (0, 1)
        assert r["bank_inserted_local"] == 1 or r["clean"] == 1  # only clean steps may skip the banks
        sent[r["grid"][0]] += r["bank_inserted_local"]
    want = [min(K, sent[g]) for g in range(50)]
    assert steps[-1]["bank_fill_per_grid"] == want
    assert steps[-1]["bank_fill"] == sum(want) == res.bank_fill
    state = torch.load(find_checkpoint(res.output_dir, "latest") / "rank_0.pt", weights_only=True)["banks"]
    assert state["data"]["count"].tolist() == want == state["noise"]["count"].tolist()


def test_lora_exports_in_the_official_layout_and_round_trips(short_run):
    from diffusers import WanTransformer3DModel

    from finetune.lora import add_lora
    from svi.lora import apply_loras, read_lora

    _, res = short_run
    sd = load_file(str(res.lora_path))
    assert "diffusion_model.blocks.0.self_attn.q.lora_A.weight" in sd
    assert "diffusion_model.blocks.3.ffn.2.lora_B.weight" in sd
    assert float(sd["diffusion_model.blocks.2.cross_attn.o.alpha"]) == 8.0
    assert all(k.startswith("diffusion_model.blocks.") for k in sd) and len(sd) == 4 * 10 * 3
    lf = read_lora(res.lora_path)
    assert lf.pairs == 40 and lf.rank == 8

    folder = ROOT / "assets/models/storyworld-tiny/transformer"
    trained = WanTransformer3DModel.from_pretrained(folder).eval()
    add_lora(trained, 8, 8.0, "q,k,v,o,ffn.0,ffn.2")
    weights = load_file(str(find_checkpoint(res.output_dir, "latest") / "trainable.safetensors"))
    missing, unexpected = trained.load_state_dict({k.removeprefix("transformer."): v for k, v in weights.items()},
                                                  strict=False)
    assert not unexpected and not [k for k in missing if "lora" in k]
    fused = WanTransformer3DModel.from_pretrained(folder).eval()
    base = WanTransformer3DModel.from_pretrained(folder).eval()
    apply_loras(fused, [(res.lora_path, 1.0)])
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 36, 3, 6, 8, generator=g), torch.tensor([700.0]), torch.randn(1, 32, 64, generator=g),
            torch.randn(1, 17, 64, generator=g))
    with torch.no_grad():
        a, b, c = (m(*args, return_dict=False)[0] for m in (trained, fused, base))
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()  # export == what was trained
    assert (a - c).abs().max() > 1e-3  # and it is not the base model


def test_trained_lora_loads_into_the_renderer_and_changes_its_output(short_run, tiny_renderer, start_image):
    from svi import plan
    from svi.lora import apply_loras
    from svi.models import load_components, use_onednn_conv3d
    from svi.render import Renderer
    from svi.timeline import PromptSegment, Storyboard

    _, res = short_run
    spec = tiny_renderer.spec
    board = Storyboard(start_image, (PromptSegment(0, 2.0, "a red ball moves"),)).with_settings(steps=3)
    clip_plan = plan(board, spec)
    c = load_components(spec, "cpu")
    use_onednn_conv3d(c.vae)
    (lf,) = apply_loras(c.transformer, [(res.lora_path, 1.0)])
    assert lf.pairs == 40
    base = next(iter(tiny_renderer.stream(clip_plan))).frames
    tuned = next(iter(Renderer(c, spec).stream(clip_plan))).frames
    assert base.shape == tuned.shape
    assert np.abs(base.astype(int) - tuned.astype(int)).mean() > 0.5


# ---------------------------------------------------------------------------------------------- resume
def test_resume_restores_banks_and_optimizer_and_continues_identically(short_run, tmp_path):
    from finetune.train import Trainer

    cfg, res = short_run
    src = res.output_dir / "checkpoints" / "step_0000015"
    out = tmp_path / "resumed"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(src, out / "checkpoints" / src.name)
    cfg_b = with_overrides(cfg, train={"output_dir": str(out), "resume": "latest"})
    trainer = Trainer(cfg_b, log=lambda m: None)
    trainer.load_checkpoint(find_checkpoint(out, "latest"))
    assert trainer.step == 15
    saved = torch.load(src / "rank_0.pt", weights_only=True)
    restored = trainer.banks.state_dict()
    for kind in ("noise", "data"):
        assert torch.equal(restored[kind]["count"], saved["banks"][kind]["count"])
        assert torch.equal(restored[kind]["errors"], saved["banks"][kind]["errors"])
    opt_saved = torch.load(src / "optimizer.pt", weights_only=True)["state"]
    opt_now = trainer.optimizer.state_dict()["state"]
    assert set(opt_now) == set(opt_saved) and len(opt_now) == 80
    assert all(torch.equal(opt_now[i]["exp_avg_sq"], opt_saved[i]["exp_avg_sq"]) for i in opt_saved)

    result = trainer.run()  # loads the checkpoint (again) and trains steps 16..30
    assert result.steps == STEPS and trainer.store.stats["encoded"] == 0  # the shared cache served every sample
    final_a, final_b = (find_checkpoint(d, "latest") for d in (res.output_dir, out))
    wa, wb = (load_file(str(d / "trainable.safetensors")) for d in (final_a, final_b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ba, bb = (torch.load(d / "rank_0.pt", weights_only=True)["banks"]["data"] for d in (final_a, final_b))
    assert torch.equal(ba["errors"], bb["errors"])
    la = [r["loss"] for r in metrics(res.output_dir) if r.get("step", 0) > 15 and "loss" in r]
    lb = [r["loss"] for r in metrics(out) if "loss" in r]
    assert la == lb


def test_plain_mode_and_run_folder_guards(short_run, tmp_path):
    cfg, res = short_run
    with pytest.raises(ConfigError, match="already holds a run"):
        train(with_overrides(cfg, train={"resume": None}))
    with pytest.raises(ConfigError, match="y_error_num"):
        train(with_overrides(cfg, recycling={"y_error_num": 4}, train={"output_dir": str(tmp_path / "x")}))
    # the bank insert on a worker thread (default) gives exactly the serial results
    serial = train(with_overrides(cfg, train={"output_dir": str(tmp_path / "serial"), "max_steps": 9,
                                              "overlap_recycling": False, "eval_every": 0}), log=lambda m: None)
    losses = [r["loss"] for r in metrics(res.output_dir) if "loss" in r][:9]
    assert [r["loss"] for r in metrics(serial.output_dir)] == losses
    plain = train(with_overrides(cfg, train={"output_dir": str(tmp_path / "plain"), "max_steps": 3,
                                             "error_recycling": False, "eval_every": 0}), log=lambda m: None)
    rows = metrics(plain.output_dir)
    assert len(rows) == 3 and plain.bank_fill == 0
    assert all("bank_fill" not in r and r["y_injected"] == r["latent_injected"] == 0 for r in rows)
    assert (plain.output_dir / "lora.safetensors").is_file()


@pytest.mark.parametrize("kind, extra", [("talk", "audio_proj.proj1.weight"), ("dance", "dwpose_embedding.12.weight")])
def test_talk_and_dance_runs_train_their_adapter_with_the_lora(kind, extra, tmp_path):
    from svi.lora import read_lora

    for i in range(2):
        write_clip(tmp_path / kind / f"c{i}.mp4", 14, seed=i)
        if kind == "talk":
            write_wav(tmp_path / kind / f"c{i}.wav", 14 / 8)
        else:
            write_keypoint_json(tmp_path / kind / f"c{i}.pose.json", 14)
    cfg = tiny_config(tmp_path / kind, tmp_path / "run", tmp_path / "cache",
                      data={"kind": kind, "root": str(tmp_path / kind)},
                      train={"output_dir": str(tmp_path / "run"), "max_steps": 2, "eval_every": 0,
                             "checkpoint_every": 0},
                      recycling={"y_error_num": 1})
    res = train(cfg, log=lambda m: None)
    lf = read_lora(res.lora_path)
    assert lf.pairs == 40 and extra in lf.extras  # adapter weights travel in the LoRA file, official names
    ckpt = find_checkpoint(res.output_dir, "latest")
    names = list(load_file(str(ckpt / "trainable.safetensors")))
    adapter = [i for i, n in enumerate(names) if not n.startswith("transformer.")]
    assert adapter, names[:5]
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]
    assert len(state) == len(names)  # AdamW stepped every LoRA and adapter tensor: gradients reached them
    assert sum(float(state[i]["exp_avg"].abs().sum()) > 0 for i in adapter) >= len(adapter) // 2
    # the trained adapter has the model folder's shapes, so the preset's renderer loads it (strictly)
    from svi.conditioning.runtime import load_audio_adapter, load_pose_encoder
    from storyworld.train.cache import ASSETS

    if kind == "talk":
        load_audio_adapter(ASSETS / "audio_adapter").load_multitalk(lf.extras)
    else:
        load_pose_encoder(ASSETS / "pose_encoder").load_dwpose(lf.extras)


@pytest.mark.skipif(not storyworld_available(), reason="storyworld package not present")
def test_mouth_weight_reaches_the_loss_of_storyworld_talk_steps(tmp_path):
    """Storyworld talk samples carry a mouth map; with train.mouth_weight the same step (same seed, data,
    noise) weighs the mouth more, so its loss differs; without it, the map is ignored."""
    cfg = tiny_config(tmp_path, tmp_path / "run", tmp_path / "cache",
                      model={"preset": "storyworld-tiny", "variant": "talk"},
                      data={"kind": "storyworld", "root": None, "storyworld_videos": 4, "storyworld_frames": 17,
                            "frames": 9, "height": 96, "width": 128},
                      train={"max_steps": 2, "batch_size": 4, "eval_every": 0, "checkpoint_every": 0},
                      recycling={"y_error_num": 1})  # a batch of all 4 videos: 2 of them show a person
    losses = {}
    for weight in (0.0, 30.0):
        run = with_overrides(cfg, train={"output_dir": str(tmp_path / f"run{weight}"), "mouth_weight": weight})
        res = train(run, log=lambda m: None)
        losses[weight] = [r["loss"] for r in metrics(res.output_dir)]
    assert all(np.isfinite(losses[30.0])) and losses[30.0] != losses[0.0]
    assert losses[30.0][0] > losses[0.0][0]  # the same first step: the extra weight only adds
    with pytest.raises(ConfigError, match="mouth_weight"):
        with_overrides(cfg, train={"mouth_weight": -1.0}).check()


def test_roundtrip_prob_conditions_steps_on_the_reencoded_frames(data_dir, tmp_path):
    """data.roundtrip_prob = 1: every step's y is the cached round-tripped one; 0: the cache holds none."""
    from finetune.train import Trainer

    cfg = tiny_config(data_dir, tmp_path / "run", tmp_path / "cache", data={"roundtrip_prob": 1.0})
    trainer = Trainer(cfg, log=lambda m: None)
    sample = trainer.store.get(0, 0)
    batch = trainer._batch([sample, sample])
    assert torch.equal(batch["y"], torch.stack([sample["yrt1"]] * 2).to(batch["y"]))
    assert not torch.equal(sample["yrt1"], sample["y1"])
    off = Trainer(with_overrides(cfg, data={"roundtrip_prob": 0.0}, train={"output_dir": str(tmp_path / "run0")}),
                  log=lambda m: None)
    assert "yrt1" not in off.store.get(0, 0)
    with pytest.raises(ConfigError, match="roundtrip_prob"):
        with_overrides(cfg, data={"roundtrip_prob": 1.5}).check()


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_help_documents_every_knob_with_its_svi_default():
    from finetune.cli import build_parser
    from finetune.config import flag_name, knobs

    text = " ".join(build_parser().format_help().split())  # undo argparse's line wrapping
    for section, name, *_ in knobs():
        assert flag_name(section, name) in text
    assert text.count("SVI:") == len(knobs())
    assert "--lora-rank INT" in text and "SVI: 128" in text and "SVI: l2 (l2_batch)" in text
    out = subprocess.run([sys.executable, "-m", "finetune.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--buffer-k" in out.stdout


def test_cli_config_file_and_flag_precedence(tmp_path, capsys):
    from finetune.cli import build_parser, config_from_args, run

    f = tmp_path / "run.yaml"
    f.write_text("data: {kind: svi, root: /data, frames: 9}\ntrain: {lr: 5.0e-4, max_steps: 7}\n"
                 "recycling: {buffer_k: 20, strategy: fifo}\n")
    args = build_parser().parse_args(["--config", str(f), "--lr", "2e-4", "--no-error-recycling", "--lora-rank", "4"])
    cfg = config_from_args(args)
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.error_recycling, cfg.lora.rank) == (2e-4, 7, False, 4)
    assert (cfg.recycling.buffer_k, cfg.recycling.strategy, cfg.data.frames) == (20, "fifo", 9)
    assert cfg.recycling.y_prob == 0.9 and cfg.lora.alpha == 128  # untouched knobs keep the SVI defaults

    f.write_text("train: {learning_rate: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\] in config section 'train'"):
        load_config_file(f)
    f.write_text("recycling: {y_prob: 2}\n")
    with pytest.raises(ConfigError, match="y_prob must be in"):
        load_config_file(f)
    with pytest.raises(ConfigError, match="frames must be 4n\\+1"):
        config_from_args(build_parser().parse_args(["--data-root", "x", "--frames", "8"]))
    for shipped in sorted((ROOT / "finetune" / "configs").glob("*.yaml")):
        if not shipped.name.startswith("accelerate"):
            load_config_file(shipped).check()

    (tmp_path / "empty").mkdir()
    code = run(build_parser().parse_args(["--data-root", str(tmp_path / "empty"), "--output-dir",
                                          str(tmp_path / "o")]))
    assert code == 2 and "no usable training videos" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- multi-process
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_config_runs_two_cpu_processes_with_identical_warmup_banks(data_dir, tmp_path):
    run_cfg = tmp_path / "run.json"
    out = tmp_path / "ddp"
    run_cfg.write_text(json.dumps({
        "data": {"kind": "svi", "root": str(data_dir), "frames": 9, "height": 48, "width": 64, "views_per_video": 1},
        "lora": {"rank": 4, "alpha": 4},
        "train": {"output_dir": str(out), "max_steps": 3, "checkpoint_every": 2, "eval_every": 0, "progress": False},
        "recycling": {"buffer_k": 4, "warmup_iter": 2, "bank_dtype": "float32", "clean_prob": 0.0},
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(ROOT / "finetune/configs/accelerate_ddp.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()), "-m", "finetune.cli", "--config", str(run_cfg)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warm = out / "checkpoints" / "step_0000002"
    banks = [torch.load(warm / f"rank_{r}.pt", weights_only=True)["banks"] for r in (0, 1)]
    # 2 warm-up steps x 2 ranks, no clean steps: every rank holds all 4 errors, identically
    assert int(banks[0]["data"]["count"].sum()) == int(banks[1]["data"]["count"].sum()) == 4
    assert torch.equal(banks[0]["data"]["errors"], banks[1]["data"]["errors"])
    final = [torch.load(out / "checkpoints" / "step_0000003" / f"rank_{r}.pt", weights_only=True)["banks"]
             for r in (0, 1)]
    assert int(final[0]["data"]["count"].sum()) == 5  # after the warm-up each rank adds only its own error
    assert (out / "lora.safetensors").is_file() and "finetune: 3 steps" in proc.stdout
