"""`python -m storyworld.generate`: the SVI dataset layout, readable back and still analyzable."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from storyworld.analyze import read_object, read_place
from storyworld.files import read_keypoints, read_mp4, write_keypoints
from storyworld.generate import CSV_COLUMNS, main
from storyworld.pose import lip_sync, pose_error

ROOT = Path(__file__).resolve().parent.parent


def test_generate_writes_the_svi_layout(tmp_path):
    assert main(["--out", str(tmp_path), "--n", "3", "--seed", "4", "--frames", "9", "--scenes", "2"]) == 0
    folder = tmp_path / "storyworld"
    checked_figures = 0
    with open(folder / "storyworld.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3
    for row in rows:
        stem = row["Filename"][:-4]
        truth = json.loads((folder / f"{stem}.truth.json").read_text())
        assert row["Video Description"] == " | ".join(c["text"] for c in truth["captions"])
        frames, fps = read_mp4(folder / row["Filename"])
        assert frames.shape == (18, 96, 128, 3) and fps == 8
        audio, sr = sf.read(folder / f"{stem}.wav", dtype="float32")
        assert sr == 16000 and len(audio) == 18 * 2000
        kp, kp_fps = read_keypoints(folder / f"{stem}.pose.json")
        assert kp.shape == (18, 33, 3) and kp_fps == 8
        # The codec's losses leave the frames readable.
        for i in (0, 13):
            t = truth["frames"][i]
            p, o = read_place(frames[i]), read_object(frames[i])
            assert (p.place, p.time, o.colour, o.shape) == (t["place"], t["time"], t["colour"], t["shape"])
        for cap, scene in zip(truth["captions"], truth["scenes"]):
            if scene["action"] is None:
                continue
            s, e = cap["start"], cap["end"]
            errors, found = pose_error(frames[s:e], kp[s:e])
            assert found.all() and np.nanmean(errors) < 0.02
            assert lip_sync(frames[s:e], audio[s * 2000:e * 2000], fps) > 0.9
            checked_figures += 1
    assert checked_figures > 0
    settings = json.loads((folder / "dataset.json").read_text())
    assert settings["seed"] == 4 and settings["n"] == 3


def test_generate_is_reproducible(tmp_path):
    for name in ("a", "b"):
        assert main(["--out", str(tmp_path / name), "--n", "1", "--frames", "5", "--seed", "9"]) == 0
    a, b = (read_mp4(tmp_path / n / "storyworld" / "storyworld_00000.mp4")[0] for n in ("a", "b"))
    assert np.array_equal(a, b)
    csvs = [(tmp_path / n / "storyworld" / "storyworld.csv").read_text() for n in ("a", "b")]
    assert csvs[0] == csvs[1]


@pytest.mark.parametrize("args, message", [
    (["--size", "97x96"], "even"),
    (["--n", "0"], "--n"),
    (["--category", "../x"], "category"),
])
def test_generate_rejects_bad_arguments(tmp_path, capsys, args, message):
    assert main(["--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "storyworld.generate", "--out", str(tmp_path), "--n", "1",
                          "--frames", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 1 videos" in out.stdout
    assert (tmp_path / "storyworld" / "storyworld_00000.mp4").is_file()


def test_keypoint_files_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_keypoints(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="svi-pose"):
        read_keypoints(bad)
    with pytest.raises(ValueError, match="keypoints must be"):
        write_keypoints(tmp_path / "k.json", np.zeros((3, 17, 3)), 8, 128, 96)
