"""Where does a VAE lose object colour? Per latent frame, on natural clips and on a chain's condition clip.

Reads back object colour (storyworld analyzers) from each VAE's reconstructions of --captions random
storyworld clips, per latent frame (storyworld.train.evaluate.temporal_readback): chunk 0 is frame 0
(the first-frame path), chunks 1-4 the causal temporal path. The `cut` clip is a Shot chain's condition
clip (another moment as frame 0, then one image held still), where a VAE that codes change against frame
0 loses colour although nothing moves. The first --vae is the reference (default: the bundled one); the
last line compares the last VAE with it:

    python bench/vae_readback.py [--vae DIR ...] [--captions 24]
Last line: vae_readback: natural=<last> ref=<first> cut=<last> ref=<first> ratio=<last/first on natural frames 1-16>
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", type=Path, action="append", default=None,
                    help="VAE folder (AutoencoderKLWan); repeat to compare (default: the bundled model's vae/)")
    ap.add_argument("--captions", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np
    from diffusers import AutoencoderKLWan

    from storyworld.train.cache import ASSETS
    from storyworld.train.evaluate import temporal_readback

    folders = args.vae or [ASSETS / "vae"]
    results = []
    for folder in folders:
        if not (folder / "config.json").is_file():
            sys.exit(f"not a VAE folder (no config.json): {folder}")
        vae = AutoencoderKLWan.from_pretrained(folder).eval()
        r = temporal_readback(vae, args.captions, args.seed)
        results.append(r)
        for kind in ("natural", "cut"):
            print(f"{folder}: {kind:7s} chunks " + " / ".join(f"{c:.1%}" for c in r[kind]))
        print(f"{folder}: natural frames 1-16 {r['natural_frames']:.1%}")
    ref, last = results[0], results[-1]
    cut = lambda r: float(np.mean(r["cut"][1:]))  # noqa: E731
    print(f"vae_readback: natural={last['natural_frames']:.3f} ref={ref['natural_frames']:.3f} "
          f"cut={cut(last):.3f} ref={cut(ref):.3f} ratio={last['natural_frames'] / max(ref['natural_frames'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
