"""Stage 3: the base I2V DiT (WanTransformer3DModel, svi.tiny.TINY_TRANSFORMER) by flow matching on cached samples.

Inputs exactly as the renderer builds them (storyworld.train.cache): [x_t | mask | condition
latents] (36 channels), t = 1000 sigma, the frozen umT5 prompt embedding and the CLIP tokens of the
first condition frame. Per step: sigma drawn uniformly from svi.scheduler's 1000-point training
grid (shift 5, as inference), x_t = (1 - sigma) x0 + sigma eps, target v = eps - x0, MSE weighted
by FlowMatchScheduler.training_weights (SVI_SPEC 3.4); with --predict sample the DiT outputs x0 and
the loss is taken on the v it stands for (FlowMatchScheduler.as_velocity). The prompt is replaced
by the preset's negative-prompt embedding with probability --p-uncond, so classifier-free guidance
has an unconditional branch to use. An EMA of the weights (decay ramping to --ema) is what gets exported
(OUT/transformer); the text encoder stays frozen at its seeded random init (model card).

    python -m storyworld.train.dit --cache out/storyworld-train/cache --out out/storyworld-train/dit --steps 6000 --resume
    # an annealing phase on a copy of that run, the object and figure cells weighted (round 6)
    python -m storyworld.train.dit --cache ... --out R/dit-fg --steps 6500 --resume --lr-end 2.5e-5 \
        --anneal-start 4500 --fg-weight 4
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from svi.models import PREDICTION_KEY, prediction_type
from svi.presets import resolve_spec
from svi.scheduler import PREDICTIONS, FlowMatchScheduler

from .cache import ASSETS, CLIP_FRAMES, load_cache, sample_video
from .common import Run, base_parser, seed_everything, set_threads


def build(init: Path, seed: int, patch: int | None = None, z_dim: int | None = None, head_dim: int | None = None):
    """The DiT to start from: the model folder's transformer (seeded random init in the bundled folder).

    With `patch` other than init's spatial patch (round 3: 4x4 tokens over the 4x VAE's latents where
    round 2 had 2x2 over the 8x VAE's, the same 16 px per token), or `z_dim` other than its latent
    channels (in = noisy latents z + condition mask 4 + condition latents z, out = z), every tensor
    whose shape still fits is carried over (the blocks, text/image/time embedders, norms) and the
    patch embedding and output projection start from the seeded init: the token grid, and so all
    that the blocks learned about it, is unchanged. `head_dim` other than init's widens (or narrows)
    the DiT: width = heads x head_dim, with the image-context projection at the width and the FFN at
    twice it, as the tiny config has them; nothing but shape-free tensors carries over, so that is
    training from scratch."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    source = WanTransformer3DModel.from_pretrained(init, local_files_only=True, torch_dtype=torch.float32)
    changes = {}
    if patch is not None and tuple(source.config.patch_size) != (1, patch, patch):
        changes["patch_size"] = (1, patch, patch)
    if z_dim is not None and source.config.out_channels != z_dim:
        changes.update(in_channels=2 * z_dim + 4, out_channels=z_dim)
    if head_dim is not None and source.config.attention_head_dim != head_dim:
        width = source.config.num_attention_heads * head_dim
        changes.update(attention_head_dim=head_dim, added_kv_proj_dim=width, ffn_dim=2 * width)
    if not changes:
        return source
    model = WanTransformer3DModel.from_config({**source.config, **changes})
    own = model.state_dict()
    kept = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    fresh = sorted(set(own) - set(kept))
    print(f"dit: {changes}; {len(kept)} tensors carried over, re-initialised: {', '.join(fresh)}")
    return model


def latent_foreground(meta: dict, grid: tuple[int, int, int]) -> torch.Tensor:
    """(T, h, w) bool: the latent cells of a cached sample that hold foreground (objects, the figure's
    ink, its head: storyworld.analyze.foreground_mask), from its video re-rendered by seed.

    A latent cell covers its 4x4 pixels and, after frame 0, 4 frames (the VAE's causal chunks); a
    cell is foreground if any pixel it covers is."""
    from storyworld.analyze import foreground_mask

    T, h, w = grid
    clip = sample_video(meta["video_seed"]).frames[meta["start"]:meta["start"] + CLIP_FRAMES]
    fg = torch.from_numpy(np.stack([foreground_mask(f) for f in clip]))  # (17, H, W)
    sy, sx = fg.shape[1] // h, fg.shape[2] // w
    cells = fg.reshape(len(clip), h, sy, w, sx).any(4).any(2)  # (17, h, w)
    per = (len(clip) - 1) // (T - 1)
    return torch.cat([cells[:1], cells[1:].reshape(T - 1, per, h, w).any(1)])


