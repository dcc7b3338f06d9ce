"""Figures for the model card: the stages' loss curves, and a grid of sample frames.

    python -m storyworld.train.figures --runs out/sw3/runs --out assets/models/storyworld-tiny/figures/losses.png
    python -m storyworld.train.figures --samples assets/models/storyworld-tiny --out .../figures/samples.png

The run folder for --runs holds one folder (or link) per stage, named as in STAGES.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STAGES = (("vae", "losses.jsonl", "l1", "VAE: reconstruction L1"),
          ("vae-dec", "losses.jsonl", "l1", "VAE decoder (frozen encoder), 5 frames: L1"),
          ("vae-dec17", "losses.jsonl", "l1", "VAE decoder, 17 frames: L1"),
          ("vae-full", "losses.jsonl", "l1", "VAE, all weights, whole 9-frame clips: L1"),
          ("vae-fg", "losses.jsonl", "fg_l1", "VAE: foreground L1 (objects, figure)"),
          ("dit", "losses.jsonl", "loss", "base DiT: weighted flow-matching MSE"),
          ("svi", "metrics.jsonl", "loss", "SVI LoRA (error recycling): loss"),
          ("talk", "metrics.jsonl", "loss", "talk LoRA + audio adapter: loss"),
          ("dance", "metrics.jsonl", "loss", "dance LoRA + pose encoder: loss"))


def smooth(y: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, len(y)))
    return np.convolve(y, np.ones(k) / k, mode="valid")


SAMPLE_CAPTIONS = ("a red circle bounces on a beach by day while a person waves",
                   "a yellow square rests in a forest at night",
                   "a blue star spins in a desert at dusk",
                   "a green triangle moves left in a city by day while a person dances")


def sample_grid(model: Path, captions=SAMPLE_CAPTIONS, clips: int = 4, seed: int = 0):
    """One row per caption: start image, clip 1 frame 0 (generated: the DiT redraws the given frame),
    clip 1 frame 8 and clip `clips`' last frame of the base model, then the same two frames with the
    SVI LoRA.
    Rendered through the engine (storyworld.train.evaluate), so it shows what the app renders."""
    import tempfile

    from .evaluate import chain, make_renderer, start_image

    titles = ["start image", "clip 1, frame 0", "clip 1, frame 8", f"clip {clips}, last",
              "SVI: clip 1, frame 8", f"SVI: clip {clips}, last"]
    base, svi = make_renderer("shot", folder=model), make_renderer("shot", svi=True, folder=model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, caption in enumerate(captions):
            path = Path(tmp) / f"start{i}.png"
            first = start_image(caption, path, seed=seed + i)
            b = chain(base, path, [caption] * clips, seed=seed + i)
            s = chain(svi, path, [caption] * clips, seed=seed + i)
            rows.append([first, b[0][0], b[0][8], b[-1][-1], s[0][8], s[-1][-1]])
    return titles, rows


def plot_samples(model: Path, out: Path) -> None:
    import matplotlib.pyplot as plt

    captions = SAMPLE_CAPTIONS
    titles, rows = sample_grid(model, captions)
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(1.9 * len(titles), 1.55 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            axes[r, c].imshow(frame)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(captions[r].replace(" while", "\nwhile"), fontsize=5.5)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--runs", type=Path, help="folder of stage run folders: plot their loss curves")
    what.add_argument("--samples", type=Path, help="model folder: plot a grid of rendered sample frames")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    if args.samples:
        plot_samples(args.samples, args.out)
        return
    plot_losses(args.runs, args.out)


def plot_losses(runs: Path, out: Path) -> None:
    import matplotlib.pyplot as plt

    found = [(s, runs / s / f, k, t) for s, f, k, t in STAGES if (runs / s / f).is_file()]
    cols = min(3, max(1, len(found)))
    rows_n = -(-max(1, len(found)) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.4 * cols, 3.2 * rows_n), squeeze=False)
    for ax, (stage, path, key, title) in zip(axes.flat, found):
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        rows = [r for r in rows if key in r and r[key] is not None]
        steps, y = np.array([r["step"] for r in rows]), np.array([r[key] for r in rows], float)
        k = max(1, len(y) // 50)
        ax.plot(steps, y, color="0.8", lw=0.5)
        ax.plot(steps[k - 1:], smooth(y, k), color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(found):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
