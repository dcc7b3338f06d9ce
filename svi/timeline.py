"""The storyboard: a start image and tracks of prompt, audio and pose segments, in seconds.

This module is pure data: dataclasses, validation and JSON (de)serialisation. It knows nothing of
models or clips; `svi.plan` quantises a Storyboard onto the clip grid of a model.

JSON format (version 1), documented in docs/storyboard-format.md and exemplified by
assets/examples/storyboard.json::

    {
      "format": "svi-storyboard", "version": 1,
      "start_image": "start.png",                  # relative to the JSON file's folder
      "settings": {"model": "storyworld-tiny", "variant": null, "seed": 42,
                   "duration": null, "steps": null, "cfg": null,
                   "negative_prompt": null, "loras": []},
      "prompts": [{"start": 0.0, "end": 2.0, "text": "...", "negative": null, "cfg": null, "seed": null}],
      "audio":   [{"start": 0.0, "end": 4.0, "path": "voice.wav", "offset": 0.0}],
      "poses":   [{"start": 0.0, "end": 4.0, "path": "dance.pose.json", "offset": 0.0, "speed": 1.0}]
    }
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

FORMAT_NAME = "svi-storyboard"
FORMAT_VERSION = 1
# Longer than any sane storyboard (a day of video); guards against typos like 36000000.
MAX_DURATION_S = 24 * 3600.0
MAX_PROMPT_CHARS = 4000


class StoryboardError(ValueError):
    """A storyboard that cannot be used. `problems` lists each fault with the field it concerns."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid storyboard:\n  - " + "\n  - ".join(self.problems))


@dataclass(frozen=True)
class PromptSegment:
    start: float
    end: float
    text: str
    negative: str | None = None  # None: the preset's negative prompt
    cfg: float | None = None  # None: the preset's text CFG
    seed: int | None = None  # None: derived from the storyboard seed


@dataclass(frozen=True)
class AudioSegment:
    start: float
    end: float
    path: str
    offset: float = 0.0  # seconds into the audio file at which the segment starts


@dataclass(frozen=True)
class PoseSegment:
    start: float
    end: float
    path: str  # keypoints file (.json / .npz) from `app.py pose`
    offset: float = 0.0  # seconds into the pose stream
    speed: float = 1.0  # pose-stream seconds per video second


@dataclass(frozen=True)
class LoraRef:
    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class Settings:
    model: str = "storyworld-tiny"
    variant: str | None = None  # None: the preset's default variant
    seed: int = 42
    duration: float | None = None  # None: the end of the last segment
    steps: int | None = None
    cfg: float | None = None
    negative_prompt: str | None = None
    loras: tuple[LoraRef, ...] = ()


