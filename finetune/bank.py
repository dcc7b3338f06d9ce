"""Error banks: the replay memory of error-recycling fine-tuning (SVI_SPEC 3.6).

One `ErrorBank` holds errors of one kind in per-timestep grids. Storage is ONE preallocated tensor
(num_grids, K, *shape) plus a fill count per grid, so memory is bounded and known up front
(`memory_bytes`), inserts are a slice copy, and nothing grows as a Python list of tensors (the
official code keeps 2 x 50 x 500 bf16 tensors of 4 MB in lists: about 210 GB per rank at capacity).

On the CPU the storage comes from `torch.empty`, so the operating system commits pages only as
grids fill; `memory_bytes` is the bound, not the current resident size.

Replacement once a grid is full (below capacity every strategy appends):
- "random": a uniformly random slot. O(1).
- "fifo": the oldest slot, tracked by a ring pointer per grid. O(1).
- "l2": the slot whose stored error is nearest (minimum L2 distance) to the new one, which keeps
  the bank diverse (the official `l2_batch`, used by every released script). Distances come from
  cached squared norms and one matrix-vector product per chunk of slots, so no (K, *shape)
  difference tensor is ever built; the chunk size bounds the temporary memory.

`ErrorBanks` pairs the noise-side bank (B_noise: e_noise = x1_pred - x1_ref, injected into the
noise) and the data-side bank (B_x0: e_x0 = x0_pred - x0_ref, injected into the latent and into
the condition frames), filled together. The official code calls these `latent_error_buffer` and
`y_error_buffer` respectively, i.e. swapped; here each is named after what it holds.

No torch.distributed here: during warm-up the caller all-gathers the errors (e.g. with
`accelerate`) and hands the gathered tensors to `gather_insert`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch

STRATEGIES = ("random", "fifo", "l2")

# Temporary memory one l2 chunk may use (its fp32 copy when stored in a lower precision). On the CPU
# a chunk that stays in cache wins: measured on a 2-core machine, a full bf16 grid of 500 x 80 KiB
# takes 4 ms at 4 MiB chunks and 31 ms at 64 MiB (a fresh 40 MB temporary faults in its pages on
# every insert). On a GPU fewer, larger chunks save kernel launches.
L2_CHUNK_BYTES_CPU = 4 * 2**20
L2_CHUNK_BYTES_GPU = 256 * 2**20

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(dtype: torch.dtype | str | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """A storage dtype from a torch dtype or a name ("bf16", "float16", ...); None gives `default`."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        result = dtype
    elif isinstance(dtype, str) and dtype.lower() in _DTYPES:
        result = _DTYPES[dtype.lower()]
    else:
        raise ValueError(f"bank dtype must be one of {sorted(set(_DTYPES))} or a torch float dtype, got {dtype!r}")
    if not result.is_floating_point:
        raise ValueError(f"bank dtype must be a floating point type, got {result}")
    return result


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class ErrorBank:
    """Per-timestep-grid replay memory of error tensors of one fixed shape.

    Args:
        shape (tuple[int, ...]): shape of one stored error, e.g. the latent (C, T, h, w) without batch.
        capacity (int): K, slots per grid (SVI: 500).
        num_grids (int, default 50): grids, one per inference timestep (SVI: 50).
        strategy (str, default "random"): replacement once a grid is full: "random", "fifo" or "l2".
        dtype (torch.dtype | str, default float32): storage precision; bf16/fp16 halve the memory.
        device (torch.device | str, default "cpu"): where the storage lives.
        seed (int, default 0): seeds the bank's own generator (random replacement; sampling when the
            caller passes no generator). Equal seeds keep banks on different ranks identical while
            they receive identical inserts (warm-up).
        l2_chunk_bytes (int | None): temporary-memory bound of one l2 distance chunk; None picks
            4 MiB on the CPU and 256 MiB on an accelerator.
    """

    def __init__(self, shape: tuple[int, ...], capacity: int, num_grids: int = 50, strategy: str = "random",
                 dtype: torch.dtype | str | None = torch.float32, device: torch.device | str = "cpu",
                 seed: int = 0, l2_chunk_bytes: int | None = None):
        # 1. Check inputs
        shape = tuple(int(s) for s in shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"error shape must be non-empty with positive sizes, got {shape}")
        if capacity < 1:
            raise ValueError(f"capacity (K, errors per grid) must be >= 1, got {capacity}")
        if num_grids < 1:
            raise ValueError(f"num_grids must be >= 1, got {num_grids}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown replacement strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if l2_chunk_bytes is not None and l2_chunk_bytes < 1:
            raise ValueError(f"l2_chunk_bytes must be positive, got {l2_chunk_bytes}")
        self.shape = shape
        self.capacity = int(capacity)
        self.num_grids = int(num_grids)
        self.strategy = strategy
        self.dtype = parse_dtype(dtype)
        self.device = torch.device(device)
        self.numel = math.prod(shape)
        if l2_chunk_bytes is None:
            l2_chunk_bytes = L2_CHUNK_BYTES_CPU if self.device.type == "cpu" else L2_CHUNK_BYTES_GPU
        self.l2_chunk_bytes = int(l2_chunk_bytes)

        # 2. Preallocate. Unfilled slots are never read: sampling and l2 look at filled slots only.
        self._storage = torch.empty((self.num_grids, self.capacity, *shape), dtype=self.dtype,
                                    device=self.device)  # (G, K, *shape)
        # Squared L2 norm of each stored error (fp32, as stored): the l2 strategy's distance is
        # |s|^2 - 2 s.e + |e|^2, so only the dot products need a pass over the bank.
        self._sqnorm = torch.zeros((self.num_grids, self.capacity), dtype=torch.float32,
                                   device=self.device)  # (G, K)
        # Fill counts and fifo ring pointers as Python ints: reading them never syncs a GPU.
        self._count = [0] * self.num_grids
        self._head = [0] * self.num_grids
        self._inserted = [0] * self.num_grids  # lifetime inserts per grid, for metrics
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(int(seed))

    # ------------------------------------------------------------------ size and fill
    @property
    def memory_bytes(self) -> int:
        """Bytes of the preallocated storage: num_grids * K * numel * itemsize."""
        return self._storage.numel() * self._storage.element_size()

    def fill(self) -> torch.Tensor:
        """(num_grids,) int64: stored errors per grid."""
        return torch.tensor(self._count, dtype=torch.int64)

    def inserted(self) -> torch.Tensor:
        """(num_grids,) int64: errors ever inserted per grid (replacements included)."""
        return torch.tensor(self._inserted, dtype=torch.int64)

    def count(self, grid: int) -> int:
        return self._count[self._check_grid(grid)]

    def __len__(self) -> int:
        """Errors stored over all grids."""
        return sum(self._count)

    def is_empty(self, grid: int | None = None) -> bool:
        """Whether `grid` (or, with None, the whole bank) holds no error."""
        return len(self) == 0 if grid is None else self.count(grid) == 0

    def entries(self, grid: int) -> torch.Tensor:
        """(count, *shape) view of the errors stored in `grid`, in slot order (read-only use)."""
        return self._storage[self._check_grid(grid), : self._count[grid]]

    def __repr__(self) -> str:
        return (f"ErrorBank(shape={self.shape}, K={self.capacity}, grids={self.num_grids}, "
                f"strategy={self.strategy!r}, dtype={_dtype_name(self.dtype)}, device={self.device}, "
                f"stored={len(self)}, memory_mb={self.memory_bytes / 2**20:.1f})")

    # ------------------------------------------------------------------ insertion
    def insert(self, errors: torch.Tensor, grids: torch.Tensor | int | list[int]) -> list[int]:
        """Store one error (shape) in grid `grids`, or a batch (N, *shape) in grids (N,), in order.

        Returns the slot written for each error. Cost per error is one slice copy for random and
        fifo whatever the fill; l2 adds one pass over the full grid.
        """
        batch, grid_list = self._as_batch(errors, grids)
        return [self._insert_one(e, g) for e, g in zip(batch, grid_list)]

    def gather_insert(self, errors: torch.Tensor, grids: torch.Tensor | list[int],
                      keep: torch.Tensor | None = None) -> list[int]:
        """Insert errors already all-gathered from every rank (warm-up), in rank order.

        Args:
            errors (torch.Tensor): (world, B, *shape) or (world * B, *shape), as `accelerate`'s
                `gather` returns it (concatenated along dim 0 in rank order).
            grids (torch.Tensor): the matching grids, (world, B) or (world * B,).
            keep (torch.Tensor | None): matching 0/1 flags; only errors with keep != 0 go in (each
                rank's own clean-step decision travels with its error). None keeps all.
        """
        errors = errors.reshape(-1, *self.shape) if errors.dim() > len(self.shape) + 1 else errors
        grids_t = torch.as_tensor(grids).reshape(-1)
        if keep is not None:
            keep_t = torch.as_tensor(keep).reshape(-1)
            if keep_t.numel() != grids_t.numel():
                raise ValueError(f"keep has {keep_t.numel()} flags for {grids_t.numel()} gathered errors")
            idx = torch.nonzero(keep_t.to("cpu") != 0).reshape(-1)
            errors, grids_t = errors[idx.to(errors.device)], grids_t.to("cpu")[idx]
        if grids_t.numel() == 0:
            return []
        return self.insert(errors, grids_t)

    def _insert_one(self, error: torch.Tensor, grid: int) -> int:
        n = self._count[grid]
        if n < self.capacity:  # not full: append
            slot = n
            self._count[grid] = n + 1
        elif self.strategy == "random":
            slot = int(torch.randint(self.capacity, (1,), generator=self._generator))
        elif self.strategy == "fifo":
            slot = self._head[grid]  # the oldest: slots fill 0..K-1 in order, then the ring turns
            self._head[grid] = (slot + 1) % self.capacity
        else:
            slot = self._nearest_slot(error, grid)
        dst = self._storage[grid, slot]  # (*shape)
        dst.copy_(error)
        if self.strategy == "l2":
            # Norm of the value as stored (after rounding to the bank dtype), so distances are exact
            # with respect to what the bank holds. Only l2 reads it; the others skip the pass.
            self._sqnorm[grid, slot] = dst.float().square().sum()
        self._inserted[grid] += 1
        return slot

    def _nearest_slot(self, error: torch.Tensor, grid: int) -> int:
        """Slot in a full `grid` whose error has the minimum L2 distance to `error`."""
        e = error.to(device=self.device, dtype=torch.float32).reshape(-1)  # (numel,)
        stored = self._storage[grid].reshape(self.capacity, self.numel)  # (K, numel)
        rows = max(1, self.l2_chunk_bytes // (self.numel * 4))
        dots = torch.empty(self.capacity, dtype=torch.float32, device=self.device)  # (K,)
        for a in range(0, self.capacity, rows):
            chunk = stored[a: a + rows]
            if chunk.dtype != torch.float32:
                chunk = chunk.float()  # (rows, numel) temporary, bounded by l2_chunk_bytes
            torch.mv(chunk, e, out=dots[a: a + rows])
        # |s - e|^2 = |s|^2 - 2 s.e + |e|^2; the last term is the same for every slot.
        return int(torch.argmin(self._sqnorm[grid] - 2 * dots))

    # ------------------------------------------------------------------ sampling
    def sample(self, grid: int, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
        """One error drawn uniformly from `grid`, as a new tensor (never a view into the bank).

        Raises ValueError when the grid is empty; check `is_empty(grid)` first.
        """
        n = self.count(grid)
        if n == 0:
            raise ValueError(f"cannot sample from empty grid {grid}")
        slot = int(torch.randint(n, (1,), generator=generator or self._generator))
        return self._copy_out(grid, slot, dtype, device)

    def sample_any(self, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """One error drawn uniformly from all filled entries of all grids (SVI's y errors)."""
        total = len(self)
        if total == 0:
            raise ValueError("cannot sample from an empty bank")
        r = int(torch.randint(total, (1,), generator=generator or self._generator))
        ends = list(_cumsum(self._count))  # (G,) exclusive end of each grid's block in [0, total)
        grid = bisect.bisect_right(ends, r)
        slot = r - (ends[grid - 1] if grid else 0)
        return self._copy_out(grid, slot, dtype, device)

    def _copy_out(self, grid: int, slot: int, dtype: torch.dtype | None, device) -> torch.Tensor:
        src = self._storage[grid, slot]
        return src.to(device=device or src.device, dtype=dtype or src.dtype, copy=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values for a checkpoint (loads with `torch.load(weights_only=True)`).

        Only filled slots are saved, packed grid by grid, so a half-empty bank costs half.
        """
        filled = [self._storage[g, : self._count[g]] for g in range(self.num_grids)]
        return {
            "shape": list(self.shape), "capacity": self.capacity, "num_grids": self.num_grids,
            "strategy": self.strategy, "dtype": _dtype_name(self.dtype),
            "count": torch.tensor(self._count, dtype=torch.int64),
            "head": torch.tensor(self._head, dtype=torch.int64),
            "inserted": torch.tensor(self._inserted, dtype=torch.int64),
            "errors": torch.cat(filled).cpu(),  # (sum(count), *shape)
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`. Shape, capacity and grid count must match; dtype may differ (cast)."""
        for key, mine in (("shape", list(self.shape)), ("capacity", self.capacity), ("num_grids", self.num_grids)):
            if key not in state:
                raise ValueError(f"bank state has no {key!r}; not an ErrorBank.state_dict()")
            theirs = list(state[key]) if key == "shape" else int(state[key])
            if theirs != mine:
                raise ValueError(f"bank state {key} is {theirs}, this bank has {mine}; build the bank with the "
                                 f"checkpoint's settings to resume it")
        count = [int(c) for c in state["count"].tolist()]
        errors = state["errors"]
        if len(count) != self.num_grids or any(c < 0 or c > self.capacity for c in count):
            raise ValueError(f"bank state counts {count} do not fit {self.num_grids} grids of K={self.capacity}")
        if errors.shape != (sum(count), *self.shape):
            raise ValueError(f"bank state errors have shape {tuple(errors.shape)}, "
                             f"expected {(sum(count), *self.shape)} from its counts")
        start = 0
        for g, c in enumerate(count):
            if c:
                self._storage[g, :c].copy_(errors[start: start + c])
                self._sqnorm[g, :c] = self._storage[g, :c].reshape(c, -1).float().square().sum(dim=1)
            start += c
        self._count = count
        self._head = [int(h) % self.capacity for h in state["head"].tolist()]
        self._inserted = [int(i) for i in state.get("inserted", state["count"]).tolist()]
        if "generator" in state:
            self._generator.set_state(state["generator"])

    # ------------------------------------------------------------------ helpers
    def _check_grid(self, grid: int) -> int:
        if not 0 <= grid < self.num_grids:
            raise IndexError(f"grid {grid} out of range 0..{self.num_grids - 1}")
        return grid

    def _as_batch(self, errors: torch.Tensor, grids) -> tuple[torch.Tensor, list[int]]:
        if not isinstance(errors, torch.Tensor):
            raise TypeError(f"errors must be a torch.Tensor, got {type(errors).__name__}")
        if tuple(errors.shape) == self.shape:
            errors = errors.unsqueeze(0)  # (1, *shape)
        if tuple(errors.shape[1:]) != self.shape:
            raise ValueError(f"error shape {tuple(errors.shape)} does not match the bank's {self.shape} "
                             f"(one error) or (N, *{self.shape}) (a batch)")
        grid_list = [int(g) for g in torch.as_tensor(grids).reshape(-1).tolist()]
        if len(grid_list) != errors.shape[0]:
            raise ValueError(f"{errors.shape[0]} errors but {len(grid_list)} grids")
        for g in grid_list:
            self._check_grid(g)
        return errors, grid_list


def _cumsum(values: list[int]) -> Iterator[int]:
    total = 0
    for v in values:
        total += v
        yield total


@dataclass
class ErrorBanks:
    """The two banks of error recycling, filled together from the same forward (SVI_SPEC 3.5, 3.6).

    noise: B_noise, errors of the one-step jump to sigma = 1; injected into the noise.
    data:  B_x0, errors of the one-step jump to sigma = 0; injected into the clean latent and into
           the latent channels of the condition frames y.
    """

    noise: ErrorBank
    data: ErrorBank

    @classmethod
    def build(cls, shape: tuple[int, ...], capacity: int, num_grids: int = 50, strategy: str = "random",
              dtype: torch.dtype | str | None = torch.float32, device: torch.device | str = "cpu",
              seed: int = 0) -> "ErrorBanks":
        """Two identically configured banks; seeds differ so their random replacements are independent."""
        kw = dict(shape=shape, capacity=capacity, num_grids=num_grids, strategy=strategy, dtype=dtype, device=device)
        return cls(noise=ErrorBank(**kw, seed=seed), data=ErrorBank(**kw, seed=seed + 1))

    def __post_init__(self):
        a, b = self.noise, self.data
        if (a.shape, a.num_grids) != (b.shape, b.num_grids):
            raise ValueError(f"noise and data banks must share shape and grids, got {a!r} and {b!r}")

    @property
    def memory_bytes(self) -> int:
        return self.noise.memory_bytes + self.data.memory_bytes

    def insert(self, e_noise: torch.Tensor, e_x0: torch.Tensor, grids) -> None:
        """Insert a batch of paired errors (N, *shape) at grids (N,) into both banks."""
        self.noise.insert(e_noise, grids)
        self.data.insert(e_x0, grids)

    def gather_insert(self, e_noise: torch.Tensor, e_x0: torch.Tensor, grids, keep=None) -> None:
        """Warm-up: insert the errors all ranks gathered (see `ErrorBank.gather_insert`)."""
        self.noise.gather_insert(e_noise, grids, keep)
        self.data.gather_insert(e_x0, grids, keep)

    def state_dict(self) -> dict[str, Any]:
        return {"noise": self.noise.state_dict(), "data": self.data.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"noise", "data"}:
            raise ValueError(f"ErrorBanks state must have keys 'noise' and 'data', got {sorted(state)}")
        self.noise.load_state_dict(state["noise"])
        self.data.load_state_dict(state["data"])