class Batches:
    """Seeded minibatches over the cache; reloads new shards every `reload` steps (cache may still run).

    With `foreground` the batches carry each sample's latent foreground cells (latent_foreground),
    computed once per sample and kept in the cache folder (fg.pt), for a loss that weights them."""

    def __init__(self, folder: Path, seed: int, reload: int = 200, foreground: bool = False):
        self.folder, self.seed, self.reload, self.foreground = folder, seed, reload, foreground
        self.data, self._loaded_at = None, None

    def _load(self, step: int) -> dict:
        epoch = step // self.reload
        if self.data is None or self._loaded_at != epoch:
            self.data, self._loaded_at = load_cache(self.folder), epoch
            if self.foreground:
                self.data["fg"] = self._foreground(self.data)
        return self.data

    def _foreground(self, data: dict) -> torch.Tensor:
        path = self.folder / "fg.pt"
        known = torch.load(path, weights_only=False) if path.is_file() else {}
        grid = tuple(data["x0"].shape[2:])
        keys = [(m["video_seed"], m["start"]) for m in data["meta"]]
        missing = [(k, m) for k, m in zip(keys, data["meta"]) if k not in known]
        for k, m in tqdm(missing, desc="foreground cells", mininterval=5, disable=not missing):
            known[k] = latent_foreground(m, grid)
        if missing:
            torch.save(known, path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)
        return torch.stack([known[k] for k in keys])  # (N, T, h, w)

    @property
    def latent_channels(self) -> int:
        """The cached VAE's latent channels (they decide the DiT's in/out channels)."""
        return self._load(0)["x0"].shape[1]

    def get(self, step: int, size: int, p_uncond: float) -> dict:
        self._load(step)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        n = self.data["x0"].shape[0]
        idx = torch.randint(0, n, (size,), generator=g)
        text = self.data["text"][idx].float()  # (B, L, D)
        drop = torch.rand(size, generator=g) < p_uncond
        text[drop] = self.data["negative"].float()
        batch = {"x0": self.data["x0"][idx].float(), "y": self.data["y"][idx].float(),
                 "clip": self.data["clip"][idx].float(), "text": text,
                 "sigma_index": torch.randint(0, 1000, (size,), generator=g),
                 "noise": torch.randn(self.data["x0"][idx].shape, generator=g), "n": n}
        if self.foreground:
            batch["fg"] = self.data["fg"][idx][:, None].float()  # (B, 1, T, h, w)
        return batch


def flow_loss(transformer, sched: FlowMatchScheduler, b: dict, weights: torch.Tensor,
              prediction: str = "flow", fg_weight: float = 0.0) -> torch.Tensor:
    """Weighted MSE in velocity space whatever the model predicts (a "sample" model's x0 is turned
    into v as the sampler will, so the loss, its weights and its figures compare across the two).

    With `fg_weight`, a latent cell holding foreground (b["fg"]) counts 1 + fg_weight times, each
    sample's weights normalised to mean 1 so the loss keeps its scale: objects and the figure are a
    few percent of the cells, and the plain mean lets the backdrop's easy cells own the loss."""
    sig = sched.training_sigmas().float()[b["sigma_index"]].view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
    x_t = sched.add_noise(b["x0"], b["noise"], sig)  # (B, 16, T, h, w)
    if prediction == "sample":  # the same floored divisor as the prediction's, so the target is exact
        target = sched.as_velocity(b["x0"], x_t, sig, "sample")
    else:
        target = sched.velocity_target(b["x0"], b["noise"])
    t = sig.flatten() * sched.num_train_timesteps
    out = transformer(torch.cat([x_t, b["y"]], dim=1), t, b["text"], b["clip"], return_dict=False)[0]
    v = sched.as_velocity(out, x_t, sig, prediction)
    err = (v.float() - target).pow(2)  # (B, C, T, h, w)
    if fg_weight:
        cell = 1.0 + fg_weight * b["fg"]  # (B, 1, T, h, w)
        err = err * cell / cell.mean(dim=(2, 3, 4), keepdim=True)
    per = err.mean(dim=(1, 2, 3, 4))  # (B,)
    return (per * weights[b["sigma_index"]]).mean()


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


