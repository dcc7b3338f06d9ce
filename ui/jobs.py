"""Render jobs owned by the server: a worker thread per device, progress any page can attach to.

A page (or an API client) never renders inside its request. It submits a job and then follows it:
`submit` queues the job and returns at once; `wait(job_id, after_rev)` blocks (on a condition, no
polling) until the job changes; `cancel` sets a flag the renderer checks between denoising steps.
A reload, a second tab or gradio_client all see the same `JobView`. Finished clips are recorded by
`storage.render_job.render_project` (one transaction per clip), so a crash loses at most the clip in
flight and the next job resumes from the first clip without a valid take.

Each finished clip is also written as its own small mp4 (media_dir/clips/take<id>.mp4): the
streaming player appends these segments as they come, and the clip cards play them.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from storage import projects as P
from storage.frames import decode_frames
from storage.render_job import render_project

from .errors import UserError, known_errors, tidy
from .spaces_support import gpu

if TYPE_CHECKING:
    from .services import Services

log = logging.getLogger(__name__)

ACTIVE = ("queued", "loading", "running")
RESIDENT_RENDERERS = 1  # models kept loaded; a different model replaces the resident one


@dataclass(frozen=True)
class JobView:
    """A snapshot of one job, safe to hand to any thread or page."""

    id: int
    project: str
    project_id: int
    kind: str  # "render" (every missing or stale clip) | "retake" (up to one clip)
    status: str  # queued | loading | running | done | cancelled | failed
    upto: int | None  # last clip index this job may render (None: the whole plan)
    clip_count: int = 0  # clips in the plan the job renders
    first_clip: int | None = None  # where it started (the resume point)
    current_clip: int | None = None
    step: int = 0
    steps: int = 0
    clips_done: tuple[int, ...] = ()
    segments: tuple[str, ...] = ()  # one mp4 per finished clip, in the order they finished
    take_ids: tuple[int, ...] = ()
    eta_s: float | None = None
    message: str = ""
    error: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    rev: int = 0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def progress_text(self) -> str:
        """One line: 'Rendering clip 2 of 3 · step 4 of 8 · about 12 s left'."""
        if self.status == "queued":
            return "Waiting for the renderer (another job is running)…"
        if self.status == "loading":
            return self.message or "Loading the model…"
        if self.status == "running":
            clip = (self.current_clip or 0) + 1
            eta = f" · about {fmt_seconds(self.eta_s)} left" if self.eta_s is not None else ""
            return f"Rendering clip {clip} of {self.clip_count} · step {self.step} of {self.steps}{eta}"
        took = f" in {fmt_seconds((self.finished_at or time.time()) - self.started_at)}" if self.started_at else ""
        n = len(self.clips_done)
        if self.status == "done":
            return self.message or f"Done: {n} clip{'s' * (n != 1)} rendered{took}."
        if self.status == "cancelled":
            return f"Cancelled: {n} finished clip{'s' * (n != 1)} kept; Render resumes from the next one."
        return f"Failed: {self.error}"

    def to_dict(self) -> dict:
        return dict(id=self.id, project=self.project, kind=self.kind, status=self.status, upto=self.upto,
                    clip_count=self.clip_count, first_clip=self.first_clip, current_clip=self.current_clip,
                    step=self.step, steps=self.steps, clips_done=list(self.clips_done),
                    take_ids=list(self.take_ids), eta_s=self.eta_s, message=self.message, error=self.error,
                    progress=self.progress_text(), rev=self.rev)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0.0, float(s))
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


@dataclass
class _Job:
    view: JobView
    stop: threading.Event = field(default_factory=threading.Event)


class RenderJobs:
    """One worker thread for the services' device, a FIFO of jobs, the live state of each."""

    def __init__(self, services: "Services", *, start: bool = True):
        self.services = services
        self._cond = threading.Condition()
        self._queue: collections.deque[int] = collections.deque()
        self._jobs: dict[int, _Job] = {}
        self._latest: dict[int, int] = {}  # project id -> its newest job id
        self._ids = itertools.count(1)
        self._renderers: collections.OrderedDict = collections.OrderedDict()
        self._closed = False
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name=f"svi-render-{self.services.device}",
                                            daemon=True)
            self._thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            for job in self._jobs.values():
                job.stop.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ what pages call
    def submit(self, name: str, *, upto: int | None = None, kind: str = "render") -> JobView:
        """Queue a render of project `name` (every clip without a valid take, up to clip `upto`).

        A project has at most one active job: submitting again returns the active one."""
        with self.services.Session() as s:
            project_id = P.get_project(s, name).id
        with self._cond:
            if self._closed:
                raise UserError("the server is shutting down")
            active = self._active_job(project_id)
            if active is not None:
                if kind == "retake" or active.view.kind == "retake":
                    raise UserError(f"{name!r} is already rendering; wait for it or cancel it first")
                return active.view
            job_id = next(self._ids)
            view = JobView(id=job_id, project=name, project_id=project_id, kind=kind, status="queued", upto=upto,
                           started_at=time.time(), rev=1)
            self._jobs[job_id] = _Job(view)
            self._latest[project_id] = job_id
            self._queue.append(job_id)
            self._cond.notify_all()
            return view

    def cancel(self, name: str) -> JobView | None:
        """Ask the project's active job to stop (between denoising steps); finished clips stay."""
        view = self.latest(name)
        if view is None or not view.active:
            return view
        with self._cond:
            job = self._jobs[view.id]
            job.stop.set()
            if job.view.status == "queued":
                self._queue.remove(view.id)
                self._update(job, status="cancelled", finished_at=time.time())
            return job.view

    def latest(self, name: str) -> JobView | None:
        with self.services.Session() as s:
            project_id = P.get_project(s, name).id
        return self.latest_for(project_id)

    def latest_for(self, project_id: int) -> JobView | None:
        with self._cond:
            job_id = self._latest.get(project_id)
            return self._jobs[job_id].view if job_id is not None else None

    def get(self, job_id: int) -> JobView | None:
        with self._cond:
            job = self._jobs.get(job_id)
            return job.view if job else None

    def is_busy(self, name: str) -> bool:
        view = self.latest(name)
        return view is not None and view.active

    def wait(self, job_id: int, after_rev: int, timeout: float = 30.0) -> JobView:
        """Block until job `job_id` has a revision newer than `after_rev` (or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                job = self._jobs.get(job_id)
                if job is None:
                    raise UserError(f"no render job {job_id}")
                left = deadline - time.monotonic()
                if job.view.rev > after_rev or left <= 0 or self._closed:
                    return job.view
                self._cond.wait(left)

    # ------------------------------------------------------------------ the worker
    def _active_job(self, project_id: int) -> _Job | None:
        job_id = self._latest.get(project_id)
        job = self._jobs.get(job_id) if job_id is not None else None
        return job if job is not None and job.view.active else None

    def _update(self, job: _Job, **changes) -> None:
        """Replace the job's view (call with the condition held) and wake every follower."""
        job.view = replace(job.view, rev=job.view.rev + 1, **changes)
        self._cond.notify_all()

    def _set(self, job: _Job, **changes) -> None:
        with self._cond:
            self._update(job, **changes)

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._jobs[self._queue.popleft()]
            try:
                self._run(job)
            except BaseException as e:  # noqa: BLE001 - a job's failure must never kill the worker
                if isinstance(e, known_errors()):
                    message = tidy(str(e))
                else:
                    log.error("render job %s failed:\n%s", job.view.id, traceback.format_exc())
                    message = f"internal error ({type(e).__name__}: {e}); see the server log"
                self._set(job, status="failed", error=message, finished_at=time.time(), current_clip=None)

    @gpu
    def _run(self, job: _Job) -> None:
        services, name = self.services, job.view.project
        # 1. The plan, from the project as it is now (retakes are its overrides)
        self._set(job, status="loading", message="Planning…")
        with services.Session() as s:
            project = s.get(P.Project, job.view.project_id)
            if project is None:
                raise UserError(f"project {name!r} was deleted")
            name = project.name  # renamed since submit: follow it
            board = P.load_storyboard(s, services.store, name)
            spec = P.spec_of(board)
            max_clips = None if job.view.upto is None else job.view.upto + 1
            plan = P.plan_project(s, services.store, name, spec, max_clips=max_clips)
            states = P.clip_states(s, name, plan)
            # a retake renders a prefix of the plan; progress still counts the project's clips
            total = len(plan) if max_clips is None else len(P.plan_project(s, services.store, name, spec))
        todo = [st.index for st in states if st.status != P.VALID]
        if job.stop.is_set():
            self._set(job, status="cancelled", finished_at=time.time())
            return
        if not todo:
            self._set(job, status="done", clip_count=total, finished_at=time.time(),
                      message="Nothing to render: every clip is up to date.")
            return
        first = todo[0]

        # 2. The model, kept resident between jobs
        self._set(job, project=name, clip_count=total, first_clip=first,
                  message=f"Loading {spec.model_id}…")
        renderer = self._renderer(spec)
        speeds = services.speeds
        per_clip = speeds.clip_seconds(spec.model_id, services.device, plan.clips[first].steps) if speeds else None
        self._set(job, status="running", message="", current_clip=first, step=0, steps=plan.clips[first].steps,
                  eta_s=per_clip * (len(plan) - first) if per_clip else None)

        # 3. Render; each finished clip becomes a take (storage) and an mp4 segment (the page)
        clip_t0 = [time.perf_counter()]

        def on_step(k: int, i: int, n: int) -> None:
            now = time.perf_counter()
            if i == 1:
                clip_t0[0] = now
            step_s = (now - clip_t0[0]) / max(1, i - 1) if i > 1 else None
            est = speeds.clip_seconds(spec.model_id, services.device, n) if speeds else None
            left_clips = len(plan) - 1 - k
            eta = None
            if est is not None:
                this_left = (n - i) * step_s if step_s else est * (n - i) / n
                eta = this_left + left_clips * est
            self._set(job, current_clip=k, step=i, steps=n, eta_s=eta)

        def on_clip(p) -> None:
            take = p.take
            segment = write_take_video(services, take.id, take.frames_sha256, plan.fps)
            if speeds is not None:
                speeds.record(spec.model_id, services.device, plan.clips[take.clip_index].steps, take.timings)
            with self._cond:
                v = job.view
                more = take.clip_index + 1 < len(plan)  # the next clip starts now; after the last, nothing
                self._update(job, clips_done=v.clips_done + (take.clip_index,), segments=v.segments + (str(segment),),
                             take_ids=v.take_ids + (take.id,),
                             current_clip=take.clip_index + 1 if more else take.clip_index,
                             step=0 if more else v.step)

        try:
            render_project(services.Session, services.store, name, renderer, plan, progress=on_clip,
                           should_stop=job.stop.is_set, on_step=on_step)
        except LookupError as e:  # the project was deleted while rendering
            raise UserError(str(e)) from None
        status = "cancelled" if job.stop.is_set() else "done"
        self._set(job, status=status, finished_at=time.time(), current_clip=None, eta_s=None)

    def _renderer(self, spec):
        """A resident Renderer for `spec`'s model and LoRAs (steps, cfg and prompts vary per clip)."""
        from svi.engine import build_renderer

        key = replace(spec, steps=0, text_cfg=0.0, negative_prompt="")
        if key in self._renderers:
            self._renderers.move_to_end(key)
            return self._renderers[key]
        while len(self._renderers) >= RESIDENT_RENDERERS:
            self._renderers.popitem(last=False)  # free the old model before loading the next
        renderer, _ = build_renderer(spec, self.services.device)
        self._renderers[key] = renderer
        return renderer


def take_video_path(services: "Services", take_id: int) -> Path:
    return services.media_dir / "clips" / f"take{int(take_id)}.mp4"


def write_take_video(services: "Services", take_id: int, frames_sha256: str, fps: int) -> Path:
    """The take's frames as a small mp4 (made once; the streaming player and clip cards use it)."""
    from svi.video import write_video

    path = take_video_path(services, take_id)
    if not path.is_file():
        frames = decode_frames(str(services.store.path_for(frames_sha256, ".npz")))
        write_video(path, frames, fps)
    return path
