"""Where storage lives, from the environment (ARCHITECTURE 7): the same names everywhere.

- `SVI_DATA_DIR`: the data folder (database, asset store, renders). Default: a per-user folder,
  `$XDG_DATA_HOME/svi-storyboard` (usually ~/.local/share/svi-storyboard), `%LOCALAPPDATA%` on Windows.
- `SVI_DATABASE_URL`: any SQLAlchemy URL; overrides the SQLite file `<data>/svi.db`.
- `SVI_MAX_ASSET_BYTES`: the largest file the asset store accepts (default 8 GiB).

Read once by the caller (app.py or the CLI) and passed down; nothing here is global state.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

APP_DIR_NAME = "svi-storyboard"
# Big enough for a long 480p render kept as lossless frames; small enough to stop a runaway upload.
DEFAULT_MAX_ASSET_BYTES = 8 * 1024**3


def default_data_dir() -> Path:
    """The per-user data folder when SVI_DATA_DIR is not set."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_DIR_NAME


@dataclass(frozen=True)
class StorageSettings:
    data_dir: Path
    database_url: str
    max_asset_bytes: int = DEFAULT_MAX_ASSET_BYTES

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    @property
    def renders_dir(self) -> Path:
        return self.data_dir / "renders"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "StorageSettings":
        env = os.environ if env is None else env
        data_dir = Path(env.get("SVI_DATA_DIR") or default_data_dir()).expanduser()
        url = env.get("SVI_DATABASE_URL") or sqlite_url(data_dir / "svi.db")
        raw_max = env.get("SVI_MAX_ASSET_BYTES")
        try:
            max_bytes = int(raw_max) if raw_max else DEFAULT_MAX_ASSET_BYTES
        except ValueError:
            raise ValueError(f"SVI_MAX_ASSET_BYTES: expected a whole number of bytes, got {raw_max!r}") from None
        if max_bytes <= 0:
            raise ValueError(f"SVI_MAX_ASSET_BYTES: must be positive, got {max_bytes}")
        return cls(data_dir=data_dir, database_url=url, max_asset_bytes=max_bytes)


def sqlite_url(path: str | os.PathLike) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"
