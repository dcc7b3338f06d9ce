"""Encode DiT training samples once: latents, condition latents, CLIP and text features, as inference builds them.

A sample is a 17-frame window of a one-scene storyworld video (33 frames: windows at 0 or 16) and
one of the storyworld-tiny variants' conditionings, built by the renderer's own functions
(svi.render.condition_video / condition_mask, svi.encoders): "shot" (m = 1 condition frame, the
scene's first frame as ref padding: at window 0 that is the start image itself, at window 16 it is
what a chained shot clip sees) or "film" (m = 5 frames, zero padding). Shards of --shard samples
are written atomically as OUT/shard_NNNNN.pt, so the DiT stage can train while this still runs,
and a restarted cache continues at the next missing shard (sample i is a pure function of (seed, i)).

    python -m storyworld.train.cache --vae out/storyworld-train/vae/vae --out out/storyworld-train/cache --n 800
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import storyworld as sw
from svi.encoders import clip_features, encode_prompts, to_model_pixels, vae_encode
from svi.models import WanComponents, use_onednn_conv3d
from svi.presets import resolve_spec
from svi.render import condition_mask, condition_video

from .data import FPS, HEIGHT, WIDTH

CLIP_FRAMES = 17
VIDEO_FRAMES = 33
MODES = {"shot": (1, "ref"), "film": (5, "zeros")}  # variant -> (motion frames m, padding)
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models" / "storyworld-tiny"


@dataclass(frozen=True)
class SampleSpec:
    video_seed: int
    start: int  # window start frame in the 33-frame video
    mode: str  # "shot" / "film"


def sample_spec(seed: int, i: int, p_film: float) -> SampleSpec:
    rng = np.random.default_rng([seed, i, 7])
    return SampleSpec(int(rng.integers(0, 2**31 - 1)), int(rng.choice([0, 16])),
                      "film" if rng.random() < p_film else "shot")


def load_encoders(model: Path, vae: Path | None, device: str = "cpu") -> WanComponents:
    """Text/CLIP encoders and tokenizer of the model folder, with the trained VAE swapped in."""
    from diffusers import AutoencoderKLWan
    from svi.models import load_components

    c = load_components(resolve_spec("storyworld-tiny"), device, folder=model)
    if vae is not None:
        c.vae = AutoencoderKLWan.from_pretrained(vae, local_files_only=True).eval().requires_grad_(False)
    use_onednn_conv3d(c.vae)
    return c


def sample_video(video_seed: int) -> sw.Video:
    """The one-scene storyworld video a sample's window is cut from (a pure function of its seed)."""
    return sw.render_random(video_seed, 1, VIDEO_FRAMES, width=WIDTH, height=HEIGHT, fps=FPS)


@torch.no_grad()
def encode_sample(c: WanComponents, spec: SampleSpec, text_len: int) -> dict:
    """One training sample in the renderer's exact conditioning (SVI_SPEC 1.6)."""
    video = sample_video(spec.video_seed)
    frames = torch.from_numpy(video.frames)  # (33, H, W, 3) uint8
    clip = frames[spec.start:spec.start + CLIP_FRAMES]  # (17, H, W, 3)
    m, padding = MODES[spec.mode]
    cond, ref = clip[:m], frames[0]
    x0 = vae_encode(c, to_model_pixels(clip))  # (1, 16, 5, 12, 16)
    cond_lat = vae_encode(c, condition_video(cond, ref, CLIP_FRAMES, padding))  # (1, 16, 5, 12, 16)
    T, h, w = cond_lat.shape[2:]
    y = torch.cat([condition_mask(T, h, w, cond_lat.device, cond_lat.dtype), cond_lat], dim=1)  # (1, 20, 5, 12, 16)
    caption = video.captions[0].text
    return {"x0": x0[0].half(), "y": y[0].half(), "clip": clip_features(c, cond[0])[0].half(),  # (257?, 64)
            "text": encode_prompts(c, [caption], text_len)[0].half(), "caption": caption,
            "mode": spec.mode, "start": spec.start, "video_seed": spec.video_seed}


def write_shard(path: Path, samples: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    keys = ("x0", "y", "clip", "text")
    torch.save({**{k: torch.stack([s[k] for s in samples]) for k in keys},
                "meta": [{k: s[k] for k in s if k not in keys} for s in samples]}, tmp)
    os.replace(tmp, path)


def load_cache(folder: Path) -> dict:
    """All finished shards of `folder` concatenated: x0 (N,16,T,h,w), y (N,20,T,h,w), clip, text (fp16), meta."""
    shards = sorted(Path(folder).glob("shard_*.pt"))
    if not shards:
        raise FileNotFoundError(f"no cache shards (shard_*.pt) in {folder}; run python -m storyworld.train.cache first")
    parts = [torch.load(p, weights_only=False) for p in shards]
    out = {k: torch.cat([p[k] for p in parts]) for k in ("x0", "y", "clip", "text")}
    out["meta"] = [m for p in parts for m in p["meta"]]
    out["negative"] = torch.load(Path(folder) / "negative.pt", weights_only=False)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vae", type=Path, help="trained VAE folder (default: the model folder's vae/)")
    ap.add_argument("--model", type=Path, default=ASSETS, help="model folder for tokenizer, text and image encoders")
    ap.add_argument("--n", type=int, default=800, help="samples to encode")
    ap.add_argument("--shard", type=int, default=25, help="samples per shard file")
    ap.add_argument("--p-film", type=float, default=0.3, help="share of film-mode (m=5, zeros) samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    c = load_encoders(args.model, args.vae)
    spec = resolve_spec("storyworld-tiny")
    torch.save(encode_prompts(c, [spec.negative_prompt], spec.text_len)[0].half(), args.out / "negative.pt")
    n_shards = -(-args.n // args.shard)
    for s in tqdm(range(n_shards), desc="cache shards", mininterval=5):
        path = args.out / f"shard_{s:05d}.pt"
        if path.is_file():
            continue
        idx = range(s * args.shard, min(args.n, (s + 1) * args.shard))
        write_shard(path, [encode_sample(c, sample_spec(args.seed, i, args.p_film), spec.text_len) for i in idx])


if __name__ == "__main__":
    main()
