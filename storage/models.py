"""SQLAlchemy 2 models: projects, their segments, content-addressed assets, renders, takes, finetune jobs.

Schema rules (STYLE 5): one `DeclarativeBase` whose metadata carries a naming convention (so Alembic
can name, and later drop, every constraint on SQLite and PostgreSQL alike); `Mapped[...]`, with
`Optional` meaning nullable; every change to the schema goes through a migration in migrations/.

`Project.version` is SQLAlchemy's `version_id_col`: every UPDATE of a project row says
`WHERE version = <the version this session read>`, so a second writer working from a stale copy
gets `StaleDataError` (turned into `storage.errors.ConflictError`) instead of silently
overwriting the first. Edits of a project's segments touch the project row for the same reason.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SEGMENT_KINDS = ("prompt", "audio", "pose")
ASSET_KINDS = ("image", "audio", "pose", "frames", "carry", "video", "lora", "other")
RENDER_STATUSES = ("running", "done", "cancelled", "failed")
JOB_STATUSES = ("queued", "running", "done", "cancelled", "failed")
MAX_NAME_CHARS = 200


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class Asset(Base):
    """A file in the asset store, named by the sha256 of its bytes; shared by every project using it."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    ext: Mapped[str] = mapped_column(String(16), default="")  # safe suffix of the stored file (".wav"), or ""
    kind: Mapped[str] = mapped_column(String(16))
    original_name: Mapped[str] = mapped_column(String(255), default="")  # metadata only, never a path
    size: Mapped[int] = mapped_column(BigInteger)
    media: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. {"shape": [17, 96, 128, 3]}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def __repr__(self) -> str:
        return f"Asset(id={self.id!r}, sha256={self.sha256[:12]!r}, kind={self.kind!r}, size={self.size!r})"


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS), unique=True)
    start_image_id: Mapped[Optional[int]] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    # svi.timeline.Settings as JSON (model, variant, seed, duration, steps, cfg, negative_prompt, loras)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Per-clip retake settings {"<clip index>": {"seed": int|None, "prompt": str|None}}
    clip_overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    start_image: Mapped[Optional[Asset]] = relationship(lazy="joined")
    segments: Mapped[list["Segment"]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True,
        order_by="[Segment.kind, Segment.position]",
    )
    takes: Mapped[list["Take"]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True,
    )
    renders: Mapped[list["Render"]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True,
    )

    __mapper_args__ = {"version_id_col": version}

    def __repr__(self) -> str:
        return f"Project(id={self.id!r}, name={self.name!r}, version={self.version!r})"


class Segment(Base):
    """One timeline segment. Prompt segments use text/negative/cfg/seed; audio and pose use
    asset/offset (pose also speed). Times are seconds, as in svi.timeline."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)  # order within its track
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[Optional[str]] = mapped_column(Text)
    negative: Mapped[Optional[str]] = mapped_column(Text)
    cfg: Mapped[Optional[float]] = mapped_column(Float)
    seed: Mapped[Optional[int]] = mapped_column(BigInteger)  # up to 2^63 - 1, as svi.timeline allows
    asset_id: Mapped[Optional[int]] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"), index=True)
    offset: Mapped[float] = mapped_column(Float, default=0.0)
    speed: Mapped[float] = mapped_column(Float, default=1.0)

    project: Mapped[Project] = relationship(back_populates="segments")
    asset: Mapped[Optional[Asset]] = relationship(lazy="joined")

    __table_args__ = (CheckConstraint("kind IN ('prompt', 'audio', 'pose')", name="kind"),)

    def __repr__(self) -> str:
        return (f"Segment(id={self.id!r}, kind={self.kind!r}, position={self.position!r}, "
                f"start={self.start!r}, end={self.end!r})")


class Render(Base):
    """One run of the renderer over a project: which clips it covered and how it ended."""

    __tablename__ = "renders"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    model_id: Mapped[str] = mapped_column(String(200), default="")
    clip_count: Mapped[int] = mapped_column(Integer, default=0)
    start_at: Mapped[int] = mapped_column(Integer, default=0)  # first clip this run rendered
    clips_done: Mapped[int] = mapped_column(Integer, default=0)
    output_asset_id: Mapped[Optional[int]] = mapped_column(ForeignKey("assets.id", ondelete="SET NULL"))
    error: Mapped[Optional[str]] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))

    project: Mapped[Project] = relationship(back_populates="renders")
    output: Mapped[Optional[Asset]] = relationship()

    def __repr__(self) -> str:
        return f"Render(id={self.id!r}, project_id={self.project_id!r}, status={self.status!r})"


class Take(Base):
    """One rendered result of one clip. At most one take per (project, clip) is chosen."""

    __tablename__ = "takes"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    render_id: Mapped[Optional[int]] = mapped_column(ForeignKey("renders.id", ondelete="SET NULL"), index=True)
    clip_index: Mapped[int] = mapped_column(Integer)
    input_hash: Mapped[str] = mapped_column(String(64))
    carry_hash: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    frames_asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"), index=True)
    carry_asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"), index=True)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    chosen: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    project: Mapped[Project] = relationship(back_populates="takes")
    frames: Mapped[Asset] = relationship(foreign_keys=[frames_asset_id], lazy="joined")
    carry: Mapped[Asset] = relationship(foreign_keys=[carry_asset_id], lazy="joined")

    __table_args__ = (
        Index("ix_takes_project_clip", "project_id", "clip_index"),
        CheckConstraint("clip_index >= 0", name="clip_index"),
    )

    def __repr__(self) -> str:
        return (f"Take(id={self.id!r}, clip_index={self.clip_index!r}, chosen={self.chosen!r}, "
                f"input_hash={self.input_hash[:12]!r})")


# The database, not only the code, keeps "one chosen take per clip" true under concurrency.
Index("uq_takes_chosen_per_clip", Take.project_id, Take.clip_index, unique=True,
      sqlite_where=Take.__table__.c.chosen, postgresql_where=Take.__table__.c.chosen)


class FinetuneJob(Base):
    """A LoRA training run launched from the finetune tab; the trainer process updates progress."""

    __tablename__ = "finetune_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    message: Mapped[Optional[str]] = mapped_column(Text)
    output_lora_path: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"FinetuneJob(id={self.id!r}, name={self.name!r}, status={self.status!r}, progress={self.progress!r})"
