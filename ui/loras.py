"""LoRAs the storyboard can use: files registered in <data>/loras (finetune results land there)."""

from __future__ import annotations

from pathlib import Path

from .services import Services


def registered_loras(services: Services) -> list[tuple[str, str]]:
    """(label, path) of every registered LoRA file, newest first."""
    files = sorted(services.lora_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [(p.stem, str(p)) for p in files]


def lora_label(path: str) -> str:
    return Path(path).stem
