"""Garbage collection: asset rows no project uses any more, then store files no row names.

Two steps in this order, each safe on its own: (1) delete unreferenced Asset rows in one
transaction and commit; (2) sweep store files whose sha256 has no row. A file is only removed
after its row is gone for good, so a rollback can never leave a row pointing at a deleted file.
Rows and files younger than `grace_s` are spared: a render or an import may have written them
and not yet committed the rows that reference them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, union
from sqlalchemy.orm import Session, sessionmaker

from .assets import DEFAULT_GRACE_S, AssetStore
from .models import Asset, Project, Render, Segment, Take, utcnow


@dataclass(frozen=True)
class GcReport:
    rows_removed: int
    files_removed: int
    bytes_freed: int
    temp_removed: int


def referenced_asset_ids():
    """A SELECT of every asset id some project, segment, take or render points at."""
    return union(
        select(Project.start_image_id).where(Project.start_image_id.is_not(None)),
        select(Segment.asset_id).where(Segment.asset_id.is_not(None)),
        select(Take.frames_asset_id),
        select(Take.carry_asset_id),
        select(Render.output_asset_id).where(Render.output_asset_id.is_not(None)),
    )


def collect_garbage(session_factory: sessionmaker[Session], store: AssetStore, *,
                    grace_s: float = DEFAULT_GRACE_S) -> GcReport:
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with session_factory.begin() as s:
        used = referenced_asset_ids().subquery()
        rows = s.execute(delete(Asset).where(Asset.id.not_in(select(used.c[0])), Asset.created_at <= cutoff)
                         .execution_options(synchronize_session=False)).rowcount
    with session_factory() as s:
        keep = set(s.scalars(select(Asset.sha256)))
    swept = store.sweep(keep, grace_s=grace_s)
    return GcReport(rows_removed=rows or 0, files_removed=swept.files_removed, bytes_freed=swept.bytes_freed,
                    temp_removed=swept.temp_removed)
