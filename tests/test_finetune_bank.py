"""ErrorBank / ErrorBanks: preallocation, replacement strategies, sampling, checkpoints (SVI_SPEC 3.6)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.bank import ErrorBank, ErrorBanks

SHAPE = (3, 2, 2, 2)  # a tiny latent (C, T, h, w)


def item(value: float, shape=SHAPE) -> torch.Tensor:
    """An error whose every entry is `value`: easy to identify after a round trip."""
    return torch.full(shape, float(value))


def stored_values(bank: ErrorBank, grid: int) -> list[float]:
    """First entry of each filled slot of `grid`, in slot order."""
    return [float(e.reshape(-1)[0]) for e in bank.entries(grid)]


# ---------------------------------------------------------------------- size and precision
@pytest.mark.parametrize("dtype, itemsize", [(torch.float32, 4), ("bf16", 2), ("float16", 2)])
def test_memory_bytes_is_grids_times_k_times_numel_times_itemsize(dtype, itemsize):
    bank = ErrorBank(SHAPE, capacity=7, num_grids=5, dtype=dtype)
    assert bank.memory_bytes == 5 * 7 * math.prod(SHAPE) * itemsize
    assert len(bank) == 0 and bank.fill().tolist() == [0] * 5
    pair = ErrorBanks.build(SHAPE, capacity=7, num_grids=5, dtype=dtype)
    assert pair.memory_bytes == 2 * bank.memory_bytes


def test_lower_precision_storage_rounds_to_bank_dtype_and_samples_in_any_dtype():
    gen = torch.Generator().manual_seed(0)
    error = torch.randn(SHAPE, generator=gen)  # fp32
    bank = ErrorBank(SHAPE, capacity=2, num_grids=1, dtype=torch.bfloat16)
    bank.insert(error, 0)
    assert bank.entries(0).dtype == torch.bfloat16
    stored = bank.sample(0, gen)
    assert stored.dtype == torch.bfloat16 and torch.equal(stored, error.to(torch.bfloat16))
    as_fp32 = bank.sample(0, gen, dtype=torch.float32)
    assert as_fp32.dtype == torch.float32 and torch.equal(as_fp32, error.to(torch.bfloat16).float())
    assert not torch.equal(as_fp32, error)  # bf16 really rounded it (randn values are not bf16-exact)


def test_sample_returns_a_copy_not_a_view():
    bank = ErrorBank(SHAPE, capacity=1, num_grids=1)
    bank.insert(item(1.0), 0)
    out = bank.sample(0)
    out.add_(100)
    assert stored_values(bank, 0) == [1.0]


# ---------------------------------------------------------------------- replacement strategies
@pytest.mark.parametrize("strategy", ["random", "fifo", "l2"])
def test_append_below_capacity_keeps_insertion_order(strategy):
    bank = ErrorBank(SHAPE, capacity=4, num_grids=3, strategy=strategy)
    slots = bank.insert(torch.stack([item(v) for v in (1, 2, 3)]), torch.tensor([1, 1, 2]))
    assert slots == [0, 1, 0]
    assert stored_values(bank, 1) == [1.0, 2.0] and stored_values(bank, 2) == [3.0]
    assert bank.fill().tolist() == [0, 2, 1] and bank.is_empty(0) and not bank.is_empty()


@settings(max_examples=30, deadline=None)
@given(capacity=st.integers(1, 6), n=st.integers(0, 20), seed=st.integers(0, 2**16))
def test_random_keeps_size_and_only_inserted_errors(capacity, n, seed):
    bank = ErrorBank(SHAPE, capacity=capacity, num_grids=2, strategy="random", seed=seed)
    for v in range(n):
        bank.insert(item(v), 1)
    values = stored_values(bank, 1)
    assert len(values) == min(n, capacity) and bank.count(0) == 0
    assert set(values) <= set(map(float, range(n)))
    assert len(set(values)) == len(values)  # a replacement overwrites, never duplicates
    if n:
        assert float(n - 1) in values  # the newest error is always in


def test_random_replacement_spreads_over_slots():
    bank = ErrorBank(SHAPE, capacity=4, num_grids=1, strategy="random", seed=3)
    for v in range(4):
        bank.insert(item(v), 0)
    slots = {bank.insert(item(100 + v), 0)[0] for v in range(60)}
    assert slots == {0, 1, 2, 3}


@settings(max_examples=30, deadline=None)
@given(capacity=st.integers(1, 6), n=st.integers(0, 20))
def test_fifo_keeps_exactly_the_newest_k(capacity, n):
    bank = ErrorBank(SHAPE, capacity=capacity, num_grids=1, strategy="fifo")
    for v in range(n):
        bank.insert(item(v), 0)
    assert sorted(stored_values(bank, 0)) == [float(v) for v in range(max(0, n - capacity), n)]


def test_fifo_replaces_the_oldest_slot_in_ring_order():
    bank = ErrorBank(SHAPE, capacity=3, num_grids=2, strategy="fifo")
    for v in range(3):
        bank.insert(item(v), 0)
    assert [bank.insert(item(10 + v), 0)[0] for v in range(4)] == [0, 1, 2, 0]
    assert stored_values(bank, 0) == [13.0, 11.0, 12.0]
    assert bank.count(1) == 0  # each grid has its own ring


def test_l2_replaces_the_most_similar_error():
    bank = ErrorBank(SHAPE, capacity=4, num_grids=1, strategy="l2")
    for v in (0.0, 5.0, 10.0, 20.0):
        bank.insert(item(v), 0)
    assert bank.insert(item(9.0), 0) == [2]  # nearest to 10
    assert stored_values(bank, 0) == [0.0, 5.0, 9.0, 20.0]
    assert bank.insert(item(-3.0), 0) == [0]
    assert stored_values(bank, 0) == [-3.0, 5.0, 9.0, 20.0]


@settings(max_examples=25, deadline=None)
@given(capacity=st.integers(1, 8), seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       chunk=st.sampled_from([1, 3, 10**9]))
def test_l2_matches_brute_force_distance_for_any_chunking(capacity, seed, dtype, chunk):
    gen = torch.Generator().manual_seed(seed)
    # l2_chunk_bytes below one row forces one row per chunk; 1e9 puts all K in one chunk.
    bank = ErrorBank(SHAPE, capacity=capacity, num_grids=1, strategy="l2", dtype=dtype,
                     l2_chunk_bytes=chunk * math.prod(SHAPE) * 4)
    bank.insert(torch.randn((capacity, *SHAPE), generator=gen), [0] * capacity)
    before = bank.entries(0).double().clone()  # (K, *shape)
    new = torch.randn(SHAPE, generator=gen)
    slot = bank.insert(new, 0)[0]
    dist = (before - new.double()).flatten(1).norm(dim=1)  # (K,) brute force against the fp32 error
    assert dist[slot] <= dist.min() + 1e-4 * dist.max()  # the chosen slot is (one of) the nearest
    after = bank.entries(0).double()
    keep = torch.arange(capacity) != slot
    assert torch.equal(after[keep], before[keep])  # nothing else moved


# ---------------------------------------------------------------------- sampling
def test_sample_one_grid_returns_only_that_grid_and_covers_it():
    bank = ErrorBank(SHAPE, capacity=4, num_grids=3)
    bank.insert(torch.stack([item(v) for v in (1, 2, 3, 4)]), [1, 1, 1, 1])
    bank.insert(item(99), 2)
    gen = torch.Generator().manual_seed(0)
    seen = {float(bank.sample(1, gen).reshape(-1)[0]) for _ in range(200)}
    assert seen == {1.0, 2.0, 3.0, 4.0}
    with pytest.raises(ValueError, match="empty grid 0"):
        bank.sample(0, gen)


def test_sample_any_is_uniform_over_all_filled_entries():
    bank = ErrorBank(SHAPE, capacity=4, num_grids=5)
    bank.insert(item(1), 0)  # 1 entry in grid 0
    bank.insert(torch.stack([item(3), item(4), item(5)]), [4, 4, 4])  # 3 entries in grid 4; grids 1..3 empty
    gen = torch.Generator().manual_seed(1)
    draws = [float(bank.sample_any(gen).reshape(-1)[0]) for _ in range(2000)]
    assert set(draws) == {1.0, 3.0, 4.0, 5.0}
    for v in (1.0, 3.0, 4.0, 5.0):  # 1 of 4 entries each, not grid 0 at 1 of 2 grids
        assert 0.2 < draws.count(v) / len(draws) < 0.3
    with pytest.raises(ValueError, match="empty bank"):
        ErrorBank(SHAPE, capacity=1, num_grids=2).sample_any(gen)


def test_sampling_is_reproducible_from_the_callers_generator():
    bank = ErrorBank(SHAPE, capacity=8, num_grids=2)
    bank.insert(torch.randn((8, *SHAPE)), [0] * 4 + [1] * 4)
    a = [bank.sample_any(torch.Generator().manual_seed(7)) for _ in range(3)]
    b = [bank.sample_any(torch.Generator().manual_seed(7)) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("strategy", ["random", "fifo", "l2"])
def test_state_dict_round_trip_restores_contents_and_future_behaviour(strategy, tmp_path):
    gen = torch.Generator().manual_seed(0)
    bank = ErrorBank(SHAPE, capacity=3, num_grids=4, strategy=strategy, dtype="bf16", seed=5)
    # Grid 0 gets 5 errors for 3 slots: full, with the fifo ring pointer mid-way (not back at 0).
    bank.insert(torch.randn((9, *SHAPE), generator=gen), [0, 0, 0, 0, 0, 2, 2, 3, 1])
    path = tmp_path / "bank.pt"
    torch.save(bank.state_dict(), path)
    restored = ErrorBank(SHAPE, capacity=3, num_grids=4, strategy=strategy, dtype="bf16", seed=123)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(restored.fill(), bank.fill()) and torch.equal(restored.inserted(), bank.inserted())
    for g in range(4):
        assert torch.equal(restored.entries(g), bank.entries(g))
    # Same replacement choices afterwards (fifo ring, random generator, l2 norms all restored).
    more = torch.randn((6, *SHAPE), generator=gen)
    assert restored.insert(more, [0] * 6) == bank.insert(more, [0] * 6)
    assert torch.equal(restored.entries(0), bank.entries(0))


def test_state_dict_saves_only_filled_slots():
    bank = ErrorBank(SHAPE, capacity=100, num_grids=10)
    bank.insert(item(1), 3)
    assert bank.state_dict()["errors"].shape == (1, *SHAPE)


def test_load_state_dict_rejects_a_different_layout():
    state = ErrorBank(SHAPE, capacity=3, num_grids=4).state_dict()
    with pytest.raises(ValueError, match="capacity is 3, this bank has 5"):
        ErrorBank(SHAPE, capacity=5, num_grids=4).load_state_dict(state)
    with pytest.raises(ValueError, match="shape"):
        ErrorBank((3, 2, 2, 1), capacity=3, num_grids=4).load_state_dict(state)


def test_pair_state_round_trip_and_fills_both_banks_at_the_same_grid():
    banks = ErrorBanks.build(SHAPE, capacity=2, num_grids=3, strategy="fifo")
    banks.insert(torch.stack([item(1), item(2)]), torch.stack([item(-1), item(-2)]), [2, 0])
    assert stored_values(banks.noise, 2) == [1.0] and stored_values(banks.data, 2) == [-1.0]
    assert stored_values(banks.noise, 0) == [2.0] and stored_values(banks.data, 0) == [-2.0]
    other = ErrorBanks.build(SHAPE, capacity=2, num_grids=3, strategy="fifo")
    other.load_state_dict(banks.state_dict())
    assert stored_values(other.noise, 2) == [1.0] and stored_values(other.data, 0) == [-2.0]


# ---------------------------------------------------------------------- warm-up gathering
def test_gather_insert_takes_rank_major_tensors_and_keep_flags():
    world, per_rank = 2, 3
    errors = torch.stack([item(10 * r + b) for r in range(world) for b in range(per_rank)])  # (6, *shape)
    grids = torch.tensor([0, 1, 1, 1, 0, 1])
    keep = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.uint8)  # rank 0 sample 2 was a skipped clean step
    flat = ErrorBank(SHAPE, capacity=8, num_grids=2)
    flat.gather_insert(errors, grids, keep)
    stacked = ErrorBank(SHAPE, capacity=8, num_grids=2)
    stacked.gather_insert(errors.reshape(world, per_rank, *SHAPE), grids.reshape(world, per_rank), keep)
    for bank in (flat, stacked):
        assert stored_values(bank, 0) == [0.0, 11.0]
        assert stored_values(bank, 1) == [1.0, 10.0, 12.0]  # rank order kept
    with pytest.raises(ValueError, match="keep has 2 flags for 6"):
        flat.gather_insert(errors, grids, keep[:2])


# ---------------------------------------------------------------------- bad input
def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="unknown replacement strategy 'l2_batch'"):
        ErrorBank(SHAPE, capacity=2, strategy="l2_batch")
    with pytest.raises(ValueError, match="capacity"):
        ErrorBank(SHAPE, capacity=0)
    with pytest.raises(ValueError, match="bank dtype"):
        ErrorBank(SHAPE, capacity=1, dtype="int8")
    bank = ErrorBank(SHAPE, capacity=2, num_grids=3)
    with pytest.raises(ValueError, match="does not match the bank's"):
        bank.insert(torch.zeros(3, 2, 2), 0)
    with pytest.raises(IndexError, match="grid 3 out of range 0..2"):
        bank.insert(item(0), 3)
    with pytest.raises(ValueError, match="2 errors but 1 grids"):
        bank.insert(torch.zeros(2, *SHAPE), [0])
    assert len(bank) == 0  # nothing half-inserted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bank_on_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    errs = torch.randn((12, *SHAPE), generator=gen)
    grids = [0, 1] * 6
    banks = [ErrorBank(SHAPE, capacity=4, num_grids=2, strategy="l2", dtype="bf16", device=d) for d in ("cpu", "cuda")]
    slots = [b.insert(errs.to(b.device), grids) for b in banks]
    assert slots[0] == slots[1]
    for g in (0, 1):
        assert torch.equal(banks[0].entries(g), banks[1].entries(g).cpu())
    assert banks[1].sample(0, torch.Generator().manual_seed(1)).device.type == "cuda"
