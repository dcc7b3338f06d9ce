"""Streaming writer and audio mux."""

from __future__ import annotations

import numpy as np
import pytest

from svi.video import VideoWriter, mux_audio, read_video, video_info, write_video


def clip(value: int, n: int = 16) -> np.ndarray:
    return np.full((n, 48, 64, 3), value, np.uint8)


def test_appends_every_frame_once_in_order(tmp_path):
    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=8) as w:
        for k in range(5):
            w.append(clip(40 * k))
            assert not path.exists()  # the finished name appears only on close
    assert w.frames_written == 80 and video_info(path)["frames"] == 80
    frames = read_video(path)
    means = frames.reshape(5, 16, -1).mean(axis=2)
    assert np.allclose(means, np.array([0, 40, 80, 120, 160])[:, None], atol=3)


def test_failed_render_leaves_no_half_file(tmp_path):
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=8) as w:
            w.append(clip(0))
            raise RuntimeError("render crashed")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_bad_frames_are_refused(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", fps=8) as w:
        with pytest.raises(ValueError, match="uint8"):
            w.append(np.zeros((2, 48, 64, 3), np.float32))
        w.append(clip(0, 2))
        with pytest.raises(ValueError, match="size changed"):
            w.append(np.zeros((2, 32, 64, 3), np.uint8))


@pytest.mark.parametrize("fps, n_frames, audio_s, channels", [(8, 33, 10.0, 1), (25, 81, 1.0, 2), (24, 157, 6.54, 1)])
def test_mux_audio_ends_with_the_video(tmp_path, fps, n_frames, audio_s, channels):
    video = write_video(tmp_path / "v.mp4", np.zeros((n_frames, 48, 64, 3), np.uint8), fps)
    sr = 16000
    t = np.arange(int(audio_s * sr)) / sr
    samples = 0.3 * np.sin(2 * np.pi * 440 * t)
    if channels == 2:
        samples = np.stack([samples, samples], axis=1)
    out = mux_audio(video, samples, sr, tmp_path / "va.mp4")
    info = video_info(out)
    assert info["frames"] == n_frames
    assert abs(info["audio_duration"] - n_frames / fps) <= 1 / fps  # in sync within one frame
