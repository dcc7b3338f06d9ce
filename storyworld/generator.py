"""Render storyworld videos: frames, captions, audio, a keypoint stream and per-frame ground truth.

Everything is a pure function of (scene specs, frame counts, seed, size, fps): the same arguments
give identical arrays. Randomness comes from numpy SeedSequences keyed by (seed, scene index, role),
so the audio does not change when a scene's layout does, and vice versa.

A video is a list of scenes; a scene is one caption. At a caption change the scene cuts: new
backdrop, new object, the figure re-placed. The audio and (if given) the keypoint stream run across
the cuts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .audio import SAMPLE_RATE, loudness_envelope, speech_like
from .backdrop import render_backdrop
from .draw import EXTENT, draw_shape
from .figure import draw_figure
from .skeleton import BODY_PROPORTIONS, NUM_LANDMARKS, POSE_LAYOUT, action_keypoints, to_pixels
from .world import COLOURS, SceneSpec, caption_of, parse_caption, random_scene

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS = 128, 96, 8
MIN_SIZE = 64  # px on either side: below this the figure's mouth is under a pixel tall
OBJECT_SIZE = 0.1  # object unit radius, fraction of H (~10 px at 96 px)
GROW_RANGE = (0.7, 1.4)  # "grows": size factor at the first and the last frame of the scene
PAN_SPEED = 0.2  # frame widths per second
FIGURE_INSET = 0.28  # hip midpoint from the frame's side edge, fraction of H
_AUDIO_ROLE, _LAYOUT_ROLE, _POSE_ROLE = 1, 2, 3


@dataclass(frozen=True)
class SceneLayout:
    """What the seed decides about a scene beyond its caption (pixels, seconds)."""

    figure_side: str  # "left" / "right": which side of the frame the figure stands on
    figure_x: float  # hip midpoint column
    x_start: float  # object centre column at the first frame
    x_end: float  # ... and at the last (differs only for "moves left/right")
    y: float  # object centre row (the floor of a bounce)
    bounce_top: float  # highest centre row of a bounce
    bounce_period: float  # seconds per bounce
    bounce_phase: float
    size: float  # object unit radius in px before growing
    spin: float  # radians per second (0 unless "spins")
    world_x: float  # where in the world the backdrop starts, px
    pan_px: int  # total camera travel in px over the scene


@dataclass(frozen=True)
class FrameTruth:
    """Ground truth of one frame. Positions are normalised (x / W, y / H)."""

    frame: int
    scene: int
    caption: str
    place: str
    time: str
    colour: str
    shape: str
    motion: str
    action: str | None
    object_xy: tuple[float, float]
    object_size: float  # unit radius in px
    object_angle: float  # radians
    pan_offset: int  # camera position in px from the panorama start
    figure: bool  # figure drawn in this frame
    mouth: float  # mouth opening in [0, 1] (0 when no figure)
    keypoints: np.ndarray = field(repr=False)  # (33, 3) x / W, y / H, visibility

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "keypoints"}
        d["object_xy"] = list(self.object_xy)
        d["keypoints"] = np.round(self.keypoints, 5).tolist()
        return d


@dataclass(frozen=True)
class CaptionSpan:
    start: int  # first frame
    end: int  # one past the last frame
    text: str


@dataclass(frozen=True)
class Video:
    """A rendered storyworld video and its ground truth."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    fps: int
    audio: np.ndarray  # (round(N * sample_rate / fps),) float32 mono in [-1, 1]
    sample_rate: int
    keypoints: np.ndarray  # (N, 33, 3) float32, MediaPipe pose layout; visibility 0 where no figure
    captions: tuple[CaptionSpan, ...]
    truth: tuple[FrameTruth, ...]
    scenes: tuple[SceneSpec, ...]
    layouts: tuple[SceneLayout, ...]
    pose_layout: str = POSE_LAYOUT

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.frames.shape[2], self.frames.shape[1]

    def caption_at(self, frame: int) -> str:
        for span in self.captions:
            if span.start <= frame < span.end:
                return span.text
        raise IndexError(f"frame {frame} outside the video (0..{len(self.frames) - 1})")


def _check_size(width: int, height: int, fps: int) -> None:
    if width < MIN_SIZE or height < MIN_SIZE:
        raise ValueError(f"frame size must be at least {MIN_SIZE}x{MIN_SIZE} px, got {width}x{height}")
    if width > 4096 or height > 4096:
        raise ValueError(f"frame size must be at most 4096 px a side, got {width}x{height}")
    if not 4 <= fps <= 60:
        raise ValueError(f"fps must be in 4..60, got {fps}")


