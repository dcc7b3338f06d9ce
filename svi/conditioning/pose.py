"""Pose conditioning: body keypoints from a driving video, stored once, retimed and sliced per clip.

Extraction runs MediaPipe's Tasks PoseLandmarker (VIDEO mode: it tracks between frames) with the
model file bundled in assets/pose/; nothing is downloaded. The result is a `PoseTrack`: 33
landmarks per frame in normalised image coordinates with per-landmark visibility and presence, at
the video's own fps, saved as JSON (or npz). `python -m svi.conditioning.pose VIDEO --out POSE.json`
(and `python app.py pose ...`) runs it with a progress bar and a report.

On the timeline a pose segment plays its stream from `offset` at `speed`; output frame g of a
segment starting at frame s0 shows the stream at time offset + (g - s0) / fps * speed. The
planner's MediaPieces carry exactly that, per clip, so `slice_pose` gives clip k the poses of the
frames it draws: its m carried frames repeat clip k-1's last poses and frame m is the next one
(no off-by-one, unlike the official pointer; SVI_SPEC 2.8).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..presets import ASSETS_DIR
from . import require_media_file, track_for

POSE_MODEL = ASSETS_DIR / "pose" / "pose_landmarker_full.task"
FORMAT_NAME = "svi-pose"
FORMAT_VERSION = 1
LANDMARK_SET = "mediapipe-pose-33"
N_LANDMARKS = 33
LANDMARK_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
DEFAULT_FPS = 25.0  # for a stream that declares no rate (a still image)
MAX_SIDE = 640  # frames are downscaled to this long side before detection: the landmarker runs at 256 px


class PoseError(ValueError):
    """A pose file or driving video that cannot be used; the message says which and why."""


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class PoseFrames:
    """Poses on an output frame grid (one clip, or any run of frames)."""

    keypoints: np.ndarray  # (F, 33, 2) float32, normalised x, y of the *source* frame
    scores: np.ndarray  # (F, 33) float32 in [0, 1]; 0 where a landmark is not seen
    present: np.ndarray  # (F,) bool: a person is drawn at this frame
    width: int  # source frame size the coordinates refer to
    height: int

    def __len__(self) -> int:
        return self.keypoints.shape[0]


@dataclass(frozen=True, eq=False)
class PoseTrack:
    """The keypoint stream of one driving video, at its own fps."""

    keypoints: np.ndarray  # (T, 33, 2) float32 normalised x, y (may leave [0, 1] for off-frame joints)
    z: np.ndarray  # (T, 33) float32 MediaPipe relative depth (hips ~ 0, smaller = nearer)
    visibility: np.ndarray  # (T, 33) float32
    presence: np.ndarray  # (T, 33) float32
    detected: np.ndarray  # (T,) bool: the landmarker found a person
    fps: float
    width: int
    height: int
    source: str | None = None
    model: str | None = None
    notes: tuple[str, ...] = ()
    smoothing: float = 0.0  # sigma in frames of the smoothing applied (0: raw)

    def __post_init__(self):
        t = self.keypoints.shape[0]
        for name, shape in (("keypoints", (t, N_LANDMARKS, 2)), ("z", (t, N_LANDMARKS)),
                            ("visibility", (t, N_LANDMARKS)), ("presence", (t, N_LANDMARKS)), ("detected", (t,))):
            if getattr(self, name).shape != shape:
                raise PoseError(f"pose track: {name} has shape {getattr(self, name).shape}, expected {shape}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise PoseError(f"pose track: fps must be positive, got {self.fps}")
        if self.width <= 0 or self.height <= 0:
            raise PoseError(f"pose track: frame size must be positive, got {self.width}x{self.height}")

    @property
    def n_frames(self) -> int:
        return self.keypoints.shape[0]

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    @property
    def scores(self) -> np.ndarray:
        """(T, 33) per-landmark confidence: min(visibility, presence), 0 on frames without a person."""
        return np.where(self.detected[:, None], np.minimum(self.visibility, self.presence), 0.0).astype(np.float32)

    @property
    def confidence(self) -> np.ndarray:
        """(T,) per-frame confidence: the mean landmark score, i.e. how much of the body is seen
        clearly (1: every landmark; a head-and-shoulders shot scores about 0.4; 0: no person)."""
        return self.scores.mean(axis=1)

    @property
    def missing_ranges(self) -> list[tuple[int, int]]:
        """[start, end) runs of frames without a person."""
        return _runs(~self.detected)

    # ------------------------------------------------------------------ temporal processing
    def fill_gaps(self, max_gap: int = 3) -> "PoseTrack":
        """Linearly interpolate runs of at most `max_gap` missing frames between two detections
        (a detector blink); longer gaps stay empty."""
        kp, z, vis, pres, det = (a.copy() for a in (self.keypoints, self.z, self.visibility, self.presence,
                                                    self.detected))
        for a, b in self.missing_ranges:
            if a == 0 or b == self.n_frames or b - a > max_gap:
                continue
            w = (np.arange(a, b) - (a - 1)) / (b - (a - 1))  # (gap,) in (0, 1)
            for arr in (kp, z, vis, pres):
                arr[a:b] = arr[a - 1] + (arr[b] - arr[a - 1]) * w.reshape(-1, *([1] * (arr.ndim - 1)))
            det[a:b] = True
        return replace(self, keypoints=kp, z=z, visibility=vis, presence=pres, detected=det)

    def smoothed(self, sigma: float = 1.0) -> "PoseTrack":
        """Light temporal smoothing: a Gaussian of `sigma` frames, weighted by each landmark's score,
        so a blurred or occluded joint leans on its confident neighbours. Frames without a person
        neither contribute nor change."""
        if sigma <= 0 or self.n_frames < 2:
            return self
        radius = max(1, int(math.ceil(3 * sigma)))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)  # (2r+1,)
        w = self.scores.astype(np.float64) + 1e-6 * self.detected[:, None]  # (T, 33), >0 where detected
        num = np.zeros((self.n_frames, N_LANDMARKS, 3))
        den = np.zeros((self.n_frames, N_LANDMARKS))
        vals = np.concatenate([self.keypoints, self.z[..., None]], axis=2).astype(np.float64)  # (T, 33, 3)
        for k, tap in zip(range(-radius, radius + 1), taps):
            lo, hi = max(0, -k), min(self.n_frames, self.n_frames - k)  # t in [lo, hi) reads t + k
            num[lo:hi] += tap * (w[lo + k:hi + k, :, None] * vals[lo + k:hi + k])
            den[lo:hi] += tap * w[lo + k:hi + k]
        out = np.where(den[..., None] > 0, num / np.maximum(den, 1e-12)[..., None], vals)
        out = np.where(self.detected[:, None, None], out, vals).astype(np.float32)
        return replace(self, keypoints=out[..., :2], z=out[..., 2], smoothing=float(sigma))

    def sample(self, times_s: np.ndarray, beyond: str = "loop") -> PoseFrames:
        """Poses at stream times `times_s` (seconds), linearly interpolated between source frames.

        Time t shows source frame t * fps; a time on a frame gives that frame exactly. Outside the
        stream, `beyond` decides: "loop" (the official behaviour: the pose video repeats), "hold"
        (the first / last frame), or "empty" (no person).
        """
        if beyond not in ("loop", "hold", "empty"):
            raise ValueError(f"beyond must be 'loop', 'hold' or 'empty', got {beyond!r}")
        u = np.asarray(times_s, dtype=np.float64) * self.fps  # (n,) fractional source frame
        n, T = len(u), self.n_frames
        i0 = np.floor(u + 1e-6).astype(np.int64)
        frac = np.clip(u - i0, 0.0, 1.0)
        frac[frac < 1e-6] = 0.0
        inside = (i0 >= 0) & (i0 < T)
        if beyond == "loop":
            a, b = np.mod(i0, T), np.mod(i0 + 1, T)
        else:
            a, b = np.clip(i0, 0, T - 1), np.clip(i0 + 1, 0, T - 1)
        scores, det = self.scores, self.detected
        # On a frame: that frame. Between two detected frames: interpolate. Between a detected and a
        # missing one: the detected one (a blink of the detector costs no pose), never a blend.
        both = det[a] & det[b] & (frac > 0)
        use_b = (frac > 0) & det[b] & ~det[a]
        near = np.where(use_b, b, a)
        w = np.where(both, frac, 0.0)[:, None, None]  # (n, 1, 1)
        kp = np.where(both[:, None, None], self.keypoints[a] * (1 - w) + self.keypoints[b] * w,
                      self.keypoints[near])
        sc = np.where(both[:, None], scores[a] * (1 - w[..., 0]) + scores[b] * w[..., 0], scores[near])
        present = det[near] | both
        if beyond == "empty":
            present &= inside
        kp = np.where(present[:, None, None], kp, 0.0).astype(np.float32)
        sc = np.where(present[:, None], sc, 0.0).astype(np.float32)
        return PoseFrames(kp.reshape(n, N_LANDMARKS, 2), sc.reshape(n, N_LANDMARKS), present, self.width, self.height)

    def retime(self, fps: float, n_frames: int, offset: float = 0.0, speed: float = 1.0,
               beyond: str = "loop") -> PoseFrames:
        """`n_frames` output frames at `fps`: frame g shows the stream at offset + g / fps * speed."""
        return self.sample(offset + np.arange(n_frames) / fps * speed, beyond)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        r5 = lambda a: np.round(a.astype(np.float64), 5).tolist()  # noqa: E731 - 1e-5 of a frame is sub-pixel
        return {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "landmarks": LANDMARK_SET,
            "fps": self.fps, "width": self.width, "height": self.height, "n_frames": self.n_frames,
            "source": self.source, "model": self.model, "notes": list(self.notes), "smoothing": self.smoothing,
            "detected": self.detected.astype(int).tolist(), "confidence": r5(self.confidence),
            "keypoints": r5(self.keypoints), "z": r5(self.z), "visibility": r5(self.visibility),
            "presence": r5(self.presence),
        }

    @classmethod
    def from_dict(cls, data, where: str = "pose file") -> "PoseTrack":
        if not isinstance(data, dict):
            raise PoseError(f"{where}: expected a JSON object")
        if data.get("format") != FORMAT_NAME:
            raise PoseError(f"{where}: not an {FORMAT_NAME} file (format={data.get('format')!r}); make one with "
                            f"`python app.py pose VIDEO --out POSE.json`")
        if data.get("version") != FORMAT_VERSION:
            raise PoseError(f"{where}: this build reads version {FORMAT_VERSION}, got {data.get('version')!r}")
        if data.get("landmarks", LANDMARK_SET) != LANDMARK_SET:
            raise PoseError(f"{where}: landmark set {data.get('landmarks')!r} is not {LANDMARK_SET}")
        missing = [k for k in ("fps", "width", "height", "keypoints", "visibility", "presence", "detected")
                   if k not in data]
        if missing:
            raise PoseError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            kp = np.asarray(data["keypoints"], dtype=np.float32)
            t = kp.shape[0] if kp.ndim else 0
            kp = kp.reshape(t, N_LANDMARKS, 2) if t else np.zeros((0, N_LANDMARKS, 2), np.float32)
            arrays = {k: np.asarray(data[k], dtype=np.float32).reshape(t, N_LANDMARKS)
                      for k in ("visibility", "presence")}
            z = np.asarray(data.get("z", np.zeros((t, N_LANDMARKS))), dtype=np.float32).reshape(t, N_LANDMARKS)
            det = np.asarray(data["detected"], dtype=bool).reshape(t)
        except (ValueError, TypeError) as e:
            raise PoseError(f"{where}: keypoint arrays have the wrong shape ({e})") from None
        if t == 0:
            raise PoseError(f"{where}: holds no frames")
        if not all(np.isfinite(a).all() for a in (kp, z, *arrays.values())):
            raise PoseError(f"{where}: keypoint arrays contain NaN or infinity")
        try:
            return cls(kp, z, arrays["visibility"], arrays["presence"], det, float(data["fps"]), int(data["width"]),
                       int(data["height"]), data.get("source"), data.get("model"), tuple(data.get("notes", ())),
                       float(data.get("smoothing", 0.0)))
        except PoseError as e:
            raise PoseError(f"{where}: {e}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write .json (readable, the default) or .npz (compact); atomic replace."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if path.suffix.lower() == ".npz":
            d = self.to_dict()
            meta = {k: v for k, v in d.items() if k not in ("keypoints", "z", "visibility", "presence", "detected",
                                                            "confidence")}
            with open(tmp, "wb") as f:
                np.savez_compressed(f, keypoints=self.keypoints, z=self.z, visibility=self.visibility,
                                    presence=self.presence, detected=self.detected, meta=json.dumps(meta))
        else:
            tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PoseTrack":
        path = Path(path)
        if not path.is_file():
            raise PoseError(f"{path}: pose file not found")
        if path.suffix.lower() == ".npz":
            try:
                with np.load(path, allow_pickle=False) as z:
                    data = json.loads(str(z["meta"]))
                    data.update({k: z[k] for k in ("keypoints", "z", "visibility", "presence", "detected")})
            except (OSError, ValueError, KeyError) as e:
                raise PoseError(f"{path}: not a readable pose .npz ({e})") from None
            return cls.from_dict(data, str(path))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PoseError(f"{path}: not a valid pose JSON file ({e})") from None
        return cls.from_dict(data, str(path))

    def report(self) -> str:
        """A short human summary: frames, people found, gaps, confidence."""
        det = int(self.detected.sum())
        lines = [f"{self.n_frames} frames at {self.fps:g} fps ({self.duration_s:.2f} s), {self.width}x{self.height}; "
                 f"person found in {det}/{self.n_frames} frames; mean confidence "
                 f"{float(self.confidence[self.detected].mean()) if det else 0.0:.2f}"]
        gaps = self.missing_ranges
        if gaps:
            shown = ", ".join(f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in gaps[:12])
            more = f" and {len(gaps) - 12} more runs" if len(gaps) > 12 else ""
            lines.append(f"frames without a person: {shown}{more}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def load_pose(path: str | os.PathLike) -> PoseTrack:
    return PoseTrack.load(path)


def conditioning_track(path: str | os.PathLike, *, max_gap: int = 3, smooth: float = 1.0) -> PoseTrack:
    """A pose file ready for conditioning: short detector gaps filled, lightly smoothed. Memoised on
    (path, size, mtime), so each asset is processed once however many clips use it."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        raise PoseError(f"{path}: pose file not found") from None
    return _conditioning_track(path, st.st_size, st.st_mtime_ns, max_gap, float(smooth))