def main(argv: list[str] | None = None) -> None:
    ap = base_parser(__doc__, steps=6000, every=250, lr=5e-4, batch=8)
    ap.add_argument("--cache", type=Path, required=True, help="folder written by storyworld.train.cache")
    ap.add_argument("--init", type=Path, default=ASSETS / "transformer", help="transformer folder to start from")
    ap.add_argument("--patch", type=int, default=None,
                    help="spatial patch of the DiT (default: init's); must match the VAE: 2 for 8x, 4 for 4x")
    ap.add_argument("--predict", choices=PREDICTIONS, default=None,
                    help="what the DiT outputs (default: init's): the velocity (flow, Wan's way) or the clean "
                         "latents x0 (sample, JiT's way, for a DiT narrower than its tokens' latent values); "
                         "the export's config records it")
    ap.add_argument("--head-dim", type=int, default=None,
                    help="attention head width (default: init's). 64 makes the 4-head DiT 256 wide, as many "
                         "dimensions as a 4x4 token has latent values (16 x 16); starts the blocks afresh")
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--fg-weight", type=float, default=0.0,
                    help="extra loss weight on latent cells holding objects or the figure (0: plain mean); "
                         "what the analyzers read lives in those few cells")
    ap.add_argument("--lr-end", type=float, default=None,
                    help="decay the lr linearly to this by --steps, from --anneal-start (default: constant)")
    ap.add_argument("--anneal-start", type=int, default=0,
                    help="step the decay to --lr-end starts at: a step number, not the resume point, so a "
                         "resumed phase keeps its schedule")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    seed_everything(args.seed)
    run = Run(args.out, args.seed)
    sched = FlowMatchScheduler(shift=resolve_spec("storyworld-tiny").shift)
    weights = sched.training_weights().float()
    data = Batches(args.cache, args.seed, foreground=args.fg_weight > 0)
    dit = build(args.init, args.seed, args.patch, data.latent_channels, args.head_dim).train()
    predict = args.predict or prediction_type(dit)
    dit.register_to_config(**{PREDICTION_KEY: predict})  # the export says what it outputs
    ema = copy.deepcopy(dit).eval().requires_grad_(False)
    opt = torch.optim.AdamW(dit.parameters(), lr=args.lr, weight_decay=0.01)
    start = run.resume({"dit": dit, "ema": ema}, opt) if args.resume else 0
    # warm up from the first step whose AdamW moments start at zero: step 0, or a slim checkpoint's
    warm_from = start if start and run.fresh_optimiser else 0
    warm = lambda s: min(1.0, (s - warm_from + 1) / args.warmup)  # noqa: E731
    if args.lr_end is None:
        lr_at = lambda s: args.lr * warm(s)  # noqa: E731
    else:  # an annealing phase: --lr until --anneal-start, then linearly down to --lr-end at --steps
        span = max(1, args.steps - args.anneal_start)
        lr_at = lambda s: warm(s) * (args.lr + (args.lr_end - args.lr)  # noqa: E731
                                     * min(1.0, max(0.0, (s - args.anneal_start) / span)))
    run.truncate_log(start)
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="dit", mininterval=5)
    for step in bar:
        b = data.get(step, args.batch, args.p_uncond)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = flow_loss(dit, sched, b, weights, predict, args.fg_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        ema_update(ema, dit, min(args.ema, (1 + step) / (10 + step)))
        run.log(step + 1, loss=loss.item(), grad_norm=gnorm.item(), lr=lr_at(step), samples=b["n"])
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            run.save(step + 1, {"dit": dit, "ema": ema}, opt)
            ema.save_pretrained(args.out / "transformer")


if __name__ == "__main__":
    main()