def scene_layout(spec: SceneSpec, n_frames: int, width: int, height: int, fps: int,
                 rng: np.random.Generator) -> SceneLayout:
    """Draw a layout for `spec`: the figure on one side, the object in the rest of the frame."""
    side = "left" if rng.random() < 0.5 else "right"
    figure_x = FIGURE_INSET * height if side == "left" else width - FIGURE_INSET * height
    size = OBJECT_SIZE * height * rng.uniform(0.9, 1.15)
    grow = GROW_RANGE[1] if spec.motion == "grows" else 1.0
    ext = EXTENT[spec.shape] * size * grow  # farthest object pixel from its centre
    margin = 0.04 * width
    lo, hi = ext + margin, width - ext - margin
    if spec.action is not None:  # keep the object clear of the figure's reach where there is room
        clear = (BODY_PROPORTIONS.shoulder_half + BODY_PROPORTIONS.upper_arm) * height + 0.5 * ext
        if side == "left":
            lo = max(lo, figure_x + clear)
        else:
            hi = min(hi, figure_x - clear)
    if lo > hi:
        lo = hi = (lo + hi) / 2
    x = rng.uniform(lo, hi)
    x_start, x_end = {"moves left": (hi, lo), "moves right": (lo, hi)}.get(spec.motion, (x, x))
    y_lo, y_hi = max(0.28 * height, ext + 1), min(0.72 * height, height - ext - 1)
    y = rng.uniform(y_lo, max(y_lo, y_hi))
    bounce_top = max(0.3 * height, ext + 1)
    if spec.motion == "bounces":
        y = min(0.8 * height, height - ext - 1)
    spin = rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 3.0) if spec.motion == "spins" else 0.0
    duration = (n_frames - 1) / fps
    pan_px = int(np.ceil(PAN_SPEED * width * duration)) if spec.pan else 0
    return SceneLayout(
        figure_side=side, figure_x=float(figure_x), x_start=float(x_start), x_end=float(x_end), y=float(y),
        bounce_top=float(bounce_top), bounce_period=float(rng.uniform(0.8, 1.4)),
        bounce_phase=float(rng.uniform(0, 1)), size=float(size), spin=float(spin),
        world_x=float(rng.uniform(0, 20 * height)), pan_px=pan_px)


def object_track(spec: SceneSpec, layout: SceneLayout, n_frames: int, fps: int) -> dict[str, np.ndarray]:
    """Per-frame object centre (px), size (px) and angle (rad) over the scene."""
    t = np.arange(n_frames) / fps
    u = t / t[-1] if n_frames > 1 else np.zeros(1)  # scene progress 0..1
    x = layout.x_start + (layout.x_end - layout.x_start) * u
    y = np.full(n_frames, layout.y)
    if spec.motion == "bounces":
        y = layout.y - (layout.y - layout.bounce_top) * np.abs(np.sin(np.pi * (t / layout.bounce_period
                                                                              + layout.bounce_phase)))
    size = np.full(n_frames, layout.size)
    if spec.motion == "grows":
        size = layout.size * (GROW_RANGE[0] + (GROW_RANGE[1] - GROW_RANGE[0]) * u)
    return {"x": x, "y": y, "size": size, "angle": layout.spin * t}


def _pan_offsets(spec: SceneSpec, layout: SceneLayout, n_frames: int) -> np.ndarray:
    u = np.arange(n_frames) / max(n_frames - 1, 1)
    if spec.pan == "right":  # the camera moves right, so the land slides left
        return np.round(u * layout.pan_px).astype(int)
    if spec.pan == "left":
        return np.round((1 - u) * layout.pan_px).astype(int)
    return np.zeros(n_frames, int)


