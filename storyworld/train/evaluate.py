"""Render storyworld chains with the real engine and score them: shared by bench/drift.py,
bench/conditioning.py and the bundled-weights tests.

Everything goes through svi (plan -> Renderer.stream) exactly as the app renders, so a figure here
is a figure of the product, not of a training-side shortcut.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

import storyworld as sw
from storyworld.drift import drift_score
from svi.engine import build_conditioners, find_variant_lora
from svi.lora import load_loras
from svi.models import load_components, use_onednn_conv3d
from svi.planning import plan
from svi.presets import resolve_spec
from svi.render import Renderer
from svi.timeline import AudioSegment, PoseSegment, PromptSegment, Storyboard

from .cache import ASSETS
from .data import FPS, HEIGHT, WIDTH, to_pixels

SVI_LORA = "svi-lora.safetensors"  # the error-recycling LoRA, beside the base weights
LIP_CAPTION = "a green ring rests on a beach by day while a person stands"  # bench/conditioning.py's talk case


def start_image(caption: str, path: Path, seed: int = 0) -> np.ndarray:
    """Write the first frame of the caption's storyworld scene as a PNG; returns it (H, W, 3) uint8."""
    frame = sw.render([caption], 1, seed, width=WIDTH, height=HEIGHT, fps=FPS).frames[0]
    Image.fromarray(frame).save(path)
    return frame


def make_renderer(variant: str = "shot", *, svi: bool = False, folder: Path = ASSETS,
                  lora: Path | None = None, steps: int | None = None, lora_scale: float = 1.0,
                  lora_below_sigma: float | None | str = "preset") -> Renderer:
    """A CPU renderer of storyworld-tiny weights in `folder`. svi=True adds the variant's LoRA
    (folder/svi-lora.safetensors for shot/film unless `lora` names another file); the talk and dance
    variants always load theirs (svi-talk / svi-dance.safetensors), which carries the adapter they need.
    `lora_scale` scales the shot/film LoRA (the talk / dance LoRAs always load at 1);
    `lora_below_sigma` overrides the variant's LoRA step window (None: every step)."""
    folder = Path(folder).resolve()  # a relative weights_dir would be looked up under SVI_WEIGHTS_DIR
    spec = dataclasses.replace(resolve_spec("storyworld-tiny", variant, steps=steps), weights_dir=str(folder))
    if lora_below_sigma != "preset":
        spec = dataclasses.replace(spec, lora_below_sigma=lora_below_sigma)
    c = load_components(spec, "cpu", folder=folder)
    use_onednn_conv3d(c.vae)
    files, lora_steps = [], None
    if svi or (spec.needs and spec.lora_file):
        # the engine's own lookup (beside the model first); a missing file is a MissingWeightsError naming it
        path = Path(lora) if lora is not None else find_variant_lora(spec) or Path(folder) / SVI_LORA
        if not path.is_file():
            raise FileNotFoundError(f"LoRA not found: {path} (train it with python -m storyworld.train.svi)")
        files, lora_steps = load_loras(c.transformer, [(path, lora_scale if svi and not spec.needs else 1.0,
                                                         spec.lora_below_sigma)])
    audio, pose = build_conditioners(spec, c, files)
    return Renderer(c, spec, audio=audio, pose=pose, lora_steps=lora_steps)


def lora_window_arg(text: str) -> float | None | str:
    """argparse type of the benches' --lora-below-sigma: a sigma, "all" (every step) or "preset"."""
    if text in ("preset", "all"):
        return None if text == "all" else text
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"--lora-below-sigma must be in (0, 1], 'all' or 'preset', got {text}")
    return value


def chain(renderer: Renderer, image: Path, prompts: Sequence[str], *, seed: int = 0,
          audio: Path | None = None, pose: Path | None = None, cfg: float | None = None) -> list[np.ndarray]:
    """Render len(prompts) clips (clip i under prompts[i]); returns each clip's full decoded frames
    (appended frames; clip 0 includes the start frame's reconstruction) as (n, H, W, 3) uint8."""
    spec = renderer.spec
    step_s = (spec.frames_per_clip - spec.motion_frames) / spec.fps  # seconds one clip adds
    segs: list[PromptSegment] = []
    for i, p in enumerate(prompts):  # merge runs of the same prompt into one segment
        if segs and segs[-1].text == p:
            segs[-1] = dataclasses.replace(segs[-1], end=(i + 1) * step_s)
        else:
            segs.append(PromptSegment(i * step_s, (i + 1) * step_s, p))
    end = len(prompts) * step_s
    board = Storyboard(start_image=str(image), prompts=tuple(segs),
                       audio=(AudioSegment(0.0, end, str(audio)),) if audio else (),
                       poses=(PoseSegment(0.0, end, str(pose)),) if pose else ())
    board = board.with_settings(seed=seed, variant=spec.variant, duration=end, cfg=cfg)
    clip_plan = plan(board, spec, max_clips=len(prompts))
    return [r.frames for r in renderer.stream(clip_plan)]


def drift_curve(clips: Sequence[np.ndarray]) -> np.ndarray:
    """(n,) storyworld drift score of every clip against clip 1 (0 at clip 1)."""
    return drift_score(list(clips))


@torch.no_grad()
def prompt_accuracy(frames: np.ndarray, caption: str) -> dict[str, float]:
    """Share of frames whose place / time / colour / shape read back as the caption says."""
    from storyworld.analyze import prompt_match

    hits = [prompt_match(f, caption) for f in frames]
    return {k: float(np.mean([getattr(h, k) for h in hits])) for k in ("place", "time", "colour", "shape")}


