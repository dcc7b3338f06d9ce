"""Training data: the SVI, talk and dance folder layouts and the storyworld generator (SVI_SPEC 3.2).

A dataset is a list of `VideoItem`s found once (`build_dataset`): unreadable or too-short videos
are skipped with a warning that names the file and why; no usable video at all is a
`DatasetError`. One training sample (`draw_sample`) is an F-frame window of an item with the
augmentation of SVI_SPEC 3.2, decided by a generator seeded from (seed, item, view):

1. window: F consecutive native-fps frames at a uniform start (all valid starts, stride 1);
2. crop (svi and talk; dance is resized whole, as SVI-Dance): one random crop shared by all frames
   with the target aspect, its side in [side - side // 14, side], at a random offset; bilinear
   resize to the training size, rounded to uint8 as the renderer's carried frames are;
3. padding frame: a uniformly random frame of the clip (or of the whole video, `ref_from=video`).

Layouts:
- svi: `root/<category>/<category>.csv` (columns Filename, Video Description) beside the videos;
  a video with no csv row is captioned "A video from <category> category" (the official fallback).
  A flat root (videos directly in it) works the same with the root as the category.
- talk: each video with a same-stem .wav beside it, in a sibling `audios/` folder, or an
  `audio.wav` in its own folder; features on the video frame grid (svi.conditioning.audio).
- dance: each video with a pose file: `<stem>.pose.json` (or .json/.npz) beside it, in a sibling
  `poses/` folder, or `pose.json` in its folder; the svi-pose format of svi.conditioning.pose or the
  keypoint JSON the storyworld generator writes.
- storyworld: videos rendered on the fly by the `storyworld` package (captions, audio, skeleton).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as Fn

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
CROP_FRACTION = 14  # crop side drawn in [side - side // 14, side] (SVI_SPEC 3.2)
TALK_CAPTION = "the person is speaking"  # official training captions (SVI_SPEC 3.2)
DANCE_CAPTION = "the person is dancing"
AUDIO_WINDOW_RADIUS = 2  # +-2 feature frames around each video frame (SVI_SPEC 1.7)


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the folder and what is wrong."""


class DataWarning(UserWarning):
    """A video skipped while reading a dataset (corrupt, too short, missing its audio or pose)."""


@dataclass(frozen=True)
class Geometry:
    """Clip geometry of training samples, resolved from the preset and the data config."""

    frames: int  # F, 4n + 1
    height: int
    width: int
    motion_frames: int  # m: condition frames (with probability p_motion when m > 1)
    padding: str  # "ref" or "zeros"

    @property
    def motion_options(self) -> tuple[int, ...]:
        """Condition-frame counts a step may use: (1,) or (1, m)."""
        return (1,) if self.motion_frames == 1 else (1, self.motion_frames)


@dataclass(frozen=True)
class VideoItem:
    key: str  # stable identity (relative path or storyworld seed): seeds augmentation, names cache files
    caption: str
    video: Path | None = None  # None for generated (storyworld) items
    audio: Path | None = None
    pose: Path | None = None
    seed: int | None = None  # storyworld video seed
    frames: int = 0  # frame count, from the probe
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)  # (width, height)
    conditions: tuple[str, ...] = ()  # "audio" / "pose": conditions a generated item provides


@dataclass
class Dataset:
    kind: str
    root: str | None
    items: list[VideoItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class RawSample:
    """One augmented training clip before encoding. Shapes: F frames of H x W."""

    frames: torch.Tensor  # (F, H, W, 3) uint8
    ref: torch.Tensor  # (H, W, 3) uint8, the padding frame
    caption: str
    meta: dict[str, Any]  # window start, crop box, padding-frame index: for checks and the cache record
    audio: torch.Tensor | None = None  # (F, 5, 1, D) float32 feature windows (talk)
    pose: torch.Tensor | None = None  # (F, H, W, 3) uint8 pose maps (dance)
    mouth: torch.Tensor | None = None  # (F, 2) float32 mouth centre (x, y) in [0, 1] of the frame, NaN unseen (talk)


# ---------------------------------------------------------------------------------------------- discovery
def _videos_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                  and not p.name.startswith("."))


