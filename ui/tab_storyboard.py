"""Storyboard tab: start image, the timeline, the selected segment's form, settings, imports, media
segments and the clip plan with a time estimate."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import gradio as gr

from storage.errors import ConflictError
from svi.presets import PRESETS

from . import timeline_ops as T
from .components import Timeline
from .errors import known_errors, tidy, user_errors
from .grid import fmt_s
from .loras import registered_loras
from .services import Services

PLAN_HEADERS = ["clip", "time", "prompt", "audio", "pose", "seed", "status"]


@dataclass
class StoryboardHandles:
    timeline: Timeline
    loader: tuple = ()  # (fn, inputs, outputs) run when a project is opened
    extra_loaders: list = field(default_factory=list)
    # The settings form and its Apply button: locked from the moment a project starts opening until
    # `loader` fills them, so an edit made meanwhile is not silently replaced by the saved settings.
    settings_lock: list = field(default_factory=list)


def _version(tl_value) -> int | None:
    return T.parse_state(tl_value).get("version")


def build_storyboard(services: Services, current: gr.Textbox) -> StoryboardHandles:
    # ------------------------------------------------------------------ the JS save path
    def save_tracks(payload: str) -> dict:
        data = T.parse_state(payload)
        name = data.get("project")
        try:
            state, created = T.apply_tracks(services, name, data.get("version"), data.get("tracks"),
                                            known_media=set(data.get("known") or []))
            return {"ok": True, "state": state, "created": created}
        except ConflictError:
            state = T.timeline_state(services, name)
            return {"ok": False, "conflict": True, "state": state,
                    "error": f"Not saved: {name!r} was changed in another window or by someone else (it is now at "
                             f"version {state['version']}). The timeline shows that version; apply your change "
                             f"again if you still want it."}
        except known_errors() as e:
            return {"ok": False, "error": "Not saved: " + tidy(str(e))}

    # ------------------------------------------------------------------ layout
    with gr.Row():
        with gr.Column(scale=5):
            timeline = Timeline(save_tracks, elem_id="timeline")
            with gr.Accordion("Clip plan", open=True):
                estimate = gr.Markdown(elem_id="plan-estimate")
                plan_table = gr.Dataframe(headers=PLAN_HEADERS, interactive=False, wrap=True, elem_id="plan-table",
                                          max_height=320)
                refresh_plan = gr.Button("Refresh plan", size="sm", elem_id="refresh-plan")
            with gr.Accordion("Import", open=False):
                with gr.Row():
                    with gr.Column():
                        stream_file = gr.File(label="Prompt stream (.txt, one prompt per clip)",
                                              file_types=[".txt"], type="filepath", elem_id="stream-file")
                        stream_mode = gr.Radio(["replace", "append"], value="replace", label="Prompt track",
                                               elem_id="stream-mode")
                        stream_btn = gr.Button("Import prompts", elem_id="import-stream")
                    with gr.Column():
                        json_files = gr.File(label="Storyboard JSON (+ the media files it names)",
                                             file_count="multiple", type="filepath", elem_id="json-files")
                        json_btn = gr.Button("Import storyboard", elem_id="import-json")
            with gr.Accordion("Add audio or pose", open=False):
                with gr.Row():
                    with gr.Column():
                        audio_file = gr.File(label="Audio (wav, mp3, flac, ogg, m4a)", type="filepath",
                                             elem_id="audio-file")
                        audio_at = gr.Number(label="Start at (s; 0: after the last audio segment)", elem_id="audio-at")
                        audio_btn = gr.Button("Add audio segment", elem_id="add-audio")
                    with gr.Column():
                        pose_file = gr.File(label="Pose (.pose.json / .npz) or a driving video", type="filepath",
                                            elem_id="pose-file")
                        pose_at = gr.Number(label="Start at (s; 0: after the last pose segment)", elem_id="pose-at")
                        pose_btn = gr.Button("Add pose segment", elem_id="add-pose")
        with gr.Column(scale=2, min_width=300):
            start_img = gr.HTML(elem_id="start-image")
            with gr.Accordion("Replace start image", open=False):
                new_img = gr.File(label="New start image", file_types=["image"], type="filepath",
                                  elem_id="replace-image")
                img_btn = gr.Button("Use this image", elem_id="set-start-image")
            gr.Markdown("#### Selected segment")
            seg_info = gr.Markdown("Select a segment on the timeline.", elem_id="seg-info")
            with gr.Row():
                seg_start = gr.Number(label="Start (s)", elem_id="seg-start")
                seg_end = gr.Number(label="End (s)", elem_id="seg-end")
            with gr.Group(visible=True) as prompt_box:
                seg_text = gr.Textbox(label="Prompt", lines=3, elem_id="seg-text")
                seg_negative = gr.Textbox(label="Negative prompt (blank: the preset's)", elem_id="seg-negative")
                with gr.Row():
                    seg_cfg = gr.Number(label="CFG (blank: default)", elem_id="seg-cfg")
                    seg_seed = gr.Number(label="Seed (blank: derived)", precision=0, elem_id="seg-seed")
            with gr.Group(visible=False) as media_box:
                with gr.Row():
                    seg_offset = gr.Number(label="Offset into the file (s)", elem_id="seg-offset")
                    seg_speed = gr.Number(label="Speed (pose)", value=1.0, elem_id="seg-speed")
            with gr.Row():
                seg_apply = gr.Button("Apply", variant="primary", elem_id="seg-apply")
                seg_delete = gr.Button("Delete segment", variant="stop", elem_id="seg-delete")
            with gr.Accordion("Settings", open=False):
                set_model = gr.Dropdown(list(PRESETS), label="Model preset", elem_id="set-model")
                set_variant = gr.Dropdown([], label="Variant", elem_id="set-variant")
                with gr.Row():
                    set_seed = gr.Number(label="Seed", precision=0, elem_id="set-seed")
                    set_steps = gr.Number(label="Steps per clip (blank: preset)", precision=0, elem_id="set-steps")
                set_cfg = gr.Number(label="Text CFG (blank: preset)", elem_id="set-cfg")
                set_negative = gr.Textbox(label="Negative prompt (blank: preset)", elem_id="set-negative")
                set_loras = gr.Dropdown([], multiselect=True, label="LoRAs", elem_id="set-loras")
                set_lora_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale", elem_id="set-lora-scale")
                set_apply = gr.Button("Apply settings", elem_id="apply-settings")

    form_base = gr.State(None)  # the segment as it was when selected: the side form's merge base
    form = [seg_info, seg_start, seg_end, seg_text, seg_negative, seg_cfg, seg_seed, seg_offset, seg_speed,
            prompt_box, media_box, form_base]
    settings_fields = [set_model, set_variant, set_seed, set_steps, set_cfg, set_negative, set_loras, set_lora_scale]
    settings_lock = [*settings_fields, set_apply]

    # ------------------------------------------------------------------ handlers
    def reload_on_conflict(fn):
        """A conflicting edit shows a warning and the project as the other session left it."""
        @functools.wraps(fn)
        def wrapper(name, *args):
            try:
                return fn(name, *args)
            except ConflictError as e:
                gr.Warning(f"Not applied: {tidy(str(e)).rstrip('.')}. The timeline shows the project as it is now.",
                           title="Changed elsewhere")
                return T.state_json(T.timeline_state(services, name))
        return wrapper

    def empty_form():
        return ("Select a segment on the timeline.", None, None, "", "", None, None, None, 1.0,
                gr.Group(visible=True), gr.Group(visible=False), None)

    def start_image_html(state: dict) -> str:
        src = state.get("start_image") or ""
        if not src:
            return "<p>No start image.</p>"
        return f'<figure style="margin:0"><img src="{src}" alt="Start image" style="width:100%;border-radius:6px">' \
               f'<figcaption style="font-size:.8rem;opacity:.7">Start image</figcaption></figure>'

    def settings_values(state: dict):
        s = state.get("settings") or {}
        model = s.get("model") or services.default_model
        preset = PRESETS.get(model)
        variants = list(preset.variants) if preset else []
        loras = [lo["path"] for lo in s.get("loras") or []]
        choices = [(lbl, p) for lbl, p in registered_loras(services)]
        known = {p for _, p in choices}
        choices += [(p, p) for p in loras if p not in known]
        scale = (s.get("loras") or [{}])[0].get("scale", 1.0) if s.get("loras") else 1.0
        on = {"interactive": True}  # the form was locked while the project opened
        return (gr.update(value=model, **on), gr.update(choices=variants, value=s.get("variant") or (
                    preset.default_variant if preset else None), **on), gr.update(value=s.get("seed", 42), **on),
                gr.update(value=s.get("steps"), **on), gr.update(value=s.get("cfg"), **on),
                gr.update(value=s.get("negative_prompt") or "", **on), gr.update(choices=choices, value=loras, **on),
                gr.update(value=scale, **on), gr.update(**on))

    def settings_unlocked():
        """Unlock the settings form as it is (no project, or it could not be read)."""
        return tuple(gr.update(interactive=True) for _ in settings_lock)

    def load(name: str | None):
        if not name:
            return ("", "<p>No project open.</p>", *empty_form(), *settings_unlocked(), [], "")
        try:
            state = T.timeline_state(services, name)
        except known_errors() as e:
            gr.Warning(tidy(str(e)))
            return ("", f"<p>{tidy(str(e))}</p>", *empty_form(), *settings_unlocked(), [], "")
        rows, est = plan_or_message(name)
        return (T.state_json(state), start_image_html(state), *empty_form(), *settings_values(state), rows, est)

    def plan_or_message(name: str | None):
        if not name:
            return [], ""
        try:
            return T.plan_rows(services, name)
        except known_errors() as e:
            return [], f"The plan cannot be made yet: {tidy(str(e))}"

    def on_select(tl_value, evt: gr.EventData):
        data = evt._data or {}
        seg, track = data.get("segment"), data.get("track")
        if not seg or not track:
            return empty_form()
        label = {"prompt": "Prompt", "audio": "Audio", "pose": "Pose"}[track]
        info = (f"**{label}** · {fmt_s(seg.get('start', 0))}–{fmt_s(seg.get('end', 0))} s"
                + (f" · {seg.get('name')}" if seg.get("name") else ""))
        base = {"track": track, "id": seg.get("id"), **{k: seg.get(k) for k in T.FORM_FIELDS if k in seg}}
        return (info, seg.get("start"), seg.get("end"), seg.get("text") or "", seg.get("negative") or "",
                seg.get("cfg"), seg.get("seed"), seg.get("offset"), seg.get("speed", 1.0),
                gr.Group(visible=track == "prompt"), gr.Group(visible=track != "prompt"), base)

    def selected_of(tl_value, base):
        state = T.parse_state(tl_value)
        if not state.get("project"):
            raise T.UserError("open a project first (Projects tab)")
        if not base or not base.get("track"):
            raise T.UserError("select a segment on the timeline first")
        sid = base.get("id")
        if sid is None:  # selected while its first save was in flight: the timeline knows its id by now
            sel = state.get("selected") or {}
            sid = sel.get("id") if sel.get("track") == base["track"] else None
        if sid is None:
            raise T.UserError("the selected segment is still being saved; try again in a moment")
        return state, base["track"], int(sid)

    @user_errors
    def apply_form(tl_value, base, start, end, text, negative, cfg, seed, offset, speed):
        state, track, sid = selected_of(tl_value, base)
        edited = {"start": start, "end": end}
        if track == "prompt":
            edited.update(text=(text or "").strip(), negative=(negative or "").strip() or None, cfg=cfg, seed=seed)
        else:
            edited["offset"] = offset or 0.0
            if track == "pose":
                edited["speed"] = speed or 1.0
        new = reload_on_conflict(lambda n: T.state_json(T.merge_segment(services, n, track, sid, base, edited)))(
            state["project"])
        # the form now holds the segment as saved: the next apply merges from here
        seg = next((r for r in T.parse_state(new).get("tracks", {}).get(track, []) if r["id"] == sid), None)
        new_base = {"track": track, "id": sid, **{k: seg[k] for k in T.FORM_FIELDS if k in seg}} if seg else None
        return new, new_base

    @user_errors
    def delete_form(tl_value, base):
        state, track, sid = selected_of(tl_value, base)
        new = reload_on_conflict(lambda n: T.state_json(T.merge_segment(services, n, track, sid, base, None)))(
            state["project"])
        return (new, *empty_form())

    def need(name):
        if not name:
            raise T.UserError("open a project first (Projects tab)")
        return name

    @user_errors
    def import_prompt_stream(project: str, tl_value: str, path: str, mode: str) -> str:
        """Replace (or append to) the prompt track with a prompt-stream text file, one prompt per clip."""
        return reload_on_conflict(lambda n: T.state_json(T.import_prompt_stream(
            services, n, _version(tl_value), path, mode or "replace")))(need(project))

    @user_errors
    def import_storyboard(project: str, tl_value: str, files: list[str]) -> str:
        """Replace the storyboard with a storyboard JSON (upload the media files it names with it)."""
        return reload_on_conflict(lambda n: T.state_json(T.import_storyboard_json(
            services, n, _version(tl_value), files)))(need(project))

    @user_errors
    def add_audio(project: str, tl_value: str, path: str, start: float | None) -> str:
        """Add an audio file as a segment starting at `start` seconds (0 or null: after the last one)."""
        return reload_on_conflict(lambda n: T.state_json(T.add_audio(
            services, n, _version(tl_value), path, start)))(need(project))

    @user_errors
    def add_pose(project: str, tl_value: str, path: str, start: float | None, progress=gr.Progress()) -> str:
        """Add a pose segment from a pose file or a driving video (keypoints are extracted first)."""
        def on_progress(done, total):
            progress((done, total) if total else None, desc=f"finding the person: frame {done}")
        return reload_on_conflict(lambda n: T.state_json(T.add_pose(
            services, n, _version(tl_value), path, start, on_progress=on_progress)))(need(project))

    @user_errors
    def set_start_image(project: str, tl_value: str, path: str):
        """Replace the project's start image (every clip becomes stale)."""
        state_js = reload_on_conflict(lambda n: T.state_json(T.set_start_image(
            services, n, _version(tl_value), path)))(need(project))
        return state_js, start_image_html(T.parse_state(state_js))

    @user_errors
    def apply_settings(project, tl_value, model, variant, seed, steps, cfg, negative, loras, scale):
        changes = {"model": model, "variant": variant, "seed": int(seed) if seed is not None else 42,
                   "steps": int(steps) if steps else None, "cfg": float(cfg) if cfg else None,
                   "negative_prompt": (negative or "").strip() or None,
                   "loras": [{"path": p, "scale": float(scale)} for p in (loras or [])]}
        base = T.parse_state(tl_value).get("settings") or {}
        return reload_on_conflict(lambda n: T.state_json(T.merge_settings(services, n, base, changes)))(need(project))

    def variants_for(model):
        preset = PRESETS.get(model)
        if not preset:
            return gr.Dropdown(choices=[], value=None)
        return gr.Dropdown(choices=list(preset.variants), value=preset.default_variant)

    def refresh_plan_fn(name):
        rows, est = plan_or_message(name)
        return rows, est

    # ------------------------------------------------------------------ wiring
    plan_out = [plan_table, estimate]
    timeline.select_segment(on_select, [timeline], form, api_visibility="private", queue=False)
    timeline.saved(refresh_plan_fn, [current], plan_out, api_visibility="private", trigger_mode="always_last")
    refresh_plan.click(refresh_plan_fn, [current], plan_out, api_visibility="private")
    seg_apply.click(apply_form, [timeline, form_base, seg_start, seg_end, seg_text, seg_negative, seg_cfg, seg_seed,
                                 seg_offset, seg_speed], [timeline, form_base], api_visibility="private") \
        .success(refresh_plan_fn, [current], plan_out, api_visibility="private")
    seg_delete.click(delete_form, [timeline, form_base], [timeline, *form], api_visibility="private") \
        .success(refresh_plan_fn, [current], plan_out, api_visibility="private")
    for btn, fn, inputs, outputs, extra in (
        (stream_btn, import_prompt_stream, [current, timeline, stream_file, stream_mode], [timeline], {}),
        (json_btn, import_storyboard, [current, timeline, json_files], [timeline], {}),
        (audio_btn, add_audio, [current, timeline, audio_file, audio_at], [timeline], {}),
        (pose_btn, add_pose, [current, timeline, pose_file, pose_at], [timeline],
         {"concurrency_id": "gpu", "concurrency_limit": 1}),
        (img_btn, set_start_image, [current, timeline, new_img], [timeline, start_img], {}),
    ):
        btn.click(fn, inputs, outputs, api_name=fn.__name__, **extra) \
            .success(refresh_plan_fn, [current], plan_out, api_visibility="private")
    set_model.input(variants_for, [set_model], [set_variant], api_visibility="private")
    set_apply.click(apply_settings, [current, timeline, *settings_fields], [timeline], api_visibility="private") \
        .success(refresh_plan_fn, [current], plan_out, api_visibility="private")

    # ------------------------------------------------------------------ API (gradio_client)
    @user_errors
    def get_timeline(project: str) -> dict:
        """The storyboard as the timeline sees it: version, clip grid, tracks of segments (with ids), settings."""
        state = T.timeline_state(services, need(project), media=False)
        state.pop("start_image", None)
        return state

    @user_errors
    def set_timeline(project: str, version: int, tracks: dict) -> dict:
        """Replace all segments by `tracks` ({"prompt": [...], "audio": [...], "pose": [...]}), if the
        project is still at `version`; segments keep their ids where given. Returns the new timeline."""
        state, _ = T.apply_tracks(services, need(project), version, tracks)
        state.pop("start_image", None)
        return state

    @user_errors
    def edit_segment(project: str, version: int, track: str, segment_id: int | None, fields: dict | None) -> dict:
        """Add (segment_id null), change (fields) or delete (fields null) one segment."""
        state = T.edit_segment(services, need(project), version, track, segment_id, fields)
        state.pop("start_image", None)
        return state

    @user_errors
    def set_settings(project: str, version: int, settings: dict) -> dict:
        """Change storyboard settings: model, variant, seed, steps, cfg, negative_prompt, loras."""
        state = T.set_settings(services, need(project), version, settings)
        state.pop("start_image", None)
        return state

    @user_errors
    def clip_plan(project: str) -> dict:
        """The clip plan: one row per clip (clip, time, prompt, audio, pose, seed, status) and a time estimate."""
        rows, est = T.plan_rows(services, need(project))
        return {"headers": PLAN_HEADERS, "rows": rows, "estimate": est}

    for fn in (get_timeline, set_timeline, edit_segment, set_settings, clip_plan):
        gr.api(fn, api_name=fn.__name__)

    outputs = [timeline, start_img, *form, *settings_lock, plan_table, estimate]
    return StoryboardHandles(timeline=timeline, loader=(load, [current], outputs), settings_lock=settings_lock)
