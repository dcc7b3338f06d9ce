"""Seconds per training step with error recycling vs a plain LoRA fine-tune, and the banks' memory.

Both trainers run in this process on the same model, data and settings; only `error_recycling`
differs (plain: no banks, no injection, no error pass). Their steps are interleaved (one of each,
in turn) so load from other work on a shared machine hits both alike, and each figure is a median.
Samples are encoded into the cache before timing, so the figures are the training step itself.

By default the banks are first filled to capacity with random errors: the steady state of a long
run, where every insert replaces (the l2 strategy then scans its full grid, twice per step: the
noise and the data bank).

    python bench/erft.py [--steps 40] [--strategy l2] [--k 500] [--rank 128] [--frames 17] [--prefill 1.0]
Default: storyworld-tiny at its clip geometry (17 x 96 x 128), the SVI recycling settings.
Last line: erft: step_s=... plain_step_s=... overhead=... bank_mb=...
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py sets it, before torch loads

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def write_videos(root: Path, n: int, frames: int, width: int, height: int) -> None:
    """Tiny moving-pattern clips in the SVI layout (no storyworld needed)."""
    from svi.video import write_video

    folder = root / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["Filename,Video Description"]
    for i in range(n):
        rng = np.random.default_rng(i)
        base = rng.integers(30, 220, size=(1, 1, 3))
        clip = np.empty((frames, height, width, 3), np.uint8)
        yy, xx = np.mgrid[0:height, 0:width]
        for t in range(frames):
            wave = 40 * np.sin((xx + 3 * t * (i + 1)) / 9.0)[..., None]
            clip[t] = np.clip(base + wave + (yy[..., None] * 0.5), 0, 255).astype(np.uint8)
        write_video(folder / f"v{i}.mp4", clip, 8)
        rows.append(f"v{i}.mp4,a red ball moves {i}")
    (folder / "bench.csv").write_text("\n".join(rows) + "\n")


def prefill(banks, fraction: float, seed: int = 0) -> None:
    """Fill every grid of both banks to `fraction` of K with random errors (scaled like real ones)."""
    gen = torch.Generator().manual_seed(seed)
    for bank in (banks.noise, banks.data):
        n = int(round(fraction * bank.capacity))
        for g in range(bank.num_grids):
            for _ in range(n - bank.count(g)):
                bank.insert(0.1 * torch.randn(bank.shape, generator=gen), g)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps per trainer")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per trainer first")
    ap.add_argument("--strategy", default="l2", help="bank replacement: random, fifo, l2 (SVI: l2)")
    ap.add_argument("--k", type=int, default=500, help="errors per grid (SVI 500)")
    ap.add_argument("--rank", type=int, default=128, help="LoRA rank (SVI 128)")
    ap.add_argument("--frames", type=int, default=17, help="clip frames (tiny preset 17)")
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--prefill", type=float, default=1.0, help="bank fill before timing, fraction of K")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--bank-dtype", default="bfloat16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from finetune.config import TrainConfig
    from finetune.train import Trainer, with_overrides

    tmp = Path(tempfile.mkdtemp(prefix="erft-bench-"))
    write_videos(tmp / "data", args.videos, args.frames + 8, args.width + 16, args.height + 16)
    base = with_overrides(
        TrainConfig(),
        data={"kind": "svi", "root": str(tmp / "data"), "frames": args.frames, "height": args.height,
              "width": args.width, "views_per_video": 1, "cache_dir": str(tmp / "cache")},
        lora={"rank": args.rank, "alpha": float(args.rank)},
        train={"max_steps": 10**6, "checkpoint_every": 0, "eval_every": 0, "device": "cpu", "progress": False,
               "cpu_threads": args.threads},
        recycling={"buffer_k": args.k, "strategy": args.strategy, "bank_dtype": args.bank_dtype, "warmup_iter": 0},
    )
    quiet = lambda msg: None  # noqa: E731
    rec = Trainer(with_overrides(base, train={"output_dir": str(tmp / "rec")}), log=quiet)
    plain = Trainer(with_overrides(base, train={"output_dir": str(tmp / "plain"), "error_recycling": False}), log=quiet)
    for i in range(len(rec.dataset)):  # encode once, outside the timing (both share the cache)
        rec.store.get(i, 0)
        plain.store.get(i, 0)
    t0 = time.perf_counter()
    prefill(rec.banks, args.prefill)
    fill_s = time.perf_counter() - t0

    times: dict[str, list[float]] = {"rec": [], "plain": []}
    for i in range(args.warmup + args.steps):
        for name, trainer in (("rec", rec), ("plain", plain)):
            t = time.perf_counter()
            trainer.train_step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    step_s, plain_s = statistics.median(times["rec"]), statistics.median(times["plain"])
    overhead = step_s / plain_s - 1
    bank_mb = rec.banks.memory_bytes / 2**20
    fill = rec.banks.data.fill()
    print(f"model storyworld-tiny, clip {args.frames}x{args.height}x{args.width}, latent {rec.latent_shape}, "
          f"LoRA r={args.rank}, threads {args.threads}")
    print(f"banks: 2 x {rec.banks.data.num_grids} grids x K={args.k} {args.bank_dtype}, strategy {args.strategy}, "
          f"filled to {int(fill.min())}..{int(fill.max())} per grid in {fill_s:.1f} s")
    print(f"recycling: median {step_s * 1e3:.1f} ms/step (p10 {np.percentile(times['rec'], 10) * 1e3:.1f}, "
          f"p90 {np.percentile(times['rec'], 90) * 1e3:.1f})")
    print(f"plain:     median {plain_s * 1e3:.1f} ms/step (p10 {np.percentile(times['plain'], 10) * 1e3:.1f}, "
          f"p90 {np.percentile(times['plain'], 90) * 1e3:.1f})")
    print(f"erft: step_s={step_s:.4f} plain_step_s={plain_s:.4f} overhead={overhead:.3f} bank_mb={bank_mb:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
