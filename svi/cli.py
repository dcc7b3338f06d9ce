"""Engine commands: `app.py render STORYBOARD.json --out OUT.mp4` and `app.py info`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm


def add_render_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("storyboard", type=Path, help="storyboard JSON file (see docs/storyboard-format.md)")
    p.add_argument("--out", type=Path, help="output mp4 (default: next to the storyboard)")
    p.add_argument("--clips", type=int, help="render at most N clips")
    p.add_argument("--model", help="model preset (default: the storyboard's, else storyworld-tiny)")
    p.add_argument("--variant", help="preset variant, e.g. shot, film, tom, talk, dance")
    p.add_argument("--steps", type=int, help="denoising steps per clip (default: the preset's)")
    p.add_argument("--seed", type=int, help="project seed (per-clip seeds derive from it)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda when available)")


def spec_for(board, args):
    from .presets import resolve_spec

    s = board.settings
    return resolve_spec(args.model or s.model, args.variant or s.variant, steps=args.steps or s.steps, cfg=s.cfg,
                        negative_prompt=s.negative_prompt,
                        extra_loras=tuple((lo.path, lo.scale) for lo in s.loras))


def run_render(args: argparse.Namespace) -> int:
    from . import load_storyboard, plan
    from .engine import build_renderer
    from .video import VideoWriter

    board = load_storyboard(args.storyboard)
    if args.seed is not None:
        board = board.with_settings(seed=args.seed)
    spec = spec_for(board, args)
    clip_plan = plan(board, spec, max_clips=args.clips)
    out = args.out or args.storyboard.with_suffix(".mp4")
    renderer, _ = build_renderer(spec, args.device)
    print(f"{spec.model_id}: {len(clip_plan)} clips, {clip_plan.total_frames} frames "
          f"({clip_plan.duration:.1f} s at {spec.fps} fps) -> {out}", file=sys.stderr)

    clips = tqdm(total=len(clip_plan), desc="clips", unit="clip", position=0)
    steps = tqdm(total=clip_plan.clips[0].steps, desc="steps", unit="step", position=1, leave=False)

    def on_step(k: int, i: int, n: int) -> None:
        if i == 1:
            steps.reset(total=n)
            steps.set_description(f"clip {k + 1} steps")
        steps.update(1)

    with VideoWriter(out, spec.fps) as writer:
        for result in renderer.stream(clip_plan, on_step=on_step):
            writer.append(result.frames)
            clips.update(1)
            clips.set_postfix(s_per_clip=f"{result.timings['total']:.2f}")
    steps.close()
    clips.close()
    final = _mux_storyboard_audio(board, clip_plan, out)
    print(f"wrote {final} ({writer.frames_written} frames)", file=sys.stderr)
    return 0


def _mux_storyboard_audio(board, clip_plan, out: Path) -> Path:
    """Lay the storyboard's audio segments on the video's timeline and mux them under it."""
    if not board.audio:
        return out
    from .conditioning.audio import timeline_audio  # noqa: PLC0415 - optional heavy import
    from .video import mux_audio

    samples, sr = timeline_audio(board.audio, clip_plan.total_frames, clip_plan.fps)
    tmp = out.with_name(out.stem + ".silent.mp4")
    out.replace(tmp)
    mux_audio(tmp, samples, sr, out)
    tmp.unlink()
    return out


def run_info(args: argparse.Namespace) -> int:
    import torch

    from .engine import weights_report
    from .presets import PRESETS, weights_root

    print(f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'cpu'}"
          f"; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"weights folder (SVI_WEIGHTS_DIR): {weights_root()}")
    for row in weights_report():
        p = PRESETS[row["preset"]]
        v = p.variants[row["variant"]]
        status = "ready" if row["ready"] else "NOT READY"
        name = f"{row['preset']}/{row['variant']}"
        print(f"  {name:<27} {status:<9} m={v.motion_frames} padding={v.padding} "
              f"cfg={v.text_cfg}{'' if v.audio_cfg is None else f'/audio {v.audio_cfg}'} fps={v.fps} "
              f"F={p.frames_per_clip} steps={p.steps} max={v.max_long}x{v.max_short}")
        print(f"      base: {row['base']} ({row['folder']})")
        if row["lora"] != "-":
            print(f"      lora: {row['lora']}")
        if row["extra_missing"]:
            print(f"      also missing: {', '.join(row['extra_missing'])}")
    return 0
