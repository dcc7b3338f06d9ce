"""A render job over a project: resume where the project stands, persist each clip as it finishes.

    takes = render_project(Session, store, "my film", renderer, plan)

1. The resume point is the first clip without a valid chosen take (storage.projects); the stored
   carry frames of the clip before it condition the renderer, so a resumed render continues
   exactly where the interrupted one stopped.
2. `renderer.stream(plan, start_at=k, carry=...)` yields ClipResults (svi.render). Each one's files
   go into the asset store first (atomic renames), then ONE short transaction records the Take
   and makes it the chosen one. A process killed at any moment therefore loses at most the clip
   in flight: a finished clip is either fully recorded or not at all (its files, if written, are
   unreferenced and collected later).
3. `should_stop` is polled between clips (and handed to the renderer, which polls it between
   denoising steps); a stop ends the job as "cancelled" with every finished clip kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from svi.errors import RenderCancelled
from svi.planning import ClipPlan

from .assets import AssetStore
from .models import Project, Render, utcnow
from .projects import TakeInfo, get_project, record_take, resume_point, store_clip_files


@dataclass(frozen=True)
class RenderProgress:
    """Sent to `progress` after each recorded clip."""

    render_id: int
    take: TakeInfo
    clip_index: int
    clip_count: int  # clips in the plan
    start_at: int  # first clip of this run
    done_this_run: int
    seconds: float  # wall time of this clip, rendering and recording


def render_project(session_factory: sessionmaker[Session], asset_store: AssetStore, project_name: str, renderer,
                   plan: ClipPlan, *, progress: Callable[[RenderProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, **stream_kwargs) -> list[TakeInfo]:
    """Render the clips of `plan` the project lacks; returns the takes recorded by this run.

    Args:
        session_factory: the app's sessionmaker; each clip is recorded in its own transaction.
        asset_store: where frame and carry files go.
        renderer: anything with `stream(plan, start_at=, carry=, **kw)` yielding ClipResults.
        plan: the project's clip plan (storage.projects.plan_project).
        progress: called with a RenderProgress after each clip is recorded.
        should_stop: polled between clips and by the renderer; True cancels, keeping finished clips.
        stream_kwargs: passed on to `renderer.stream` (e.g. on_step).
    """
    # 1. Where to start, and the carry to start from
    with session_factory() as s:
        project_id = get_project(s, project_name).id
        rp = resume_point(s, asset_store, project_name, plan)
    if rp.start_at >= len(plan.clips):
        return []

    # 2. A Render row, so the UI (or a second tab) can see the job and its state
    with session_factory.begin() as s:
        render = Render(project_id=project_id, status="running", model_id=plan.model_id,
                        clip_count=len(plan.clips), start_at=rp.start_at)
        s.add(render)
        s.flush()
        render_id = render.id

    # 3. Stream, recording each clip in its own transaction as soon as it exists
    if should_stop is not None:
        stream_kwargs["should_stop"] = should_stop
    stream = renderer.stream(plan, start_at=rp.start_at, carry=rp.carry, **stream_kwargs)
    takes: list[TakeInfo] = []
    status, error = "running", None
    try:
        t0 = time.perf_counter()
        for result in stream:
            stored = store_clip_files(asset_store, result)  # outside the transaction: file I/O is slow
            with session_factory.begin() as s:
                project = s.get(Project, project_id)
                if project is None:
                    raise LookupError(f"project {project_name!r} was deleted during the render")
                take = record_take(s, asset_store, project, result, stored=stored, render_id=render_id)
                s.execute(update(Render).where(Render.id == render_id)
                          .values(clips_done=Render.clips_done + 1))
                info = TakeInfo.of(take)
            takes.append(info)
            if progress is not None:
                progress(RenderProgress(render_id=render_id, take=info, clip_index=info.clip_index,
                                        clip_count=len(plan.clips), start_at=rp.start_at,
                                        done_this_run=len(takes), seconds=time.perf_counter() - t0))
            t0 = time.perf_counter()
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
        else:
            status = "done"
    except BaseException as e:
        # svi.render raises RenderCancelled when should_stop fires mid-clip; a cancel keeps every
        # finished clip and returns them.
        if isinstance(e, (KeyboardInterrupt, RenderCancelled)):
            status = "cancelled"
        else:
            status, error = "failed", f"{type(e).__name__}: {e}"
        if status == "failed" or isinstance(e, KeyboardInterrupt):
            raise
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        with session_factory.begin() as s:
            s.execute(update(Render).where(Render.id == render_id)
                      .values(status=status if status != "running" else "failed", error=error,
                              finished_at=utcnow()))
    return takes


def latest_render(session: Session, project_name: str) -> Render | None:
    from sqlalchemy import select

    project = get_project(session, project_name)
    return session.scalars(select(Render).where(Render.project_id == project.id)
                           .order_by(Render.id.desc()).limit(1)).first()
