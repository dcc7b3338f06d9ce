"""The storyboard as the timeline sees it, and every edit of it, versioned.

`timeline_state` turns a project into the JSON the timeline component draws: segments by track with
their database ids, the clip grid of the project's model, the project version, and previews of the
media (waveform peaks, skeletons) keyed by content hash. `apply_tracks` takes the tracks back,
checks them as a whole storyboard (svi.timeline validation: no overlaps, non-empty prompts, ...)
and applies the difference with storage's segment operations in ONE transaction that first checks
the version the editor started from: a second session editing the same project gets a
ConflictError instead of silently overwriting (storage's optimistic locking).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from storage import projects as P
from svi.timeline import AudioSegment, PoseSegment, PromptSegment, Settings, Storyboard, StoryboardError

from .errors import UserError
from .grid import clip_end_s, clips_for, fmt_s
from .media import audio_preview, pose_preview
from .services import Services
from .thumbs import image_data_uri

TRACKS = ("prompt", "audio", "pose")
_BOARD_FIELD = {"prompt": "prompts", "audio": "audio", "pose": "poses"}
EPS = 1e-6


# ==================================================================== reading
def timeline_state(services: Services, name: str, *, media: bool = True, known_media: set[str] | None = None) -> dict:
    """The project as timeline JSON (see module docstring); `media` adds previews not in `known_media`."""
    with services.Session() as s:
        project = P.get_project(s, name)
        board = P.storyboard_of(project, services.store)
        spec = P.spec_of(board)
        tracks: dict[str, list[dict]] = {t: [] for t in TRACKS}
        previews: dict[str, dict] = {}
        for seg in sorted(project.segments, key=lambda x: (x.kind, x.start, x.id)):
            row: dict[str, Any] = {"id": seg.id, "start": round(seg.start, 6), "end": round(seg.end, 6)}
            if seg.kind == "prompt":
                row.update(text=seg.text or "", negative=seg.negative, cfg=seg.cfg, seed=seg.seed)
            else:
                asset = seg.asset
                row.update(asset=asset.sha256, name=asset.original_name, offset=seg.offset)
                if seg.kind == "pose":
                    row["speed"] = seg.speed
                if media and asset.sha256 not in (known_media or set()) and asset.sha256 not in previews:
                    previews[asset.sha256] = _preview(services, seg.kind, asset)
            tracks[seg.kind].append(row)
        state = {
            "project": project.name, "project_id": project.id, "version": project.version,
            "model": spec.model_id, "fps": spec.fps, "F": spec.frames_per_clip, "m": spec.motion_frames,
            "duration": round(board.duration, 6), "clips": clips_for(spec, board.duration),
            "clip_s": round(clip_end_s(spec, 0), 6), "tracks": tracks, "media": previews,
            "settings": dict(project.settings), "start_image": image_data_uri(board.start_image),
            "overrides": dict(project.clip_overrides),
        }
    return state


def _preview(services: Services, kind: str, asset) -> dict:
    path = P.asset_path(services.store, asset)
    try:
        return audio_preview(path, asset.sha256) if kind == "audio" else pose_preview(path, asset.sha256)
    except Exception as e:  # noqa: BLE001 - a preview is decoration; the segment still shows, with the reason
        return {"kind": kind, "error": str(e)[:200]}


def state_json(state: dict) -> str:
    return json.dumps(state, separators=(",", ":"))


def parse_state(value: str | dict | None) -> dict:
    """The timeline component's value (JSON) as a dict; {} when empty."""
    if not value:
        return {}
    if isinstance(value, dict):
        return value
    try:
        data = json.loads(value)
    except ValueError:
        raise UserError("the timeline sent malformed data; reload the page") from None
    return data if isinstance(data, dict) else {}


