"""Files: mp4 (PyAV, H.264 4:4:4 by default), 16 kHz wav (soundfile), keypoint JSON and ground-truth JSON.

Keypoint JSON (`*.pose.json`): the product's one pose format, svi-pose v1 as written by
`svi.conditioning.pose.PoseTrack` (and `app.py pose`), so a storyworld skeleton drops straight onto
a dance segment: normalised x / W, y / H per MediaPipe landmark, visibility, presence, detected.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .skeleton import NUM_LANDMARKS

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
    """Write (N, 33, 3) keypoints (x / W, y / H, visibility) as an svi-pose track."""
    from svi.conditioning.pose import PoseTrack

    k = np.asarray(keypoints, np.float32)
    if k.ndim != 3 or k.shape[1:] != (NUM_LANDMARKS, 3):
        raise ValueError(f"keypoints must be (N, {NUM_LANDMARKS}, 3), got {k.shape}")
    vis = k[..., 2].copy()
    PoseTrack(k[..., :2].copy(), np.zeros_like(vis), vis, vis.copy(), vis.max(axis=1) > 0, float(fps), int(width),
              int(height), source="storyworld").save(path)


def read_keypoints(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """(keypoints (N, 33, 3) float32 with visibility in the last column, fps) from an svi-pose file."""
    from svi.conditioning.pose import PoseError, PoseTrack

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"keypoint file not found: {p}")
    try:
        track = PoseTrack.load(p)
    except PoseError as e:
        raise ValueError(str(e)) from None
    k = np.concatenate([track.keypoints, track.visibility[..., None]], axis=-1).astype(np.float32)
    return k, float(track.fps)
