"""The error-recycling step (SVI_SPEC 3.4, 3.5): injections, target, weights, errors, bank updates."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.bank import ErrorBanks
from finetune.recycling import (
    Y_MASK_CHANNELS, RecyclingConfig, compute_errors, condition_frames, grid_of, inject_errors, recycle_errors,
    sample_sigma_index, weighted_loss,
)
from svi.scheduler import FlowMatchScheduler

B, C, T, H, W = 2, 3, 5, 2, 2
LATENT = (C, T, H, W)
NOISE_ERR = 1.0  # every B_noise entry is this constant
OFF = RecyclingConfig(noise_prob=0, y_prob=0, latent_prob=0, clean_prob=0, clean_buffer_update_prob=0,
                      y_error_num=2, num_grids=50, buffer_k=4, strategy="fifo", bank_dtype="float32")


def data_error() -> torch.Tensor:
    """A B_x0 entry that differs per latent frame (100, 200, ...), so the y window offset is visible."""
    return (100.0 * torch.arange(1, T + 1)).reshape(1, T, 1, 1).expand(LATENT).clone()


def filled_banks(grids=range(50)) -> ErrorBanks:
    banks = ErrorBanks.build(LATENT, capacity=4, num_grids=50, strategy="fifo")
    for g in grids:
        banks.insert(torch.full(LATENT, NOISE_ERR), data_error(), g)
    return banks


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((B, *LATENT), generator=gen)
    noise = torch.randn((B, *LATENT), generator=gen)
    y = torch.randn((B, Y_MASK_CHANNELS + C, T, H, W), generator=gen)
    return x0, noise, y


IDX = torch.tensor([500, 120])  # training indices of the two samples


def run(cfg, banks, seed=0, **kw):
    x0, noise, y = inputs()
    originals = (x0.clone(), noise.clone(), y.clone())
    step = inject_errors(x0, noise, y, IDX, banks, cfg, torch.Generator().manual_seed(seed), **kw)
    for before, after in zip(originals, (x0, noise, y)):
        assert torch.equal(before, after), "inject_errors must not modify its inputs"
    return step, x0, noise, y


def sig(step):
    return step.sigma.reshape(B, 1, 1, 1, 1)


# ---------------------------------------------------------------------- injection paths
def test_no_injection_is_plain_flow_matching():
    step, x0, noise, y = run(OFF, filled_banks())
    sched = FlowMatchScheduler()
    assert torch.allclose(step.sigma.double(), sched.training_sigmas()[IDX])
    assert torch.allclose(step.timestep, 1000 * step.sigma)
    assert torch.allclose(step.weight.double(), sched.training_weights()[IDX])
    assert torch.equal(step.grid, sched.nearest_grid(sched.training_sigmas()[IDX] * 1000, 50))
    assert torch.allclose(step.x_t, (1 - sig(step)) * x0 + sig(step) * noise)
    assert torch.equal(step.v_target, noise - x0)
    assert torch.equal(step.noise, noise) and torch.equal(step.y, y)
    assert not (step.noise_injected.any() or step.latent_injected.any() or step.y_injected.any())
    assert step.y_offset.tolist() == [-1, -1] and step.noise_error_norm.abs().sum() == 0


def test_noise_injection_changes_noise_input_and_target_only():
    step, x0, noise, y = run(replace(OFF, noise_prob=1.0), filled_banks())
    eps = noise + NOISE_ERR
    assert torch.equal(step.noise, eps)
    assert torch.allclose(step.x_t, (1 - sig(step)) * x0 + sig(step) * eps)
    assert torch.allclose(step.v_target, eps - x0)
    assert torch.equal(step.y, y)
    assert step.noise_injected.all() and not step.latent_injected.any() and not step.y_injected.any()
    assert torch.allclose(step.noise_error_norm, torch.full((B,), NOISE_ERR * (C * T * H * W) ** 0.5))


def test_latent_injection_corrupts_input_but_target_keeps_clean_x0():
    step, x0, noise, y = run(replace(OFF, latent_prob=1.0), filled_banks())
    x0_bad = x0 + data_error()
    assert torch.allclose(step.x_t, (1 - sig(step)) * x0_bad + sig(step) * noise)
    assert torch.equal(step.v_target, noise - x0)  # clean x0: the model learns to remove the error
    assert torch.equal(step.noise, noise) and torch.equal(step.y, y)
    assert step.latent_injected.all() and not step.noise_injected.any() and not step.y_injected.any()


@pytest.mark.parametrize("use_last", [False, True])
def test_y_injection_touches_latent_channels_of_first_n_frames_only(use_last):
    cfg = replace(OFF, y_prob=1.0, y_error_num=2, use_last_y_error=use_last)
    base, *_ = run(OFF, filled_banks())
    step, x0, noise, y = run(cfg, filled_banks())
    n = cfg.y_error_num
    assert step.y_injected.all()
    assert torch.equal(step.x_t, base.x_t) and torch.equal(step.v_target, base.v_target)
    assert torch.equal(step.noise, noise)
    assert torch.equal(step.y[:, :Y_MASK_CHANNELS], y[:, :Y_MASK_CHANNELS])  # mask channels never
    assert torch.equal(step.y[:, Y_MASK_CHANNELS:, n:], y[:, Y_MASK_CHANNELS:, n:])  # later frames never
    for b in range(B):
        j = int(step.y_offset[b])
        assert 0 <= j <= T - n and (j == T - n or not use_last)
        window = data_error()[:, j: j + n]  # frames j..j+n-1 of the stored error
        assert torch.allclose(step.y[b, Y_MASK_CHANNELS:, :n], y[b, Y_MASK_CHANNELS:, :n] + window)


def test_y_window_offset_is_random_over_all_valid_starts():
    cfg = replace(OFF, y_prob=1.0, y_error_num=2)
    offsets = {int(j) for seed in range(40) for j in run(cfg, filled_banks(), seed=seed)[0].y_offset}
    assert offsets == set(range(T - cfg.y_error_num + 1))


def test_clean_step_disables_every_injection():
    cfg = replace(OFF, noise_prob=1.0, y_prob=1.0, latent_prob=1.0, clean_prob=1.0)
    base, *_ = run(OFF, filled_banks())
    step, _, noise, y = run(cfg, filled_banks())
    assert step.clean.all()
    assert torch.equal(step.x_t, base.x_t) and torch.equal(step.y, y) and torch.equal(step.noise, noise)
    assert not (step.noise_injected.any() or step.latent_injected.any() or step.y_injected.any())


@settings(max_examples=20, deadline=None)
@given(noise_on=st.booleans(), latent_on=st.booleans(), y_on=st.booleans(), clean=st.booleans())
def test_each_path_changes_exactly_its_tensors(noise_on, latent_on, y_on, clean):
    cfg = replace(OFF, noise_prob=float(noise_on), latent_prob=float(latent_on), y_prob=float(y_on),
                  clean_prob=float(clean))
    base, *_ = run(OFF, filled_banks())
    step, *_ = run(cfg, filled_banks())
    live = not clean
    assert bool(step.noise_injected.all()) == (noise_on and live) and bool(step.noise_injected.any()) == (noise_on and live)
    assert bool(step.latent_injected.all()) == (latent_on and live)
    assert bool(step.y_injected.all()) == (y_on and live)
    assert (not torch.equal(step.noise, base.noise)) == (noise_on and live)
    assert (not torch.equal(step.v_target, base.v_target)) == (noise_on and live)  # latent errors never reach it
    assert (not torch.allclose(step.x_t, base.x_t)) == ((noise_on or latent_on) and live)
    assert (not torch.equal(step.y, base.y)) == (y_on and live)


def test_empty_banks_inject_nothing_even_at_probability_one():
    cfg = replace(OFF, noise_prob=1.0, y_prob=1.0, latent_prob=1.0)
    base, *_ = run(OFF, None)
    for banks in (ErrorBanks.build(LATENT, capacity=2, num_grids=50), None):
        step, *_ = run(cfg, banks)
        assert torch.equal(step.x_t, base.x_t) and torch.equal(step.y, base.y)
        assert not (step.noise_injected.any() or step.latent_injected.any() or step.y_injected.any())


def test_noise_and_latent_use_the_current_grid_y_may_use_any_grid():
    cfg = replace(OFF, noise_prob=1.0, y_prob=1.0, latent_prob=1.0)
    grids = grid_of(IDX).tolist()
    other = next(g for g in range(50) if g not in grids)
    step, *_ = run(cfg, filled_banks([other]))  # only a grid neither sample is on
    assert not step.noise_injected.any() and not step.latent_injected.any()
    assert step.y_injected.all()  # y_error_sample_from_all_grids (SVI default)
    step, *_ = run(replace(cfg, y_error_sample_from_all_grids=False), filled_banks([other]))
    assert not step.y_injected.any()


def test_y_null_samples_get_no_y_error():
    step, _, _, y = run(replace(OFF, y_prob=1.0), filled_banks(), y_null=torch.tensor([True, False]))
    assert step.y_injected.tolist() == [False, True]
    assert torch.equal(step.y[0], y[0]) and not torch.equal(step.y[1], y[1])


def test_error_modulation_scales_injected_errors():
    step, _, noise, _ = run(replace(OFF, noise_prob=1.0, error_modulate_factor=0.5), filled_banks())
    scale = (step.noise - noise).reshape(B, -1)  # every entry is NOISE_ERR * factor
    assert torch.allclose(scale, scale[:, :1].expand_as(scale))
    assert ((scale[:, 0] >= 0.5) & (scale[:, 0] <= 1.5)).all() and not torch.allclose(scale[:, 0], torch.ones(B))


def test_same_seed_same_step():
    cfg = RecyclingConfig(buffer_k=4, y_error_num=2, noise_prob=0.5, bank_dtype="float32")
    a, *_ = run(cfg, filled_banks(), seed=3)
    b, *_ = run(cfg, filled_banks(), seed=3)
    for field in ("x_t", "y", "noise", "v_target", "clean", "noise_injected", "latent_injected", "y_offset"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_bf16_inputs_keep_their_dtype():
    x0, noise, y = (t.bfloat16() for t in inputs())
    step = inject_errors(x0, noise, y, IDX, filled_banks(), replace(OFF, y_prob=1, latent_prob=1),
                         torch.Generator().manual_seed(0))
    assert step.x_t.dtype == step.y.dtype == step.noise.dtype == torch.bfloat16
    assert step.v_target.dtype == torch.float32


def test_bad_inputs_are_rejected_with_clear_messages():
    x0, noise, y = inputs()
    gen = torch.Generator()
    with pytest.raises(ValueError, match="y must be"):
        inject_errors(x0, noise, y[:, 1:], IDX, None, OFF, gen)
    with pytest.raises(ValueError, match="sigma_index"):
        inject_errors(x0, noise, y, torch.tensor([0, 1000]), None, OFF, gen)
    with pytest.raises(ValueError, match="y_error_num 6 exceeds the 5 latent frames"):
        inject_errors(x0, noise, y, IDX, None, replace(OFF, y_error_num=6), gen)
    with pytest.raises(ValueError, match="banks hold errors of shape"):
        inject_errors(x0, noise, y, IDX, ErrorBanks.build((C, T, H, 1), 1), OFF, gen)
    with pytest.raises(ValueError, match="noise_prob must be in"):
        RecyclingConfig(noise_prob=1.5)
    with pytest.raises(ValueError, match="strategy"):
        RecyclingConfig(strategy="l2_batch")


# ---------------------------------------------------------------------- loss and errors
def test_loss_is_mse_times_timestep_weight():
    step, *_ = run(OFF, None)
    v_hat = step.v_target + torch.tensor([1.0, 2.0]).reshape(B, 1, 1, 1, 1)  # per-sample MSE 1 and 4
    w = FlowMatchScheduler().training_weights()[IDX].float()
    assert torch.allclose(weighted_loss(v_hat, step), (1 * w[0] + 4 * w[1]) / 2)
    # a focus map weighs its positions by 1 + focus: all-zero changes nothing, a hot spot counts more
    assert torch.equal(weighted_loss(v_hat, step, torch.zeros(B, T, H, W)), weighted_loss(v_hat, step))
    focus = torch.zeros(B, T, H, W)
    focus[:, 0, 0, 0] = 9.0  # one of T*H*W positions (on every channel) weighs 10 instead of 1
    n = T * H * W
    assert torch.allclose(weighted_loss(v_hat, step, focus), (1 * w[0] + 4 * w[1]) / 2 * (n + 9) / n)


def test_loss_can_leave_out_the_condition_frames():
    step, *_ = run(OFF, None)
    # per-frame squared errors 1, 4, 9, 16, 25 on sample 0; sample 1 off by 2 on every frame
    v_hat = step.v_target.clone()
    v_hat[0] += torch.arange(1.0, T + 1).reshape(1, T, 1, 1)
    v_hat[1] += 2.0
    w = FlowMatchScheduler().training_weights()[IDX].float()
    every = torch.ones(B, T, dtype=torch.bool)
    assert torch.allclose(weighted_loss(v_hat, step, frames=every), weighted_loss(v_hat, step))
    # a shot condition: y's mask set on latent frame 0 only; a dropped condition (all zero) sets none
    y = torch.zeros(B, Y_MASK_CHANNELS + C, T, H, W)
    y[0, :Y_MASK_CHANNELS, 0] = 1.0
    y[0, Y_MASK_CHANNELS:, 1:] = 3.0  # latent values outside the mask do not make a frame a condition frame
    given_frames = condition_frames(y)
    assert given_frames.tolist() == [[True] + [False] * (T - 1), [False] * T]
    # sample 0 counts frames 1..4 only: (4 + 9 + 16 + 25) / 4; sample 1 keeps all its frames
    expected = ((4 + 9 + 16 + 25) / 4 * w[0] + 4 * w[1]) / 2
    assert torch.allclose(weighted_loss(v_hat, step, frames=~given_frames), expected)
    # the frame-0 error no longer moves the loss; an error on a counted frame does
    moved = v_hat.clone()
    moved[0, :, 0] += 10.0
    assert torch.equal(weighted_loss(moved, step, frames=~given_frames), weighted_loss(v_hat, step, frames=~given_frames))
    moved[0, :, 1] += 10.0
    assert weighted_loss(moved, step, frames=~given_frames) > weighted_loss(v_hat, step, frames=~given_frames)


def test_integration_errors_match_hand_computed_values():
    # i = 500: sigma~ = 0.5, sigma = 5 * 0.5 / (1 + 4 * 0.5) = 5/6.   i = 0: sigma = 1.
    x0, noise, y = (t[:1] for t in inputs())
    step = inject_errors(x0.expand(2, *LATENT), noise.expand(2, *LATENT), y.expand(2, *y.shape[1:]),
                         torch.tensor([500, 0]), None, OFF)
    assert torch.allclose(step.sigma, torch.tensor([5 / 6, 1.0]))
    v_hat = step.v_target + 2.0  # prediction off by +2 everywhere
    e_noise, e_x0 = compute_errors(step, v_hat)
    # e_noise = (1 - sigma)(v_hat - v*) ; e_x0 = -sigma (v_hat - v*)
    assert torch.allclose(e_noise[0], torch.full(LATENT, 1 / 3), atol=1e-5)
    assert torch.allclose(e_x0[0], torch.full(LATENT, -5 / 3), atol=1e-5)
    assert torch.allclose(e_noise[1], torch.zeros(LATENT), atol=1e-5)  # at sigma = 1 nothing to integrate
    assert torch.allclose(e_x0[1], torch.full(LATENT, -2.0), atol=1e-5)
    # And against the endpoints themselves: x1_pred = x_t + (1 - s) v_hat, x0_pred = x_t - s v_hat.
    s = step.sigma[0]
    x1_pred, x1_ref = step.x_t[0] + (1 - s) * v_hat[0], step.x_t[0] + (1 - s) * step.v_target[0]
    assert torch.allclose(e_noise[0], x1_pred - x1_ref, atol=1e-5)


def test_recycle_puts_each_error_in_its_own_bank_at_the_step_grid():
    banks = ErrorBanks.build(LATENT, capacity=4, num_grids=50)
    step, *_ = run(OFF, banks)
    v_hat = step.v_target + 3.0
    out = recycle_errors(step, v_hat, banks, OFF, torch.Generator())
    assert out.keep.all()
    s = step.sigma
    for b, g in enumerate(step.grid.tolist()):
        assert banks.noise.count(g) == 1 and banks.data.count(g) == 1
        assert torch.allclose(banks.noise.entries(g)[0], torch.full(LATENT, float((1 - s[b]) * 3)), atol=1e-5)
        assert torch.allclose(banks.data.entries(g)[0], torch.full(LATENT, float(-s[b] * 3)), atol=1e-5)
    assert len(banks.noise) == len(banks.data) == B


@pytest.mark.parametrize("update_prob, expected", [(0.0, 0), (1.0, B)])
def test_clean_steps_update_banks_only_with_their_probability(update_prob, expected):
    cfg = replace(OFF, clean_prob=1.0, clean_buffer_update_prob=update_prob)
    banks = ErrorBanks.build(LATENT, capacity=4, num_grids=50)
    step, *_ = run(cfg, banks)
    out = recycle_errors(step, step.v_target + 1, banks, cfg, torch.Generator())
    assert int(out.keep.sum()) == expected and len(banks.noise) == len(banks.data) == expected


def test_clean_update_probability_is_a_rate():
    cfg = replace(OFF, clean_prob=1.0, clean_buffer_update_prob=0.1)
    banks = ErrorBanks.build(LATENT, capacity=400, num_grids=50)
    gen = torch.Generator().manual_seed(0)
    step, *_ = run(cfg, banks)
    kept = sum(int(recycle_errors(step, step.v_target, banks, cfg, gen).keep.sum()) for _ in range(500))
    assert 60 < kept < 140  # 1000 clean samples at p = 0.1


def test_warmup_gather_with_a_single_process_accelerator():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    banks = ErrorBanks.build(LATENT, capacity=4, num_grids=50)
    step, *_ = run(OFF, banks)
    recycle_errors(step, step.v_target + 1, banks, OFF, torch.Generator(), gather=acc.gather)
    assert len(banks.noise) == B
    assert OFF.in_warmup(49) and not OFF.in_warmup(50)


def test_bank_memory_estimate_matches_the_built_banks():
    cfg = RecyclingConfig(buffer_k=3, num_grids=7, bank_dtype="bf16")
    assert cfg.bank_memory_bytes(LATENT) == cfg.build_banks(LATENT).memory_bytes == 2 * 7 * 3 * C * T * H * W * 2


def test_sample_sigma_index_covers_the_training_grid():
    idx = sample_sigma_index(5000, torch.Generator().manual_seed(0))
    assert idx.min() >= 0 and idx.max() <= 999 and len(set(idx.tolist())) > 900


def test_sample_sigma_index_keeps_to_a_sigma_window():
    """--max-sigma: every drawn level lies below the window, and the window's levels are all drawn."""
    from svi.scheduler import FlowMatchScheduler

    sigmas = FlowMatchScheduler().training_sigmas()
    idx = sample_sigma_index(5000, torch.Generator().manual_seed(0), max_sigma=0.85)
    inside = set(torch.nonzero(sigmas < 0.85).flatten().tolist())
    assert (sigmas[idx] < 0.85).all()
    assert 0.3 * 1000 < len(inside) < 0.7 * 1000  # shift 5 puts about half of the indices above 0.85
    assert len(set(idx.tolist())) > 0.9 * len(inside)
    with pytest.raises(ValueError, match="below"):
        sample_sigma_index(1, max_sigma=1e-6)