# ==================================================================== editing
def apply_tracks(services: Services, name: str, version: int | None, tracks: Any, *,
                 known_media: set[str] | None = None) -> tuple[dict, dict[str, int]]:
    """Make the project's segments equal `tracks` ({"prompt": [...], "audio": [...], "pose": [...]}).

    Segments with a known `id` are updated when they changed; others are added (their client id
    `cid`, if any, maps to the new database id in the returned dict); missing ones are deleted.
    Raises ConflictError if the project is no longer at `version`, StoryboardError if the result
    would not be a valid storyboard (nothing is changed then)."""
    if not isinstance(tracks, dict):
        raise UserError("tracks must be an object with prompt, audio and pose lists")
    created: dict[str, int] = {}
    with services.Session.begin() as s:
        project = P.get_project(s, name)
        P.check_version(project, _version(version))
        board = P.storyboard_of(project, services.store)
        existing = {seg.id: seg for seg in project.segments}
        assets = {seg.asset.sha256: seg.asset for seg in project.segments if seg.asset is not None}

        # 1. Parse and check the whole new storyboard before touching anything
        wanted: list[tuple[Any, str, Any, Any]] = []  # (id, kind, dataclass, cid)
        per_track: dict[str, list] = {t: [] for t in TRACKS}
        for kind in TRACKS:
            raw_list = tracks.get(kind, [])
            if not isinstance(raw_list, list):
                raise UserError(f"tracks.{kind} must be a list")
            for i, raw in enumerate(raw_list):
                seg = segment_from(kind, raw, i, services, assets)
                per_track[kind].append(seg)
                wanted.append((raw.get("id"), kind, seg, raw.get("cid")))
        candidate = replace(board, **{_BOARD_FIELD[k]: tuple(sorted(v, key=lambda x: x.start))
                                      for k, v in per_track.items()})
        problems = candidate.problems()
        if problems:
            raise StoryboardError([_humane(p, candidate) for p in problems])

        # 2. The difference, as storage operations (each touches the project row: one version check)
        kept: set[int] = set()
        for sid, kind, seg, cid in wanted:
            row = existing.get(sid) if isinstance(sid, int) else None
            if row is not None and row.kind == kind and sid not in kept:
                kept.add(sid)
                if _differs(row, kind, seg):
                    P.update_segment(s, services.store, name, sid, seg)
            else:
                added = P.add_segment(s, services.store, name, seg)
                s.flush()
                if cid is not None:
                    created[str(cid)] = added.id
        for sid in set(existing) - kept:
            P.delete_segment(s, name, sid)
    return timeline_state(services, name, known_media=known_media), created


def segment_from(kind: str, raw: Any, i: int, services: Services, assets: dict) -> Any:
    """A client segment dict as an svi.timeline dataclass; audio/pose refer to a project asset by hash."""
    where = f"{kind} segment {i + 1}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected an object")
    start, end = _num(raw.get("start"), f"{where}.start"), _num(raw.get("end"), f"{where}.end")
    if kind == "prompt":
        text = raw.get("text")
        if not isinstance(text, str):
            raise UserError(f"{where}: the prompt text must be text")
        negative = raw.get("negative")
        if negative is not None and not isinstance(negative, str):
            raise UserError(f"{where}: the negative prompt must be text")
        cfg = None if raw.get("cfg") in (None, "") else _num(raw.get("cfg"), f"{where}.cfg")
        seed = None if raw.get("seed") in (None, "") else _int(raw.get("seed"), f"{where}.seed")
        return PromptSegment(start=start, end=end, text=text.strip(), negative=(negative or None),
                             cfg=cfg, seed=seed)
    sha = raw.get("asset")
    asset = assets.get(sha) if isinstance(sha, str) else None
    if asset is None:
        raise UserError(f"{where}: its media file is not part of this project (add it with the upload form)")
    path = str(P.asset_path(services.store, asset))
    offset = _num(raw.get("offset", 0.0), f"{where}.offset")
    if kind == "audio":
        return AudioSegment(start=start, end=end, path=path, offset=offset)
    return PoseSegment(start=start, end=end, path=path, offset=offset, speed=_num(raw.get("speed", 1.0),
                                                                                  f"{where}.speed"))


