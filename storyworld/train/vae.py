"""Stage 1: the storyworld VAE (AutoencoderKLWan, STORYWORLD_VAE) on storyworld frames and short clips.

Round 3 uses 4x spatial compression (two downsampling stages, both also 2x in time: still 4x
temporal) where rounds 1-2 used the 8x of svi.tiny.TINY_VAE. Measured from scratch on whole frames,
fg-weighted, 400 steps: the 8x VAE's reconstruction error on object and figure pixels stayed at
~55/255 (after 1,400 steps, and no decoder, Wan or plain, could recover them from its latents),
the 4x VAE's fell 57 -> 37/255. The DiT keeps its token grid with a 4x4 patch (16 px per token).

Batches: every --image-every-th step whole 128x96 single frames (the first-frame path, cheap: twice
--batch of them), the other steps --clip-frames clips cropped to --crop px (0: whole frames). Whole
17-frame clips matter: the causal caches carry features from chunk to chunk, so a VAE trained on
9-frame clips (3 latent frames) decodes frames 9-16 of a 17-frame clip far worse than 1-8; a 64 px
crop of a 17-frame clip costs ~1.7 s a step here against ~7 s whole (the mid-block attention runs
over 24x32 latent cells at full size). Loss: L1 + L2, both weighted 1 + --fg-weight on foreground
pixels (storyworld.analyze.foreground_mask: objects, ink, the head), + an edge term (L1 of pixel
differences: keeps the 1-2 px bones, mouth and object edges the analyzers read) + a small KL so
latents stay bounded; the posterior mode is decoded (a plain autoencoder in the Wan VAE class).
The export (OUT/vae) carries the measured per-channel latents_mean / latents_std in its config, so
normalised latents are ~N(0, 1) for the DiT.

    # round 3: whole frames + 9-frame clips, then 64 px crops of 17-frame clips
    python -m storyworld.train.vae --out R/vae --crop 0 --clip-frames 9 --image-every 2 --batch 2 --steps 400
    python -m storyworld.train.vae --out R/vae17 --init R/vae --crop 64 --clip-frames 17 --image-every 2 \
        --batch 1 --steps 5000 --every 50 --resume
    # a decoder-only phase keeps the latent space (and so a DiT trained on it) valid
    python -m storyworld.train.vae --out R/vae-dec --decoder-from R/vae17 --steps 3000 --resume
    # session 13: cuts after frame 0, so the causal latents carry content, not change (new latents:
    # a new DiT follows)
    python -m storyworld.train.vae --out R/vae-cut --init R/vae-dec --crop 64 --clip-frames 17 --image-every 4 \
        --object-crops 0.75 --batch 2 --lr 3e-4 --fg-weight 10 --cut-first 0.5 --steps 3000 --resume
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from storyworld.analyze import foreground_mask
from storyworld.maps import PALETTE, palette_labels
from svi.tiny import TINY_VAE

from .common import CKPT, Run, base_parser, seed_everything, set_threads, step_rng
from .data import random_clip, to_pixels

CLIP_FRAMES = 5
CROP = 32
STORYWORLD_VAE = {**TINY_VAE, "dim_mult": [1, 2, 4], "temperal_downsample": [True, True], "scale_factor_spatial": 4}
SPATIAL = 2 ** (len(STORYWORLD_VAE["dim_mult"]) - 1)  # px per latent cell
# Squared [-1, 1]-unit distances between neighbouring palette colours are ~0.5-1.5, so at 0.05 a
# pixel that reads right has logits ~10+ apart (no loss left) and one that reads wrong a steep one.
PALETTE_TEMPERATURE = 0.05


def edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between the spatial finite differences of (B, 3, F, H, W) videos."""
    dx = lambda v: v[..., :, 1:] - v[..., :, :-1]  # noqa: E731
    dy = lambda v: v[..., 1:, :] - v[..., :-1, :]  # noqa: E731
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


