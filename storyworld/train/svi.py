"""Stage 4: the SVI LoRA by error-recycling fine-tuning on the trained base, via finetune/.

A thin front over `finetune.cli` (the product's fine-tuner, the same code a user runs): the
model is the bundled folder with the trained VAE and DiT (--model), the data is the built-in
storyworld dataset (generated on the fly, seeded), the recipe is finetune/configs/tiny.yaml
(SVI-Shot scaled down: rank 16, banks of 20, l2 replacement) unless flags here say otherwise.
Checkpoints, metrics.jsonl and lora.safetensors land in --out; --resume continues from the latest
checkpoint there. The LoRA is then bundled as MODEL/svi-lora.safetensors (storyworld.train.bundle).
With --recipe finetune/configs/tiny-talk.yaml (or tiny-dance.yaml) the same stage trains the talk
(dance) variant: its audio adapter (pose encoder) from the seeded init together with a LoRA, bundled
as MODEL/svi-talk.safetensors (svi-dance.safetensors), which carries the adapter's weights.

    python -m storyworld.train.svi --model assets/models/storyworld-tiny --out out/storyworld-train/svi \
        --steps 600 --resume
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.config import storyworld_recipe

from .cache import ASSETS

RECIPE = storyworld_recipe("shot")


def finetune_args(args: argparse.Namespace) -> list[str]:
    argv = ["--config", str(args.recipe), "--model-dir", str(args.model), "--output-dir", str(args.out),
            "--max-steps", str(args.steps), "--checkpoint-every", str(args.every), "--seed", str(args.seed),
            "--storyworld-videos", str(args.videos), "--lr", str(args.lr),
            "--cpu-threads", str(args.threads), "--eval-every", str(args.eval_every), "--device", "cpu"]
    if args.variant:
        argv += ["--variant", args.variant]
    if args.resume and any((Path(args.out) / "checkpoints").glob("step_*")):
        argv += ["--resume", "latest"]
    return argv + list(args.extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=ASSETS, help="model folder with the trained base (VAE + DiT)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=100, help="checkpoint every N steps")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--recipe", type=Path, default=RECIPE,
                    help="finetune config: tiny.yaml (SVI LoRA, shot), tiny-talk.yaml (+ audio adapter), "
                         "tiny-dance.yaml (+ pose encoder)")
    ap.add_argument("--variant", default=None, help="override the recipe's variant")
    ap.add_argument("--videos", type=int, default=128, help="storyworld videos in the generated dataset")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("extra", nargs="*", help="further finetune.cli flags (after --)")
    args = ap.parse_args(argv)
    from finetune.cli import main as finetune_main

    return finetune_main(finetune_args(args))


if __name__ == "__main__":
    raise SystemExit(main())