def _differs(row, kind: str, seg) -> bool:
    def ne(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return a is None or b is None or abs(a - b) > EPS
        return a != b

    if ne(row.start, seg.start) or ne(row.end, seg.end):
        return True
    if kind == "prompt":
        return (row.text or "") != seg.text or row.negative != seg.negative or ne(row.cfg, seg.cfg) or row.seed != seg.seed
    if ne(row.offset, seg.offset):
        return True
    if row.asset is None or not Path(seg.path).name.startswith(row.asset.sha256):
        return True
    return kind == "pose" and ne(row.speed, seg.speed)


def _humane(problem: str, board: Storyboard) -> str:
    """'prompts[2]: ...' -> 'prompt 3 (4.1-6.1 s): ...' so the user can find it on the timeline."""
    import re

    m = re.match(r"^(prompts|audio|poses)\[(\d+)\](.*)$", problem)
    if not m:
        return problem
    field, idx, rest = m.group(1), int(m.group(2)), m.group(3)
    segs = getattr(board, field)
    label = {"prompts": "prompt", "audio": "audio", "poses": "pose"}[field]
    if idx < len(segs):
        seg = segs[idx]
        rest = re.sub(r"(prompts|audio|poses)\[(\d+)\]",
                      lambda mm: f"{label} {int(mm.group(2)) + 1}", rest)
        return f"{label} {idx + 1} ({fmt_s(seg.start)}-{fmt_s(seg.end)} s){rest}"
    return problem


def _version(v: Any) -> int | None:
    if v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise UserError(f"version must be a whole number, got {v!r}") from None


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise UserError(f"{what}: must be a number, got {v!r}") from None
        if not math.isfinite(v):
            raise UserError(f"{what}: must be a finite number")
    return round(float(v), 6)


def _int(v: Any, what: str) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UserError(f"{what}: must be a whole number, got {v!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise UserError(f"{what}: must be a whole number, got {v!r}")
    return int(f)


# ==================================================================== single-segment edits (form, API)
def edit_segment(services: Services, name: str, version: int | None, kind: str, seg_id: int | None,
                 fields: dict | None) -> dict:
    """Change (fields) or delete (fields None) one segment, or add one (seg_id None)."""
    if kind not in TRACKS:
        raise UserError(f"unknown track {kind!r}; one of {', '.join(TRACKS)}")
    state = timeline_state(services, name, media=False)
    tracks = {k: [dict(x) for x in v] for k, v in state["tracks"].items()}
    rows = tracks[kind]
    if seg_id is None:
        if fields is None:
            raise UserError("nothing to add")
        rows.append({**({"text": ""} if kind == "prompt" else {}), **fields})
    else:
        idx = next((i for i, r in enumerate(rows) if r["id"] == int(seg_id)), None)
        if idx is None:
            raise UserError(f"no {kind} segment {seg_id} in {name!r} (deleted elsewhere?); reload the timeline")
        if fields is None:
            rows.pop(idx)
        else:
            rows[idx] = {**rows[idx], **fields}
    return apply_tracks(services, name, state["version"] if version is None else version, tracks)[0]


FORM_FIELDS = ("start", "end", "text", "negative", "cfg", "seed", "offset", "speed")


def merge_segment(services: Services, name: str, kind: str, seg_id: int, base: dict, edited: dict | None) -> dict:
    """Apply a side-form edit as a three-way merge: the fields the user changed from `base` (the
    segment as it was when selected) go onto the segment as it is now. If someone else changed one
    of those same fields meanwhile, it is a ConflictError (their value is not overwritten silently).
    `edited` None deletes the segment, refused the same way if it changed since it was selected."""
    from storage.errors import ConflictError

    state = timeline_state(services, name, media=False)
    current = next((r for r in state["tracks"].get(kind, []) if r["id"] == int(seg_id)), None)
    if current is None:
        raise UserError(f"this {kind} segment was deleted (perhaps in another window); the timeline shows the "
                        f"project as it is now")

    def same(a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return abs(a - b) <= EPS
        return (a or None) == (b or None)

    fields = [f for f in FORM_FIELDS if f in current]
    if edited is None:
        moved = [f for f in fields if f in base and not same(base[f], current[f])]
        if moved:
            raise ConflictError(f"the segment changed since you selected it ({', '.join(moved)}); select it again "
                                f"before deleting it")
        return edit_segment(services, name, state["version"], kind, int(seg_id), None)
    changed = {f: edited[f] for f in fields if f in edited and f in base and not same(edited[f], base[f])}
    if not changed:
        raise UserError("nothing to apply: the form holds the segment as it is")
    clash = [f for f in changed if not same(base[f], current[f])]
    if clash:
        raise ConflictError(f"project {name!r} was changed by someone else: the segment's {', '.join(clash)} changed "
                            f"since you selected it")
    return edit_segment(services, name, state["version"], kind, int(seg_id), changed)


# ==================================================================== settings and start image
def set_settings(services: Services, name: str, version: int | None, changes: dict) -> dict:
    """Replace some storyboard settings (model, variant, seed, steps, cfg, negative_prompt, loras)."""
    from svi.presets import resolve_spec
    from svi.timeline import LoraRef

    with services.Session.begin() as s:
        project = P.get_project(s, name)
        P.check_version(project, _version(version))
        current = Settings(**{**project.settings, "loras": tuple(LoraRef(**lo) for lo in
                                                                 project.settings.get("loras", []))})
        loras = changes.get("loras", None)
        if loras is not None:
            refs = []
            for lo in loras:
                path = lo.get("path") if isinstance(lo, dict) else lo
                scale = float(lo.get("scale", 1.0)) if isinstance(lo, dict) else 1.0
                if not path or not Path(path).is_file():
                    raise UserError(f"LoRA file not found: {path}")
                refs.append(LoraRef(path=str(path), scale=scale))
            changes = {**changes, "loras": tuple(refs)}
        known = set(Settings.__dataclass_fields__)
        unknown = set(changes) - known
        if unknown:
            raise UserError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        new = replace(current, **changes)
        try:
            resolve_spec(new.model, new.variant)
        except ValueError as e:
            raise UserError(str(e)) from None
        board = replace(P.storyboard_of(project, services.store), settings=new)
        problems = board.problems()
        if problems:
            raise StoryboardError(problems)
        if new != current:
            P.set_settings(s, name, new)
    return timeline_state(services, name)


def merge_settings(services: Services, name: str, base: dict, edited: dict) -> dict:
    """The settings form's Apply as a three-way merge, like the segment form's: the settings the user
    changed from `base` (as the form was filled) go onto the settings as they are now, so an edit
    of the segments meanwhile (this window's own, whose new version the form may not have seen yet,
    or another window's) does not throw the form away. If someone else changed one of the same
    settings meanwhile, it is a ConflictError."""
    from storage.errors import ConflictError

    state = timeline_state(services, name, media=False)
    current = state["settings"]

    def norm(key, value):
        if key == "loras":
            return tuple((lo["path"], round(float(lo.get("scale", 1.0)), 6)) for lo in value or [])
        if isinstance(value, float):
            return round(value, 6)
        return value if value not in ("", None) else None

    changed = {k: v for k, v in edited.items() if norm(k, v) != norm(k, base.get(k))}
    clash = [k for k in changed if norm(k, base.get(k)) != norm(k, current.get(k))]
    if clash:
        raise ConflictError(f"project {name!r} was changed by someone else: its {', '.join(clash)} changed since "
                            f"the settings form was filled")
    if not changed:
        return timeline_state(services, name)
    return set_settings(services, name, state["version"], changed)


def set_start_image(services: Services, name: str, version: int | None, path: str | None) -> dict:
    from svi.images import load_image

    if not path:
        raise UserError("choose an image first")
    load_image(path)
    with services.Session.begin() as s:
        P.set_start_image(s, services.store, name, path, expected_version=_version(version))
    return timeline_state(services, name)


# ==================================================================== imports
def import_prompt_stream(services: Services, name: str, version: int | None, path: str | None,
                         mode: str = "replace") -> dict:
    """An SVI prompt-stream file (one prompt per line, '#' comments): one prompt per clip, on the grid.

    mode "replace" replaces the prompt track; "append" adds the prompts after the last segment."""
    from svi.timeline import prompts_from_stream

    if not path:
        raise UserError("choose a prompt-stream text file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{Path(path).name}: not a UTF-8 text file") from None
    lines = [p.text for p in prompts_from_stream(text, 1.0)]
    if not lines:
        raise UserError(f"{Path(path).name}: no prompts in the file (one prompt per line; '#' starts a comment)")
    state = timeline_state(services, name, media=False)
    from svi.presets import resolve_spec

    spec = resolve_spec(state["model"].split("/")[0], state["model"].split("/")[1])
    tracks = {k: list(v) for k, v in state["tracks"].items()}
    k0 = 0
    if mode == "append" and tracks["prompt"]:
        last_end = max(x["end"] for x in tracks["prompt"])
        while clip_end_s(spec, k0) <= last_end + EPS:
            k0 += 1
    elif mode != "append":
        tracks["prompt"] = []
    for j, line in enumerate(lines):
        k = k0 + j
        start = 0.0 if k == 0 else clip_end_s(spec, k - 1)
        tracks["prompt"].append({"start": round(start, 6), "end": round(clip_end_s(spec, k), 6), "text": line})
    return apply_tracks(services, name, state["version"] if version is None else version, tracks)[0]


def import_storyboard_json(services: Services, name: str, version: int | None, files: list[str] | None) -> dict:
    """Replace the project's storyboard with a storyboard JSON file, uploaded together with the media
    it names (matched by file name). Without its start image the project's own is kept."""
    import tempfile

    from svi.timeline import load_storyboard

    files = [f for f in (files or []) if f]
    jsons = [f for f in files if f.lower().endswith(".json") and not f.lower().endswith(".pose.json")]
    if len(jsons) != 1:
        raise UserError("select exactly one storyboard .json file (and the media files it names)")
    by_name = {Path(f).name: f for f in files}
    with tempfile.TemporaryDirectory(prefix="svi-import-") as tmp:
        for base, src in by_name.items():
            os.symlink(os.path.abspath(src), Path(tmp, base))
        board = load_storyboard(Path(tmp, Path(jsons[0]).name))
        with services.Session() as s:
            current = P.storyboard_of(P.get_project(s, name), services.store)
        if not os.path.isfile(board.start_image):
            board = replace(board, start_image=current.start_image)
        missing = sorted({Path(seg.path).name for seg in (*board.audio, *board.poses) if not os.path.isfile(seg.path)})
        if missing:
            raise UserError(f"the storyboard names files you did not select: {', '.join(missing)}; select them "
                            f"together with the JSON")
        with services.Session.begin() as s:
            P.save_storyboard(s, services.store, name, board, create=False, expected_version=_version(version))
    return timeline_state(services, name)


# ==================================================================== media segments
def add_audio(services: Services, name: str, version: int | None, path: str | None, start: float | None) -> dict:
    from svi.conditioning.audio import audio_duration, decode_audio

    if not path:
        raise UserError("choose an audio file")
    decode_audio(path)  # a corrupt or empty file is refused here, with the reason
    duration = audio_duration(path)
    return _append_media(services, name, version, "audio", start,
                         lambda t0: AudioSegment(start=t0, end=round(t0 + duration, 6), path=path))


POSE_FILE_TYPES = (".json", ".npz")


def add_pose(services: Services, name: str, version: int | None, path: str | None, start: float | None,
             on_progress=None) -> dict:
    """A pose segment from a pose file (.json/.npz) or a driving video (keypoints extracted here)."""
    from svi.conditioning.pose import PoseTrack, extract_pose

    if not path:
        raise UserError("choose a pose file (.json, .npz) or a driving video")
    if path.lower().endswith(POSE_FILE_TYPES):
        track = PoseTrack.load(path)
        source = path
    else:
        track = extract_pose(path, progress=False, on_progress=on_progress)
        source = str(services.media_dir / "poses" / (Path(path).stem + ".pose.json"))
        Path(source).parent.mkdir(parents=True, exist_ok=True)
        track.save(source)
    if not track.detected.any():
        raise UserError(f"{Path(path).name}: no person in any frame")
    return _append_media(services, name, version, "pose", start,
                         lambda t0: PoseSegment(start=t0, end=round(t0 + track.duration_s, 6), path=source))


def _append_media(services: Services, name: str, version: int | None, kind: str, start: float | None,
                  make_segment) -> dict:
    """Add `make_segment(t0)` to track `kind` at `start` (or after its last segment), version-checked."""
    t0 = _free_start(timeline_state(services, name, media=False)["tracks"][kind], start)
    with services.Session.begin() as s:
        project = P.get_project(s, name)
        P.check_version(project, _version(version))
        seg = make_segment(t0)
        _check_added(P.storyboard_of(project, services.store), kind, seg)
        P.add_segment(s, services.store, name, seg)
    return timeline_state(services, name)


def _free_start(rows: list[dict], start: float | None) -> float:
    """`start`, or (None / 0) the end of the track's last segment."""
    if start is not None and start > 0:
        return round(float(start), 6)
    return round(max((r["end"] for r in rows), default=0.0), 6)


def _check_added(board: Storyboard, kind: str, seg) -> None:
    field = _BOARD_FIELD[kind]
    candidate = replace(board, **{field: tuple(sorted((*getattr(board, field), seg), key=lambda x: x.start))})
    problems = candidate.problems()
    if problems:
        raise StoryboardError([_humane(p, candidate) for p in problems])


# ==================================================================== the clip plan
def plan_rows(services: Services, name: str) -> tuple[list[list], str]:
    """The clip plan as table rows (clip, time, prompt, audio, pose, seed, status) and an estimate line."""
    from .jobs import fmt_seconds

    with services.Session() as s:
        board = P.load_storyboard(s, services.store, name)
        spec = P.spec_of(board)
        plan = P.plan_project(s, services.store, name, spec)
        states = {st.index: st.status for st in P.clip_states(s, name, plan)}
    media_names = _media_names(services, name)
    rows = []
    for c in plan.clips:
        t0, t1 = c.out_start / plan.fps, c.out_end / plan.fps
        audio = ", ".join(f"{media_names.get(p.sha256, 'audio')} @{p.src_start_s:.1f}s" for p in c.audio) or "-"
        pose = ", ".join(f"{media_names.get(p.sha256, 'pose')} @{p.src_start_s:.1f}s" for p in c.pose) or "-"
        rows.append([c.index + 1, f"{fmt_s(t0)}-{fmt_s(t1)} s", c.prompt, audio, pose, str(c.seed), states[c.index]])
    todo = [c for c in plan.clips if states[c.index] != P.VALID]
    steps = f"{todo[0].steps} step{'s' * (todo[0].steps != 1)}" if todo else ""
    per_clip = services.speeds.clip_seconds(spec.model_id, services.device, todo[0].steps) if (
        todo and services.speeds) else None
    if not todo:
        estimate = f"All {len(plan)} clips are rendered and up to date."
    elif per_clip is None:
        estimate = (f"{len(todo)} of {len(plan)} clips to render ({spec.model_id}, {steps}). No speed "
                    f"measured on this machine yet: the estimate appears after the first rendered clip.")
    else:
        m = services.speeds.measured(spec.model_id, services.device)
        estimate = (f"{len(todo)} of {len(plan)} clips to render: about {fmt_seconds(per_clip * len(todo))} on "
                    f"{services.device} ({spec.model_id}, {steps}; measured here: "
                    f"{m['step_s']:.2f} s per step + {m['overhead_s']:.1f} s per clip).")
    return rows, estimate


def _media_names(services: Services, name: str) -> dict[str, str]:
    with services.Session() as s:
        project = P.get_project(s, name)
        return {seg.asset.sha256: seg.asset.original_name for seg in project.segments if seg.asset is not None}


__all__ = ["timeline_state", "apply_tracks", "edit_segment", "set_settings", "merge_settings", "set_start_image",
           "import_prompt_stream", "import_storyboard_json", "add_audio", "add_pose", "plan_rows",
           "parse_state", "state_json"]
