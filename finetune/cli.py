"""Command line of the error-recycling fine-tuner.

    python app.py finetune --config finetune/configs/tiny.yaml [--max-steps 300 ...]
    python -m finetune.cli --config FILE [flags]
    accelerate launch --config_file finetune/configs/accelerate_ddp.yaml -m finetune.cli --config FILE

Every knob of finetune.config.TrainConfig is a flag; a flag overrides the config file, which
overrides the defaults. Each help line gives the default here and the official SVI value.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before torch loads, as app.py: spinning OpenMP threads starve each other
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import typing  # noqa: E402

from .config import SECTIONS, ConfigError, TrainConfig, coerce, flag_name, knobs, load_config_file  # noqa: E402

EPILOG = """\
Ready-made configs: finetune/configs/tiny.yaml (storyworld-tiny on a CPU), svi_shot.yaml,
svi_film.yaml, svi_talk.yaml, svi_dance.yaml (the official recipes on Wan 2.1 14B). Several GPUs or
nodes: launch the same command with `accelerate launch --config_file finetune/configs/
accelerate_{ddp,deepspeed_zero2,fsdp}.yaml -m finetune.cli ...`. A run folder gets config.json,
metrics.jsonl, status.json, checkpoints/ and lora.safetensors (loads with svi.lora.apply_loras).
"""


def _type_name(hint) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return getattr(args[0], "__name__", str(args[0])).upper()


def _is_bool(hint) -> bool:
    return hint is bool or bool in typing.get_args(hint)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --config and one flag per knob (grouped by section) to `parser`."""
    parser.description = parser.description or __doc__.split("\n\n")[0]
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON run config with sections "
                        + ", ".join(SECTIONS) + " (flags override it)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as JSON and exit without training")
    groups = {name: parser.add_argument_group(f"{name} settings") for name in SECTIONS}
    seen: set[str] = set()
    for section, name, default, help_text, svi, choices, hint in knobs():
        flag = flag_name(section, name)
        if flag in seen:
            raise RuntimeError(f"two knobs share the flag {flag}")
        seen.add(flag)
        svi_text = svi if svi is not None else "n/a"
        text = f"{help_text} [default: {default}; SVI: {svi_text}]".replace("%", "%%")
        kw = dict(dest=f"{section}.{name}", default=argparse.SUPPRESS, help=text)
        if _is_bool(hint):
            groups[section].add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            opts = [c for c in choices or () if c is not None]
            groups[section].add_argument(flag, metavar=_type_name(hint), choices=opts or None, **kw)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """defaults < --config file < flags; checked."""
    cfg = load_config_file(args.config) if getattr(args, "config", None) else TrainConfig()
    overrides: dict[str, dict] = {}
    hints = {(s, n): h for s, n, *_rest, h in knobs()}
    for dest, value in vars(args).items():
        if "." not in dest:
            continue
        section, name = dest.split(".", 1)
        if section in SECTIONS:
            overrides.setdefault(section, {})[name] = coerce(value, hints[(section, name)], flag_name(section, name))
    return TrainConfig.from_dict(overrides, cfg).check()


def run(args: argparse.Namespace) -> int:
    """Train as `args` say; returns the process exit code (2 for a config or data error)."""
    from .data import DatasetError

    try:
        cfg = config_from_args(args)
        if getattr(args, "print_config", False):
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        from .train import train

        result = train(cfg)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - missing weights and bad LoRA files are the user's to fix
        from svi.errors import is_user_error

        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:  # one summary per run, not per process
        return 0
    evals = ", ".join(f"{s}: {v:.4f}" for s, v in result.eval_losses[-3:])
    print(f"finetune: {result.steps} steps in {result.output_dir}; LoRA {result.lora_path}"
          + (f"; probe loss {result.eval_losses[0][1]:.4f} -> {result.eval_losses[-1][1]:.4f} ({evals})"
             if result.eval_losses else ""))
    return 0


def build_parser(prog: str = "python -m finetune.cli") -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog))


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