def render(scenes: Sequence[SceneSpec | str] | SceneSpec | str, frames_per_scene: int | Sequence[int] = 17,
           seed: int = 0, *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT, fps: int = DEFAULT_FPS,
           keypoints: np.ndarray | None = None, audio: np.ndarray | None = None) -> Video:
    """Render scenes (specs or captions) into one video.

    Args:
        scenes: a SceneSpec or caption, or a sequence of them (one per scene, cutting between them).
        frames_per_scene: int (default 17, one storyworld-tiny clip) or one int per scene.
        seed: decides layouts, speech and actions (int, default 0).
        width, height: frame size in px (default 128x96; at least 64 a side).
        fps: frames per second (default 8).
        keypoints: optional (N, 33, 2|3) stream (x / W, y / H) that drives the figure instead of
            the scene's action; N must cover the whole video.
        audio: optional mono float waveform at 16 kHz that drives the mouth instead of generated
            speech; it is padded with silence or cut to the video's length.
    """
    # 1. Check inputs.
    _check_size(width, height, fps)
    if isinstance(scenes, (SceneSpec, str)):
        scenes = [scenes]
    specs = [parse_caption(s) if isinstance(s, str) else s for s in scenes]
    if not specs:
        raise ValueError("render needs at least one scene")
    for s in specs:
        if not isinstance(s, SceneSpec):
            raise TypeError(f"scenes must be SceneSpec or caption strings, got {type(s).__name__}")
    counts = [frames_per_scene] * len(specs) if isinstance(frames_per_scene, (int, np.integer)) \
        else list(frames_per_scene)
    if len(counts) != len(specs) or any(int(c) < 1 for c in counts):
        raise ValueError(f"frames_per_scene must be a positive int or one per scene ({len(specs)}), got {counts}")
    counts = [int(c) for c in counts]
    n_total = sum(counts)
    if keypoints is not None:
        keypoints = np.asarray(keypoints, np.float32)
        if keypoints.ndim != 3 or keypoints.shape[1] != NUM_LANDMARKS or keypoints.shape[2] not in (2, 3) \
                or keypoints.shape[0] < n_total:
            raise ValueError(f"keypoints must be (N >= {n_total}, {NUM_LANDMARKS}, 2|3) in the {POSE_LAYOUT} "
                             f"layout, got {keypoints.shape}")

    # 2. Audio, and the mouth opening it gives each frame.
    n_samples = int(round(n_total * SAMPLE_RATE / fps))
    if audio is None:
        wave = speech_like(n_samples / SAMPLE_RATE, np.random.default_rng([seed, _AUDIO_ROLE]))
    else:
        wave = np.asarray(audio, np.float32)
        if wave.ndim != 1:
            raise ValueError(f"audio must be mono (1-D) at {SAMPLE_RATE} Hz, got shape {wave.shape}")
        wave = np.pad(wave[:n_samples], (0, max(0, n_samples - wave.shape[0])))
    mouth = loudness_envelope(wave, n_total, fps)

    # 3. Scenes, frame by frame.
    frames = np.empty((n_total, height, width, 3), np.uint8)
    kp_out = np.zeros((n_total, NUM_LANDMARKS, 3), np.float32)
    truth, spans, layouts = [], [], []
    start = 0
    for si, (spec, n) in enumerate(zip(specs, counts)):
        layout = scene_layout(spec, n, width, height, fps, np.random.default_rng([seed, si, _LAYOUT_ROLE]))
        layouts.append(layout)
        caption = caption_of(spec)
        spans.append(CaptionSpan(start, start + n, caption))
        backdrop = render_backdrop(spec.place, spec.time, height, width, layout.world_x, layout.pan_px)
        offsets = _pan_offsets(spec, layout, n)
        track = object_track(spec, layout, n, fps)
        if spec.action is None:
            kp = None
        elif keypoints is not None:
            kp = keypoints[start:start + n]
            if kp.shape[2] == 2:
                kp = np.concatenate([kp, np.ones((*kp.shape[:2], 1), np.float32)], -1)
        else:
            kp = action_keypoints(spec.action, n, fps, layout.figure_x, width, height,
                                  np.random.default_rng([seed, si, _POSE_ROLE]))
        colour = COLOURS[spec.colour]
        for i in range(n):
            f = start + i
            canvas = backdrop.frame(int(offsets[i]))
            x, y, size, angle = (float(track[k][i]) for k in ("x", "y", "size", "angle"))
            draw_shape(canvas, spec.shape, x, y, size, angle, colour)
            if kp is not None:
                kp_out[f] = kp[i]
                draw_figure(canvas, to_pixels(kp[i], width, height), float(mouth[f]))
            np.clip(canvas + 0.5, 0, 255, out=canvas)
            frames[f] = canvas.astype(np.uint8)
            truth.append(FrameTruth(
                frame=f, scene=si, caption=caption, place=spec.place, time=spec.time, colour=spec.colour,
                shape=spec.shape, motion=spec.motion, action=spec.action, object_xy=(x / width, y / height),
                object_size=size, object_angle=angle, pan_offset=int(offsets[i]), figure=kp is not None,
                mouth=float(mouth[f]) if kp is not None else 0.0, keypoints=kp_out[f]))
        start += n
    return Video(frames=frames, fps=fps, audio=wave.astype(np.float32), sample_rate=SAMPLE_RATE, keypoints=kp_out,
                 captions=tuple(spans), truth=tuple(truth), scenes=tuple(specs), layouts=tuple(layouts))


def random_specs(seed: int, n_scenes: int = 1, **kw) -> list[SceneSpec]:
    """`n_scenes` random SceneSpecs from one seed (see world.random_scene for the options)."""
    rng = np.random.default_rng([seed, 0])
    return [random_scene(rng, **kw) for _ in range(n_scenes)]


def render_random(seed: int, n_scenes: int = 1, frames_per_scene: int | Sequence[int] = 17, **kw) -> Video:
    """A video of `n_scenes` random scenes, all drawn from `seed`.

    Keyword arguments go to `render` (width, height, fps, keypoints, audio)."""
    return render(random_specs(seed, n_scenes), frames_per_scene, seed, **kw)