@lru_cache(maxsize=16)
def _conditioning_track(path: str, size: int, mtime_ns: int, max_gap: int, smooth: float) -> PoseTrack:
    return PoseTrack.load(path).fill_gaps(max_gap).smoothed(smooth)


# ---------------------------------------------------------------------------------------------- slicing
def slice_pose(tracks: PoseTrack | Mapping[str, PoseTrack], pieces: Sequence, frames: int, fps: float, *,
               beyond: str = "loop") -> PoseFrames:
    """Poses for one clip from its MediaPieces (ClipSpec.pose), on the clip's F-frame grid.

    Clip-local frame dst_start + i shows its stream at src_start_s + i * speed / fps. Frames no
    piece covers have no person (a black pose map).

    Args:
        tracks: one PoseTrack, or a mapping from piece.path to PoseTrack.
        pieces: the clip's MediaPiece tuple.
        frames: F.
        fps: the plan's fps (ClipPlan.fps).
        beyond: past the stream's end: "loop" (default, as the official code), "hold" or "empty".
    """
    kp = np.zeros((frames, N_LANDMARKS, 2), np.float32)
    sc = np.zeros((frames, N_LANDMARKS), np.float32)
    present = np.zeros(frames, bool)
    size = None
    for piece in pieces:
        track = _track_for(tracks, piece)
        if piece.dst_start < 0 or piece.dst_start + piece.length > frames:
            raise ValueError(f"piece [{piece.dst_start}, {piece.dst_start + piece.length}) lies outside the "
                             f"clip's {frames} frames")
        times = piece.src_start_s + np.arange(piece.length) * (piece.speed / fps)
        got = track.sample(times, beyond)
        sl = slice(piece.dst_start, piece.dst_start + piece.length)
        kp[sl], sc[sl], present[sl] = got.keypoints, got.scores, got.present
        size = size or (track.width, track.height)
    if size is None:
        size = (tracks.width, tracks.height) if isinstance(tracks, PoseTrack) else (1, 1)
    return PoseFrames(kp, sc, present, *size)


