"""Video io: a streaming mp4 writer (constant memory, nothing re-encoded) and the audio mux.

The official scripts re-encode the whole accumulated video after every clip (O(N^2) time, all
frames in RAM; SVI_SPEC 6.1.12). Here each frame is encoded exactly once, as its clip arrives.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AAC_RATE = 48_000


class VideoWriter:
    """Append uint8 (n, H, W, 3) frame batches to one H.264 mp4; call close() (or use `with`)."""

    def __init__(self, path: str | os.PathLike, fps: int, crf: int = 18):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.frames_written = 0
        self._tmp = self.path.with_name(self.path.name + ".part.mp4")
        self._container = av.open(str(self._tmp), mode="w")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps))
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._size: tuple[int, int] | None = None

    def append(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
        h, w = frames.shape[1:3]
        if self._size is None:
            if h % 2 or w % 2:
                raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
            self._size = (w, h)
            self._stream.width, self._stream.height = w, h
        elif self._size != (w, h):
            raise ValueError(f"frame size changed from {self._size} to {(w, h)}")
        for frame in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self._container.mux(packet)
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Flush and move the finished file into place (a crash leaves no half file at `path`)."""
        if self._container is None:
            return self.path
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        elif self._container is not None:
            self._container.close()
            self._container = None
            self._tmp.unlink(missing_ok=True)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int) -> Path:
    """Write one clip (or any frame batch) as its own mp4: the UI's streaming segments."""
    with VideoWriter(path, fps) as w:
        w.append(frames)
    return w.path


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a (short) video as uint8 (n, H, W, 3). For tests and small clips only."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def video_info(path: str | os.PathLike) -> dict:
    """Frame count, fps, size and duration of a video, and of its audio stream when present."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.demux(v) if _.size)
    with av.open(str(path)) as c:
        info = {"frames": frames, "fps": float(c.streams.video[0].average_rate or 0),
                "width": c.streams.video[0].width, "height": c.streams.video[0].height,
                "duration": float(c.duration / av.time_base) if c.duration else None}
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(audio=0))
            info.update(audio_rate=a.rate, audio_samples=samples, audio_duration=samples / a.rate)
    return info


def mux_audio(video_path: str | os.PathLike, samples: np.ndarray, sample_rate: int,
              out_path: str | os.PathLike) -> Path:
    """Copy the video stream and add `samples` (mono or (n, channels) float in [-1, 1]) as AAC,
    cut or padded with silence to the video's exact duration so the two end together."""
    video_path, out_path = Path(video_path), Path(out_path)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    with av.open(str(video_path)) as src:
        vs = src.streams.video[0]
        n_frames = sum(1 for p in src.demux(vs) if p.size)
        fps = vs.average_rate
    want = int(round(n_frames / float(fps) * sample_rate))
    if len(samples) < want:
        samples = np.concatenate([samples, np.zeros((want - len(samples), samples.shape[1]), np.float32)])
    samples = np.clip(samples[:want], -1, 1)
    layout = "mono" if samples.shape[1] == 1 else "stereo"
    samples = samples[:, :2]

    tmp = out_path.with_name(out_path.name + ".part.mp4")
    with av.open(str(video_path)) as src, av.open(str(tmp), mode="w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        # 48 kHz out: AAC pads the last 1024-sample frame, 21 ms at 48 kHz (64 ms at 16 kHz would
        # exceed one video frame).
        aout = dst.add_stream("aac", rate=AAC_RATE, layout=layout)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=AAC_RATE)
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        planar = np.ascontiguousarray(samples.T)  # (channels, n) for the planar fltp format
        chunk = 1 << 14
        for i in range(0, planar.shape[1] + chunk, chunk):
            frame = None
            if i < planar.shape[1]:
                frame = av.AudioFrame.from_ndarray(planar[:, i:i + chunk], format="fltp", layout=layout)
                frame.sample_rate = sample_rate
                frame.pts = i
            for rf in resampler.resample(frame):  # None flushes the resampler
                rf.pts = None
                for packet in aout.encode(rf):
                    dst.mux(packet)
        for packet in aout.encode():
            dst.mux(packet)
    os.replace(tmp, out_path)
    return out_path
