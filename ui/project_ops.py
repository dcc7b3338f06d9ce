"""Project actions for the Projects tab and the API: list, create from an image, rename, duplicate,
delete (confirmed), export and import bundles. Plain functions over `Services`; storage does the work.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from storage import bundles
from storage import projects as P
from storage.errors import ProjectExistsError, StorageError
from svi.images import load_image
from svi.presets import resolve_spec
from svi.timeline import PromptSegment, Settings, Storyboard

from .errors import UserError
from .grid import clip_end_s, clips_for
from .services import Services
from .thumbs import image_data_uri

DEFAULT_PROMPT = "describe what happens in this clip"


@dataclass(frozen=True)
class ProjectRow:
    name: str
    version: int
    updated_at: str  # ISO 8601, UTC
    duration_s: float | None  # None: the storyboard could not be read (a missing file)
    clips: int | None
    model: str
    thumb: str  # data: URI, "" when unavailable

    def to_dict(self) -> dict:
        return dict(name=self.name, version=self.version, updated_at=self.updated_at, duration_s=self.duration_s,
                    clips=self.clips, model=self.model, thumb=self.thumb)


def list_rows(services: Services) -> list[ProjectRow]:
    """Every project, most recently edited first, with what its card shows."""
    rows = []
    with services.Session() as s:
        for info in P.list_projects(s):
            project = P.get_project(s, info.name)
            duration = clips = None
            model = str(project.settings.get("model") or services.default_model)
            thumb = ""
            try:
                board = P.storyboard_of(project, services.store)
                spec = P.spec_of(board)
                duration, clips = round(board.duration, 3), clips_for(spec, board.duration)
                thumb = image_data_uri(board.start_image)
            except StorageError:
                pass  # shown without length; opening it explains what is missing
            rows.append(ProjectRow(name=info.name, version=info.version, updated_at=_iso(info.updated_at),
                                   duration_s=duration, clips=clips, model=model, thumb=thumb))
    return rows


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:  # SQLite returns naive datetimes; storage writes UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def name_from_file(path: str | None) -> str:
    """A project name from an uploaded file name: its stem, tidied."""
    stem = Path(path or "").stem
    stem = re.sub(r"[_\s]+", " ", stem).strip()
    return stem or "untitled"


def create_project(services: Services, image_path: str | None, name: str | None = None) -> str:
    """A new project whose start image is `image_path`, with one prompt segment of one clip.

    Returns the project's name (the file's name when `name` is blank; made unique then)."""
    if not image_path:
        raise UserError("choose a start image first (PNG, JPEG or WebP)")
    load_image(image_path)  # refuses non-images, damaged files and huge images with a reason
    spec = resolve_spec(services.default_model)
    explicit = bool(name and name.strip())
    with services.Session.begin() as s:
        wanted = P.validate_name(name) if explicit else P.unique_name(s, name_from_file(image_path))
        if P.project_exists(s, wanted):
            raise ProjectExistsError(f"a project named {wanted!r} already exists; pick another name")
        board = Storyboard(start_image=str(image_path),
                           prompts=(PromptSegment(0.0, round(clip_end_s(spec, 0), 6), DEFAULT_PROMPT),),
                           settings=Settings(model=services.default_model))
        P.save_storyboard(s, services.store, wanted, board, create=True)
    return wanted


EXAMPLES = (("Example: prompt stream", "storyboard.json"), ("Example: talk", "talk.json"),
            ("Example: dance", "dance.json"))


def create_examples(services: Services) -> str:
    """Projects from the bundled example storyboards (assets/examples); returns the first one's name.

    Names are made unique, so pressing the button twice gives a second set rather than an error."""
    from svi.presets import ASSETS_DIR
    from svi.timeline import load_storyboard

    names = []
    for title, file in EXAMPLES:
        board = load_storyboard(ASSETS_DIR / "examples" / file)
        with services.Session.begin() as s:
            name = P.unique_name(s, title)
            P.save_storyboard(s, services.store, name, board, create=True)
        names.append(name)
    return names[0]


def require_project(services: Services, name: str | None) -> str:
    if not name:
        raise UserError("open a project first (Projects tab)")
    with services.Session() as s:
        P.get_project(s, name)  # NotFoundError: renamed or deleted elsewhere
    return name


def rename_project(services: Services, name: str, new_name: str) -> str:
    require_project(services, name)
    with services.Session.begin() as s:
        return P.rename_project(s, name, new_name).name


def duplicate_project(services: Services, name: str, new_name: str | None = None) -> str:
    require_project(services, name)
    with services.Session.begin() as s:
        target = P.validate_name(new_name) if new_name and new_name.strip() else P.unique_name(s, f"{name} copy")
        return P.duplicate_project(s, name, target).name


def delete_project(services: Services, name: str, confirm: str) -> None:
    """Delete `name` only when `confirm` repeats it (the page's confirm button does)."""
    require_project(services, name)
    if (confirm or "").strip() != name:
        raise UserError(f"not deleted: confirm by repeating the project name {name!r}")
    if services.jobs is not None and services.jobs.is_busy(name):
        raise UserError(f"{name!r} is rendering; cancel the render before deleting the project")
    with services.Session.begin() as s:
        P.delete_project(s, name)


def export_bundle(services: Services, name: str) -> str:
    """Write the project as a .zip bundle in the served exports folder; returns its path."""
    require_project(services, name)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "project"
    out = services.media_dir / "exports" / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}.zip"
    with services.Session() as s:
        return str(bundles.export_project(s, services.store, name, out))


def import_bundle(services: Services, path: str | None, name: str | None = None) -> tuple[str, str]:
    """Import a bundle as a new project; returns (name, a one-line note)."""
    if not path:
        raise UserError("choose a project bundle (.zip) to import")
    with services.Session.begin() as s:
        res = bundles.import_bundle(s, services.store, path, name=(name or "").strip() or None)
    note = f"imported as {res.name!r}" + (" (the name was taken)" if res.renamed else "") + \
        f": {res.assets} files, {res.takes} takes"
    return res.name, note