def _object_window(clip: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """(y, x) of a crop window around the object's pixels over the whole clip (their bounding box's
    centre, jittered); a random window when the clip shows no object colour."""
    h, w = clip.shape[1:3]
    seen = np.zeros((h, w), bool)
    for f in clip[::4]:
        seen |= palette_labels(f) >= 0
    if not seen.any():
        return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    ys, xs = np.nonzero(seen)
    jitter = crop // 4
    cy = (ys.min() + ys.max()) // 2 + int(rng.integers(-jitter, jitter + 1))
    cx = (xs.min() + xs.max()) // 2 + int(rng.integers(-jitter, jitter + 1))
    return int(np.clip(cy - crop // 2, 0, h - crop)), int(np.clip(cx - crop // 2, 0, w - crop))


def batch(seed: int, step: int, size: int, crop: int = CROP, frames: int = CLIP_FRAMES,
          image_every: int = 8, object_crops: float = 0.0, cut_first: float = 0.0) -> torch.Tensor:
    """(B, 3, F, H, W): every image_every-th step whole single frames (F = 1), else `frames`-frame
    clips cropped to crop x crop (crop 0: whole frames). A share `object_crops` of the crops is
    centred on the object's path, which a random 64 px window of a 128x96 frame often misses. A share
    `cut_first` of the clips gets another video's frame as frame 0 (a cut after the first frame)."""
    rng = step_rng(seed, step)
    if image_every and step % image_every == image_every - 1:
        return to_pixels(np.stack([random_clip(rng, 1, 17) for _ in range(2 * size)]))  # frames are cheap
    clips = []
    for _ in range(size):
        clip = random_clip(rng, frames, 17)  # (F, H, W, 3)
        if cut_first and rng.random() < cut_first:  # no draw at 0: older runs keep their batches
            clip = np.concatenate([random_clip(rng, 1, 17), clip[1:]])
        if not crop:
            clips.append(clip)
            continue
        if object_crops and rng.random() < object_crops:  # no draw at 0: older runs keep their batches
            y, x = _object_window(clip, crop, rng)
        else:
            y, x = int(rng.integers(0, clip.shape[1] - crop + 1)), int(rng.integers(0, clip.shape[2] - crop + 1))
        y, x = y // SPATIAL * SPATIAL, x // SPATIAL * SPATIAL  # latent-grid aligned
        clips.append(clip[:, y:y + crop, x:x + crop])
    return to_pixels(np.stack(clips))


def foreground_weight(x: torch.Tensor, weight: float) -> torch.Tensor | None:
    """(B, 1, F, H, W) per-pixel loss weight 1 + weight * foreground (objects, ink, the head), or None.

    Objects and the figure are ~3-10% of the pixels; unweighted, the backdrop's smooth gradients own
    the loss and the VAE learns to blur the rest away (the 8x VAE of round 2 lost every object's colour)."""
    if not weight:
        return None
    frames = (x.permute(0, 2, 3, 4, 1).add(1.0).mul(127.5)).round().clamp(0, 255).to(torch.uint8).numpy()
    fg = np.stack([[foreground_mask(f) for f in clip] for clip in frames])
    return 1.0 + weight * torch.from_numpy(fg).float()[:, None]


def weighted_mean(t: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """mean of t, weighted by w (broadcast) and normalised so the scale does not depend on the weight."""
    return t.mean() if w is None else (t * w).mean() / w.mean()


def palette_loss(rec: torch.Tensor, x: torch.Tensor, temperature: float = PALETTE_TEMPERATURE) -> torch.Tensor:
    """Cross-entropy of each object pixel's palette colour, read from the reconstruction as the
    analyzers read it (softmax over minus the squared distances to the 8 palette colours).

    The plain L1 / L2 barely care whether a reconstructed yellow leans to orange or to green; the
    analyzers (and a viewer) care about nothing else. The cross-entropy is ~0 where the nearest
    palette colour is already right, so the term pushes only the pixels whose hue reads wrong."""
    frames = x.permute(0, 2, 3, 4, 1).add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = torch.from_numpy(np.stack([[palette_labels(f) for f in clip] for clip in frames])).long()
    inside = labels >= 0  # (B, F, H, W)
    if not inside.any():
        return rec.sum() * 0.0
    palette = torch.from_numpy(PALETTE).to(rec) / 127.5 - 1.0  # (8, 3) in the VAE's [-1, 1]
    pixels = rec.permute(0, 2, 3, 4, 1)[inside]  # (N, 3)
    d2 = ((pixels[:, None, :] - palette) ** 2).sum(-1)
    return torch.nn.functional.cross_entropy(-d2 / temperature, labels[inside])


def vae_loss(vae, x: torch.Tensor, kl_weight: float, frozen_encoder: bool = False,
             fg_weight: float = 0.0, roundtrip: float = 0.0, palette_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """L1 + L2 (foreground-weighted) + 0.5 edge + KL of the reconstruction. With `roundtrip`, plus that
    weight times the L1 + L2 of a second pass, decode(encode(reconstruction)): a chain re-encodes its
    own decoded frames every clip, and a VAE that is no fixed point drifts under it (the bundled one:
    drift 3.2 after 30 round trips of one frame, `storyworld.drift`). With `palette_weight`, plus that
    weight times `palette_loss`."""
    w = foreground_weight(x, fg_weight)
    with torch.set_grad_enabled(not frozen_encoder and torch.is_grad_enabled()):
        post = vae.encode(x).latent_dist
    # Decode the posterior mode, as inference does (svi.encoders.vae_encode): sampling with the
    # initial unit variance buried the signal (L1 stuck near 0.3 for 200+ steps); the KL term still
    # keeps the means bounded.
    rec = vae.decode(post.mode()).sample  # (B, 3, F, H, W)
    l1 = (rec - x).abs().mean()
    l2 = (rec - x).pow(2).mean()
    edge = edge_loss(rec, x)
    kl = post.kl().mean() / x[0].numel()
    parts = {"l1": l1.item(), "l2": l2.item(), "edge": edge.item(), "kl": kl.item()}
    if w is not None:  # weighted means, normalised so the loss scale does not depend on the weight
        fg = w > 1
        parts["fg_l1"] = (rec - x).abs().mean(1, keepdim=True)[fg].mean().item() if fg.any() else 0.0
        l1 = weighted_mean((rec - x).abs(), w)
        l2 = weighted_mean((rec - x).pow(2), w)
    loss = l1 + l2 + 0.5 * edge + kl_weight * kl
    if palette_weight:
        hue = palette_loss(rec, x)
        parts["palette"] = hue.item()
        loss = loss + palette_weight * hue
    if roundtrip:  # the gradient runs through the (possibly frozen) encoder into the first decode too
        rec2 = vae.decode(vae.encode(rec).latent_dist.mode()).sample
        rt = weighted_mean((rec2 - x).abs() + (rec2 - x).pow(2), w)
        parts["roundtrip"] = rt.item()
        loss = loss + roundtrip * rt
    return loss, {"loss": loss.item(), **parts}


@torch.no_grad()
def latent_stats(vae, seed: int, n: int = 6) -> tuple[list[float], list[float]]:
    """Per-channel mean / std of posterior modes over n fresh 17-frame clips (the DiT's normalisation)."""
    rng = step_rng(seed, 10**9)
    mus = [vae.encode(to_pixels(random_clip(rng, 17)[None])).latent_dist.mode() for _ in range(n)]
    z = torch.cat(mus).transpose(0, 1).flatten(1)  # (16, N)
    return z.mean(1).tolist(), z.std(1).clamp_min(1e-3).tolist()


def export(vae, path, seed: int, stats_clips: int = 6) -> None:
    mean, std = latent_stats(vae.eval(), seed, stats_clips)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae.save_pretrained(path)
    vae.train()


def build(seed: int, z_dim: int = STORYWORLD_VAE["z_dim"], temporal: int = 4, res_blocks: int = 1):
    """The storyworld VAE; `temporal` 2 makes the first downsampling stage spatial only (2x in time);
    `res_blocks` residual blocks per encoder stage (the decoder has one more, as in Wan)."""
    from diffusers import AutoencoderKLWan

    if temporal not in (2, 4):
        raise ValueError(f"temporal compression must be 2 or 4, got {temporal}")
    torch.manual_seed(seed)
    time_down = [True, True] if temporal == 4 else [False, True]
    return AutoencoderKLWan(**{**STORYWORLD_VAE, "z_dim": z_dim, "temperal_downsample": time_down,
                               "scale_factor_temporal": temporal, "num_res_blocks": res_blocks})


def _encoder_stages(kinds: list[str]) -> list[list[int]]:
    """Indices of the residual blocks of each encoder stage, from the down_blocks' kinds in order
    ("res" or "resample"; a resample closes a stage)."""
    stages, cur = [], []
    for i, kind in enumerate(kinds):
        if kind == "resample":
            stages.append(cur)
            cur = []
        else:
            cur.append(i)
    return stages + [cur]


def _deepen(vae, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a state with fewer residual blocks per stage onto `vae`: each old block keeps its weights in
    the first blocks of its stage, and each new block starts as the identity (its last convolution
    zeroed: the block adds nothing to its shortcut), so the deeper VAE starts as the same function and
    the DiT trained on its latents stays valid until training moves it. Returns (state, new blocks)."""
    own = vae.state_dict()
    old_down = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down_blocks.")})
    old_kinds = ["resample" if any(k.startswith(f"encoder.down_blocks.{i}.resample") for k in state) else "res"
                 for i in old_down]
    new_kinds = ["resample" if type(b).__name__ == "WanResample" else "res" for b in vae.encoder.down_blocks]
    rename, fresh = {}, []
    old_stages, new_stages = _encoder_stages(old_kinds), _encoder_stages(new_kinds)
    old_res = [i for i, k in enumerate(old_kinds) if k == "resample"]
    new_res = [i for i, k in enumerate(new_kinds) if k == "resample"]
    for olds, news in zip(old_stages, new_stages):
        rename.update({f"encoder.down_blocks.{o}.": f"encoder.down_blocks.{n}." for o, n in zip(olds, news)})
        fresh += [f"encoder.down_blocks.{n}." for n in news[len(olds):]]
    rename.update({f"encoder.down_blocks.{o}.": f"encoder.down_blocks.{n}." for o, n in zip(old_res, new_res)})
    for u, block in enumerate(vae.decoder.up_blocks):
        old_n = len({k.split(".")[4] for k in state if k.startswith(f"decoder.up_blocks.{u}.resnets.")})
        fresh += [f"decoder.up_blocks.{u}.resnets.{r}." for r in range(old_n, len(block.resnets))]
    out = {}
    for k, v in state.items():
        prefix = next((p for p in rename if k.startswith(p)), None)
        out[k if prefix is None else rename[prefix] + k[len(prefix):]] = v
    for prefix in fresh:
        for k in own:
            if k.startswith(prefix):
                out[k] = torch.zeros_like(own[k]) if k.startswith(prefix + "conv2.") else own[k]
    return out, fresh


def load_weights(vae, state: dict[str, torch.Tensor]) -> list[str]:
    """Load a run's VAE weights; a 4x-in-time state into a 2x VAE drops the time convolutions the 2x
    VAE has no use for (its first stage is spatial only), and a state with fewer residual blocks per
    stage fills the new ones with identity blocks (`_deepen`). Returns what was dropped or added.
    Anything else that does not fit is an error."""
    own = vae.state_dict()
    added: list[str] = []
    if any(k not in state for k in own):
        state, added = _deepen(vae, state)
    dropped = [k for k in state if k not in own and k.endswith((".time_conv.weight", ".time_conv.bias"))]
    vae.load_state_dict({k: v for k, v in state.items() if k not in dropped})
    return dropped + [f"{p}* (new, identity)" for p in added]


def main(argv: list[str] | None = None) -> None:
    ap = base_parser(__doc__, steps=3000, every=100, lr=1e-3, batch=2)
    ap.add_argument("--kl", type=float, default=1e-4, help="KL weight (per pixel value)")
    ap.add_argument("--stats-clips", type=int, default=6, help="17-frame clips measured for latents_mean/std")
    ap.add_argument("--clip-frames", type=int, default=CLIP_FRAMES,
                    help="frames of the cropped clips (4n+1); 17 = a whole storyworld-tiny clip, which trains the "
                         "steady-state causal caches of chunks 2+ that 5-frame clips never reach")
    ap.add_argument("--decoder-from", type=Path, default=None,
                    help="decoder-only phase: start from this run's state.pt, encoder frozen (latent space fixed, "
                         "so DiT latents cached from it stay valid while the decoder keeps improving)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start every weight from this run's state.pt (a new phase; encoder and decoder train)")
    ap.add_argument("--crop", type=int, default=CROP,
                    help="square crop of the training clips in px (0: whole 128x96 frames, about 2x more pixels "
                         "per second than 32 px crops on this CPU: fewer, larger convolutions)")
    ap.add_argument("--object-crops", type=float, default=0.0,
                    help="share of the crops centred on the object's path (the moving objects are what a "
                         "4x-in-time VAE loses first)")
    ap.add_argument("--image-every", type=int, default=8, help="every N-th step is whole single frames (0: never)")
    ap.add_argument("--fg-weight", type=float, default=10.0,
                    help="extra L1/L2 weight on foreground pixels (objects, ink, head); 0: plain means")
    ap.add_argument("--roundtrip", type=float, default=0.0,
                    help="weight of the second-pass loss on decode(encode(reconstruction)), so re-encoding "
                         "decoded frames (what a chain does every clip) does not compound the VAE's error")
    ap.add_argument("--z-dim", type=int, default=STORYWORLD_VAE["z_dim"],
                    help="latent channels. 16 (Wan's) over a 4x4 DiT patch is 256 values per token, twice the "
                         "tiny DiT's width of 128; 4 gives the 64 per token that round 2 had")
    ap.add_argument("--temporal", type=int, default=4, choices=(2, 4),
                    help="time compression: 4 (Wan's) or 2, where one latent frame holds 2 pixel frames (--init from "
                         "a 4x run keeps its other weights). Measured in session 12: no better colour than 4x")
    ap.add_argument("--cut-first", type=float, default=0.0,
                    help="share of the training clips whose frame 0 comes from another video. The causal "
                         "latents learn to code change against frame 0; measured on the bundled VAE, a clip "
                         "whose frame 0 differs reads object colour back at ~55%% in every later chunk (100%% "
                         "when frame 0 is like the rest), and a chain's clips are such clips")
    ap.add_argument("--palette-weight", type=float, default=0.0,
                    help="weight of the palette cross-entropy on object pixels (palette_loss): the hue the "
                         "analyzers read, which L1 / L2 barely see")
    ap.add_argument("--res-blocks", type=int, default=1,
                    help="residual blocks per encoder stage (decoder: one more). --init from a run with fewer "
                         "starts the new blocks as identities, so the VAE starts as the same function")
    args = ap.parse_args(argv)
    if args.temporal != 4 and args.clip_frames % 2 != 1:
        ap.error("--clip-frames must be odd (2n+1) with --temporal 2")
    set_threads(args.threads)
    seed_everything(args.seed)
    run = Run(args.out, args.seed)
    vae = build(args.seed, args.z_dim, args.temporal, args.res_blocks).train()
    frozen = args.decoder_from is not None
    source = args.decoder_from or args.init
    if source is not None:
        changed = load_weights(vae, torch.load(source / CKPT, map_location="cpu", weights_only=False)["modules"]["vae"])
        if changed:
            print(f"vae: {source} does not fit as it is; dropped or added {', '.join(changed)}")
    if frozen:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    start = run.resume({"vae": vae}, opt) if args.resume else 0
    for group in opt.param_groups:  # the command line's lr wins over the checkpoint's: a phase can lower it
        group["lr"] = args.lr
    run.truncate_log(start)
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="vae", mininterval=5)
    for step in bar:
        x = batch(args.seed, step, args.batch, crop=args.crop, frames=args.clip_frames, image_every=args.image_every,
                  object_crops=args.object_crops, cut_first=args.cut_first)
        loss, parts = vae_loss(vae, x, args.kl, frozen, args.fg_weight, args.roundtrip, args.palette_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in vae.parameters() if p.requires_grad], 1.0)
        opt.step()
        run.log(step + 1, frames=x.shape[2], lr=args.lr, **parts)
        bar.set_postfix(l1=f"{parts['l1']:.4f}", fg=f"{parts.get('fg_l1', 0):.3f}")
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            run.save(step + 1, {"vae": vae}, opt)
            export(vae, args.out / "vae", args.seed, args.stats_clips)
    if start >= args.steps and not (args.out / "vae").is_dir():
        export(vae, args.out / "vae", args.seed, args.stats_clips)


if __name__ == "__main__":
    main()
