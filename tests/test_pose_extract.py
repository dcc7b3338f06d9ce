"""Pose extraction with MediaPipe on a real photo of a person, and the errors for unusable videos.

The person: Grace Hopper's portrait shipped with matplotlib (mpl-data/sample_data/grace_hopper.jpg,
a U.S. Navy photograph in the public domain), moved across the frame to make a short clip.
"""

from __future__ import annotations

import json
import time

import av
import matplotlib.cbook as cbook
import numpy as np
import pytest
from PIL import Image

from svi.conditioning.pose import LANDMARK_NAMES, POSE_MODEL, PoseError, PoseTrack, extract_pose, main

SHIFT = 6  # pixels the person moves right per frame
N_FRAMES = 16


def write_clip(path, frames: np.ndarray, fps: int = 25) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)


@pytest.fixture(scope="module")
def hopper_clip(tmp_path_factory):
    img = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))  # (600, 512, 3)
    img = np.asarray(Image.fromarray(img).resize((256, 300)))  # quarter-size keeps the test fast
    h, w = img.shape[:2]
    frames = np.zeros((N_FRAMES, h, w + SHIFT * N_FRAMES, 3), np.uint8)
    for i in range(N_FRAMES):
        frames[i, :, SHIFT * i:SHIFT * i + w] = img
    path = tmp_path_factory.mktemp("pose") / "hopper.mp4"
    write_clip(path, frames)
    return path


@pytest.fixture(scope="module")
def hopper_track(hopper_clip):
    t0 = time.perf_counter()
    track = extract_pose(hopper_clip, progress=False)
    elapsed = time.perf_counter() - t0
    print(f"\npose extraction: {track.n_frames} frames of {track.width}x{track.height} in {elapsed:.2f} s "
          f"= {track.n_frames / elapsed:.1f} frames/s (model load included)")
    return track


def test_bundled_model_is_present():
    assert POSE_MODEL.is_file() and 1_000_000 < POSE_MODEL.stat().st_size < 15_000_000


def test_real_person_is_found_with_face_and_shoulders(hopper_track):
    tr = hopper_track
    assert tr.n_frames == N_FRAMES and tr.fps == 25 and (tr.width, tr.height) == (256 + SHIFT * N_FRAMES, 300)
    assert tr.detected.all() and tr.missing_ranges == []
    vis = tr.visibility.mean(axis=0)
    for name in ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"):
        assert vis[LANDMARK_NAMES.index(name)] > 0.9, name
    assert vis[LANDMARK_NAMES.index("left_ankle")] < 0.2  # a portrait: the legs are out of frame
    nose, ls, rs = (tr.keypoints[:, LANDMARK_NAMES.index(n)] * [tr.width, tr.height]
                    for n in ("nose", "left_shoulder", "right_shoulder"))
    assert np.all(rs[:, 0] < nose[:, 0]) and np.all(nose[:, 0] < ls[:, 0])  # her right is the image's left
    assert np.all(nose[:, 1] < ls[:, 1])  # the face is above the shoulders
    # the landmarks follow the person across the frame: ~SHIFT px per frame
    slope = np.polyfit(np.arange(N_FRAMES), nose[:, 0], 1)[0]
    assert abs(slope - SHIFT) < 1.0
    assert 0.25 < float(tr.confidence.mean()) < 0.8  # head and shoulders: part of the body seen


def test_track_round_trips_through_json_and_npz(hopper_track, tmp_path):
    for name in ("p.json", "p.npz"):
        path = hopper_track.save(tmp_path / name)
        back = PoseTrack.load(path)
        assert back.n_frames == hopper_track.n_frames and back.fps == hopper_track.fps
        np.testing.assert_allclose(back.keypoints, hopper_track.keypoints, atol=1e-5)
        np.testing.assert_array_equal(back.detected, hopper_track.detected)
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["format"] == "svi-pose" and len(data["keypoints"]) == N_FRAMES and len(data["confidence"]) == N_FRAMES


@pytest.mark.parametrize("kind", ["noise", "plain"])
def test_a_video_without_a_person_is_a_clear_error(tmp_path, kind):
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, 256, (6, 96, 128, 3), dtype=np.uint8) if kind == "noise"
              else np.full((6, 96, 128, 3), 90, np.uint8))
    write_clip(tmp_path / "v.mp4", frames)
    with pytest.raises(PoseError, match="no person found in any of the 6 frames"):
        extract_pose(tmp_path / "v.mp4", progress=False)


def test_corrupt_truncated_empty_and_zero_length_videos(tmp_path, hopper_clip):
    data = hopper_clip.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes())
    (tmp_path / "empty.mp4").write_bytes(b"")
    with av.open(str(tmp_path / "zero.mp4"), "w") as c:  # a valid mp4 header with no frames
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    for name, msg in (("trunc.mp4", "corrupt"), ("garbage.mp4", "corrupt"), ("empty.mp4", "empty"),
                      ("zero.mp4", "no frames \\(zero length\\)"), ("missing.mp4", "not found")):
        with pytest.raises(PoseError, match=msg):
            extract_pose(tmp_path / name, progress=False)


def test_missing_model_file_is_named(tmp_path, hopper_clip):
    with pytest.raises(PoseError, match="pose landmarker model not found: .*nope.task"):
        extract_pose(hopper_clip, tmp_path / "nope.task", progress=False)


def test_cli_writes_the_pose_file_and_reports(hopper_clip, tmp_path, capsys):
    out = tmp_path / "dance.pose.json"
    assert main([str(hopper_clip), "--out", str(out), "--quiet", "--max-side", "256"]) == 0
    printed = capsys.readouterr().out
    assert f"person found in {N_FRAMES}/{N_FRAMES} frames" in printed and "frames/s" in printed
    assert PoseTrack.load(out).detected.all()
    assert main([str(tmp_path / "none.mp4"), "--out", str(out), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
