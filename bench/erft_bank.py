"""Error-bank insert cost (microseconds per error) by strategy and fill, and the bank's memory.

random and fifo must cost the same at 10% and at 100% fill (one slice copy into preallocated
storage); l2 pays one pass over the full grid. For comparison the official `l2_batch` way (a Python
list of K tensors, `torch.stack` + norm of the difference on every insert) runs on the same errors.
Each figure is the median over many single inserts (robust on a shared machine).

On the CPU the 10% figure is the higher one: the storage comes from `torch.empty`, so the first
write into a slot also makes the OS commit its pages (measured: 36 us into fresh pages, 18 us into
pages already written, for an 80 KiB error). That is a once-per-slot cost of lazy preallocation;
the figure does not grow with fill.

    python bench/erft_bank.py [--shape 16,5,16,16] [--k 500] [--grids 50] [--dtype bf16] [--device cpu]
Default shape: one storyworld-tiny latent (17 frames at 128x128 px).
Last line: bank: random_us_10=… random_us_100=… fifo_us_10=… fifo_us_100=… l2_us=… bank_mb=…
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from finetune.bank import ErrorBank, parse_dtype  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_inserts(bank: ErrorBank, pool: torch.Tensor, grids: list[int], per_grid: int) -> list[float]:
    """Microseconds of each single insert, `per_grid` inserts into each of `grids`, cycling the pool."""
    out, k = [], 0
    for g in grids:
        for _ in range(per_grid):
            e = pool[k % len(pool)]
            k += 1
            _sync(bank.device)
            t = time.perf_counter_ns()
            bank.insert(e, g)
            _sync(bank.device)
            out.append((time.perf_counter_ns() - t) / 1e3)
    return out


def prefill(bank: ErrorBank, pool: torch.Tensor, grids: list[int], n: int) -> None:
    for g in grids:
        for i in range(n):
            bank.insert(pool[i % len(pool)], g)


def strategy_us(strategy: str, args, pool: torch.Tensor) -> tuple[float, float]:
    """Median insert microseconds at ~10% fill (appends) and at 100% fill (replacements)."""
    k = args.k
    # ~10%: every grid prefilled to K/10, then K/20 inserts each, so fill stays between 10% and 15%.
    bank = ErrorBank(args.shape, k, args.grids, strategy, args.dtype, args.device)
    grids = list(range(args.grids))
    prefill(bank, pool, grids, k // 10)
    low = timed_inserts(bank, pool, grids, max(1, k // 20))
    # 100%: a few full grids, then replacements only.
    full = grids[: args.full_grids]
    prefill(bank, pool, full, k)
    high = timed_inserts(bank, pool, full, max(1, args.inserts // len(full)))
    assert all(bank.count(g) == k for g in full)
    return statistics.median(low), statistics.median(high)


def l2_us(args, pool: torch.Tensor) -> float:
    bank = ErrorBank(args.shape, args.k, 1, "l2", args.dtype, args.device)
    prefill(bank, pool, [0], args.k)
    return statistics.median(timed_inserts(bank, pool[args.k:], [0], args.l2_inserts))


def official_l2_us(args, pool: torch.Tensor) -> float:
    """The official l2_batch: stack the K listed tensors and take the norm of the difference, per insert."""
    store = [pool[i].to(args.device, args.dtype) for i in range(args.k)]
    times = []
    for i in range(args.l2_inserts):
        e = pool[args.k + i].to(args.device, args.dtype)
        _sync(args.device)
        t = time.perf_counter_ns()
        stacked = torch.stack(store)  # (K, *shape): a copy of the whole grid on every insert
        j = int(torch.argmin((stacked - e).flatten(1).float().norm(dim=1)))
        store[j] = e
        _sync(args.device)
        times.append((time.perf_counter_ns() - t) / 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="16,5,16,16", help="one error (C,T,h,w); SVI 480p is 16,21,60,104")
    ap.add_argument("--k", type=int, default=500, help="errors per grid (SVI 500)")
    ap.add_argument("--grids", type=int, default=50, help="timestep grids (SVI 50)")
    ap.add_argument("--dtype", default="bf16", help="storage dtype: fp32, bf16, fp16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--inserts", type=int, default=2000, help="timed inserts at 100%% fill per strategy")
    ap.add_argument("--full-grids", type=int, default=4, help="grids filled to capacity for the 100%% figure")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--l2-inserts", type=int, default=30, help="timed l2 inserts into a full grid")
    args = ap.parse_args()
    args.shape = tuple(int(s) for s in args.shape.split(","))
    args.dtype, args.device = parse_dtype(args.dtype), torch.device(args.device)
    # One thread by default: inserts are memory-bound, and on a shared 2-core machine two OpenMP
    # threads spin-wait on a busy core (l2 measured 2 ms with 1 thread, 80 ms with 2 under load).
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    pool = torch.randn((args.k + args.l2_inserts, *args.shape), generator=gen).to(args.device)  # distinct errors

    r10, r100 = strategy_us("random", args, pool)
    f10, f100 = strategy_us("fifo", args, pool)
    l2 = l2_us(args, pool)
    naive = official_l2_us(args, pool)
    bank_bytes = ErrorBank(args.shape, args.k, args.grids, "random", args.dtype, "meta").memory_bytes
    numel = 1
    for s in args.shape:
        numel *= s
    print(f"shape={args.shape} K={args.k} grids={args.grids} dtype={str(args.dtype)[6:]} device={args.device} "
          f"error={numel * pool.element_size() / 1024:.0f} KiB fp32")
    print(f"random: 10%={r10:.1f} us 100%={r100:.1f} us (ratio {r100 / r10:.2f})")
    print(f"fifo:   10%={f10:.1f} us 100%={f100:.1f} us (ratio {f100 / f10:.2f})")
    print(f"l2 into a full grid: ours {l2:.0f} us, official stack+norm {naive:.0f} us ({naive / l2:.1f}x)")
    print(f"memory: one bank {bank_bytes / 2**20:.1f} MB, noise+data pair {2 * bank_bytes / 2**20:.1f} MB")
    print(f"bank: random_us_10={r10:.1f} random_us_100={r100:.1f} fifo_us_10={f10:.1f} fifo_us_100={f100:.1f} "
          f"l2_us={l2:.0f} bank_mb={bank_bytes / 2**20:.1f}")


if __name__ == "__main__":
    main()