# ---------------------------------------------------------------------- real two-rank warm-up
WORKER = r"""
import sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[4])
from finetune.recycling import RecyclingConfig, inject_errors, recycle_errors, sample_sigma_index
rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

def gather(t):
    parts = [torch.empty_like(t) for _ in range(2)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)  # rank order, like accelerate's gather

cfg = RecyclingConfig(buffer_k=4, num_grids=5, clean_prob=0.5, clean_buffer_update_prob=0.5, y_error_num=1,
                      warmup_iter=3, bank_dtype="float32")
banks = cfg.build_banks((2, 3, 2, 2), seed=0)  # same bank seed on every rank
gen = torch.Generator().manual_seed(100 + rank)  # different data and decisions per rank
states = []
for it in range(6):
    x0, noise, y = torch.randn(2, 2, 3, 2, 2, generator=gen), torch.randn(2, 2, 3, 2, 2, generator=gen), torch.randn(2, 6, 3, 2, 2, generator=gen)
    step = inject_errors(x0, noise, y, sample_sigma_index(2, gen), banks, cfg, gen)
    v_hat = step.v_target + torch.randn(step.v_target.shape, generator=gen)
    recycle_errors(step, v_hat, banks, cfg, gen, gather=gather if cfg.in_warmup(it) else None)
    if it == cfg.warmup_iter - 1:
        states.append(banks.state_dict())
states.append(banks.state_dict())
torch.save(states, out)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_warmup_keeps_banks_identical_then_lets_them_diverge(tmp_path):
    import subprocess

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port, root = str(_free_port()), str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), port, str(tmp_path / f"r{r}.pt"), root], env=env)
             for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    (warm0, end0), (warm1, end1) = (torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2))
    for kind in ("noise", "data"):
        a, b = warm0[kind], warm1[kind]
        assert int(a["count"].sum()) > 0
        assert torch.equal(a["count"], b["count"]) and torch.equal(a["errors"], b["errors"])
    assert not torch.equal(end0["noise"]["errors"], end1["noise"]["errors"])  # local inserts after warm-up