def read_captions(folder: Path) -> dict[str, str]:
    """Filename -> Video Description from `<folder>/<folder name>.csv` (else the folder's only csv)."""
    csv_path = folder / f"{folder.name}.csv"
    if not csv_path.is_file():
        others = sorted(folder.glob("*.csv"))
        if len(others) != 1:
            return {}
        csv_path = others[0]
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "Filename" not in cols or "Video Description" not in cols:
                raise DatasetError(f"{csv_path}: needs the columns 'Filename' and 'Video Description', has {cols}")
            return {row["Filename"].strip(): (row["Video Description"] or "").strip() for row in reader
                    if row.get("Filename")}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{csv_path}: unreadable caption csv ({e})") from None


def _audio_for(video: Path) -> Path | None:
    for cand in (video.with_suffix(".wav"), video.parent.parent / "audios" / f"{video.stem}.wav",
                 video.parent / "audio.wav"):
        if cand.is_file():
            return cand
    return None


def _pose_for(video: Path) -> Path | None:
    stem = video.stem
    for cand in (video.with_name(f"{stem}.pose.json"), video.with_name(f"{stem}.pose.npz"),
                 video.with_suffix(".json"), video.parent.parent / "poses" / f"{stem}.json",
                 video.parent / "pose.json", video.parent / "dwpose.json"):
        if cand.is_file():
            return cand
    return None


