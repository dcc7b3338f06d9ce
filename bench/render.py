"""Seconds per clip: our streaming renderer vs the naive diffusers chain, and memory as clips grow.

The naive way is what a user of diffusers writes to chain clips: one `WanImageToVideoPipeline`
call per clip, fed the last frame of the previous clip, frames collected in a list (same model,
same resolution, same steps, same CFG). Ours streams the same clips through `Renderer.stream`
into a `VideoWriter`. Peak RSS (ru_maxrss) is read after clip 4 and after clip 32 of our render,
before the naive chain runs, so the naive run cannot inflate it. The speed ratio comes from clips
timed in alternation (naive, ours, naive, ours, ...; medians), so load from other processes on
a shared machine hits both sides alike.

    python bench/render.py [--clips 32] [--naive-clips 6] [--steps 12]
Last line: render: ours_s_per_clip=… naive_s_per_clip=… ratio=… rss_4=…MB rss_32=…MB
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py sets it, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--naive-clips", type=int, default=6)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()

    from svi import plan, resolve_spec
    from svi.engine import build_renderer
    from svi.timeline import PromptSegment, Storyboard
    from svi.video import VideoWriter

    root = Path(__file__).resolve().parent.parent
    spec = resolve_spec("storyworld-tiny", steps=args.steps)
    tmp = Path(tempfile.mkdtemp(prefix="svi-bench-"))
    board = Storyboard(
        start_image=str(root / "assets/examples/start.png"),
        prompts=(PromptSegment(0, 1e4, "a red circle bounces on a beach at noon"),),
    ).with_settings(duration=None)
    clip_plan = plan(board, spec, max_clips=args.clips)
    assert len(clip_plan) == args.clips, "storyboard too short for the requested clips"
    torch.manual_seed(0)

    # ---- ours: streaming renderer into a streaming writer
    renderer, _ = build_renderer(spec, "cpu")
    times, rss = [], {}
    with VideoWriter(tmp / "ours.mp4", spec.fps) as writer:
        t = time.perf_counter()
        for result in renderer.stream(clip_plan):
            writer.append(result.frames)
            now = time.perf_counter()
            times.append(now - t)
            t = now
            n = result.index + 1
            if n in (4, args.clips):
                rss[n] = peak_rss_mb()
            print(f"ours clip {n:3d}: {times[-1]:.3f} s  peak_rss={peak_rss_mb():.0f} MB", flush=True)
    ours = float(np.mean(times[1:])) if len(times) > 1 else times[0]  # clip 0 includes warm-up

    # ---- naive: one pipeline call per clip, last frame fed back, all frames kept.
    # Timed interleaved with our clips (naive, ours, naive, ours, ...) and compared by medians, so
    # both see the same machine load: on a shared CPU, back-to-back phases would measure the load.
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from transformers import CLIPImageProcessor

    # Fresh stock components, as a diffusers user would load them (our renderer's are tuned).
    from svi.models import load_components

    c = load_components(spec, "cpu")
    size = c.clip_size
    pipe = WanImageToVideoPipeline(
        tokenizer=c.tokenizer, text_encoder=c.text_encoder, vae=c.vae, transformer=c.transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=spec.shift),
        image_encoder=c.image_encoder,
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
    )
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(board.start_image).convert("RGB")
    W, H = spec.output_size(*image.size)
    image = image.resize((W, H), resample=Image.BICUBIC)
    naive_times, paired_ours, all_frames = [], [], []
    ours_stream = renderer.stream(clip_plan)
    for k, clip in enumerate(clip_plan.clips[: args.naive_clips]):
        t = time.perf_counter()
        frames = pipe(image=image, prompt=clip.prompt, negative_prompt=clip.negative, height=H, width=W,
                      num_frames=clip.frames, num_inference_steps=clip.steps, guidance_scale=clip.cfg,
                      generator=torch.Generator().manual_seed(clip.seed), output_type="np",
                      max_sequence_length=spec.text_len).frames[0]
        frames = (frames * 255).round().astype(np.uint8)
        all_frames.extend(frames if k == 0 else frames[1:])
        image = Image.fromarray(frames[-1])
        naive_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        next(ours_stream)
        paired_ours.append(time.perf_counter() - t)
        print(f"naive clip {k + 1:3d}: {naive_times[-1]:.3f} s   ours (paired): {paired_ours[-1]:.3f} s", flush=True)
    ours_stream.close()
    naive = float(np.median(naive_times[1:]))  # clip 0 of each includes warm-up
    ours_paired = float(np.median(paired_ours[1:]))

    print(f"ours alone: mean {ours:.3f} s/clip over {len(times) - 1} clips (after warm-up); paired medians: "
          f"ours {ours_paired:.3f}, naive {naive:.3f} s/clip over {len(naive_times) - 1} clips")
    print(f"render: ours_s_per_clip={ours_paired:.3f} naive_s_per_clip={naive:.3f} ratio={ours_paired / naive:.2f} "
          f"rss_4={rss.get(4, float('nan')):.0f}MB rss_{args.clips}={rss.get(args.clips, float('nan')):.0f}MB")


if __name__ == "__main__":
    main()
