"""The error-recycling training step around one DiT forward (SVI_SPEC 3.4, 3.5). Maths only.

The trainer calls, per step:

    idx  = sample_sigma_index(B, gen)                               # i ~ U{0..999}
    step = inject_errors(x0, noise, y, idx, banks, cfg, gen)        # corrupted inputs, target, weight
    v_hat = dit(step.x_t, step.timestep, ..., y=step.y)             # the ONE forward
    loss = weighted_loss(v_hat, step)
    recycle_errors(step, v_hat, banks, cfg, gen,
                   gather=accelerator.gather if cfg.in_warmup(it) else None)

Errors come from the same forward by one Euler jump to each end of the trajectory, so recycling
costs no extra forward. Decisions are drawn per sample from the caller's `torch.Generator`, so a
seeded run is reproducible and each sample of a batch gets its own timestep, grid and injections
(the official code trains with batch 1 per GPU, where the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from svi.scheduler import FlowMatchScheduler

from .bank import STRATEGIES, ErrorBanks, parse_dtype

Y_MASK_CHANNELS = 4  # y = [mask (4) ; condition latents (C)] along channels (SVI_SPEC 1.6)

Gather = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RecyclingConfig:
    """Error-recycling settings; defaults are those of the released SVI training scripts (SVI_SPEC 3.8)."""

    noise_prob: float = 0.01  # P(inject a B_noise error into the noise); 0.01 makes it rare in SVI
    y_prob: float = 0.9  # P(inject a B_x0 error into the condition frames y)
    latent_prob: float = 0.9  # P(inject a B_x0 error into the clean latent)
    clean_prob: float = 0.2  # P(clean step: no injection at all); Film uses 0.5
    clean_buffer_update_prob: float = 0.1  # P(a clean step's errors enter the banks); DevLog 10-21
    y_error_num: int = 3  # latent frames of y that get an error (Dance: 1)
    use_last_y_error: bool = False  # take the error's LAST y_error_num frames instead of a random window
    y_error_sample_from_all_grids: bool = True  # y errors from any grid: y is clean-ish, not at sigma
    error_modulate_factor: float = 0.0  # injected errors scaled by U(1 - f, 1 + f); SVI keeps 0
    num_grids: int = 50  # bank grids = the 50 inference timesteps (shift 5), nearest wins
    buffer_k: int = 500  # errors per grid; 2 x 50 x 500 x latent: size it to your memory
    strategy: str = "l2"  # replacement once a grid is full; every released script uses l2 (l2_batch)
    bank_dtype: str = "bfloat16"  # SVI stores the model's bf16 output; halves the banks vs fp32
    warmup_iter: int = 50  # first iterations gather errors from all ranks so banks start identical

    def __post_init__(self):
        for name in ("noise_prob", "y_prob", "latent_prob", "clean_prob", "clean_buffer_update_prob",
                     "error_modulate_factor"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.y_error_num < 1:
            raise ValueError(f"y_error_num must be >= 1 (latent frames of y to corrupt), got {self.y_error_num}")
        if self.num_grids < 1 or self.buffer_k < 1:
            raise ValueError(f"num_grids and buffer_k must be >= 1, got {self.num_grids} and {self.buffer_k}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.warmup_iter < 0:
            raise ValueError(f"warmup_iter must be >= 0, got {self.warmup_iter}")
        parse_dtype(self.bank_dtype)

    def in_warmup(self, iteration: int) -> bool:
        """Whether errors of this (0-based) iteration are gathered from all ranks."""
        return iteration < self.warmup_iter

    def bank_memory_bytes(self, latent_shape: tuple[int, ...]) -> int:
        """Bytes both banks will preallocate for latents of `latent_shape` (C, T, h, w): check before building."""
        numel = 1
        for s in latent_shape:
            numel *= int(s)
        itemsize = torch.empty((), dtype=parse_dtype(self.bank_dtype)).element_size()
        return 2 * self.num_grids * self.buffer_k * numel * itemsize

    def build_banks(self, latent_shape: tuple[int, ...], device: torch.device | str = "cpu",
                    seed: int = 0) -> ErrorBanks:
        return ErrorBanks.build(tuple(latent_shape), self.buffer_k, self.num_grids, self.strategy,
                                self.bank_dtype, device, seed)


@dataclass
class InjectedStep:
    """The corrupted inputs of one step and what the error pass needs afterwards. B = batch.

    x_t (B, C, T, h, w) in x0's dtype: model input, (1 - sigma) x0' + sigma eps'.
    y (B, 4 + C, T, h, w) in y's dtype: condition with errors in the latent channels of its first
        y_error_num frames (a new tensor; the input is not modified).
    noise (B, C, T, h, w) in noise's dtype: eps', the noise after injection.
    v_target (B, C, T, h, w) fp32: eps' - x0 with the CLEAN x0 (the model learns to undo the error).
    sigma, timestep, weight (B,) fp32: noise level, t = 1000 sigma fed to the DiT, loss weight w(t).
    sigma_index, grid (B,) int64: training index i in 0..999 and its bank grid.
    clean, noise_injected, latent_injected, y_injected (B,) bool: what happened to each sample.
    y_offset (B,) int64: first frame j of the error window added to y, -1 where y got none.
    noise_error_norm, latent_error_norm, y_error_norm (B,) fp32: L2 norms of the injected errors, 0 if none.
    """

    x_t: torch.Tensor
    y: torch.Tensor
    noise: torch.Tensor
    v_target: torch.Tensor
    sigma: torch.Tensor
    timestep: torch.Tensor
    weight: torch.Tensor
    sigma_index: torch.Tensor
    grid: torch.Tensor
    clean: torch.Tensor
    noise_injected: torch.Tensor
    latent_injected: torch.Tensor
    y_injected: torch.Tensor
    y_offset: torch.Tensor
    noise_error_norm: torch.Tensor
    latent_error_norm: torch.Tensor
    y_error_norm: torch.Tensor


@dataclass
class ErrorBatch:
    """Errors of one forward. e_noise, e_x0 (B, C, T, h, w) fp32; grid (B,) int64; keep (B,) bool."""

    e_noise: torch.Tensor
    e_x0: torch.Tensor
    grid: torch.Tensor
    keep: torch.Tensor


# ---------------------------------------------------------------------- small pure helpers
@lru_cache(maxsize=8)
def _tables(scheduler: FlowMatchScheduler, num_grids: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per training index: sigma (1000,) fp32, loss weight (1000,) fp32 and bank grid (1000,) int64."""
    sigmas = scheduler.training_sigmas()  # (1000,) float64
    grids = scheduler.nearest_grid(sigmas * scheduler.num_train_timesteps, inference_steps=num_grids)
    return sigmas.float(), scheduler.training_weights().float(), grids


