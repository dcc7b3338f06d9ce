"""Export a DiT run's EMA weights from its state.pt as a diffusers transformer folder.

`storyworld.train.dit` writes OUT/transformer as it trains, but the committed train states are
slim (`common.slim_state`) and their run folders are not kept, so a session that wants to bundle or
bench a committed state exports it with this. The architecture is the bundled transformer's config
(the DiT states in assets/train-state share it); the weights are the state's EMA, cast to float32.

    python -m storyworld.train.export_dit assets/train-state/storyworld-tiny/dit-p2cut/state.pt out/dit/transformer
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .cache import ASSETS


def export_ema(state_path: Path, out: Path, config_from: Path = ASSETS / "transformer") -> int:
    """Write the EMA of `state_path` to `out` (config.json + safetensors); returns the state's step."""
    from diffusers import WanTransformer3DModel

    if not Path(state_path).is_file():
        raise FileNotFoundError(f"no DiT state at {state_path}")
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if "ema" not in state.get("modules", {}):
        raise ValueError(f"{state_path} holds no 'ema' module (modules: {sorted(state.get('modules', {}))})")
    config = WanTransformer3DModel.load_config(config_from)
    dit = WanTransformer3DModel.from_config(config)
    dit.load_state_dict(state["modules"]["ema"])  # strict: a state of another shape is an error, not a partial load
    dit.float().save_pretrained(out)
    return int(state["step"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state", type=Path, help="a DiT run's state.pt (full or slim)")
    ap.add_argument("out", type=Path, help="transformer folder to write")
    ap.add_argument("--config-from", type=Path, default=ASSETS / "transformer",
                    help="transformer folder whose config.json the state matches")
    args = ap.parse_args(argv)
    step = export_ema(args.state, args.out, args.config_from)
    print(f"export_dit: step {step} EMA -> {args.out}")


if __name__ == "__main__":
    main()