@dataclass(frozen=True)
class Storyboard:
    start_image: str
    prompts: tuple[PromptSegment, ...] = ()
    audio: tuple[AudioSegment, ...] = ()
    poses: tuple[PoseSegment, ...] = ()
    settings: Settings = field(default_factory=Settings)

    @property
    def duration(self) -> float:
        """Seconds of video this storyboard asks for."""
        if self.settings.duration is not None:
            return self.settings.duration
        ends = [s.end for s in (*self.prompts, *self.audio, *self.poses)]
        return max(ends, default=0.0)

    def with_settings(self, **changes: Any) -> "Storyboard":
        return replace(self, settings=replace(self.settings, **changes))

    # ---------------------------------------------------------------- validation
    def problems(self) -> list[str]:
        """Every fault of this storyboard, each naming its field; empty when valid."""
        out: list[str] = []
        if not isinstance(self.start_image, str) or not self.start_image.strip():
            out.append("start_image: required (path of the first frame)")
        s = self.settings
        if not isinstance(s.seed, int) or isinstance(s.seed, bool) or not 0 <= s.seed < 2**63:
            out.append(f"settings.seed: must be an integer in [0, 2^63), got {s.seed!r}")
        if s.duration is not None and not _finite(s.duration):
            out.append(f"settings.duration: must be a number, got {s.duration!r}")
        elif s.duration is not None and not 0 < s.duration <= MAX_DURATION_S:
            out.append(f"settings.duration: must be in (0, {MAX_DURATION_S:g}] seconds, got {s.duration!r}")
        if s.steps is not None and (not isinstance(s.steps, int) or not 1 <= s.steps <= 1000):
            out.append(f"settings.steps: must be an integer in [1, 1000], got {s.steps!r}")
        if s.cfg is not None and (not _finite(s.cfg) or not 0 < s.cfg <= 50):
            out.append(f"settings.cfg: must be in (0, 50], got {s.cfg!r}")
        for i, lora in enumerate(s.loras):
            if not lora.path:
                out.append(f"settings.loras[{i}].path: required")
            if not _finite(lora.scale):
                out.append(f"settings.loras[{i}].scale: must be a number")
        if not self.prompts:
            out.append("prompts: at least one prompt segment is required")
        for track, segs in (("prompts", self.prompts), ("audio", self.audio), ("poses", self.poses)):
            out += _segment_problems(track, segs)
        for i, p in enumerate(self.prompts):
            if not isinstance(p.text, str) or not p.text.strip():
                out.append(f"prompts[{i}].text: must not be empty")
            elif len(p.text) > MAX_PROMPT_CHARS:
                out.append(f"prompts[{i}].text: longer than {MAX_PROMPT_CHARS} characters")
            if p.cfg is not None and (not _finite(p.cfg) or not 0 < p.cfg <= 50):
                out.append(f"prompts[{i}].cfg: must be in (0, 50], got {p.cfg!r}")
            if p.seed is not None and (not isinstance(p.seed, int) or not 0 <= p.seed < 2**63):
                out.append(f"prompts[{i}].seed: must be an integer in [0, 2^63), got {p.seed!r}")
        for track, segs in (("audio", self.audio), ("poses", self.poses)):
            for i, seg in enumerate(segs):
                if not isinstance(seg.path, str) or not seg.path.strip():
                    out.append(f"{track}[{i}].path: required")
                if not _finite(seg.offset) or seg.offset < 0:
                    out.append(f"{track}[{i}].offset: must be >= 0, got {seg.offset!r}")
        for i, seg in enumerate(self.poses):
            if not _finite(seg.speed) or not 0.05 <= seg.speed <= 20:
                out.append(f"poses[{i}].speed: must be in [0.05, 20], got {seg.speed!r}")
        if not out and not 0 < self.duration <= MAX_DURATION_S:
            out.append(f"duration: must be in (0, {MAX_DURATION_S:g}] seconds, got {self.duration!r}")
        return out

    def validate(self) -> "Storyboard":
        problems = self.problems()
        if problems:
            raise StoryboardError(problems)
        return self

    # ---------------------------------------------------------------- JSON
    def to_dict(self, relative_to: str | os.PathLike | None = None) -> dict:
        def rel(p: str) -> str:
            if relative_to is None:
                return p
            try:
                return os.path.relpath(p, relative_to) if os.path.isabs(p) else p
            except ValueError:  # other drive on Windows
                return p

        s = asdict(self.settings)
        s["loras"] = [{"path": rel(lo.path), "scale": lo.scale} for lo in self.settings.loras]
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "start_image": rel(self.start_image),
            "settings": s,
            "prompts": [asdict(p) for p in self.prompts],
            "audio": [{**asdict(a), "path": rel(a.path)} for a in self.audio],
            "poses": [{**asdict(p), "path": rel(p.path)} for p in self.poses],
        }

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | os.PathLike | None = None) -> "Storyboard":
        """Build and validate a storyboard; relative paths resolve against `base_dir` when given."""
        if not isinstance(data, dict):
            raise StoryboardError(f"top level: expected a JSON object, got {type(data).__name__}")
        if data.get("format", FORMAT_NAME) != FORMAT_NAME:
            raise StoryboardError(f"format: expected {FORMAT_NAME!r}, got {data.get('format')!r}")
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise StoryboardError(f"version: this build reads version {FORMAT_VERSION}, got {version!r}")

        def resolve(p: Any) -> Any:
            if base_dir is None or not isinstance(p, str) or not p or os.path.isabs(p):
                return p
            return str(Path(base_dir, p))

        problems: list[str] = []
        known = {"format", "version", "start_image", "settings", "prompts", "audio", "poses"}
        problems += [f"{k}: unknown field" for k in data if k not in known]

        def build(kind, raw: Any, where: str, path_fields=()):
            if not isinstance(raw, dict):
                problems.append(f"{where}: expected an object, got {type(raw).__name__}")
                return None
            names = set(kind.__dataclass_fields__)
            unknown = [k for k in raw if k not in names]
            if unknown:
                problems.append(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
                return None
            values = {k: resolve(v) if k in path_fields else v for k, v in raw.items()}
            for k, v in values.items():
                if k in ("start", "end", "offset", "speed", "scale", "duration", "cfg") and v is not None:
                    if isinstance(v, bool) or not isinstance(v, (int, float)):
                        problems.append(f"{where}.{k}: must be a number, got {v!r}")
                        return None
                    values[k] = float(v)
            try:
                return kind(**values)
            except TypeError as e:  # a missing required field
                problems.append(f"{where}: {e}")
                return None

        raw_settings = data.get("settings", {})
        if isinstance(raw_settings, dict) and "loras" in raw_settings:
            raw_loras = raw_settings["loras"]
            if not isinstance(raw_loras, list):
                problems.append("settings.loras: expected a list")
                loras = ()
            else:
                loras = tuple(
                    x for i, r in enumerate(raw_loras)
                    if (x := build(LoraRef, r, f"settings.loras[{i}]", ("path",))) is not None
                )
            raw_settings = {**raw_settings, "loras": loras}
        settings = build(Settings, raw_settings, "settings") or Settings()

        def track(name: str, kind, path_fields=()):
            raw = data.get(name, [])
            if not isinstance(raw, list):
                problems.append(f"{name}: expected a list")
                return ()
            return tuple(
                x for i, r in enumerate(raw) if (x := build(kind, r, f"{name}[{i}]", path_fields)) is not None
            )

        board = cls(
            start_image=resolve(data.get("start_image", "")),
            prompts=track("prompts", PromptSegment),
            audio=track("audio", AudioSegment, ("path",)),
            poses=track("poses", PoseSegment, ("path",)),
            settings=settings,
        )
        if problems:
            raise StoryboardError(problems + board.problems())
        return board.validate()


def load_storyboard(path: str | os.PathLike) -> Storyboard:
    """Read a storyboard JSON file; relative media paths resolve against the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoryboardError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise StoryboardError(f"{path}: not a UTF-8 text file") from None
    if not text.strip():
        raise StoryboardError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise StoryboardError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return Storyboard.from_dict(data, base_dir=path.parent.resolve())


def save_storyboard(board: Storyboard, path: str | os.PathLike) -> None:
    """Write a storyboard as JSON, media paths relative to the file's folder; atomic on POSIX."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(board.to_dict(relative_to=path.parent.resolve()), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prompts_from_stream(text: str, seconds_per_prompt: float) -> tuple[PromptSegment, ...]:
    """An SVI prompt-stream file (one prompt per line, '#' comments) as back-to-back segments.

    Unlike the official loader this never executes the file (SVI_SPEC 2.5)."""
    lines = [ln.strip() for ln in text.splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    return tuple(
        PromptSegment(start=i * seconds_per_prompt, end=(i + 1) * seconds_per_prompt, text=p)
        for i, p in enumerate(prompts)
    )


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _segment_problems(track: str, segs) -> list[str]:
    out = []
    for i, seg in enumerate(segs):
        if not _finite(seg.start) or not _finite(seg.end):
            out.append(f"{track}[{i}]: start and end must be numbers")
            continue
        if seg.start < 0:
            out.append(f"{track}[{i}].start: must be >= 0, got {seg.start:g}")
        if seg.end <= seg.start:
            out.append(f"{track}[{i}].end: must be greater than start ({seg.end:g} <= {seg.start:g})")
        if seg.end > MAX_DURATION_S:
            out.append(f"{track}[{i}].end: beyond the {MAX_DURATION_S:g} s limit ({seg.end:g})")
    ordered = sorted(
        (i for i, s in enumerate(segs) if _finite(s.start) and _finite(s.end)), key=lambda i: segs[i].start
    )
    for a, b in zip(ordered, ordered[1:]):
        if segs[b].start < segs[a].end - 1e-9:
            out.append(f"{track}[{b}]: overlaps {track}[{a}] ({segs[b].start:g} < {segs[a].end:g})")
    return out