def breakdown(cases: Sequence[tuple[str, float]], fields: Sequence[str] = ("colour", "shape", "motion")
              ) -> dict[str, dict[str, tuple[float, int]]]:
    """Per caption field, per value: (mean score, number of captions) over (caption, score) cases.

    A bench's one figure hides where it fails: 12 captions may hold three cyan objects and no blue
    one, and a colour the model loses then weighs 25% of the figure."""
    from storyworld.world import parse_caption

    out: dict[str, dict[str, list[float]]] = {f: {} for f in fields}
    for caption, score in cases:
        spec = parse_caption(caption)
        for f in fields:
            out[f].setdefault(getattr(spec, f), []).append(score)
    return {f: {v: (float(np.mean(s)), len(s)) for v, s in sorted(by.items())} for f, by in out.items()}


@torch.no_grad()
def vae_roundtrip(vae, frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 frames encoded (posterior mode, as the renderer does) and decoded, as uint8."""
    y = vae.decode(vae.encode(to_pixels(frames[None])).latent_dist.mode()).sample[0].clamp(-1, 1)
    return y.add(1.0).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


@torch.no_grad()
def reconstruction_readback(vae, n: int = 12, seed: int = 0, talks: int = 3) -> dict[str, float]:
    """What the VAE lets through at best: n random 17-frame storyworld clips encoded and decoded
    (posterior mode, as the renderer does), read back by the analyzers. Place / colour are shares of
    frames, `pose_error` / `found` come from one dancing clip, `l1` and `fg_l1` are mean absolute
    errors in 0-255 over all pixels and over the foreground (objects, ink, head). `lip_sync` is the
    mean over `talks` 33-frame talking clips (seeds seed, seed + 1, ...), and `lip_bound` what a mouth
    right at every latent frame and no finer would score on them
    (storyworld.pose.latent_rate_sync_bound). A generated clip
    cannot score above this ceiling, whatever the DiT learns."""
    from storyworld.analyze import foreground_mask, prompt_match
    from storyworld.pose import latent_rate_sync_bound, lip_sync, pose_error

    def roundtrip(frames: np.ndarray) -> np.ndarray:
        return vae_roundtrip(vae, frames)

    rng = np.random.default_rng([seed, 17])
    place, colour, l1, fg_l1 = [], [], [], []
    for i in range(n):
        caption = sw.random_caption(rng)
        video = sw.render([caption], 17, seed + i, width=WIDTH, height=HEIGHT, fps=FPS)
        rec = roundtrip(video.frames)
        hits = [prompt_match(f, caption) for f in rec]
        place += [h.place and h.time for h in hits]
        colour += [h.colour for h in hits]
        err = np.abs(rec.astype(np.float32) - video.frames).mean(-1)
        fg = np.stack([foreground_mask(f) for f in video.frames])
        l1.append(err.mean())
        fg_l1.append(err[fg].mean())
    dance = sw.render(["a blue square rests in a desert by day while a person dances"], 17, seed, width=WIDTH,
                      height=HEIGHT, fps=FPS)
    err, found = pose_error(roundtrip(dance.frames), dance.keypoints)
    lips, bound = [], []
    for i in range(talks):
        talk = sw.render([LIP_CAPTION], 33, seed + i, width=WIDTH, height=HEIGHT, fps=FPS)
        lips.append(lip_sync(roundtrip(talk.frames), talk.audio, FPS))
        bound.append(latent_rate_sync_bound(talk.audio, len(talk.frames), FPS, vae.config.scale_factor_temporal))
    return {"place": float(np.mean(place)), "colour": float(np.mean(colour)),
            "lip_sync": float(np.nanmean(lips)), "lip_bound": float(np.nanmean(bound)),
            "pose_error": float(np.nanmean(err)) if found.any() else float("nan"), "found": float(found.mean()),
            "l1": float(np.mean(l1)), "fg_l1": float(np.mean(fg_l1))}


@torch.no_grad()
def temporal_readback(vae, n: int = 24, seed: int = 0) -> dict[str, list[float] | float]:
    """Object colour read back from the VAE's reconstructions, per latent frame (chunk 0 = frame 0,
    the first-frame path; chunk k = frames 4k-3 .. 4k), on two kinds of 17-frame clip from n random
    33-frame scenes:

    - `natural`: frames 16-32, a window from the middle of a scene (the training data's windows);
    - `cut`: the scene's frame 32, then its frame 16 held still for 16 frames. This is what a Shot
      chain's condition clip looks like (the last frame of the previous clip, then the reference
      image over and over): content that was not in frame 0 and then does not change. A causal VAE
      that codes change against frame 0 loses it here although nothing moves.

    `natural_frames` is the share over frames 1-16 of the natural clips. Each share is over n clips'
    frames of that chunk."""
    from storyworld.analyze import prompt_match

    chunks = {"natural": [[] for _ in range(5)], "cut": [[] for _ in range(5)]}
    rng = np.random.default_rng([seed, 23])
    for i in range(n):
        caption = sw.random_caption(rng)
        frames = sw.render([caption], 33, seed + i, width=WIDTH, height=HEIGHT, fps=FPS).frames
        clips = {"natural": frames[16:33], "cut": np.concatenate([frames[32:33], np.repeat(frames[16:17], 16, 0)])}
        for kind, clip in clips.items():
            for f, rec in enumerate(vae_roundtrip(vae, clip)):
                chunks[kind][(f + 3) // 4].append(prompt_match(rec, caption).colour)
    out: dict[str, list[float] | float] = {k: [float(np.mean(c)) for c in v] for k, v in chunks.items()}
    out["natural_frames"] = float(np.mean(sum(chunks["natural"][1:], [])))
    return out
