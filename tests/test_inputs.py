"""Clear errors for bad inputs: weights folders, images, storyboards; and the CLI end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from svi import resolve_spec
from svi.images import ImageError, load_image
from svi.models import MissingWeightsError, load_components, missing_files
from svi.video import read_video, video_info

from .conftest import ROOT

TINY = ROOT / "assets/models/storyworld-tiny"


def test_missing_weights_folder_lists_it(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        load_components(resolve_spec(), "cpu", folder=tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "nothing is downloaded" in str(e.value)


def test_partial_weights_folder_lists_every_missing_file(tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(TINY, folder)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(folder / "tokenizer")
    # a sharded component whose index names a shard that is not there
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                   "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}))
    missing = missing_files(folder)
    assert missing == ["transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
                       "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
                       "vae/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer.json"]
    with pytest.raises(MissingWeightsError, match="vae/diffusion_pytorch_model.safetensors"):
        load_components(resolve_spec(), "cpu", folder=folder)


def test_images(tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        load_image(not_image)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    good = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError):
        load_image(truncated)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(rgba)
    assert load_image(rgba).mode == "RGB" and load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_huge_image_is_refused_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 8000)).save(huge)  # 72 MP, compresses to a few KB
    with pytest.raises(ImageError, match="too large"):
        load_image(huge)


def run_app(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "app.py", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_cli_render_writes_the_video(tmp_path):
    out = tmp_path / "out.mp4"
    r = run_app("render", "assets/examples/storyboard.json", "--out", out, "--clips", "2", "--steps", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    info = video_info(out)
    assert info["frames"] == 17 + 16 and info["fps"] == 8 and (info["width"], info["height"]) == (128, 96)
    assert read_video(out).std() > 1  # not a blank video


@pytest.mark.parametrize("content, needle", [
    ("", "empty"), ("{", "not valid JSON"),
    ('{"start_image": "start.png", "prompts": [{"start": 0, "end": -4, "text": "x"}]}', "end"),
    ('{"start_image": "start.png", "prompts": [{"start": 0, "end": 4, "text": "x"}]}', "start.png"),
])
def test_cli_bad_storyboard_is_one_clear_line(tmp_path, content, needle):
    sb = tmp_path / "sb.json"
    sb.write_text(content)
    r = run_app("render", sb, "--out", tmp_path / "o.mp4")
    assert r.returncode == 2
    assert "error:" in r.stderr and needle in r.stderr and "Traceback" not in r.stderr


def test_cli_not_an_image(tmp_path):
    (tmp_path / "start.png").write_text("not a picture")
    sb = tmp_path / "sb.json"
    sb.write_text('{"start_image": "start.png", "prompts": [{"start": 0, "end": 2, "text": "x"}]}')
    r = run_app("render", sb, "--out", tmp_path / "o.mp4")
    assert r.returncode == 2 and "not an image" in r.stderr and "Traceback" not in r.stderr


def test_cli_info():
    r = run_app("info")
    assert r.returncode == 0
    assert "storyworld-tiny/shot" in r.stdout and "ready" in r.stdout
    assert "wan2.1-i2v-14b-480p/talk" in r.stdout and "NOT READY" in r.stdout
