"""The error-recycling fine-tuning loop (SVI_SPEC 3.1, 3.4 to 3.6) with accelerate.

The same code runs on one CPU, one GPU, several GPUs and several nodes: `accelerate launch` (with a
config from finetune/configs/) decides the processes; each process trains on its own share of the
sample stream, keeps its own error banks (identical through the warm-up gather, then local), and
the LoRA gradients are all-reduced by the wrapper (DDP, DeepSpeed ZeRO-2 or FSDP).

A run folder holds:
    config.json        the resolved TrainConfig
    metrics.jsonl      one JSON line per logged step (loss, grad norm, injections, bank fill, ...)
    status.json        state, step, total steps, last loss: what a UI polls
    checkpoints/step_NNNNNNN/   trainable.safetensors, optimizer.pt, rank_R.pt (banks + RNG),
                       state.json, lora.safetensors
    lora.safetensors   the exported LoRA (official key layout, alpha recorded)
    tensorboard/       when the tensorboard package is installed

Resume (`train.resume = latest | PATH`) restores the trainable weights, the optimizer, each rank's
banks and generators and the step, so a resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from svi.presets import ModelSpec, model_folder, resolve_spec
from svi.scheduler import FlowMatchScheduler

from .bank import ErrorBanks
from .cache import SampleEncoder, SampleStore
from .config import ConfigError, TrainConfig
from .data import Dataset, Geometry, build_dataset, stable_seed
from .lora import add_lora, export_lora, lora_from_module_state
from .model import TrainModule, build_audio_adapter, build_pose_encoder
from .recycling import condition_frames, inject_errors, recycle_errors, sample_sigma_index, weighted_loss

EVAL_SIGMA_INDICES = (50, 250, 500, 750, 950)  # fixed probe timesteps (t from ~990 down to ~250)
CHECKPOINT_PREFIX = "step_"
# Settings a resumed run must share with its checkpoint (the rest may change, e.g. max_steps).
RESUME_MUST_MATCH = (("lora", "rank"), ("lora", "alpha"), ("lora", "targets"), ("recycling", "num_grids"),
                     ("recycling", "buffer_k"), ("model", "preset"), ("data", "kind"))


@dataclass
class RunResult:
    output_dir: Path
    steps: int  # last completed step
    lora_path: Path
    first_loss: float | None
    last_loss: float | None
    eval_losses: list[tuple[int, float]]  # (step, fixed-probe loss)
    bank_fill: int  # errors stored in the data bank of this process (0 without recycling)


# ---------------------------------------------------------------------------------------------- setup
def resolve_geometry(cfg: TrainConfig, spec: ModelSpec) -> Geometry:
    d = cfg.data
    return Geometry(frames=d.frames or spec.frames_per_clip, height=d.height or spec.max_short,
                    width=d.width or spec.max_long, motion_frames=d.motion_frames or spec.motion_frames,
                    padding=d.padding or spec.padding)


def data_caption(cfg: TrainConfig, spec: ModelSpec) -> str | None:
    if cfg.data.caption:
        return cfg.data.caption
    if cfg.data.kind in ("talk", "dance") and spec.fixed_prompt:
        return spec.fixed_prompt  # train on the prompt the renderer will use
    return None


def data_conditions(cfg: TrainConfig, spec: ModelSpec) -> tuple[str, ...]:
    if cfg.data.kind == "talk":
        return ("audio",)
    if cfg.data.kind == "dance":
        return ("pose",)
    if cfg.data.kind == "storyworld":
        return tuple(spec.needs)
    return ()


def load_dataset(cfg: TrainConfig, spec: ModelSpec, geometry: Geometry, warn: bool = True) -> Dataset:
    d = cfg.data
    story = {"videos": d.storyworld_videos, "frames": d.storyworld_frames, "seed": d.storyworld_seed,
             "width": geometry.width, "height": geometry.height, "fps": spec.fps,
             "conditions": data_conditions(cfg, spec)}
    return build_dataset(d.kind, d.root, geometry.frames, caption=data_caption(cfg, spec), storyworld=story,
                         warn=warn)


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    if resume != "latest":
        path = Path(resume)
        if not (path / "state.json").is_file():
            raise ConfigError(f"not a checkpoint folder (no state.json): {path}")
        return path
    found = list_checkpoints(output_dir)
    if not found:
        raise ConfigError(f"--resume latest: no checkpoint in {output_dir / 'checkpoints'}")
    return found[-1]


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Builds everything for one run on this process; `run()` trains and returns a RunResult."""

    def __init__(self, cfg: TrainConfig, accelerator=None, log: Callable[[str], None] | None = None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.cfg = cfg.check()
        # Without CUDA, several processes (torchrun / accelerate launch) must ask for CPU to form a
        # gloo group; otherwise accelerate leaves each process on its own.
        world_env = int(os.environ.get("WORLD_SIZE", "1"))
        cpu = cfg.train.device == "cpu" or (world_env > 1 and not torch.cuda.is_available())
        self.acc = accelerator or Accelerator(
            cpu=cpu, mixed_precision=cfg.model.mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
        self.main = self.acc.is_main_process
        if cfg.train.cpu_threads and self.acc.device.type == "cpu":
            torch.set_num_threads(cfg.train.cpu_threads)
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.out = Path(cfg.train.output_dir)
        self.scheduler = FlowMatchScheduler()

        # 1. Model spec, geometry, output folder
        self.spec = resolve_spec(cfg.model.preset, cfg.model.variant)
        self.scheduler = FlowMatchScheduler(shift=self.spec.shift)
        self.geometry = resolve_geometry(cfg, self.spec)
        latent_frames = (self.geometry.frames - 1) // 4 + 1
        if cfg.train.error_recycling and cfg.recycling.y_error_num > latent_frames:
            raise ConfigError(f"recycling.y_error_num ({cfg.recycling.y_error_num}) exceeds the {latent_frames} latent "
                              f"frames of a {self.geometry.frames}-frame clip; lower it or train on longer clips")
        if cfg.train.resume is None and list_checkpoints(self.out):
            raise ConfigError(f"{self.out} already holds a run with checkpoints; pass --resume latest to continue it "
                              f"or choose another --output-dir")

        # 2. Data (every rank probes; the list is deterministic so all ranks agree)
        self.dataset = load_dataset(cfg, self.spec, self.geometry, warn=self.main)
        self.log(f"data: {len(self.dataset)} videos ({cfg.data.kind}), {len(self.dataset.skipped)} skipped; "
                 f"clips {self.geometry.frames}x{self.geometry.height}x{self.geometry.width}, "
                 f"m={self.geometry.motion_frames}, padding={self.geometry.padding}")

        # 3. Frozen encoders + DiT, LoRA, adapters
        from svi.models import load_components, use_onednn_conv3d

        folder = cfg.model.model_dir or model_folder(self.spec)
        self.components = load_components(self.spec, self.acc.device, folder=folder)
        if self.components.device.type == "cpu":
            use_onednn_conv3d(self.components.vae)
        transformer = self.components.transformer
        torch.manual_seed(stable_seed(cfg.train.seed, "init"))  # LoRA A and adapter init: same run, same start
        layers = add_lora(transformer, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
        if cfg.model.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        encoder = SampleEncoder(self.components, self.geometry, self.spec.text_len,
                                roundtrip=cfg.data.roundtrip_prob > 0)
        cache_dir = cfg.data.cache_dir or (self.out / "cache")
        self.store = SampleStore(self.dataset, encoder, cache_dir if cfg.data.views_per_video > 0 else None,
                                 seed=cfg.train.seed, views=cfg.data.views_per_video, crop=cfg.data.kind != "dance",
                                 ref_from=cfg.data.ref_from, memory_items=cfg.data.memory_cache_items)
        audio, pose = self._build_adapters(transformer)
        module = TrainModule(transformer, audio, pose)
        module.train()
        self.params = [p for p in module.parameters() if p.requires_grad]
        n_params = sum(p.numel() for p in self.params)
        self.log(f"model: {self.spec.model_id}, LoRA r={cfg.lora.rank} alpha={cfg.lora.alpha:g} on {layers} layers"
                 f"{' + audio adapter' if audio is not None and audio_trainable(audio) else ''}"
                 f"{' + pose encoder' if pose is not None and cfg.lora.train_pose_encoder else ''}: "
                 f"{n_params / 1e6:.3f} M trainable parameters")

        # 4. Optimizer (AdamW, constant LR) and the distributed wrapper
        from accelerate.utils import DistributedType

        optimizer = torch.optim.AdamW(self.params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        kind = self.acc.distributed_type
        self.fsdp = kind == DistributedType.FSDP
        # DeepSpeed and FSDP shard optimizer state (and FSDP the weights): accelerate's own state files.
        self.sharded = kind in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        if kind == DistributedType.DEEPSPEED:  # no dataloader goes through prepare(), so say the batch size
            self.acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
        self.module, self.optimizer = self.acc.prepare(module, optimizer)
        if self.sharded:  # the wrapper may have replaced the parameters; clip what it optimizes
            self.params = [p for p in self.module.parameters() if p.requires_grad]

        # 5. Error banks: preallocated, same seed on every rank (identical through the warm-up)
        self.latent_shape = self._latent_shape()
        self.banks: ErrorBanks | None = None
        if cfg.train.error_recycling:
            r = cfg.recycling
            need = r.bank_memory_bytes(self.latent_shape)
            self._check_bank_memory(need)
            bank_device = "cpu" if cfg.train.bank_device == "cpu" else self.acc.device
            self.banks = r.build_banks(self.latent_shape, device=bank_device, seed=stable_seed(cfg.train.seed, "bank"))
            self.log(f"banks: 2 x {r.num_grids} grids x K={r.buffer_k} x {tuple(self.latent_shape)} "
                     f"{r.bank_dtype} = {need / 2**20:.1f} MiB per process, strategy {r.strategy}, "
                     f"warm-up gather {r.warmup_iter} steps")
        self.gen = torch.Generator().manual_seed(stable_seed(cfg.train.seed, "rank", self.acc.process_index))

        # 6. Schedule
        self.world = self.acc.num_processes
        self.global_batch = cfg.train.batch_size * self.world
        self.steps_per_epoch = math.ceil(len(self.dataset) / self.global_batch)
        self.total_steps = cfg.train.max_steps or cfg.train.epochs * self.steps_per_epoch
        self.step = 0
        self.tb = None
        self._pool = None  # bank-insert worker thread, started on first use

    # ------------------------------------------------------------------ helpers
    def log(self, msg: str) -> None:
        if self.main:
            self._log(msg)

    def _build_adapters(self, transformer):
        cfg = self.cfg
        conditions = data_conditions(cfg, self.spec)
        audio = pose = None
        initial = {}
        if cfg.lora.adapter_weights:
            from safetensors.torch import load_file

            path = Path(cfg.lora.adapter_weights)
            if not path.is_file():
                raise ConfigError(f"lora.adapter_weights file not found: {path}")
            initial = load_file(str(path))
        # A model folder that ships its own adapters (the tiny preset: audio_adapter/, pose_encoder/)
        # fixes their shapes: start from them, so the trained adapter fits that folder's renderer.
        shipped = self.components.folder if self.spec.adapters == "folder" else None
        if "audio" in conditions:
            probe = self.store.get(0, 0)
            layers, dim = probe["audio_first"].shape[-2:]
            if shipped is not None and (shipped / "audio_adapter").is_dir():
                from svi.conditioning.runtime import load_audio_adapter

                audio = load_audio_adapter(shipped / "audio_adapter").to(self.acc.device)
            else:
                audio = build_audio_adapter(transformer, int(dim), int(layers)).to(self.acc.device)
            if initial:
                audio.load_multitalk(initial)
            train_audio = cfg.lora.train_audio_adapter
            if train_audio is None:
                train_audio = not initial  # a fresh adapter must learn; loaded MultiTalk weights stay frozen
            audio.requires_grad_(bool(train_audio))
        if "pose" in conditions:
            if shipped is not None and (shipped / "pose_encoder").is_dir():
                from svi.conditioning.runtime import load_pose_encoder

                pose = load_pose_encoder(shipped / "pose_encoder").to(self.acc.device)
            else:
                pose = build_pose_encoder(transformer).to(self.acc.device)
            if initial:
                pose.load_dwpose(initial)
            pose.requires_grad_(cfg.lora.train_pose_encoder)
        return audio, pose

    def _latent_shape(self) -> tuple[int, int, int, int]:
        c, g = self.components, self.geometry
        t = (g.frames - 1) // c.vae_scale_temporal + 1
        return (int(c.vae.config.z_dim), t, g.height // c.vae_scale_spatial, g.width // c.vae_scale_spatial)

    def _check_bank_memory(self, need: int) -> None:
        try:
            import psutil

            total = psutil.virtual_memory().total
        except ImportError:  # psutil is in requirements; without it, skip the check
            return
        if self.cfg.train.bank_device == "cpu" and need > 0.8 * total:
            raise ConfigError(f"error banks would take {need / 2**30:.1f} GiB per process, more than 80% of this "
                              f"machine's {total / 2**30:.1f} GiB; lower --buffer-k or use --bank-dtype bfloat16")

    def _stream(self, step: int) -> list[tuple[int, int]]:
        """(item index, view) of this rank's samples at `step`: a fixed shuffled order per epoch."""
        n, B = len(self.dataset), self.cfg.train.batch_size
        out = []
        for b in range(B):
            i = step * self.global_batch + self.acc.process_index * B + b
            epoch, pos = divmod(i, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(
                stable_seed(self.cfg.train.seed, "order", epoch)))
            views = self.cfg.data.views_per_video
            out.append((int(order[pos]), epoch % views if views > 0 else i))
        return out

    # ------------------------------------------------------------------ one step
    def _batch(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack samples; draw per sample the condition-frame count and the drops (y, audio, pose)."""
        d, g, dev = self.cfg.data, self.geometry, self.acc.device
        B = len(samples)
        u = torch.rand((B, 4), generator=self.gen)  # columns: motion frames, y drop, audio drop, pose drop
        ms = [g.motion_frames if (g.motion_frames > 1 and u[b, 0] < d.p_motion) else 1 for b in range(B)]
        y_null = u[:, 1] < d.y_drop_prob
        # drawn only when on, so runs without it keep their random streams
        trip = ((torch.rand(B, generator=self.gen) < d.roundtrip_prob).tolist() if d.roundtrip_prob > 0
                else [False] * B)
        batch = {
            "x0": torch.stack([s["x0"] for s in samples]).to(dev),  # (B, 16, T, h, w)
            "text": torch.stack([s["text"] for s in samples]).to(dev),  # (B, L, D)
            "clip": torch.stack([s["clip"] for s in samples]).to(dev),  # (B, tokens, D_img)
            "y": torch.stack([s[f"yrt{m}" if t else f"y{m}"]  # (B, 20, T, h, w)
                              for s, m, t in zip(samples, ms, trip)]).to(dev),
            "y_null": y_null, "motion_frames": ms,
        }
        if y_null.any():  # official y_set_null: condition and CLIP feature zeroed together
            keep = (~y_null).to(dev, batch["y"].dtype)
            batch["y"] = batch["y"] * keep.view(-1, 1, 1, 1, 1)
            batch["clip"] = batch["clip"] * keep.view(-1, 1, 1).to(batch["clip"].dtype)
        if "audio_first" in samples[0]:
            keep = (u[:, 2] >= d.audio_drop_prob).float().to(dev)
            batch["audio_first"] = torch.stack([s["audio_first"] for s in samples]).to(dev) * keep.view(-1, 1, 1, 1, 1)
            batch["audio_latter"] = torch.stack([s["audio_latter"] for s in samples]).to(dev) * keep.view(-1, 1, 1, 1, 1)
        if self.cfg.train.mouth_weight > 0 and any("mouth" in s for s in samples):
            x0 = batch["x0"]  # samples with no keypoints weigh nothing extra
            batch["mouth"] = torch.stack([s.get("mouth", x0.new_zeros(x0.shape[2:], dtype=torch.float32))
                                          for s in samples]).to(dev)  # (B, T, h, w)
        if "pose" in samples[0]:
            batch["pose"] = torch.stack([s["pose"] for s in samples]).to(dev)  # (B, F, H, W, 3) uint8
            batch["pose_keep"] = (u[:, 3] >= d.pose_drop_prob).float().to(dev)
        return batch

    def _forward(self, module, step, batch) -> torch.Tensor:
        dtype = self.components.dtype
        with self.acc.autocast():
            return module(step.x_t.to(dtype), step.timestep.to(self.acc.device, dtype), batch["text"], batch["clip"],
                          step.y, batch.get("audio_first"), batch.get("audio_latter"), batch.get("pose"),
                          batch.get("pose_keep"))

    def train_step(self) -> dict[str, Any]:
        cfg, r = self.cfg, self.cfg.recycling
        t0 = time.perf_counter()
        # 1. Samples of this rank (encoded once, then cached)
        samples = [self.store.get(i, v) for i, v in self._stream(self.step)]
        batch = self._batch(samples)
        x0 = batch["x0"]
        B = x0.shape[0]
        t_data = time.perf_counter() - t0

        # 2. Timesteps, noise and error injection (SVI_SPEC 3.4)
        idx = sample_sigma_index(B, self.gen, self.scheduler, self.cfg.train.max_sigma)
        noise = torch.randn(x0.shape, generator=self.gen, dtype=torch.float32).to(x0.device, x0.dtype)
        step = inject_errors(x0, noise, batch["y"], idx, self.banks, r, self.gen, y_null=batch["y_null"],
                             scheduler=self.scheduler)

        # 3. The one forward and the weighted loss
        v_hat = self._forward(self.module, step, batch)
        mouth = batch.get("mouth")
        frames = None if cfg.train.condition_frame_loss else ~condition_frames(batch["y"])
        loss = weighted_loss(v_hat, step, None if mouth is None else cfg.train.mouth_weight * mouth, frames)

        # 4. Errors of the same forward into the banks. They need only v_hat, so after the warm-up
        #    the insert (the l2 scan of a full grid) runs on a worker thread during the backward
        #    pass; it is joined before the next step samples the banks, and nothing else draws from
        #    the generator meanwhile, so results are those of the serial order. During the warm-up
        #    the errors are all-gathered, a collective that must stay on this thread.
        warm = self.banks is not None and r.in_warmup(self.step)
        pending = None
        if self.banks is not None and not warm and cfg.train.overlap_recycling:
            pending = self._worker().submit(recycle_errors, step, v_hat.detach(), self.banks, r, self.gen,
                                            scheduler=self.scheduler)

        # 5. Clipped AdamW update (constant LR)
        self.acc.backward(loss)
        grad_norm = None
        if cfg.train.max_grad_norm > 0:
            grad_norm = self.acc.clip_grad_norm_(self.params, cfg.train.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        kept = 0
        if pending is not None:
            kept = int(pending.result().keep.sum())
        elif self.banks is not None:
            errors = recycle_errors(step, v_hat.detach(), self.banks, r, self.gen,
                                    gather=self.acc.gather if warm else None, scheduler=self.scheduler)
            kept = int(errors.keep.sum())
        loss_all = self.acc.reduce(loss.detach(), reduction="mean")  # one small collective: the logged loss
        self.step += 1

        def mean_injected(norms, flags):
            return float(norms[flags].mean()) if bool(flags.any()) else 0.0

        return {
            "step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch, "loss": float(loss_all),
            "grad_norm": None if grad_norm is None else float(grad_norm), "lr": cfg.train.lr,
            "timestep": [round(float(t), 2) for t in step.timestep], "grid": step.grid.tolist(),
            "motion_frames": batch["motion_frames"], "clean": int(step.clean.sum()),
            "noise_injected": int(step.noise_injected.sum()), "latent_injected": int(step.latent_injected.sum()),
            "y_injected": int(step.y_injected.sum()), "y_dropped": int(batch["y_null"].sum()),
            "noise_error_norm": mean_injected(step.noise_error_norm, step.noise_injected),
            "latent_error_norm": mean_injected(step.latent_error_norm, step.latent_injected),
            "y_error_norm": mean_injected(step.y_error_norm, step.y_injected),
            "bank_inserted_local": kept, "warmup": bool(self.banks is not None and r.in_warmup(self.step - 1)),
            "data_s": round(t_data, 4), "step_s": round(time.perf_counter() - t0, 4),
        }

    def _worker(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bank-insert")
        return self._pool

    @torch.no_grad()
    def eval_loss(self) -> float:
        """Loss on a fixed probe: item 0 view 0, fixed timesteps and noise, no injection (main only)."""
        sample = self.store.get(0, 0)
        n = len(EVAL_SIGMA_INDICES)
        dev = self.acc.device
        x0 = sample["x0"][None].to(dev).expand(n, -1, -1, -1, -1)  # (n, 16, T, h, w)
        gen = torch.Generator().manual_seed(stable_seed(self.cfg.train.seed, "eval"))
        noise = torch.randn(x0.shape, generator=gen).to(dev, x0.dtype)
        y = sample["y1"][None].to(dev).expand(n, -1, -1, -1, -1)
        step = inject_errors(x0, noise, y, torch.tensor(EVAL_SIGMA_INDICES), None, self.cfg.recycling, gen,
                             scheduler=self.scheduler)
        batch = {"text": sample["text"][None].to(dev).expand(n, -1, -1), "clip": sample["clip"][None].to(dev).expand(n, -1, -1)}
        if "audio_first" in sample:
            batch["audio_first"] = sample["audio_first"][None].to(dev).expand(n, -1, -1, -1, -1)
            batch["audio_latter"] = sample["audio_latter"][None].to(dev).expand(n, -1, -1, -1, -1)
        if "pose" in sample:
            batch["pose"] = sample["pose"][None].to(dev).expand(n, -1, -1, -1, -1)
        # FSDP shards the weights: its forward is a collective that every rank must run, wrapped.
        module = self.module if self.fsdp else self.acc.unwrap_model(self.module)
        v_hat = self._forward(module, step, batch)
        # every frame, whatever train.condition_frame_loss says: probes of runs with and without it compare
        return float(weighted_loss(v_hat, step))

    # ------------------------------------------------------------------ checkpoints
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Trainable tensors by TrainModule name (collective under FSDP: call on every rank)."""
        if self.fsdp:
            full = self.acc.get_state_dict(self.module)
            names = {n for n, p in self.acc.unwrap_model(self.module).named_parameters() if p.requires_grad}
            return {n: v.detach().cpu() for n, v in (full or {}).items() if n in names or ".lora_" in n}
        module = self.acc.unwrap_model(self.module)
        return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}

    def export(self, path: Path) -> Path:
        """Write the LoRA (+ trained adapters) in the official layout; call on every rank, main writes."""
        state = self.trainable_state()
        if self.main:
            lora = lora_from_module_state(state, prefix="transformer.")
            extras = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(("audio.", "pose."))}
            meta = {"base": self.spec.model_id, "step": str(self.step), "targets": self.cfg.lora.targets,
                    "error_recycling": str(self.cfg.train.error_recycling)}
            export_lora(lora, path, alpha=self.cfg.lora.alpha, rank=self.cfg.lora.rank,
                        dtype=self.cfg.lora.export_dtype, extras=extras, metadata=meta)
        self.acc.wait_for_everyone()
        return path

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        root = self.out / "checkpoints"
        final = root / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        tmp = root / f"{final.name}.tmp"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        rank_state = {"generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                      "banks": self.banks.state_dict() if self.banks is not None else None}
        if torch.cuda.is_available():
            rank_state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(rank_state, tmp / f"rank_{self.acc.process_index}.pt")
        if self.sharded:
            self.acc.save_state(str(tmp / "accelerate"))  # weights + sharded optimizer, every rank
        elif self.main:
            save_file(self.trainable_state(), str(tmp / "trainable.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        self.export(tmp / "lora.safetensors")
        if self.main:
            _atomic_json(tmp / "state.json", {"step": self.step, "world_size": self.world,
                                              "total_steps": self.total_steps, "config": self.cfg.to_dict(),
                                              "time": time.time()})
        self.acc.wait_for_everyone()
        if self.main:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            keep = self.cfg.train.keep_checkpoints
            if keep > 0:
                for old in list_checkpoints(self.out)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / "state.json").read_text())
        saved = state["config"]
        bad = [f"{s}.{k}: checkpoint {saved[s][k]!r}, now {getattr(getattr(self.cfg, s), k)!r}"
               for s, k in RESUME_MUST_MATCH if s in saved and saved[s].get(k) != getattr(getattr(self.cfg, s), k)]
        if bad:
            raise ConfigError(f"cannot resume {path}: " + "; ".join(bad))
        if self.sharded:
            self.acc.load_state(str(path / "accelerate"))
        else:
            self._load_trainable(path)
        rank_file = path / f"rank_{self.acc.process_index}.pt"

        if not rank_file.is_file():
            warnings.warn(f"{rank_file.name} missing in {path} (resumed on more processes?): this rank starts "
                          f"from rank 0's banks and a fresh generator", stacklevel=2)
            rank_state = torch.load(path / "rank_0.pt", weights_only=True)
            rank_state.pop("generator", None)
        else:
            rank_state = torch.load(rank_file, weights_only=True)
        if self.banks is not None and rank_state.get("banks") is not None:
            self.banks.load_state_dict(rank_state["banks"])
        if "generator" in rank_state:
            self.gen.set_state(rank_state["generator"])
        torch.set_rng_state(rank_state["torch_rng"])
        if "cuda_rng" in rank_state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rank_state["cuda_rng"])
        self.step = int(state["step"])
        self.log(f"resumed from {path} at step {self.step}")

    def _load_trainable(self, path: Path) -> None:
        from safetensors.torch import load_file

        module = self.acc.unwrap_model(self.module)
        weights = load_file(str(path / "trainable.safetensors"))
        own = dict(module.named_parameters())
        mine = {n for n, p in own.items() if p.requires_grad}
        if set(weights) != mine:
            raise ConfigError(f"{path}: trainable tensors differ from this run's "
                              f"(missing {sorted(mine - set(weights))[:3]}, extra {sorted(set(weights) - mine)[:3]})")
        with torch.no_grad():
            for n, v in weights.items():
                own[n].copy_(v.to(own[n].device, own[n].dtype))
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=self.acc.device,
                                                  weights_only=True))

    # ------------------------------------------------------------------ the run
    def _status(self, state: str, **extra) -> None:
        if self.main:
            _atomic_json(self.out / "status.json", {"state": state, "step": self.step,
                                                    "total_steps": self.total_steps, "updated": time.time(),
                                                    "pid": os.getpid(), **extra})

    def _open_metrics(self):
        path = self.out / "metrics.jsonl"
        if self.step and path.is_file():  # resumed: drop lines past the checkpoint (they will be redone)
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0)
                    <= self.step]
            path.write_text("".join(ln + "\n" for ln in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"))
        except ImportError:  # tensorboard not installed: the JSONL file is the record
            self.tb = None
        return open(path, "a", buffering=1)

    def _write_metrics(self, fh, row: dict[str, Any]) -> None:
        fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, row["step"])

    def run(self) -> RunResult:
        from tqdm.auto import tqdm

        cfg = self.cfg
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.acc.wait_for_everyone()
        if cfg.train.resume:
            self.load_checkpoint(find_checkpoint(self.out, cfg.train.resume))
        if self.main:
            cfg.save(self.out / "config.json")
        fh = self._open_metrics() if self.main else None
        self._status("running")
        first_loss = last_loss = None
        evals: list[tuple[int, float]] = []
        every = cfg.train.eval_every
        try:
            evaluates = self.main or self.fsdp  # see eval_loss
            if evaluates and every and self.step == 0:
                evals.append((0, self.eval_loss()))
                if self.main:
                    self._write_metrics(fh, {"step": 0, "eval_loss": evals[-1][1]})
            bar = tqdm(total=self.total_steps, initial=self.step, desc="finetune", unit="step",
                       disable=not (self.main and cfg.train.progress), dynamic_ncols=True)
            while self.step < self.total_steps:
                row = self.train_step()
                last_loss = row["loss"]
                first_loss = row["loss"] if first_loss is None else first_loss
                if self.banks is not None:
                    fill = self.banks.data.fill()
                    row["bank_fill"] = int(fill.sum())
                    row["bank_grids_filled"] = int((fill > 0).sum())
                if evaluates and every and self.step % every == 0:
                    row["eval_loss"] = self.eval_loss()
                    evals.append((self.step, row["eval_loss"]))
                if self.main and (self.step % cfg.train.log_every == 0 or "eval_loss" in row):
                    if self.banks is not None:
                        row["bank_fill_per_grid"] = self.banks.data.fill().tolist()
                    row["samples_encoded"] = self.store.stats["encoded"]
                    self._write_metrics(fh, row)
                    self._status("running", loss=row["loss"])
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}", bank=row.get("bank_fill", 0))
                if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0 \
                        and self.step < self.total_steps:
                    self.save_checkpoint()
            bar.close()
            self.save_checkpoint()
            lora_path = self.export(self.out / "lora.safetensors")
            self._status("done", loss=last_loss, lora=str(lora_path))
        except BaseException as e:
            self._status("failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if fh is not None:
                fh.close()
            if self.tb is not None:
                self.tb.close()
        self.log(f"done: {self.step} steps, last loss {last_loss}, LoRA {lora_path}")
        return RunResult(self.out, self.step, lora_path, first_loss, last_loss, evals,
                         len(self.banks.data) if self.banks is not None else 0)


def audio_trainable(audio) -> bool:
    return any(p.requires_grad for p in audio.parameters())


def train(cfg: TrainConfig, accelerator=None, log: Callable[[str], None] | None = None) -> RunResult:
    """Run (or resume) one fine-tuning run described by `cfg` on this process."""
    return Trainer(cfg, accelerator, log).run()


def with_overrides(cfg: TrainConfig, **sections: dict[str, Any]) -> TrainConfig:
    """`cfg` with some fields of some sections replaced: with_overrides(cfg, train={"max_steps": 5})."""
    return replace(cfg, **{name: replace(getattr(cfg, name), **values) for name, values in sections.items()})


__all__ = ["Trainer", "RunResult", "train", "with_overrides", "resolve_geometry"]
