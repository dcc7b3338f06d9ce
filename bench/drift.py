"""Drift over a long chain: base storyworld-tiny vs the SVI model (base + error-recycling LoRA).

Chains N clips (default 50) from a storyworld start image, once under one prompt and once under a
prompt stream (the object's motion and the person's action change every --every clips, the place
and time stay, so a drift in the look is the model's, not the story's), for the base model and the
SVI model, through the real renderer (svi.render). Drift of clip k = the storyworld drift score
(colour statistics, sharpness, high-frequency energy and saturation against clip 1; 0 = identical
look). Beside them the true storyworld video of the same captions (the drift a perfect model
would show: the world moves too). Prints the per-clip table, writes a PNG plot, and ends with

    drift: clips=N base=<base drift at clip N> svi=<svi drift at clip N> ratio=<svi/base> (one prompt;
    'at clip N' = mean of the last 3 clips)

With --starts K every curve is the mean over K start images (seeds --seed .. --seed+K-1: the same
caption, another layout of the scene), and the per-start last lines are printed before it: one
chain's last-3 figure moves a lot from clip to clip, and K chains average that noise down.

    python bench/drift.py [--clips 50] [--every 5] [--starts 1] [--variant shot] [--plot out/drift.png] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

CAPTION = "a red circle bounces on a beach by day while a person waves"
STREAM = [  # same place and time: only motion / action change
    "a red circle bounces on a beach by day while a person waves",
    "a red circle moves right on a beach by day while a person dances",
    "a red circle rests on a beach by day while a person walks",
    "a red circle moves left on a beach by day while a person jumps",
    "a red circle grows on a beach by day while a person stands",
]


def tail_mean(curve: np.ndarray, k: int = 3) -> float:
    """Drift at the last clip, averaged over the last k clips (one clip alone is noisy), never clip 1 itself."""
    return float(np.mean(curve[-min(k, len(curve) - 1):]))


def compare(base: float, svi: float) -> str:
    """The figures of a last line: base, svi and their ratio."""
    return f"base={base:.3f} svi={svi:.3f} ratio={svi / max(base, 1e-9):.2f}"


def truth_curve(prompts: list[str], seed: int, frames_per_clip: int, new_per_clip: int) -> np.ndarray:
    """(len(prompts),) drift of the true storyworld video over the same clips: the world's own floor.

    The generator renders the chain's captions (one scene per run of equal captions, cutting where
    the caption changes, as the world does) for as many frames as the chain makes, split into clips
    the way the renderer appends them; its drift is what a perfect model would score."""
    import storyworld as sw
    from storyworld.train.data import FPS, HEIGHT, WIDTH
    from storyworld.train.evaluate import drift_curve

    scenes, counts = [], []
    for k, p in enumerate(prompts):
        n = frames_per_clip if k == 0 else new_per_clip
        if scenes and scenes[-1] == p:
            counts[-1] += n
        else:
            scenes.append(p)
            counts.append(n)
    video = sw.render(scenes, counts, seed, width=WIDTH, height=HEIGHT, fps=FPS).frames
    ends = [frames_per_clip + new_per_clip * k for k in range(len(prompts))]  # clip k ends at ends[k]
    clips = [video[:ends[0]]] + [video[ends[k - 1]:ends[k]] for k in range(1, len(prompts))]
    return drift_curve(clips)


def main(argv: list[str] | None = None) -> None:
    from storyworld.train.evaluate import lora_window_arg

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--every", type=int, default=5, help="prompt stream: clips per prompt")
    ap.add_argument("--variant", default="shot", help="storyworld-tiny variant (shot: m=1 + ref padding; film: m=5)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--starts", type=int, default=1,
                    help="start images (seeds --seed..--seed+K-1) the curves are averaged over")
    ap.add_argument("--cfg", type=float, default=None, help="text guidance (default: the preset's)")
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled storyworld-tiny)")
    ap.add_argument("--lora", type=Path, default=None, help="SVI LoRA file (default: MODEL/svi-lora.safetensors)")
    ap.add_argument("--lora-scale", type=float, default=1.0, help="strength of the SVI LoRA")
    ap.add_argument("--lora-below-sigma", type=lora_window_arg, default="preset",
                    help="sigma below which the SVI LoRA acts: a number, 'all' (every step) or "
                    "'preset' (the variant's window, the default)")
    ap.add_argument("--plot", type=Path, default=Path("out/drift.png"))
    args = ap.parse_args(argv)
    if args.clips < 2:
        ap.error("--clips must be at least 2 (drift is measured against clip 1)")
    if args.starts < 1:
        ap.error("--starts must be at least 1")

    from tqdm import tqdm

    from storyworld.train.cache import ASSETS
    from storyworld.train.evaluate import chain, drift_curve, make_renderer, start_image

    folder = args.model or ASSETS
    tmp = Path(tempfile.mkdtemp(prefix="drift-"))
    seeds = range(args.seed, args.seed + args.starts)
    for seed in seeds:
        start_image(CAPTION, tmp / f"start{seed}.png", seed)
    stream = [STREAM[(i // args.every) % len(STREAM)] for i in range(args.clips)]
    prompt_lists = {"one prompt": [CAPTION] * args.clips, "prompt stream": stream}
    per_start: dict[tuple[str, str], list[np.ndarray]] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=2 * len(prompt_lists) * args.starts, desc="chains")
    for model in ("base", "svi"):  # one model load per model, reused by every chain
        r = make_renderer(args.variant, svi=model == "svi", folder=folder, lora=args.lora, steps=args.steps,
                          lora_scale=args.lora_scale, lora_below_sigma=args.lora_below_sigma)
        for prompts, captions in prompt_lists.items():
            per_start[model, prompts] = []
            for seed in seeds:
                clips = chain(r, tmp / f"start{seed}.png", captions, seed=seed, cfg=args.cfg)
                per_start[model, prompts].append(drift_curve(clips))
                bar.update()
    bar.close()
    secs = time.perf_counter() - t0
    curves = {key: np.mean(c, axis=0) for key, c in per_start.items()}
    spec = r.spec  # every run renders the same variant: one clip layout for the true video
    truth = {p: np.mean([truth_curve(captions, seed, spec.frames_per_clip, spec.frames_per_clip - spec.motion_frames)
                         for seed in seeds], axis=0) for p, captions in prompt_lists.items()}

    print(f"per-clip drift vs clip 1 ({args.variant}, {args.clips} clips, mean over {args.starts} start image(s), "
          f"{secs:.0f} s for {4 * args.clips * args.starts} clips)")
    print("clip  base/one  svi/one  truth/one  base/stream  svi/stream  truth/stream")
    for k in range(args.clips):
        print(f"{k + 1:4d}  {curves['base', 'one prompt'][k]:8.3f}  {curves['svi', 'one prompt'][k]:7.3f}  "
              f"{truth['one prompt'][k]:9.3f}  {curves['base', 'prompt stream'][k]:11.3f}  "
              f"{curves['svi', 'prompt stream'][k]:10.3f}  {truth['prompt stream'][k]:12.3f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, prompts in zip(axes, ("one prompt", "prompt stream")):
        for model, colour in (("base", "tab:red"), ("svi", "tab:blue")):
            ax.plot(np.arange(1, args.clips + 1), curves[model, prompts], color=colour,
                    label=f"{model}{' + SVI LoRA' if model == 'svi' else ''}")
        ax.plot(np.arange(1, args.clips + 1), truth[prompts], color="0.5", linestyle="--",
                label="true storyworld video")
        ax.set_title(f"storyworld-tiny {args.variant}: {prompts}")
        ax.set_xlabel("clip")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("drift vs clip 1 (storyworld score)")
    axes[0].legend()
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")

    whole = {m: curves[m, "one prompt"][1:].mean() for m in ("base", "svi")}
    print(f"truth (the true video's own drift, a perfect model's): one={tail_mean(truth['one prompt']):.3f} "
          f"stream={tail_mean(truth['prompt stream']):.3f}; whole-chain means (clips 2-N, less noisy than the "
          f"last 3): base={whole['base']:.3f} svi={whole['svi']:.3f}")
    stream_line = compare(tail_mean(curves["base", "prompt stream"]), tail_mean(curves["svi", "prompt stream"]))
    print(f"stream: clips={args.clips} {stream_line}")
    if args.starts > 1:
        for i, seed in enumerate(seeds):
            base, svi = per_start["base", "one prompt"][i], per_start["svi", "one prompt"][i]
            print(f"start {seed}: {compare(tail_mean(base), tail_mean(svi))}; "
                  f"whole chain base={base[1:].mean():.3f} svi={svi[1:].mean():.3f}")
    one = compare(tail_mean(curves["base", "one prompt"]), tail_mean(curves["svi", "one prompt"]))
    print(f"drift: clips={args.clips} {one}")


if __name__ == "__main__":
    main()
