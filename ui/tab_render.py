"""Render tab: render / cancel / resume, progress (clip i of N, step j of M, ETA), the video growing
clip by clip (streaming segments), clip cards with takes, retakes, choosing a take, stale marking,
export with audio, and the drift plot."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from storage import projects as P
from storage.render_job import latest_render

from . import render_ops as R
from .components import ClipStrip, dumps
from .errors import UserError, known_errors, tidy, user_errors
from .export import export_video, latest_export
from .grid import fmt_s
from .jobs import JobView
from .services import Services

FOLLOW_TIMEOUT_S = 10.0  # a follower re-checks this often even when nothing happens


@dataclass
class RenderHandles:
    strip: ClipStrip
    loader: tuple = ()
    follow: tuple = ()


def build_render(services: Services, current: gr.Textbox) -> RenderHandles:
    jobs = services.jobs
    with gr.Row():
        render_btn = gr.Button("Render / resume", variant="primary", elem_id="render-btn", scale=2)
        cancel_btn = gr.Button("Cancel render", variant="stop", elem_id="cancel-btn", scale=1)
        export_btn = gr.Button("Export mp4 (with audio)", elem_id="export-btn", scale=1)
    progress_md = gr.Markdown("Open a project to render it.", elem_id="render-progress")
    with gr.Row():
        with gr.Column(scale=3):
            stream = gr.Video(label="Render (grows clip by clip)", streaming=True, autoplay=True, interactive=False,
                              height=360, elem_id="render-stream")
        with gr.Column(scale=2):
            final = gr.Video(label="Exported video", interactive=False, height=300, elem_id="final-video")
    strip = ClipStrip(elem_id="clip-strip")
    sel_clip = gr.Number(value=None, visible=False, precision=0, label="selected clip")
    with gr.Row():
        with gr.Column(scale=2):
            clip_info = gr.Markdown("Pick a clip card to see its takes.", elem_id="clip-info")
            take_video = gr.Video(label="Chosen take", interactive=False, height=300, elem_id="take-video")
        with gr.Column(scale=2):
            takes = gr.Radio([], label="Takes of this clip", elem_id="takes")
            choose_btn = gr.Button("Use this take", elem_id="choose-take")
            retake_prompt = gr.Textbox(label="Retake prompt (edit to change this clip only)", lines=2,
                                       elem_id="retake-prompt")
            retake_seed = gr.Number(label="Retake seed (blank: a new random seed)", precision=0,
                                    elem_id="retake-seed")
            retake_btn = gr.Button("Retake this clip", variant="primary", elem_id="retake-btn")
    with gr.Accordion("Drift per clip (vs clip 1)", open=False):
        drift_btn = gr.Button("Compute drift", elem_id="drift-btn")
        drift_plot = gr.LinePlot(x="clip", y="value", color="metric", label="Drift per clip", elem_id="drift-plot",
                                 height=280)

    # ------------------------------------------------------------------ views
    def status_line(name: str, view: JobView | None) -> str:
        if view is not None and (view.active or view.status in ("done", "cancelled", "failed")):
            return view.progress_text()
        with services.Session() as s:
            r = latest_render(s, name)
        if r is None:
            return "Not rendered yet: press Render."
        if r.status == "running":
            return (f"The last render stopped unexpectedly (the server restarted?) after {r.clips_done} clip(s); "
                    f"press Render to resume.")
        return f"Last render: {r.status}, {r.clips_done} clip(s) of {r.clip_count}."

    def strip_value(name: str, selected=None, rendering=None) -> str:
        try:
            cards = [c.to_dict() for c in R.clip_cards(services, name)]
        except known_errors() as e:
            return dumps({"cards": [], "error": tidy(str(e))})
        return dumps({"cards": cards, "selected": selected, "rendering": rendering})

    def summary(name: str) -> str:
        try:
            cards = R.clip_cards(services, name)
        except known_errors() as e:
            return f" · {tidy(str(e))}"
        n = {st: sum(c.status == st for c in cards) for st in (P.VALID, P.STALE, P.MISSING)}
        return f" · {len(cards)} clips: {n[P.VALID]} rendered, {n[P.STALE]} stale, {n[P.MISSING]} to render"

    # ------------------------------------------------------------------ following a job
    def follow(name: str | None, selected, progress=gr.Progress()):
        """Attach to the project's job: stream each finished clip, progress, cards; ends with the job."""
        if not name:
            yield gr.skip(), gr.skip(), gr.skip()
            return
        view = jobs.latest(name)
        sel = int(selected) if selected is not None else None
        if view is None or not view.active:
            yield gr.skip(), status_line(name, view) + summary(name), strip_value(name, sel)
            return
        sent, rev, cards_at = 0, -1, -1
        while True:
            if view.rev != rev:
                rev = view.rev
                text = view.progress_text()
                if view.clip_count:
                    done = len(view.clips_done)
                    progress((done, max(1, (view.upto + 1 if view.upto is not None else view.clip_count)
                                        - (view.first_clip or 0))), desc=text, unit="clips")
                strip = gr.skip()
                if len(view.clips_done) != cards_at or not view.active:
                    cards_at = len(view.clips_done)
                    strip = strip_value(name, sel, view.current_clip if view.active else None)
                new = view.segments[sent:]
                sent = len(view.segments)
                if new:
                    for i, seg in enumerate(new):
                        yield seg, text, strip if i == 0 else gr.skip()
                else:
                    yield gr.skip(), text, strip
            if not view.active:
                break
            view = jobs.wait(view.id, rev, timeout=FOLLOW_TIMEOUT_S)
        yield gr.skip(), view.progress_text() + summary(name), strip_value(name, sel)

    # ------------------------------------------------------------------ actions
    def need(name):
        if not name:
            raise UserError("open a project first (Projects tab)")
        return name

    @user_errors
    def start_render(name):
        view = jobs.submit(need(name))
        return view.progress_text()

    @user_errors
    def cancel_render(name):
        view = jobs.cancel(need(name))
        if view is None or not view.active and view.status != "cancelled":
            return "Nothing is rendering."
        return "Cancelling after the current denoising step…"

    @user_errors
    def pick_clip(name, evt: gr.EventData):
        index = int((evt._data or {}).get("index", 0))
        return (*detail_outputs(need(name), index), index, strip_value(name, index))

    def detail_outputs(name, index):
        d = R.clip_detail(services, name, index)
        info = (f"**Clip {index + 1}** · {fmt_s(d.start_s)}–{fmt_s(d.end_s)} s · **{d.status}** · seed {d.seed}\n\n"
                f"{d.prompt}")
        choices = [(f"take {t['id']} · seed {t['seed']} · {t['seconds']} s · {t['created']}"
                    + (" · chosen" if t["chosen"] else ""), t["id"]) for t in d.takes]
        chosen = next((t["id"] for t in d.takes if t["chosen"]), None)
        return info, d.chosen_video, gr.Radio(choices=choices, value=chosen), d.prompt, None

    @user_errors
    def choose(name, selected, take_id):
        if take_id is None:
            raise UserError("pick a take first")
        msg = R.choose(services, need(name), int(take_id))
        gr.Info(msg)
        index = int(selected)
        return (*detail_outputs(name, index), strip_value(name, index), status_line(name, jobs.latest(name))
                + summary(name))

    @user_errors
    def start_retake(name, selected, seed, prompt):
        if selected is None:
            raise UserError("pick the clip to retake (a clip card) first")
        view = R.retake(services, need(name), int(selected), None if seed is None else int(seed), prompt)
        return view.progress_text()

    @user_errors
    def export(name):
        return export_video(services, need(name))

    @user_errors
    def drift_frame(name):
        rows = R.drift(services, need(name))
        if not rows:
            raise UserError("no rendered clips to measure yet")
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ wiring
    follow_outputs = [stream, progress_md, strip]
    follow_kw = dict(api_visibility="private", concurrency_limit=None, trigger_mode="once",
                     show_progress_on=[progress_md])
    gpu = dict(concurrency_id="gpu", concurrency_limit=1)
    render_btn.click(start_render, [current], [progress_md], api_visibility="private", **gpu) \
        .success(follow, [current, sel_clip], follow_outputs, **follow_kw)
    cancel_btn.click(cancel_render, [current], [progress_md], api_visibility="private", queue=False)
    detail = [clip_info, take_video, takes, retake_prompt, retake_seed]
    strip.pick_clip(pick_clip, [current], [*detail, sel_clip, strip], api_visibility="private")
    choose_btn.click(choose, [current, sel_clip, takes], [*detail, strip, progress_md], api_visibility="private")
    retake_btn.click(start_retake, [current, sel_clip, retake_seed, retake_prompt], [progress_md],
                     api_visibility="private", **gpu) \
        .success(follow, [current, sel_clip], follow_outputs, **follow_kw) \
        .then(lambda n, k: detail_outputs(n, int(k)) if n and k is not None else [gr.skip()] * 5,
              [current, sel_clip], detail, api_visibility="private")
    export_btn.click(export, [current], [final], api_name="export_video")
    drift_btn.click(drift_frame, [current], [drift_plot], api_visibility="private")

    # ------------------------------------------------------------------ API (gradio_client)
    @user_errors
    def render(project: str) -> dict:
        """Start (or join) the render of every missing or stale clip; returns the job (see render_status)."""
        return jobs.submit(need(project)).to_dict()

    @user_errors
    def render_status(project: str, after_rev: int = 0, wait_s: float = 0.0) -> dict:
        """The project's latest job; with wait_s > 0, waits until its revision passes after_rev."""
        view = jobs.latest(need(project))
        if view is None:
            return {"status": "none", "progress": status_line(project, None), "rev": 0}
        if wait_s > 0 and view.active:
            view = jobs.wait(view.id, int(after_rev), timeout=min(float(wait_s), 60.0))
        return view.to_dict()

    @user_errors
    def cancel(project: str) -> dict:
        """Cancel the project's render after the current denoising step; finished clips are kept."""
        view = jobs.cancel(need(project))
        return view.to_dict() if view else {"status": "none"}

    @user_errors
    def clips(project: str) -> list[dict]:
        """Clip cards: index, time, prompt, seed, status (valid/stale/missing), chosen take id, take count."""
        return [{k: v for k, v in c.to_dict().items() if k != "thumb"} for c in R.clip_cards(services, need(project))]

    @user_errors
    def takes_of(project: str, clip: int) -> list[dict]:
        """The takes of clip `clip` (0-based): id, seed, chosen, seconds, created."""
        return R.clip_detail(services, need(project), int(clip)).takes

    @user_errors
    def retake(project: str, clip: int, seed: int | None = None, prompt: str | None = None) -> dict:
        """Render clip `clip` (0-based) again with another seed (random if null) and/or prompt."""
        return R.retake(services, need(project), int(clip), seed, prompt).to_dict()

    @user_errors
    def choose_take(project: str, take_id: int) -> str:
        """Make a take its clip's chosen one; later clips become stale."""
        return R.choose(services, need(project), int(take_id))

    @user_errors
    def drift(project: str) -> list[dict]:
        """Drift per clip vs clip 1 (brightness, contrast, saturation, sharpness change in %, colour shift)."""
        return R.drift(services, need(project))

    for fn in (render, render_status, cancel, clips, takes_of, retake, choose_take, drift):
        gr.api(fn, api_name=fn.__name__, **({"concurrency_limit": None} if fn is render_status else {}))

    def load(name):
        if not name:
            return ("Open a project to render it.", dumps({"cards": []}), None, None,
                    "Pick a clip card to see its takes.", None, gr.Radio(choices=[], value=None), "", None)
        return (status_line(name, jobs.latest(name)) + summary(name), strip_value(name), latest_export(services, name),
                None, "Pick a clip card to see its takes.", None, gr.Radio(choices=[], value=None), "", None)

    return RenderHandles(strip=strip,
                         loader=(load, [current], [progress_md, strip, final, sel_clip, *detail]),
                         follow=(follow, [current, sel_clip], follow_outputs, follow_kw))
