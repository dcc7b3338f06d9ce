"""Hugging Face Spaces: `spaces.GPU` on the GPU work when the `spaces` package is importable.

On a GPU Space (ZeroGPU included) the decorator asks for a GPU for the duration of the call; off
Spaces this module changes nothing.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)
GPU_SECONDS = int(os.environ.get("SVI_SPACES_GPU_SECONDS", "300"))  # per call: one render job chunk


def gpu(fn: F) -> F:
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(duration=GPU_SECONDS)(fn)


def on_spaces() -> bool:
    return bool(os.environ.get("SPACE_ID"))
