"""SVI Storyboard: the composition root. Parses arguments and hands off; holds no logic.

    python app.py                     launch the storyboard editor (Gradio) on the bundled model
    python app.py render SB.json --out OUT.mp4
    python app.py render SB.json --project NAME    persist takes; a re-run resumes
    python app.py projects list|export|import|rename|duplicate|delete|gc
    python app.py pose VIDEO --out POSE.json       skeleton track from a driving video
    python app.py finetune --config FILE           error-recycling fine-tuning
    python app.py info                presets, weights found where, device
"""

from __future__ import annotations

import argparse
import os
import sys

# Before torch loads: OpenMP threads that spin while waiting turn a busy CPU (a training run beside
# a render, two renders) into a 10x slowdown of both; passive waiting costs little when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    from svi.cli import add_render_arguments

    ap = argparse.ArgumentParser(prog="app.py", description="SVI Storyboard: infinite-length video, clip by clip.")
    sub = ap.add_subparsers(dest="command")

    ui = sub.add_parser("ui", help="launch the browser editor (the default)")
    add_ui_arguments(ui)

    render = sub.add_parser("render", help="render a storyboard JSON to mp4 (optionally into a project)")
    add_render_arguments(render)
    from storage.cli import add_commands as add_storage_commands

    add_storage_commands(sub)  # render --project, and `projects list|export|import|...`

    # These two own their arguments (main() hands argv over before parsing); listed here for --help.
    sub.add_parser("pose", help="extract a skeleton track from a driving video (pose --help)", add_help=False)
    sub.add_parser("finetune", help="error-recycling fine-tuning (finetune --help)", add_help=False)

    sub.add_parser("info", help="presets, where weights are found, device")
    return ap


def add_ui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--data-dir", help="data folder (default: SVI_DATA_DIR or a per-user folder)")
    p.add_argument("--model", default=None, help="default model preset")
    p.add_argument("--weights-dir", help="folder with real model weights (sets SVI_WEIGHTS_DIR)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["ui", *argv]
    try:
        if argv[0] == "pose":
            from svi.conditioning.pose import main as pose_main

            return pose_main(argv[1:], prog="app.py pose")
        if argv[0] == "finetune":
            from finetune import cli as finetune_cli

            parser = argparse.ArgumentParser(prog="app.py finetune", description=finetune_cli.__doc__,
                                             formatter_class=argparse.RawDescriptionHelpFormatter)
            finetune_cli.add_arguments(parser)
            return finetune_cli.run(parser.parse_args(argv[1:]))
        return dispatch(ap, ap.parse_args(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - user-facing errors become one clear line, not a traceback
        from svi.errors import is_user_error

        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def dispatch(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "render" and getattr(args, "project", None) or args.command == "projects":
        from storage.cli import run as storage_run

        return storage_run(args)
    if args.command == "render":
        from svi.cli import run_render

        return run_render(args)

    if args.command == "info":
        from svi.cli import run_info

        return run_info(args)
    if args.command == "ui":
        try:
            from ui.app import launch
        except ImportError:
            print("the browser editor is not built yet; rendering the example storyboard instead", file=sys.stderr)
            from svi.cli import run_render

            ns = ap.parse_args(["render", "assets/examples/storyboard.json", "--out", "out/example.mp4"])
            return run_render(ns)
        return launch(args)
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