def _track_for(tracks, piece) -> PoseTrack:
    return track_for(tracks, piece, PoseError, "pose")


# ---------------------------------------------------------------------------------------------- extraction
@dataclass
class _VideoFrames:
    fps: float
    width: int
    height: int
    total: int | None  # frame count from the header, if it has one
    frames: object = field(repr=False)  # iterator of (H, W, 3) uint8 at detection size
    notes: list = field(default_factory=list)


def _open_video(path: str, max_side: int) -> tuple[object, _VideoFrames]:
    import av

    require_media_file(path, PoseError, "video")
    try:
        container = av.open(path)
    except Exception as e:  # PyAV raises a family of FFmpeg errors
        raise PoseError(f"{path}: cannot read the video; the file is corrupt or not a video ({e})") from None
    if not container.streams.video:
        kinds = sorted({st.type for st in container.streams})
        container.close()
        if not kinds:  # an empty track is dropped by the demuxer: what a zero-frame mp4 looks like
            raise PoseError(f"{path}: the video has no frames (zero length)")
        raise PoseError(f"{path}: has no video stream (only {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    notes = []
    fps = float(rate) if rate else 0.0
    if not (math.isfinite(fps) and fps > 0):
        fps = DEFAULT_FPS
        notes.append(f"the video declares no frame rate; assumed {DEFAULT_FPS:g} fps")
    w, h = stream.codec_context.width, stream.codec_context.height
    if not w or not h:
        container.close()
        raise PoseError(f"{path}: the video stream has no frame size; the file is corrupt")
    scale = min(1.0, max_side / max(w, h))
    dw, dh = max(2, int(round(w * scale))), max(2, int(round(h * scale)))
    total = stream.frames or None

    def frames():
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24", width=dw, height=dh)
        except Exception as e:  # a damaged tail: keep what decoded, say so
            notes.append(f"decoding stopped early ({type(e).__name__}: {e})")

    return container, _VideoFrames(fps, w, h, total, frames(), notes)


def extract_pose(video: str | os.PathLike, model_path: str | os.PathLike | None = None, *,
                 max_side: int = MAX_SIDE, progress: bool = True,
                 on_progress: Callable[[int, int | None], None] | None = None,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5) -> PoseTrack:
    """Body keypoints of the (first) person in every frame of `video`.

    Args:
        model_path (default assets/pose/pose_landmarker_full.task): a MediaPipe pose landmarker .task.
        max_side (int, default 640): frames are downscaled to this long side before detection.
        progress (bool, default True): a tqdm bar on stderr.
        on_progress: called as on_progress(frames_done, total_or_None) after each frame (UI hook).

    Raises:
        PoseError: missing/corrupt/zero-length video, a missing model file, or no person in any frame.
    """
    # 1. Check inputs
    video = os.fspath(video)
    model_path = Path(model_path) if model_path is not None else POSE_MODEL
    if not model_path.is_file():
        raise PoseError(f"pose landmarker model not found: {model_path} (bundled at {POSE_MODEL}; "
                        f"any MediaPipe pose_landmarker_*.task works via model_path / --model)")
    container, src = _open_video(video, max_side)
    try:
        # 2. Build the landmarker (VIDEO mode: tracks the person from frame to frame)
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ info lines
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)), running_mode=vision.RunningMode.VIDEO,
            num_poses=1, min_pose_detection_confidence=min_detection_confidence,
            min_pose_presence_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)
        try:
            landmarker = vision.PoseLandmarker.create_from_options(options)
        except Exception as e:
            raise PoseError(f"{model_path}: cannot load the pose landmarker model ({e})") from None

        # 3. Detect frame by frame
        from tqdm import tqdm

        rows: list[np.ndarray] = []  # per frame (33, 5): x, y, z, visibility, presence
        det: list[bool] = []
        empty = np.zeros((N_LANDMARKS, 5), np.float32)
        last_ms = -1
        bar = tqdm(total=src.total, unit="frame", desc=f"pose {Path(video).name}", disable=not progress,
                   file=sys.stderr, leave=False)
        with landmarker, bar:
            for i, rgb in enumerate(src.frames):
                ms = max(int(round(i * 1000.0 / src.fps)), last_ms + 1)  # VIDEO mode needs rising timestamps
                last_ms = ms
                result = landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                              data=np.ascontiguousarray(rgb)), ms)
                if result.pose_landmarks:
                    rows.append(np.array([[p.x, p.y, p.z, p.visibility or 0.0, p.presence or 0.0]
                                          for p in result.pose_landmarks[0]], np.float32))
                    det.append(True)
                else:
                    rows.append(empty)
                    det.append(False)
                bar.update(1)
                if on_progress is not None:
                    on_progress(i + 1, src.total)
    finally:
        container.close()

    # 4. Check the result
    if not rows:
        extra = f" ({src.notes[-1]})" if src.notes else ""
        raise PoseError(f"{video}: the video has no frames (zero length){extra}")
    if not any(det):
        raise PoseError(f"{video}: no person found in any of the {len(rows)} frames; a driving video needs a "
                        f"visible person (full body works best)")
    arr = np.stack(rows)  # (T, 33, 5)
    return PoseTrack(keypoints=arr[..., :2].copy(), z=arr[..., 2].copy(), visibility=arr[..., 3].copy(),
                     presence=arr[..., 4].copy(), detected=np.array(det), fps=src.fps, width=src.width,
                     height=src.height, source=os.path.basename(video), model=model_path.name,
                     notes=tuple(src.notes))


