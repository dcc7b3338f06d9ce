"""Does storyworld-tiny do what it is told? Prompt following, pose error and lip sync on generated clips.

All through the real renderer (svi.render), scored by the storyworld analyzers; first the ceiling
the model's VAE allows (its reconstructions of true clips, read back the same way):
- prompt following: for --prompts random captions, the start image is the caption's first frame
  and --clips clips are chained under the caption; over the LAST clip's frames, the share whose
  place (and time of day) and object colour read back as the caption says. (The start image
  carries place and colour, so this measures keeping them over a chain, not painting them.)
- pose error (dance variant): a storyworld video of a dancing person gives the start image and the
  skeleton track; mean keypoint error of the generated figure against that skeleton, as a fraction
  of the frame's shorter side (frames with no figure found are counted separately).
- audio-mouth correlation (talk variant): --talks storyworld videos with speech each give a start
  image and the wav; Pearson correlation of the generated mouth opening with the loudness envelope,
  averaged over them.

    python bench/conditioning.py [--prompts 8] [--clips 2] [--talks 12] [--svi] [--model DIR] [--cfg G] [--only-prompts]
Last line: conditioning: place=… colour=… prompt=… pose_error=… found=… lip_sync=…
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np


def prompt_following(folder, lora, svi, n, clips, seed, tmp, cfg=None, lora_scale=1.0, lora_below_sigma="preset"):
    import storyworld as sw
    from storyworld.analyze import prompt_match
    from storyworld.train.evaluate import chain, make_renderer, start_image

    r = make_renderer("shot", svi=svi, folder=folder, lora=lora, lora_scale=lora_scale,
                      lora_below_sigma=lora_below_sigma)
    rng = np.random.default_rng([seed, 11])
    place, colour, both, cases = [], [], [], []
    for i in range(n):
        caption = sw.random_caption(rng)
        start_image(caption, tmp / f"p{i}.png", seed + i)
        frames = chain(r, tmp / f"p{i}.png", [caption] * clips, seed=seed + i, cfg=cfg)[-1]
        hits = [prompt_match(f, caption) for f in frames]
        place += [h.place and h.time for h in hits]
        colour += [h.colour for h in hits]
        both += [h.place and h.time and h.colour for h in hits]
        cases.append((caption, float(np.mean([h.colour for h in hits]))))
        print(f"  {caption}: place {np.mean([h.place and h.time for h in hits]):.2f} colour {cases[-1][1]:.2f}")
    print_breakdown(cases)
    return float(np.mean(place)), float(np.mean(colour)), float(np.mean(both))


def print_breakdown(cases):
    """Colour read back per object colour, shape and motion of the captions: where prompt following fails."""
    from storyworld.train.evaluate import breakdown

    for field, by in breakdown(cases).items():
        print(f"  colour by {field}: " + ", ".join(f"{v} {m:.2f} ({k})" for v, (m, k) in by.items()))


def write_pose_track(path, keypoints, fps, width, height):
    """storyworld keypoints (N, 33, 3) as the renderer's pose track file (svi.conditioning.pose).

    storyworld.files.write_keypoints lists landmark names where PoseTrack wants the layout name,
    so the track is built directly."""
    from svi.conditioning.pose import PoseTrack

    n = len(keypoints)
    vis = keypoints[..., 2].astype(np.float32)
    PoseTrack(keypoints[..., :2].astype(np.float32), np.zeros((n, 33), np.float32), vis, np.ones_like(vis),
              np.ones(n, bool), float(fps), width, height, "storyworld", "generator", (), 0.0).save(path)


def pose_following(folder, svi, clips, seed, tmp):
    import storyworld as sw
    from storyworld.pose import pose_error
    from storyworld.train.data import FPS, HEIGHT, WIDTH
    from storyworld.train.evaluate import chain, make_renderer

    caption = "a blue square rests in a desert by day while a person dances"
    n_frames = 16 * clips + 1
    video = sw.render([caption], n_frames, seed, width=WIDTH, height=HEIGHT, fps=FPS)
    from PIL import Image

    Image.fromarray(video.frames[0]).save(tmp / "dance.png")
    write_pose_track(tmp / "dance.pose.json", video.keypoints, FPS, WIDTH, HEIGHT)
    r = make_renderer("dance", svi=svi, folder=folder)
    frames = np.concatenate(chain(r, tmp / "dance.png", [caption] * clips, seed=seed, pose=tmp / "dance.pose.json"))
    err, found = pose_error(frames, video.keypoints[:len(frames)])
    return float(np.nanmean(err)) if found.any() else float("nan"), float(found.mean())


def lip_following(folder, svi, clips, seed, tmp, talks=12):
    """Mean audio-mouth correlation over `talks` talking clips (seeds seed, seed + 1, ...: one clip's
    correlation swings with its speech, e.g. -0.2 to 0.4 for the same model), and the per-clip values."""
    import storyworld as sw
    from storyworld.files import write_wav
    from storyworld.pose import lip_sync
    from storyworld.train.data import FPS, HEIGHT, WIDTH
    from storyworld.train.evaluate import LIP_CAPTION, chain, make_renderer
    from PIL import Image

    caption = LIP_CAPTION
    n_frames = 16 * clips + 1
    r = make_renderer("talk", svi=svi, folder=folder)
    per_clip = []
    for i in range(talks):
        video = sw.render([caption], n_frames, seed + i, width=WIDTH, height=HEIGHT, fps=FPS)
        Image.fromarray(video.frames[0]).save(tmp / "talk.png")
        write_wav(tmp / "talk.wav", video.audio, 16000)
        frames = np.concatenate(chain(r, tmp / "talk.png", [caption] * clips, seed=seed + i, audio=tmp / "talk.wav"))
        per_clip.append(lip_sync(frames, video.audio[: int(len(frames) / FPS * 16000)], FPS))
    return float(np.nanmean(per_clip)), per_clip


def main(argv: list[str] | None = None) -> None:
    from storyworld.train.evaluate import lora_window_arg

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8, help="random captions for prompt following")
    ap.add_argument("--clips", type=int, default=2, help="clips chained per case")
    ap.add_argument("--svi", action="store_true", help="with the SVI LoRA (default: base model)")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--lora", type=Path, default=None, help="the shot LoRA of the prompt-following chains "
                    "(default: the folder's)")
    ap.add_argument("--lora-scale", type=float, default=1.0, help="strength of the shot LoRA (with --svi)")
    ap.add_argument("--lora-below-sigma", type=lora_window_arg, default="preset",
                    help="sigma below which the SVI LoRA acts: a number, 'all' (every step) or "
                    "'preset' (the variant's window, the default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfg", type=float, default=None, help="text guidance of the prompt-following chains "
                    "(default: the shot variant's)")
    ap.add_argument("--talks", type=int, default=12, help="talking clips the lip sync is averaged over")
    ap.add_argument("--only-prompts", action="store_true", help="skip the ceiling, pose and lip-sync cases")
    args = ap.parse_args(argv)

    from storyworld.train.cache import ASSETS

    folder = args.model or ASSETS
    from diffusers import AutoencoderKLWan

    from storyworld.train.evaluate import reconstruction_readback

    tmp = Path(tempfile.mkdtemp(prefix="cond-"))
    if args.only_prompts:
        place, colour, both = prompt_following(folder, args.lora, args.svi, args.prompts, args.clips, args.seed, tmp,
                                               args.cfg, args.lora_scale, args.lora_below_sigma)
        print(f"conditioning: place={place:.3f} colour={colour:.3f} prompt={both:.3f}")
        return
    ceiling = reconstruction_readback(AutoencoderKLWan.from_pretrained(folder / "vae", local_files_only=True).eval(),
                                      seed=args.seed, talks=args.talks)
    print(f"ceiling (the VAE's own reconstructions of true clips): place+time {ceiling['place']:.1%}, colour "
          f"{ceiling['colour']:.1%}, pose error {ceiling['pose_error']:.3f} (figure found {ceiling['found']:.0%}), "
          f"lip sync {ceiling['lip_sync']:.2f}, L1 {ceiling['l1']:.1f}/255, foreground L1 {ceiling['fg_l1']:.1f}/255")
    print(f"lip sync of a mouth right at every latent frame and no finer: {ceiling['lip_bound']:.2f}")
    print(f"prompt following ({args.prompts} captions, last of {args.clips} clips):")
    place, colour, both = prompt_following(folder, args.lora, args.svi, args.prompts, args.clips, args.seed, tmp,
                                           args.cfg, args.lora_scale, args.lora_below_sigma)
    # --lora is the shot LoRA: the talk and dance cases load the folder's own variant files
    pose, found = pose_following(folder, args.svi, args.clips, args.seed, tmp)
    lips, lips_per_clip = lip_following(folder, args.svi, args.clips, args.seed, tmp, args.talks)
    print(f"prompt following: place+time {place:.1%}, colour {colour:.1%}, both {both:.1%} (goal >= 80%)")
    print(f"pose error: {pose:.3f} of the short side, figure found in {found:.0%} of frames (goal <= 0.10)")
    print(f"audio-mouth correlation: {lips:.2f} over {args.talks} talking clips "
          f"({' '.join(f'{v:.2f}' for v in lips_per_clip)}) (goal >= 0.5)")
    print(f"conditioning: place={place:.3f} colour={colour:.3f} prompt={both:.3f} pose_error={pose:.3f} "
          f"found={found:.2f} lip_sync={lips:.3f}")


if __name__ == "__main__":
    main()
