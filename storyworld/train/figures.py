"""Loss curves of the stages as one PNG (for the model card).

    python -m storyworld.train.figures --runs out/storyworld-train --out assets/models/storyworld-tiny/figures/losses.png
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
          ("dit", "losses.jsonl", "loss", "base DiT: weighted flow-matching MSE"),
          ("svi", "metrics.jsonl", "loss", "SVI LoRA (error recycling): loss"),
          ("talk", "metrics.jsonl", "loss", "talk LoRA + audio adapter: loss"),
          ("dance", "metrics.jsonl", "loss", "dance LoRA + pose encoder: loss"))


def smooth(y: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, len(y)))
    return np.convolve(y, np.ones(k) / k, mode="valid")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [(s, args.runs / s / f, k, t) for s, f, k, t in STAGES if (args.runs / s / f).is_file()]
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(args.out)


if __name__ == "__main__":
    main()