# ---------------------------------------------------------------------------------------------- CLI
def build_parser(prog: str = "python -m svi.conditioning.pose") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Extract body keypoints from a driving video "
                                "(MediaPipe pose landmarker) into a pose file for the storyboard's pose track.")
    p.add_argument("video", help="driving video (mp4, mov, webm, ...; a still image gives one frame)")
    p.add_argument("--out", "-o", help="pose file to write, .json or .npz (default: VIDEO.pose.json)")
    p.add_argument("--model", help=f"pose landmarker .task file (default: {POSE_MODEL})")
    p.add_argument("--max-side", type=int, default=MAX_SIDE, help="downscale frames to this long side first")
    p.add_argument("--smooth", type=float, default=0.0, metavar="SIGMA",
                   help="store keypoints smoothed over SIGMA frames (default 0: raw; conditioning smooths anyway)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m svi.conditioning.pose") -> int:
    """`pose VIDEO --out POSE.json`: extract, save, print a report; exit 2 with a message on bad input."""
    args = build_parser(prog).parse_args(argv)
    out = Path(args.out) if args.out else Path(args.video).with_suffix(".pose.json")
    if out.suffix.lower() not in (".json", ".npz"):
        print(f"error: --out must end in .json or .npz, got {out}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        track = extract_pose(args.video, args.model, max_side=args.max_side, progress=not args.quiet)
    except PoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    if args.smooth > 0:
        track = track.smoothed(args.smooth)
    track.save(out)
    print(track.report())
    print(f"extracted in {elapsed:.1f} s ({track.n_frames / max(elapsed, 1e-9):.1f} frames/s); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
