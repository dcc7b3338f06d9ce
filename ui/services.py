"""What every tab needs, built once at start-up: settings, database sessions, asset store, jobs.

`build_services` is the UI's composition step (app.py hands it the command-line flags); tests build
their own with a temporary data folder. Nothing here is global state: handlers receive `Services`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from storage.assets import AssetStore
from storage.db import open_database
from storage.settings import StorageSettings
from svi.presets import DEFAULT_PRESET, get_preset

if TYPE_CHECKING:
    from .finetune_runs import FinetuneRuns
    from .jobs import RenderJobs
    from .speeds import SpeedBook


@dataclass
class Services:
    settings: StorageSettings
    Session: sessionmaker[Session]
    store: AssetStore
    default_model: str = DEFAULT_PRESET
    device: str = "cpu"
    jobs: "RenderJobs | None" = field(default=None, repr=False)
    speeds: "SpeedBook | None" = field(default=None, repr=False)
    finetune: "FinetuneRuns | None" = field(default=None, repr=False)

    @property
    def media_dir(self) -> Path:
        """Files the browser may fetch (per-clip mp4 segments, exports): the only folder served."""
        d = self.settings.renders_dir
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def lora_dir(self) -> Path:
        """Registered user LoRAs (finetune results are copied here)."""
        d = self.settings.data_dir / "loras"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def runs_dir(self) -> Path:
        d = self.settings.data_dir / "finetune"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def close(self) -> None:
        if self.jobs is not None:
            self.jobs.shutdown()
        if self.finetune is not None:
            self.finetune.shutdown()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def space_data_dir(env: dict[str, str] | None = None) -> str | None:
    """On a Hugging Face Space with persistent storage (/data), keep projects there."""
    env = os.environ if env is None else env
    if env.get("SPACE_ID") and not env.get("SVI_DATA_DIR") and os.path.isdir("/data") and os.access("/data", os.W_OK):
        return "/data/svi-storyboard"
    return None


def build_services(data_dir: str | os.PathLike | None = None, *, model: str | None = None,
                   weights_dir: str | os.PathLike | None = None, device: str | None = None,
                   start_workers: bool = True) -> Services:
    """Open the database (upgrading it), the asset store and the job runners.

    Args:
        data_dir: data folder (default: SVI_DATA_DIR, a Space's /data, or the per-user folder).
        model: default model preset for new projects (default: storyworld-tiny).
        weights_dir: where real weights are looked up; sets SVI_WEIGHTS_DIR for this process.
        device: torch device for renders (default: cuda when available).
        start_workers: start the render worker thread (tests of pure functions pass False).
    """
    env = dict(os.environ)
    data_dir = data_dir or space_data_dir(env)
    if data_dir:
        env["SVI_DATA_DIR"] = str(data_dir)
    if weights_dir:
        os.environ["SVI_WEIGHTS_DIR"] = str(Path(weights_dir).expanduser().resolve())
    if model is not None:
        get_preset(model)  # an unknown preset stops start-up with the list of known ones
    settings = StorageSettings.from_env(env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = Services(settings=settings, Session=open_database(settings.database_url),
                        store=AssetStore(settings.assets_dir, max_bytes=settings.max_asset_bytes),
                        default_model=model or DEFAULT_PRESET, device=device or default_device())
    from .finetune_runs import FinetuneRuns
    from .jobs import RenderJobs
    from .speeds import SpeedBook

    services.speeds = SpeedBook(settings.data_dir / "speeds.json")
    services.jobs = RenderJobs(services, start=start_workers)
    services.finetune = FinetuneRuns(services.runs_dir, services.lora_dir)
    return services
