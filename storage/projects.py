"""Operations on projects: plain functions that receive a session (the caller owns the transaction).

    with Session.begin() as s:
        save_storyboard(s, store, "my film", board)

- Projects: create, rename, duplicate, delete, list.
- Segments and settings: add / update / delete one segment, replace settings or start image.
- Storyboards: `save_storyboard` stores an `svi.timeline.Storyboard` (media copied into the asset
  store) and `load_storyboard` gives the same dataclasses back, media paths pointing at store files.
- Takes: `record_take` stores a renderer's ClipResult; `choose_take` picks one per clip.
- Validity (ARCHITECTURE 3): clip k is *valid* when its chosen take's input_hash equals
  `plan.clips[k].input_hash(carry_hash of the chosen take of clip k-1)` (clip 0: carry "") and
  clip k-1 is valid; a chosen take that is not valid is *stale*. Staleness is transitive on
  purpose: once clip k is re-rendered its carry changes, so every later clip will have to be
  re-rendered too. Resume, retake and invalidation all follow from this one rule.

Every edit of a project's storyboard updates the project row, whose `version` column makes a
concurrent second writer fail with `ConflictError` instead of silently overwriting the first.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, selectinload
from sqlalchemy.orm.exc import StaleDataError

from svi.planning import ClipOverride, ClipPlan
from svi.timeline import AudioSegment, LoraRef, PoseSegment, PromptSegment, Settings, Storyboard, StoryboardError

from .assets import AssetStore, StoredFile, safe_display_name
from .errors import AssetError, ConflictError, NotFoundError, ProjectExistsError, StorageError
from .frames import decode_frames, encode_frames
from .models import MAX_NAME_CHARS, Asset, Project, Segment, Take, utcnow

TimelineSegment = Union[PromptSegment, AudioSegment, PoseSegment]
_KIND_OF = {PromptSegment: "prompt", AudioSegment: "audio", PoseSegment: "pose"}


# ==================================================================== projects
@dataclass(frozen=True)
class ProjectInfo:
    id: int
    name: str
    version: int
    created_at: datetime
    updated_at: datetime


def validate_name(name: Any) -> str:
    """A project name: 1..200 printable characters, trimmed; the message says what is wrong."""
    if not isinstance(name, str):
        raise StorageError(f"project name must be text, got {type(name).__name__}")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise StorageError("project name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise StorageError(f"project name is longer than {MAX_NAME_CHARS} characters")
    bad = [ch for ch in name if unicodedata.category(ch).startswith("C")]
    if bad:
        raise StorageError(f"project name contains control characters ({', '.join(map(repr, bad[:3]))})")
    return name


def get_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFoundError(f"no project named {name!r}")
    return project


def project_exists(session: Session, name: str) -> bool:
    return session.scalar(select(Project.id).where(Project.name == name)) is not None


def create_project(session: Session, name: str, *, settings: dict | None = None,
                   start_image: Asset | None = None) -> Project:
    name = validate_name(name)
    if project_exists(session, name):
        raise ProjectExistsError(f"a project named {name!r} already exists")
    project = Project(name=name, settings=settings or {}, clip_overrides={}, start_image=start_image)
    session.add(project)
    _flush(session, name)  # a concurrent creator of the same name fails here (unique constraint)
    return project


def list_projects(session: Session) -> list[ProjectInfo]:
    """All projects, most recently changed first (columns only: cheap for thousands)."""
    rows = session.execute(
        select(Project.id, Project.name, Project.version, Project.created_at, Project.updated_at)
        .order_by(Project.updated_at.desc(), Project.id.desc())
    )
    return [ProjectInfo(*row) for row in rows]


def unique_name(session: Session, wanted: str) -> str:
    """`wanted`, or `wanted (2)`, `wanted (3)`... whichever is free."""
    base = validate_name(wanted)
    if not project_exists(session, base):
        return base
    for i in range(2, 10_000):
        suffix = f" ({i})"
        candidate = base[: MAX_NAME_CHARS - len(suffix)] + suffix
        if not project_exists(session, candidate):
            return candidate
    raise ProjectExistsError(f"no free name like {base!r}")


def rename_project(session: Session, name: str, new_name: str, *, expected_version: int | None = None) -> Project:
    new_name = validate_name(new_name)
    project = get_project(session, name)
    check_version(project, expected_version)
    if new_name != project.name and project_exists(session, new_name):
        raise ProjectExistsError(f"a project named {new_name!r} already exists")
    project.name = new_name
    _flush(session, name)
    return project


def delete_project(session: Session, name: str, *, expected_version: int | None = None) -> None:
    """Delete a project with its segments, renders and takes; its files stay until `collect_garbage`."""
    project = get_project(session, name)
    check_version(project, expected_version)
    session.delete(project)
    _flush(session, name)


def duplicate_project(session: Session, name: str, new_name: str) -> Project:
    """A copy with the same storyboard, overrides and takes (files are shared, not copied)."""
    src = session.scalar(select(Project).where(Project.name == name)
                         .options(selectinload(Project.segments), selectinload(Project.takes)))
    if src is None:
        raise NotFoundError(f"no project named {name!r}")
    new_name = validate_name(new_name)
    if project_exists(session, new_name):
        raise ProjectExistsError(f"a project named {new_name!r} already exists")
    copy = Project(name=new_name, settings=dict(src.settings), clip_overrides=dict(src.clip_overrides),
                   start_image=src.start_image,
                   segments=[Segment(**_segment_columns(seg)) for seg in src.segments],
                   takes=[Take(clip_index=t.clip_index, input_hash=t.input_hash, carry_hash=t.carry_hash,
                               seed=t.seed, frames=t.frames, carry=t.carry, timings=dict(t.timings),
                               chosen=t.chosen) for t in src.takes])
    session.add(copy)
    _flush(session, new_name)
    return copy


def check_version(project: Project, expected_version: int | None) -> None:
    """Refuse an edit made from a copy the caller read at another version."""
    if expected_version is not None and project.version != expected_version:
        raise ConflictError(
            f"project {project.name!r} was changed by someone else (it is at version {project.version}, "
            f"your copy is version {expected_version}); reload it and apply your change again")


def touch(project: Project) -> None:
    """Mark the project changed: bumps its version on flush, so concurrent edits conflict."""
    project.updated_at = utcnow()


def _flush(session: Session, name: str) -> None:
    """Flush, turning the two concurrency failures into messages (the caller's transaction rolls back)."""
    try:
        session.flush()
    except StaleDataError:
        raise ConflictError(
            f"project {name!r} was changed by someone else while you edited it; "
            f"reload it and apply your change again") from None
    except IntegrityError as e:
        if "name" in str(e.orig).lower():  # the unique name, taken by a concurrent transaction
            raise ProjectExistsError(f"a project named {name!r} already exists") from None
        raise


# ==================================================================== assets
def add_asset(session: Session, store: AssetStore, source: str | Path | bytes | StoredFile, *, kind: str,
              original_name: str | None = None, media: dict | None = None) -> Asset:
    """Put `source` (a path, bytes, or an already stored file) into the store and return its Asset
    row, creating it if new. Safe when two transactions add the same content at once."""
    if isinstance(source, StoredFile):
        stored = source
    elif isinstance(source, (bytes, bytearray)):
        stored = store.put_bytes(bytes(source))
    else:
        stored = store.put_file(source)
        original_name = original_name or Path(source).name
        if media is None:
            media = probe_media(stored.path, kind)
    values = dict(sha256=stored.sha256, ext=stored.ext, kind=kind,
                  original_name=safe_display_name(original_name or stored.sha256[:12] + stored.ext),
                  size=stored.size, media=media or {}, created_at=utcnow())
    _insert_ignore_duplicate(session, values)
    asset = session.scalar(select(Asset).where(Asset.sha256 == stored.sha256))
    assert asset is not None
    return asset


def _insert_ignore_duplicate(session: Session, values: dict) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        stmt = sqlite.insert(Asset).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
    elif dialect == "postgresql":
        stmt = postgresql.insert(Asset).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
    else:
        if session.scalar(select(Asset.id).where(Asset.sha256 == values["sha256"])) is not None:
            return
        session.add(Asset(**values))
        session.flush()
        return
    session.execute(stmt)


def asset_path(store: AssetStore, asset: Asset, *, must_exist: bool = True) -> Path:
    path = store.path_for(asset.sha256, asset.ext)
    if must_exist and not path.is_file():
        raise AssetError(f"asset {asset.original_name!r} ({asset.sha256[:12]}...) is missing from the "
                         f"asset store at {path}")
    return path


def probe_media(path: Path, kind: str) -> dict:
    """Media facts kept with an asset (size of an image, rate and length of audio).

    A start image that cannot be decoded is refused here, with its name, rather than deep in a render."""
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return {"width": im.width, "height": im.height, "mode": im.mode, "format": im.format}
        except (UnidentifiedImageError, OSError) as e:
            raise AssetError(f"{path.name}: not a readable image ({e})") from None
    if kind == "audio":
        try:
            import soundfile

            info = soundfile.info(str(path))
            return {"sample_rate": info.samplerate, "channels": info.channels, "duration": info.duration}
        except Exception:  # formats libsndfile lacks still decode through librosa's fallbacks
            return {}
    return {}


# ==================================================================== segments and settings
def add_segment(session: Session, store: AssetStore, name: str, segment: TimelineSegment, *,
                expected_version: int | None = None) -> Segment:
    project = get_project(session, name)
    check_version(project, expected_version)
    kind = _kind(segment)
    position = session.scalar(select(func.coalesce(func.max(Segment.position) + 1, 0))
                              .where(Segment.project_id == project.id, Segment.kind == kind))
    row = Segment(project=project, position=position, **_segment_values(session, store, segment))
    session.add(row)
    touch(project)
    _flush(session, name)
    return row


def update_segment(session: Session, store: AssetStore, name: str, segment_id: int, segment: TimelineSegment, *,
                   expected_version: int | None = None) -> Segment:
    project = get_project(session, name)
    check_version(project, expected_version)
    row = _segment_of(session, project, segment_id)
    if row.kind != _kind(segment):
        raise StorageError(f"segment {segment_id} is a {row.kind} segment, not {_kind(segment)}")
    for k, v in _segment_values(session, store, segment).items():
        setattr(row, k, v)
    touch(project)
    _flush(session, name)
    return row


def delete_segment(session: Session, name: str, segment_id: int, *, expected_version: int | None = None) -> None:
    project = get_project(session, name)
    check_version(project, expected_version)
    session.delete(_segment_of(session, project, segment_id))
    touch(project)
    _flush(session, name)


def set_settings(session: Session, name: str, settings, *, expected_version: int | None = None) -> Project:
    """Replace the storyboard settings (an svi.timeline.Settings)."""
    project = get_project(session, name)
    check_version(project, expected_version)
    project.settings = _settings_json(settings)
    touch(project)
    _flush(session, name)
    return project


def set_start_image(session: Session, store: AssetStore, name: str, path: str | Path, *,
                    expected_version: int | None = None) -> Project:
    project = get_project(session, name)
    check_version(project, expected_version)
    project.start_image = add_asset(session, store, path, kind="image")
    touch(project)
    _flush(session, name)
    return project


def set_clip_override(session: Session, name: str, clip_index: int, override: ClipOverride | None, *,
                      expected_version: int | None = None) -> Project:
    """Retake settings for one clip (another seed and/or prompt); None removes them."""
    if not isinstance(clip_index, int) or clip_index < 0:
        raise StorageError(f"clip index must be a whole number >= 0, got {clip_index!r}")
    project = get_project(session, name)
    check_version(project, expected_version)
    overrides = dict(project.clip_overrides)
    if override is None or (override.seed is None and override.prompt is None):
        overrides.pop(str(clip_index), None)
    else:
        overrides[str(clip_index)] = {"seed": override.seed, "prompt": override.prompt}
    project.clip_overrides = overrides  # a new dict: plain JSON columns do not track in-place edits
    touch(project)
    _flush(session, name)
    return project


def clip_overrides(project: Project) -> dict[int, ClipOverride]:
    return {int(k): ClipOverride(seed=v.get("seed"), prompt=v.get("prompt")) for k, v in project.clip_overrides.items()}


def _segment_of(session: Session, project: Project, segment_id: int) -> Segment:
    row = session.get(Segment, segment_id)
    if row is None or row.project_id != project.id:
        raise NotFoundError(f"project {project.name!r} has no segment {segment_id}")
    return row


def _kind(segment: TimelineSegment) -> str:
    try:
        return _KIND_OF[type(segment)]
    except KeyError:
        raise StorageError(f"not a timeline segment: {type(segment).__name__}") from None


def _segment_values(session: Session, store: AssetStore, segment: TimelineSegment) -> dict:
    kind = _kind(segment)
    values: dict[str, Any] = dict(kind=kind, start=float(segment.start), end=float(segment.end),
                                  text=None, negative=None, cfg=None, seed=None, asset=None, offset=0.0, speed=1.0)
    if kind == "prompt":
        values.update(text=segment.text, negative=segment.negative, cfg=segment.cfg, seed=segment.seed)
    else:
        values.update(asset=add_asset(session, store, segment.path, kind=kind), offset=float(segment.offset))
        if kind == "pose":
            values["speed"] = float(segment.speed)
    return values


def _segment_columns(seg: Segment) -> dict:
    return dict(kind=seg.kind, position=seg.position, start=seg.start, end=seg.end, text=seg.text,
                negative=seg.negative, cfg=seg.cfg, seed=seg.seed, asset=seg.asset, offset=seg.offset,
                speed=seg.speed)


def _settings_json(settings) -> dict:
    data = asdict(settings)
    data["loras"] = [{"path": lo["path"], "scale": lo["scale"]} for lo in data["loras"]]
    return data


# ==================================================================== storyboards
def save_storyboard(session: Session, store: AssetStore, name: str, board: Storyboard, *, create: bool = True,
                    expected_version: int | None = None) -> Project:
    """Store `board` as project `name` (created if missing and `create`): start image, audio and pose
    files are copied into the asset store; segments and settings replace the project's. Saving the
    same storyboard again changes nothing (no new version)."""
    board.validate()
    exists = project_exists(session, name)
    if not exists and not create:
        raise NotFoundError(f"no project named {name!r}")
    image = add_asset(session, store, board.start_image, kind="image")
    rows: list[dict] = []
    for track in (board.prompts, board.audio, board.poses):
        for pos, seg in enumerate(track):
            rows.append(dict(position=pos, **_segment_values(session, store, seg)))
    settings = _settings_json(board.settings)
    if not exists:  # one INSERT with everything: a new project starts at version 1
        project = Project(name=validate_name(name), settings=settings, clip_overrides={}, start_image=image)
        project.segments = [Segment(**row) for row in rows]
        session.add(project)
        _flush(session, name)
        return project

    project = get_project(session, name)
    check_version(project, expected_version)
    current = session.scalars(select(Segment).where(Segment.project_id == project.id)).all()
    if (project.start_image_id == image.id and project.settings == settings
            and sorted(map(_segment_key, current)) == sorted(map(_segment_key, rows))):
        return project
    for seg in current:
        session.delete(seg)
    session.flush()
    project.start_image = image
    project.settings = settings
    session.add_all(Segment(project=project, **row) for row in rows)
    touch(project)
    _flush(session, name)
    return project


def _segment_key(seg: Segment | dict) -> tuple:
    get = seg.get if isinstance(seg, dict) else lambda k: getattr(seg, k)
    asset = get("asset")
    return (get("kind"), get("position"), get("start"), get("end"), get("text"), get("negative"), get("cfg"),
            get("seed"), asset.sha256 if asset is not None else None, get("offset"), get("speed"))


def load_storyboard(session: Session, store: AssetStore, name: str) -> Storyboard:
    """The project as svi.timeline dataclasses; media paths are the asset-store files (checked to exist)."""
    # One statement: a consistent snapshot even while another process writes (SQLite reads outside
    # a write transaction see each statement's own snapshot). Plain columns, not ORM objects: a
    # 1,000-segment project loads in a few milliseconds.
    image, media = aliased(Asset), aliased(Asset)
    rows = session.execute(
        select(Project.settings, image.sha256, image.ext, Segment.kind, Segment.position, Segment.start,
               Segment.end, Segment.text, Segment.negative, Segment.cfg, Segment.seed, media.sha256, media.ext,
               Segment.offset, Segment.speed)
        .select_from(Project)
        .outerjoin(image, Project.start_image_id == image.id)
        .outerjoin(Segment, Segment.project_id == Project.id)
        .outerjoin(media, Segment.asset_id == media.id)
        .where(Project.name == name)
    ).all()
    if not rows:
        raise NotFoundError(f"no project named {name!r}")
    settings, image_sha, image_ext = rows[0][:3]
    segments = [_SegmentRow(*r[3:]) for r in rows if r[3] is not None]
    return _build_storyboard(name, store, settings, image_sha, image_ext, segments)


def storyboard_of(project: Project, store: AssetStore) -> Storyboard:
    """The same as `load_storyboard`, from an already loaded Project."""
    img = project.start_image
    segments = [_SegmentRow(s.kind, s.position, s.start, s.end, s.text, s.negative, s.cfg, s.seed,
                            s.asset.sha256 if s.asset else None, s.asset.ext if s.asset else None, s.offset, s.speed)
                for s in project.segments]
    return _build_storyboard(project.name, store, project.settings, img.sha256 if img else None,
                             img.ext if img else None, segments)


@dataclass(frozen=True)
class _SegmentRow:
    kind: str
    position: int
    start: float
    end: float
    text: str | None
    negative: str | None
    cfg: float | None
    seed: int | None
    sha256: str | None
    ext: str | None
    offset: float
    speed: float


def _build_storyboard(name: str, store: AssetStore, settings: dict, image_sha: str | None, image_ext: str | None,
                      segments: list[_SegmentRow]) -> Storyboard:
    if image_sha is None:
        raise StorageError(f"project {name!r} has no start image yet")
    paths: dict[tuple[str, str], str] = {}

    def path(sha: str, ext: str) -> str:
        if (sha, ext) not in paths:
            p = store.path_for(sha, ext)
            if not p.is_file():
                raise AssetError(f"project {name!r}: media file {sha[:12]}...{ext} is missing from the asset "
                                 f"store at {p}")
            paths[sha, ext] = str(p)
        return paths[sha, ext]

    prompts, audio, poses = [], [], []
    for seg in sorted(segments, key=lambda r: (r.kind, r.position)):
        if seg.kind == "prompt":
            prompts.append(PromptSegment(seg.start, seg.end, seg.text or "", seg.negative, seg.cfg, seg.seed))
        elif seg.sha256 is None:
            raise StorageError(f"project {name!r}: a {seg.kind} segment has no media file")
        elif seg.kind == "audio":
            audio.append(AudioSegment(seg.start, seg.end, path(seg.sha256, seg.ext or ""), seg.offset))
        else:
            poses.append(PoseSegment(seg.start, seg.end, path(seg.sha256, seg.ext or ""), seg.offset, seg.speed))
    try:
        s = dict(settings)
        s["loras"] = tuple(LoraRef(**lo) for lo in s.get("loras") or ())
        board = Storyboard(path(image_sha, image_ext or ""), tuple(prompts), tuple(audio), tuple(poses),
                           Settings(**s))
        return board.validate()
    except (StoryboardError, TypeError) as e:
        raise StorageError(f"project {name!r} holds an invalid storyboard: {e}") from None


def spec_of(board: Storyboard):
    """The ModelSpec a storyboard's settings ask for (preset, variant, steps, cfg, negative, LoRAs)."""
    from svi.presets import resolve_spec

    s = board.settings
    try:
        return resolve_spec(s.model, s.variant, steps=s.steps, cfg=s.cfg, negative_prompt=s.negative_prompt,
                            extra_loras=tuple((lo.path, lo.scale) for lo in s.loras))
    except ValueError as e:  # unknown preset or variant
        raise StorageError(str(e)) from None


def plan_project(session: Session, store: AssetStore, name: str, spec=None, *, max_clips: int | None = None) -> ClipPlan:
    """The clip plan of a project with its retake overrides; `spec` defaults to the storyboard's model."""
    from svi.planning import plan

    board = load_storyboard(session, store, name)
    project = get_project(session, name)
    return plan(board, spec or spec_of(board), overrides=clip_overrides(project), max_clips=max_clips)


# ==================================================================== takes
@dataclass(frozen=True)
class TakeInfo:
    id: int
    project_id: int
    clip_index: int
    input_hash: str
    carry_hash: str
    seed: int
    frames_sha256: str
    carry_sha256: str
    chosen: bool
    timings: dict

    @classmethod
    def of(cls, t: Take) -> "TakeInfo":
        return cls(id=t.id, project_id=t.project_id, clip_index=t.clip_index, input_hash=t.input_hash,
                   carry_hash=t.carry_hash, seed=t.seed, frames_sha256=t.frames.sha256,
                   carry_sha256=t.carry.sha256, chosen=t.chosen, timings=dict(t.timings))


@dataclass(frozen=True)
class StoredClip:
    """A ClipResult's files, written to the asset store before (outside) the transaction that records it."""

    frames: StoredFile
    carry: StoredFile
    frames_shape: tuple[int, ...]
    carry_shape: tuple[int, ...]


def store_clip_files(store: AssetStore, result) -> StoredClip:
    frames, carry = np.asarray(result.frames), np.asarray(result.carry)
    return StoredClip(frames=store.put_bytes(encode_frames(frames), ".npz"),
                      carry=store.put_bytes(encode_frames(carry), ".npz"),
                      frames_shape=tuple(frames.shape), carry_shape=tuple(carry.shape))


def record_take(session: Session, store: AssetStore, project: Project | str, result, *,
                stored: StoredClip | None = None, render_id: int | None = None, choose: bool = True) -> Take:
    """Record a renderer ClipResult (index, frames, carry, input_hash, carry_hash, seed, timings,
    forwards) as a Take; `choose` makes it the clip's chosen take."""
    if isinstance(project, str):
        project = get_project(session, project)
    stored = stored or store_clip_files(store, result)
    frames = add_asset(session, store, stored.frames, kind="frames", original_name=f"clip{result.index:04d}.npz",
                       media={"shape": list(stored.frames_shape)})
    carry = add_asset(session, store, stored.carry, kind="carry", original_name=f"carry{result.index:04d}.npz",
                      media={"shape": list(stored.carry_shape)})
    timings = {k: float(v) for k, v in dict(getattr(result, "timings", {}) or {}).items()}
    timings["forwards"] = int(getattr(result, "forwards", 0) or 0)
    if choose:
        _unchoose(session, project.id, result.index)
    take = Take(project_id=project.id, render_id=render_id, clip_index=int(result.index),
                input_hash=result.input_hash, carry_hash=result.carry_hash, seed=int(result.seed),
                frames=frames, carry=carry, timings=timings, chosen=choose)
    session.add(take)
    session.flush()
    return take


def choose_take(session: Session, name: str, take_id: int) -> Take:
    """Make `take_id` the chosen take of its clip. Later clips become stale (their carry changed)."""
    project = get_project(session, name)
    take = session.get(Take, take_id)
    if take is None or take.project_id != project.id:
        raise NotFoundError(f"project {name!r} has no take {take_id}")
    if not take.chosen:
        _unchoose(session, project.id, take.clip_index)
        take.chosen = True
        session.flush()
    return take


def _unchoose(session: Session, project_id: int, clip_index: int) -> None:
    session.execute(update(Take).where(Take.project_id == project_id, Take.clip_index == clip_index,
                                       Take.chosen.is_(True)).values(chosen=False)
                    .execution_options(synchronize_session="fetch"))


def takes_of(session: Session, name: str, clip_index: int | None = None) -> list[Take]:
    project = get_project(session, name)
    q = select(Take).where(Take.project_id == project.id)
    if clip_index is not None:
        q = q.where(Take.clip_index == clip_index)
    return list(session.scalars(q.order_by(Take.clip_index, Take.id)))


def chosen_takes(session: Session, project_id: int) -> dict[int, Take]:
    rows = session.scalars(select(Take).where(Take.project_id == project_id, Take.chosen.is_(True)))
    return {t.clip_index: t for t in rows}


def load_take_frames(store: AssetStore, take: Take) -> np.ndarray:
    return decode_frames(str(asset_path(store, take.frames)))


def load_take_carry(store: AssetStore, take: Take) -> np.ndarray:
    return decode_frames(str(asset_path(store, take.carry)))


# ==================================================================== validity, staleness, resume
VALID, STALE, MISSING = "valid", "stale", "missing"


@dataclass(frozen=True)
class ClipState:
    index: int
    status: str  # "valid" | "stale" | "missing"
    expected_hash: str | None  # None when the clip before has no valid take (its carry is unknown)
    take_id: int | None


def clip_states(session: Session, name: str, plan: ClipPlan) -> list[ClipState]:
    project = get_project(session, name)
    return states_from_takes(plan, chosen_takes(session, project.id))


def states_from_takes(plan: ClipPlan, chosen: dict[int, Take | TakeInfo]) -> list[ClipState]:
    """The validity rule (module docstring) applied clip by clip along the chain."""
    out: list[ClipState] = []
    prev_ok, prev_carry = True, ""
    for spec in plan.clips:
        take = chosen.get(spec.index)
        expected = spec.input_hash(prev_carry) if prev_ok else None
        if take is None:
            status = MISSING
        elif expected is not None and take.input_hash == expected:
            status = VALID
        else:
            status = STALE
        out.append(ClipState(spec.index, status, expected, take.id if take is not None else None))
        prev_ok = status == VALID
        prev_carry = take.carry_hash if prev_ok else ""
    return out


def stale_clips(session: Session, name: str, plan: ClipPlan) -> list[int]:
    """Clips whose chosen take no longer matches the plan (they have a take, but must re-render)."""
    return [s.index for s in clip_states(session, name, plan) if s.status == STALE]


@dataclass(frozen=True)
class ResumePoint:
    start_at: int  # first clip without a valid chosen take; len(plan) when all are valid
    carry: np.ndarray | None  # (m, H, W, 3) uint8 carry of clip start_at-1; None for clip 0 or when done
    carry_hash: str


def resume_point(session: Session, store: AssetStore, name: str, plan: ClipPlan) -> ResumePoint:
    project = get_project(session, name)
    chosen = chosen_takes(session, project.id)
    states = states_from_takes(plan, chosen)
    start = next((s.index for s in states if s.status != VALID), len(plan.clips))
    if start == 0 or start == len(plan.clips):
        return ResumePoint(start, None, "")
    prev = chosen[start - 1]
    return ResumePoint(start, load_take_carry(store, prev), prev.carry_hash)


def chosen_frames(session: Session, store: AssetStore, name: str, plan: ClipPlan) -> Iterable[np.ndarray]:
    """The output video, clip by clip, from the chosen takes; every clip must be valid."""
    states = clip_states(session, name, plan)
    bad = [s.index for s in states if s.status != VALID]
    if bad:
        raise StorageError(f"project {name!r}: clips {_ranges(bad)} are not rendered (or are stale)")
    project = get_project(session, name)
    chosen = chosen_takes(session, project.id)
    for s in states:
        yield load_take_frames(store, chosen[s.index])


def _ranges(ix: Sequence[int]) -> str:
    out, start = [], None
    for i, v in enumerate(ix):
        if start is None:
            start = v
        if i + 1 == len(ix) or ix[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)