def grid_of(sigma_index: torch.Tensor | int, num_grids: int = 50,
            scheduler: FlowMatchScheduler = FlowMatchScheduler()) -> torch.Tensor:
    """Bank grid of training index(es): the nearest of `num_grids` inference timesteps to t_i."""
    return _tables(scheduler, num_grids)[2][torch.as_tensor(sigma_index, dtype=torch.int64)]


def sample_sigma_index(batch: int, generator: torch.Generator | None = None,
                       scheduler: FlowMatchScheduler = FlowMatchScheduler(),
                       max_sigma: float | None = None) -> torch.Tensor:
    """(batch,) int64 training indices i ~ U{0..999} (uniform in index; the shift moves t up).

    max_sigma: only indices whose sigma is below it, uniformly among them: a LoRA that will act
    only on the low-noise steps (svi.presets.Variant.lora_below_sigma) spends its training there."""
    if max_sigma is None:
        return torch.randint(scheduler.num_train_timesteps, (batch,), generator=generator)
    allowed = torch.nonzero(scheduler.training_sigmas() < max_sigma).flatten()
    if len(allowed) == 0:
        raise ValueError(f"no training timestep has sigma below {max_sigma}")
    return allowed[torch.randint(len(allowed), (batch,), generator=generator)]


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) on like's device, for per-sample scalars."""
    return v.to(like.device).reshape(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------- before the forward
@torch.no_grad()
def inject_errors(x0: torch.Tensor, noise: torch.Tensor, y: torch.Tensor, sigma_index: torch.Tensor | int,
                  banks: ErrorBanks | None, cfg: RecyclingConfig, generator: torch.Generator | None = None, *,
                  y_null: torch.Tensor | None = None,
                  scheduler: FlowMatchScheduler = FlowMatchScheduler()) -> InjectedStep:
    """Decide and apply the error injections of SVI_SPEC 3.4 for a batch.

    Args:
        x0 (torch.Tensor): (B, C, T, h, w) clean latents.
        noise (torch.Tensor): (B, C, T, h, w) Gaussian noise eps.
        y (torch.Tensor): (B, 4 + C, T, h, w) condition: 4 mask channels, then C latent channels.
        sigma_index (torch.Tensor | int): (B,) or one training index in 0..999 for all samples.
        banks (ErrorBanks | None): the error banks; None trains without recycling (plain fine-tune).
        cfg (RecyclingConfig): probabilities and y-error settings.
        generator (torch.Generator | None): CPU generator for every random decision.
        y_null (torch.Tensor | None): (B,) bool, samples whose y was dropped (zeroed): no y error.
        scheduler (FlowMatchScheduler): sigma grid, loss weights and bank grids.
    """
    # 1. Check inputs
    if x0.dim() != 5:
        raise ValueError(f"x0 must be (B, C, T, h, w), got shape {tuple(x0.shape)}")
    B, C, T = x0.shape[:3]
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    y_shape = (B, Y_MASK_CHANNELS + C, *x0.shape[2:])
    if tuple(y.shape) != y_shape:
        raise ValueError(f"y must be (B, {Y_MASK_CHANNELS} mask + {C} latent channels, T, h, w) = {y_shape}, "
                         f"got {tuple(y.shape)}")
    if cfg.y_error_num > T:
        raise ValueError(f"y_error_num {cfg.y_error_num} exceeds the {T} latent frames of a clip")
    idx = torch.as_tensor(sigma_index, dtype=torch.int64).reshape(-1).cpu()
    if idx.numel() == 1 and B > 1:
        idx = idx.expand(B)
    if idx.numel() != B or idx.min() < 0 or idx.max() >= scheduler.num_train_timesteps:
        raise ValueError(f"sigma_index must hold {B} indices in 0..{scheduler.num_train_timesteps - 1}, "
                         f"got {idx.tolist()}")
    if banks is not None and tuple(banks.data.shape) != tuple(x0.shape[1:]):
        raise ValueError(f"banks hold errors of shape {banks.data.shape}, latents are {tuple(x0.shape[1:])}")
    y_null = torch.zeros(B, dtype=torch.bool) if y_null is None else torch.as_tensor(y_null).reshape(-1).bool().cpu()

    # 2. Timestep, grid and weight per sample
    sigma_table, weight_table, grid_table = _tables(scheduler, cfg.num_grids if banks is None else banks.data.num_grids)
    sigma, weight, grid = sigma_table[idx], weight_table[idx], grid_table[idx]  # (B,) each

    # 3. Decisions: one uniform per path and sample; a clean step disables every injection.
    u = torch.rand((B, 4), generator=generator)  # columns: noise, y, latent, clean
    modulate = 1 + cfg.error_modulate_factor * (2 * torch.rand((B, 3), generator=generator) - 1)  # (B, 3)
    clean = u[:, 3] < cfg.clean_prob
    want_noise = (u[:, 0] < cfg.noise_prob) & ~clean
    want_y = (u[:, 1] < cfg.y_prob) & ~clean & ~y_null
    want_latent = (u[:, 2] < cfg.latent_prob) & ~clean

    # 4. Draw errors from the banks (fp32 on the latents' device)
    x0_f, noise_f = x0.float(), noise.float()  # (B, C, T, h, w) new tensors unless already fp32
    x0_in, noise_in, y_out = x0_f.clone(), noise_f.clone(), y.clone()
    flags = torch.zeros((B, 3), dtype=torch.bool)  # noise, latent, y actually injected
    norms = torch.zeros((B, 3), dtype=torch.float32)
    y_offset = torch.full((B,), -1, dtype=torch.int64)
    n = cfg.y_error_num
    out = dict(dtype=torch.float32, device=x0.device)
    for b in range(B if banks is not None else 0):
        g = int(grid[b])
        if want_noise[b] and not banks.noise.is_empty(g):
            e = banks.noise.sample(g, generator, **out) * modulate[b, 0]  # (C, T, h, w)
            noise_in[b] += e
            flags[b, 0], norms[b, 0] = True, e.norm()
        # B_x0 for the latent too: the official code tests B_noise[g] here but samples B_x0[g];
        # the banks fill together, so testing the bank we sample from changes nothing but clarity.
        if want_latent[b] and not banks.data.is_empty(g):
            e = banks.data.sample(g, generator, **out) * modulate[b, 1]  # (C, T, h, w)
            x0_in[b] += e
            flags[b, 1], norms[b, 1] = True, e.norm()
        y_source_empty = banks.data.is_empty() if cfg.y_error_sample_from_all_grids else banks.data.is_empty(g)
        if want_y[b] and not y_source_empty:
            if cfg.y_error_sample_from_all_grids:
                e = banks.data.sample_any(generator, **out)
            else:
                e = banks.data.sample(g, generator, **out)
            j = T - n if cfg.use_last_y_error else int(torch.randint(T - n + 1, (1,), generator=generator))
            window = e[:, j: j + n] * modulate[b, 2]  # (C, n, h, w)
            # Latent channels of the first n condition frames only; the mask channels stay exact.
            target = y_out[b, Y_MASK_CHANNELS:, :n]  # (C, n, h, w) view
            target.copy_(target.float() + window)  # add in fp32, store in y's dtype
            flags[b, 2], norms[b, 2], y_offset[b] = True, window.norm(), j

    # 5. Noisy input and target: the target uses the CLEAN x0 with the corrupted noise.
    s = _bcast(sigma, x0_f)  # (B, 1, 1, 1, 1)
    x_t = scheduler.add_noise(x0_in, noise_in, s)  # (B, C, T, h, w) fp32
    v_target = scheduler.velocity_target(x0_f, noise_in)  # (B, C, T, h, w) fp32
    return InjectedStep(
        x_t=x_t.to(x0.dtype), y=y_out, noise=noise_in.to(noise.dtype), v_target=v_target,
        sigma=sigma, timestep=sigma * scheduler.num_train_timesteps, weight=weight, sigma_index=idx.clone(),
        grid=grid, clean=clean, noise_injected=flags[:, 0], latent_injected=flags[:, 1], y_injected=flags[:, 2],
        y_offset=y_offset, noise_error_norm=norms[:, 0], latent_error_norm=norms[:, 1], y_error_norm=norms[:, 2],
    )


# ---------------------------------------------------------------------- after the forward
def condition_frames(y: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the latent frames whose content the condition y supplies (its mask channels set).

    A dropped condition (y zeroed) supplies none."""
    return y[:, :Y_MASK_CHANNELS].flatten(3).ne(0).any(dim=3).any(dim=1)  # (B, T)


def weighted_loss(v_hat: torch.Tensor, step: InjectedStep, focus: torch.Tensor | None = None,
                  frames: torch.Tensor | None = None) -> torch.Tensor:
    """mean((v_hat - v*)^2) per sample times w(t), averaged over the batch (fp32 scalar).

    `focus` (B, T, h, w), optional, weighs each latent position by 1 + focus (the same on every channel):
    the talk fine-tune's extra weight on the mouth. `frames` (B, T) bool, optional, names the latent
    frames that count; the mean runs over those only (a sample with none counts zero)."""
    if v_hat.shape != step.v_target.shape:
        raise ValueError(f"prediction shape {tuple(v_hat.shape)} must equal target {tuple(step.v_target.shape)}")
    err = (v_hat.float() - step.v_target).square()  # (B, C, T, h, w)
    if focus is not None:
        err = err * (1.0 + focus.to(err.device, err.dtype).unsqueeze(1))
    if frames is None:
        per_sample = err.flatten(1).mean(dim=1)  # (B,)
    else:
        keep = frames.to(err.device, err.dtype)  # (B, T)
        per_frame = err.mean(dim=(1, 3, 4))  # (B, T): every frame holds the same number of values
        per_sample = (per_frame * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)  # (B,)
    return (per_sample * step.weight.to(per_sample.device)).mean()


@torch.no_grad()
def compute_errors(step: InjectedStep, v_hat: torch.Tensor,
                   scheduler: FlowMatchScheduler = FlowMatchScheduler()) -> tuple[torch.Tensor, torch.Tensor]:
    """One-step bidirectional integration errors of the prediction (SVI_SPEC 3.5), fp32.

    e_noise = x1_pred - x1_ref = (1 - sigma)(v_hat - v*)   (jump to sigma = 1)
    e_x0    = x0_pred - x0_ref = -sigma (v_hat - v*)       (jump to sigma = 0)
    """
    x_t, v_hat = step.x_t.float(), v_hat.detach().float()  # (B, C, T, h, w)
    s = _bcast(step.sigma, x_t)  # (B, 1, 1, 1, 1)
    e_noise = scheduler.integrate_to_noise(x_t, v_hat, s) - scheduler.integrate_to_noise(x_t, step.v_target, s)
    e_x0 = scheduler.integrate_to_data(x_t, v_hat, s) - scheduler.integrate_to_data(x_t, step.v_target, s)
    return e_noise, e_x0


@torch.no_grad()
def recycle_errors(step: InjectedStep, v_hat: torch.Tensor, banks: ErrorBanks, cfg: RecyclingConfig,
                   generator: torch.Generator | None = None, *, gather: Gather | None = None,
                   scheduler: FlowMatchScheduler = FlowMatchScheduler()) -> ErrorBatch:
    """Compute this forward's errors and put them in the banks.

    Errors of clean steps go in only with probability `clean_buffer_update_prob`; the others always.
    With `gather` (warm-up: e.g. `accelerator.gather`, which concatenates along dim 0 in rank order)
    every rank inserts the errors of all ranks, each kept or not by its own rank's decision, so the
    banks stay identical across ranks; without it, each rank inserts only its own.
    Returns the local errors and keep flags (for metrics).
    """
    e_noise, e_x0 = compute_errors(step, v_hat, scheduler)
    update = torch.rand(step.clean.shape, generator=generator) < cfg.clean_buffer_update_prob  # (B,)
    keep = ~step.clean | update
    if gather is None:
        sel = torch.nonzero(keep).reshape(-1)
        if sel.numel():
            dev = sel.to(e_noise.device)
            banks.insert(e_noise[dev], e_x0[dev], step.grid[sel])
    else:
        # Collective ops want every tensor on the errors' device, and not every backend gathers bool.
        dev = e_noise.device
        banks.gather_insert(gather(e_noise), gather(e_x0), gather(step.grid.to(dev)),
                            gather(keep.to(device=dev, dtype=torch.uint8)))
    return ErrorBatch(e_noise=e_noise, e_x0=e_x0, grid=step.grid, keep=keep)
