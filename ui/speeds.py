"""Render speeds measured on this machine, per model and device, for time estimates.

Each finished clip reports its timings (svi.render.ClipResult.timings: encode, denoise, decode,
total). A clip costs about `overhead_s + steps * step_s`; both are exponential moving averages so
the estimate follows the machine's load. Kept in <data>/speeds.json, written atomically.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

ALPHA = 0.3  # weight of the newest clip in the moving averages


class SpeedBook:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._data: dict[str, dict] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self._data = {}

    @staticmethod
    def key(model_id: str, device: str) -> str:
        return f"{model_id}@{device}"

    def record(self, model_id: str, device: str, steps: int, timings: dict) -> None:
        total, denoise = float(timings.get("total", 0.0)), float(timings.get("denoise", 0.0))
        if total <= 0 or steps <= 0:
            return
        step_s, overhead_s = denoise / steps, max(0.0, total - denoise)
        with self._lock:
            row = self._data.get(self.key(model_id, device))
            if row is None:
                row = {"step_s": step_s, "overhead_s": overhead_s, "clips": 0}
            else:
                row = {"step_s": (1 - ALPHA) * row["step_s"] + ALPHA * step_s,
                       "overhead_s": (1 - ALPHA) * row["overhead_s"] + ALPHA * overhead_s,
                       "clips": row.get("clips", 0)}
            row["clips"] += 1
            self._data[self.key(model_id, device)] = row
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                tmp.write_text(json.dumps(self._data, indent=1), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                pass  # an estimate is a nicety: a read-only data folder must not fail a render

    def clip_seconds(self, model_id: str, device: str, steps: int) -> float | None:
        """Estimated seconds for one clip of `steps` denoising steps; None before any measurement."""
        with self._lock:
            row = self._data.get(self.key(model_id, device))
        if row is None:
            return None
        return row["overhead_s"] + steps * row["step_s"]

    def measured(self, model_id: str, device: str) -> dict | None:
        with self._lock:
            row = self._data.get(self.key(model_id, device))
        return dict(row) if row else None
