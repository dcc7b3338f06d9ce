"""Files: mp4 (PyAV, H.264 4:4:4 by default), 16 kHz wav (soundfile), keypoint JSON and ground-truth JSON.

Keypoint JSON (`*.pose.json`)::

    {"format": "svi-pose", "version": 1, "layout": "mediapipe-pose-33", "fps": 8,
     "width": 128, "height": 96, "landmarks": ["nose", ...],
     "keypoints": [[[x / W, y / H, visibility], ... 33], ... one per frame]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .skeleton import LANDMARK_NAMES, NUM_LANDMARKS, POSE_LAYOUT

POSE_FORMAT = "svi-pose"
POSE_VERSION = 1
MP4_CRF = 12  # near-lossless: the files are training data and the analyzers read them back
# Full-resolution chroma: at 128x96 the usual 4:2:0 halves an object's colour edges to 2x2 blocks, and
# where an object and its backdrop have the same brightness (a cyan star on dusk sand) the shape
# survives in chroma only. 4:4:4 H.264 decodes with FFmpeg/PyAV (the trainer), not in every browser.
MP4_PIX_FMT = "yuv444p"


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int, crf: int = MP4_CRF,
              pix_fmt: str = MP4_PIX_FMT) -> None:
    """Write (N, H, W, 3) uint8 RGB frames as H.264 (H and W must be even).

    Args:
        crf: constant rate factor (int, default 12: near-lossless).
        pix_fmt: "yuv444p" (default, full chroma) or "yuv420p" (plays everywhere).
    """
    if pix_fmt not in ("yuv444p", "yuv420p"):
        raise ValueError(f"pix_fmt must be yuv444p or yuv420p, got {pix_fmt!r}")
    import av  # lazy: only file output needs PyAV

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be (N >= 1, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs an even frame size, got {w}x{h}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_mp4(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """(frames (N, H, W, 3) uint8, fps) of a video file."""
    import av

    if not Path(path).is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate or stream.base_rate or 0)
    if not frames:
        raise ValueError(f"video file has no frames: {path}")
    return np.stack(frames), fps


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, np.float32), sample_rate, subtype="PCM_16")


def write_keypoints(path: str | os.PathLike, keypoints: np.ndarray, fps: int, width: int, height: int) -> None:
    k = np.asarray(keypoints, np.float32)
    if k.ndim != 3 or k.shape[1:] != (NUM_LANDMARKS, 3):
        raise ValueError(f"keypoints must be (N, {NUM_LANDMARKS}, 3), got {k.shape}")
    doc = {"format": POSE_FORMAT, "version": POSE_VERSION, "layout": POSE_LAYOUT, "fps": fps, "width": width,
           "height": height, "landmarks": list(LANDMARK_NAMES), "keypoints": np.round(k, 5).tolist()}
    Path(path).write_text(json.dumps(doc, separators=(",", ":")))


def read_keypoints(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """(keypoints (N, 33, 3) float32, fps) from a keypoint JSON file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"keypoint file not found: {p}")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != POSE_FORMAT or doc.get("layout") != POSE_LAYOUT:
        raise ValueError(f"{p}: expected a {POSE_FORMAT!r} file in the {POSE_LAYOUT!r} layout")
    k = np.asarray(doc.get("keypoints"), np.float32)
    if k.ndim != 3 or k.shape[1] != NUM_LANDMARKS or k.shape[2] not in (2, 3):
        raise ValueError(f"{p}: keypoints must be (N, {NUM_LANDMARKS}, 2|3), got {k.shape}")
    return k, float(doc["fps"])