def discover(kind: str, root: str | os.PathLike, caption: str | None = None) -> tuple[list[VideoItem], list]:
    """Items of a folder layout (not yet probed) and the files skipped for a missing partner."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    items, skipped = [], []
    captions: dict[Path, dict[str, str]] = {}
    for video in _videos_under(root):
        key = video.relative_to(root).as_posix()
        if kind == "svi":
            if video.parent not in captions:
                captions[video.parent] = read_captions(video.parent)
            text = caption or captions[video.parent].get(video.name)
            items.append(VideoItem(key, text or f"A video from {video.parent.name} category", video=video))
        elif kind == "talk":
            audio = _audio_for(video)
            if audio is None:
                skipped.append((str(video), f"no audio: expected {video.with_suffix('.wav').name} beside it, "
                                            f"in ../audios/ or audio.wav in its folder"))
                continue
            items.append(VideoItem(key, caption or TALK_CAPTION, video=video, audio=audio))
        elif kind == "dance":
            pose = _pose_for(video)
            if pose is None:
                skipped.append((str(video), f"no pose file: expected {video.stem}.pose.json beside it, "
                                            f"../poses/{video.stem}.json or pose.json in its folder"))
                continue
            items.append(VideoItem(key, caption or DANCE_CAPTION, video=video, pose=pose))
        else:
            raise DatasetError(f"unknown dataset layout {kind!r}")
    return items, skipped


# ---------------------------------------------------------------------------------------------- video io
def probe_video(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames, fps, (width, height)) of a video; decodes its first frame so a corrupt file fails here."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.video:
            raise DatasetError("no video stream")
        stream = c.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        first = next(c.decode(video=0), None)
        if first is None:
            raise DatasetError("no decodable frame")
        size = (first.width, first.height)
    with av.open(str(path)) as c:
        frames = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    return frames, fps, size


def read_frames(path: Path, indices: list[int]) -> np.ndarray:
    """uint8 (len(indices), H, W, 3) of the given (any order) frame indices, decoding up to the last."""
    import av

    want = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in want:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= want[-1]:
                break
    missing = [i for i in want if i not in got]
    if missing:
        raise DatasetError(f"{path}: frames {missing[:3]} could not be decoded (file shorter than it claims?)")
    return np.stack([got[i] for i in indices])


# ---------------------------------------------------------------------------------------------- building
def build_dataset(kind: str, root: str | os.PathLike | None, min_frames: int, *, caption: str | None = None,
                  storyworld: dict[str, Any] | None = None, warn: bool = True) -> Dataset:
    """Find, probe and filter the videos of a dataset.

    Args:
        kind: svi, talk, dance or storyworld.
        root: the dataset folder (unused for storyworld).
        min_frames: F; shorter videos are skipped (a clip would need invented frames).
        caption: one caption for every item (overrides csv and layout defaults).
        storyworld: {"videos", "frames", "seed", "width", "height", "fps", "conditions"} for kind=storyworld;
            conditions ("audio", "pose") makes its items talk or dance samples.
    """
    if kind == "storyworld":
        return _storyworld_dataset(min_frames, caption, **(storyworld or {}))
    items, skipped = discover(kind, root, caption)
    good = []
    for item in items:
        try:
            n, fps, size = probe_video(item.video)
        except Exception as e:  # noqa: BLE001 - av raises many types for broken files; each means "skip it"
            skipped.append((str(item.video), f"unreadable video ({type(e).__name__}: {e})"))
            continue
        if n < min_frames:
            skipped.append((str(item.video), f"too short: {n} frames, a training clip needs {min_frames}"))
            continue
        good.append(VideoItem(item.key, item.caption, item.video, item.audio, item.pose, None, n, fps, size))
    if warn:
        for path, reason in skipped:
            warnings.warn(f"skipping {path}: {reason}", DataWarning, stacklevel=2)
    if not good:
        detail = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:5]) or f"no {'/'.join(VIDEO_EXTENSIONS)} files"
        raise DatasetError(f"no usable training videos in {root} (layout {kind!r}): {detail}")
    return Dataset(kind, str(root), good, skipped)


def storyworld_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("storyworld") is not None


def _storyworld_dataset(min_frames: int, caption: str | None, videos: int = 64, frames: int = 33, seed: int = 0,
                        width: int = 128, height: int = 96, fps: int = 8, conditions: tuple[str, ...] = ()) -> Dataset:
    if not storyworld_available():
        raise DatasetError("data.kind=storyworld needs the storyworld package (not found on the path); "
                           "point data.root at a folder of videos instead")
    if frames < min_frames:
        raise DatasetError(f"data.storyworld_frames ({frames}) must be at least the clip length {min_frames}")
    items = []
    for i in range(videos):
        vseed = int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0] >> 1)
        items.append(VideoItem(f"storyworld/{seed}/{i:05d}", caption or "", seed=vseed, frames=frames, fps=float(fps),
                               size=(width, height), conditions=tuple(conditions)))
    return Dataset("storyworld", None, items)


@dataclass
class _Generated:
    frames: np.ndarray  # (N, H, W, 3) uint8
    caption: str
    audio: np.ndarray
    sample_rate: int
    keypoints: np.ndarray  # (N, 33, 3)


_GENERATED: OrderedDict[tuple, _Generated] = OrderedDict()


def _render_storyworld(item: VideoItem) -> _Generated:
    key = (item.seed, item.frames, item.size, item.fps)
    if key not in _GENERATED:
        from storyworld import render_random

        v = render_random(item.seed, 1, item.frames, width=item.size[0], height=item.size[1], fps=int(item.fps))
        _GENERATED[key] = _Generated(v.frames, v.captions[0].text, v.audio, v.sample_rate, v.keypoints)
        while len(_GENERATED) > 8:
            _GENERATED.popitem(last=False)
    return _GENERATED[key]


# ---------------------------------------------------------------------------------------------- augmentation
def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, identical across processes and runs (unlike hash())."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    """Uniform integer in [low, high] inclusive."""
    return low + int(torch.randint(high - low + 1, (1,), generator=gen))


def crop_box(h0: int, w0: int, height: int, width: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) of the SVI random crop with the target aspect a = height / width.

    Width-limited frames (w0 a <= h0) draw crop_w in [w0 - w0 // 14, w0] and crop_h = floor(crop_w a);
    others draw crop_h and crop_w = floor(crop_h / a). Clamped to the frame, at a random offset."""
    a = height / width
    if w0 * a <= h0:
        cw = _randint(w0 - w0 // CROP_FRACTION, w0, gen)
        ch = int(math.floor(cw * a))
    else:
        ch = _randint(h0 - h0 // CROP_FRACTION, h0, gen)
        cw = int(math.floor(ch / a))
    ch, cw = max(1, min(ch, h0)), max(1, min(cw, w0))
    top = _randint(0, h0 - ch, gen)
    left = _randint(0, w0 - cw, gen)
    return top, left, ch, cw


def resize_frames(frames: np.ndarray | torch.Tensor, height: int, width: int,
                  box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """uint8 (n, h0, w0, 3) -> uint8 (n, height, width, 3): optional crop, bilinear resize, rounded."""
    x = torch.as_tensor(np.ascontiguousarray(frames))
    if box is not None:
        top, left, ch, cw = box
        x = x[:, top:top + ch, left:left + cw]
    if tuple(x.shape[1:3]) == (height, width):
        return x.clone()
    x = x.permute(0, 3, 1, 2).float()  # (n, 3, h, w)
    x = Fn.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (n, H, W, 3)


def draw_sample(item: VideoItem, geometry: Geometry, seed: int, *, crop: bool = True, ref_from: str = "clip",
                ) -> RawSample:
    """The augmented clip of `item` decided by `seed` (window, crop, padding frame), conditions included."""
    gen = torch.Generator().manual_seed(seed)
    F, H, W = geometry.frames, geometry.height, geometry.width
    total = item.frames
    if total < F:
        raise DatasetError(f"{item.key}: {total} frames, a clip needs {F}")
    # 1. Window and padding-frame index (all valid starts; the official U[0, total-F-5] excludes the
    #    last five and breaks on videos of F+1..F+5 frames).
    start = _randint(0, total - F, gen)
    ref_index = _randint(start, start + F - 1, gen) if ref_from == "clip" else _randint(0, total - 1, gen)
    indices = list(range(start, start + F))

    # 2. Pixels
    generated = _render_storyworld(item) if item.seed is not None else None
    if generated is not None:
        raw = generated.frames[indices + [ref_index]]
    else:
        raw = read_frames(item.video, indices + [ref_index])  # (F + 1, h0, w0, 3)
    h0, w0 = raw.shape[1:3]
    box = crop_box(h0, w0, H, W, gen) if crop else None
    pixels = resize_frames(raw, H, W, box)  # (F + 1, H, W, 3)
    frames, ref = pixels[:F], pixels[F]
    caption = item.caption or (generated.caption if generated is not None else "")
    meta = {"start": start, "ref_index": ref_index, "box": list(box) if box else None, "source_size": [w0, h0]}

    # 3. Conditions
    audio = pose = mouth = None
    if item.audio is not None or "audio" in item.conditions:
        audio = _audio_window(item, generated, start, F)
        if generated is not None or item.pose is not None:  # keypoints say where the mouth is
            mouth = _mouth_track(item, generated, indices, box, (w0, h0))
    if item.pose is not None or "pose" in item.conditions:
        pose = _pose_maps(item, generated, indices, H, W, box, (w0, h0))
    return RawSample(frames, ref, caption, meta, audio, pose, mouth)


# ---------------------------------------------------------------------------------------------- conditions
_AUDIO_TRACKS: OrderedDict[tuple, np.ndarray] = OrderedDict()


def audio_features(item: VideoItem, generated: _Generated | None) -> np.ndarray:
    """(N, D) per-video-frame librosa features of the item's audio on its frame grid (memoised)."""
    from svi.conditioning.audio import frame_features, load_audio, prepare_audio

    key = (item.key, str(item.audio), item.fps)
    if key not in _AUDIO_TRACKS:
        if generated is not None:
            loaded = prepare_audio(generated.audio, generated.sample_rate, allow_silent=True)
        else:
            loaded = load_audio(item.audio, allow_silent=True)
        _AUDIO_TRACKS[key] = frame_features(loaded.samples, loaded.sr, item.fps)
        while len(_AUDIO_TRACKS) > 64:
            _AUDIO_TRACKS.popitem(last=False)
    return _AUDIO_TRACKS[key]


def _audio_window(item: VideoItem, generated, start: int, frames: int) -> torch.Tensor:
    """(F, 5, 1, D): idx[j, o] = clamp(start + j + o, 0, N - 1), the official window (SVI_SPEC 1.7)."""
    feats = torch.from_numpy(audio_features(item, generated))  # (N, D)
    if feats.shape[0] == 0:
        raise DatasetError(f"{item.audio}: no audio on the video's frame grid")
    j = torch.arange(frames)[:, None]
    o = torch.arange(-AUDIO_WINDOW_RADIUS, AUDIO_WINDOW_RADIUS + 1)[None, :]
    idx = (start + j + o).clamp(0, feats.shape[0] - 1)  # (F, 5)
    return feats[idx][:, :, None, :].float()  # (F, 5, 1, D)


def _pose_frames(item: VideoItem, generated, indices: list[int]):
    """PoseFrames for the given video frame indices (svi-pose tracks or storyworld keypoint files)."""
    from svi.conditioning.pose import PoseError, PoseFrames, PoseTrack

    if generated is not None:
        kp, fps, size = generated.keypoints, item.fps, item.size
        sel = np.clip(np.asarray(indices), 0, len(kp) - 1)
        k = kp[sel]
        scores = k[:, :, 2] if k.shape[2] == 3 else np.ones(k.shape[:2], np.float32)
        return PoseFrames(k[:, :, :2].astype(np.float32), scores.astype(np.float32), scores.max(axis=1) > 0, *size)
    try:
        track = PoseTrack.load(item.pose)
        # Track frame of video frame i at the two rates (equal when the pose came from this video).
        sel = np.clip(np.round(np.asarray(indices) * track.fps / (item.fps or track.fps)).astype(int), 0,
                      track.n_frames - 1)
        return PoseFrames(track.keypoints[sel], track.scores[sel], track.detected[sel], track.width, track.height)
    except PoseError as first_error:
        try:
            doc = json.loads(Path(item.pose).read_text())
            k = np.asarray(doc["keypoints"], np.float32)
            fps = float(doc["fps"])
            w, h = int(doc["width"]), int(doc["height"])
            if k.ndim != 3 or k.shape[1] != 33 or k.shape[2] not in (2, 3):
                raise ValueError(f"keypoints shape {k.shape}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{item.pose}: not a pose track ({first_error}; nor a keypoint file: {e})") from None
        sel = np.clip(np.round(np.asarray(indices) * fps / (item.fps or fps)).astype(int), 0, len(k) - 1)
        ks = k[sel]
        scores = ks[:, :, 2] if ks.shape[2] == 3 else np.ones(ks.shape[:2], np.float32)
        return PoseFrames(ks[:, :, :2], scores, scores.max(axis=1) > 0, w, h)


def _to_crop(keypoints: np.ndarray, box: tuple[int, int, int, int] | None, source_size: tuple[int, int]) -> np.ndarray:
    """(..., 2) keypoints normalised to the source frame -> normalised to the crop `box` (as resized)."""
    if box is None:
        return keypoints
    top, left, ch, cw = box
    w0, h0 = source_size
    kp = keypoints.copy()
    kp[..., 0] = (kp[..., 0] * w0 - left) / cw
    kp[..., 1] = (kp[..., 1] * h0 - top) / ch
    return kp


MOUTH_LANDMARKS = (9, 10)  # mouth_left, mouth_right in the 33-point layout (svi.conditioning.pose)


def _mouth_track(item: VideoItem, generated, indices: list[int], box: tuple[int, int, int, int] | None,
                 source_size: tuple[int, int]) -> torch.Tensor:
    """(F, 2) mouth centre per frame on the training canvas, NaN where the mouth is not seen.

    Where the speaker's mouth is lets the loss weigh it (train.mouth_weight): it is a few pixels of
    the frame, so an unweighted loss barely notices whether it follows the audio."""
    frames = _pose_frames(item, generated, indices)
    kp = _to_crop(frames.keypoints[:, MOUTH_LANDMARKS, :2].astype(np.float32), box, source_size)  # (F, 2, 2)
    seen = (frames.scores[:, MOUTH_LANDMARKS] > 0).all(axis=1) & np.asarray(frames.present, bool)
    centre = kp.mean(axis=1)  # (F, 2)
    seen &= ((centre >= 0) & (centre <= 1)).all(axis=1)
    centre[~seen] = np.nan
    return torch.from_numpy(centre.astype(np.float32))


def _pose_maps(item: VideoItem, generated, indices: list[int], height: int, width: int,
               box: tuple[int, int, int, int] | None, source_size: tuple[int, int]) -> torch.Tensor:
    """uint8 (F, H, W, 3) DWPose-style maps drawn on the same (cropped, resized) canvas as the frames."""
    from svi.conditioning.pose_render import render_pose_maps

    frames = _pose_frames(item, generated, indices)
    if box is not None:  # keypoints are normalised to the source frame: map them into the crop
        frames = type(frames)(_to_crop(frames.keypoints, box, source_size), frames.scores, frames.present,
                              width, height)
    return torch.from_numpy(render_pose_maps(frames, width, height, fit="stretch"))
