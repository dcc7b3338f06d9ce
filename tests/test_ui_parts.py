"""Small parts of the UI layer: the clip grid, drift statistics, measured speeds, previews, error
messages, and fine-tuning runs launched as processes (a real two-step run of the tiny model)."""

from __future__ import annotations

import csv
import json
import tempfile
import time

import gradio as gr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from svi.presets import resolve_spec
from ui.drift import clip_stats, drift_table
from ui.errors import UserError, tidy, user_errors
from ui.finetune_runs import FinetuneRuns, flags_from, run_name_ok
from ui.grid import clip_edges, clip_end_s, clips_for, fmt_s, snap
from ui.jobs import JobView, fmt_seconds
from ui.speeds import SpeedBook
from ui.thumbs import frame_data_uri, image_data_uri

SPECS = [resolve_spec("storyworld-tiny", "shot"), resolve_spec("storyworld-tiny", "film"),
         resolve_spec("wan2.1-i2v-14b-480p", "film")]


@given(k=st.integers(0, 500), spec=st.sampled_from(SPECS))
def test_clip_edges_are_the_planners_clip_ends(k, spec):
    end = clip_end_s(spec, k)
    assert clips_for(spec, end) == k + 1  # a storyboard ending on clip k's edge has k + 1 clips
    assert snap(end, spec) == pytest.approx(end)
    assert clip_edges(spec, end)[-1] == pytest.approx(end)


@given(t=st.floats(0, 3600), spec=st.sampled_from(SPECS))
def test_snap_goes_to_the_nearest_edge(t, spec):
    edges = clip_edges(spec, t + 10)
    assert abs(snap(t, spec) - t) == pytest.approx(min(abs(e - t) for e in edges))


def test_fmt_s():
    assert [fmt_s(x) for x in (0, 2.125, 4.0, 0.5, 10.1254)] == ["0", "2.125", "4", "0.5", "10.125"]
    assert [fmt_seconds(x) for x in (3, 125, 7200, None)] == ["3 s", "2 min", "2.0 h", "?"]


@given(gain=st.floats(0.3, 0.9))
def test_drift_measures_brightness_and_blur(gain):
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (4, 32, 48, 3)).astype(np.uint8)
    dim = (sharp * gain).astype(np.uint8)
    blurred = ((sharp.astype(np.float32) + np.roll(sharp, 1, 2) + np.roll(sharp, 1, 1)) / 3).astype(np.uint8)
    rows = drift_table({0: clip_stats(sharp), 1: clip_stats(dim), 2: clip_stats(blurred)})
    get = {(r["clip"], r["metric"]): r["value"] for r in rows}
    assert get[(2, "brightness change (%)")] == pytest.approx(100 * (gain - 1), abs=1.5)
    assert get[(3, "sharpness change (%)")] < -30
    assert get[(1, "colour shift (RGB distance)")] == 0 and get[(2, "colour shift (RGB distance)")] > 0
    assert drift_table({}) == []


def test_speed_book_averages_and_persists(tmp_path):
    book = SpeedBook(tmp_path / "speeds.json")
    assert book.clip_seconds("m/v", "cpu", 10) is None
    book.record("m/v", "cpu", 10, {"total": 12.0, "denoise": 10.0})
    assert book.clip_seconds("m/v", "cpu", 10) == pytest.approx(12.0)
    book.record("m/v", "cpu", 10, {"total": 22.0, "denoise": 20.0})
    assert book.clip_seconds("m/v", "cpu", 10) == pytest.approx(0.7 * 12 + 0.3 * 22)
    again = SpeedBook(tmp_path / "speeds.json")
    assert again.measured("m/v", "cpu")["clips"] == 2 and again.clip_seconds("m/v", "cuda", 1) is None


def test_thumbnails(start_image, tmp_path):
    assert image_data_uri(start_image).startswith("data:image/jpeg;base64,")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert image_data_uri(bad) == "" and image_data_uri(tmp_path / "missing.png") == ""
    assert frame_data_uri(np.zeros((96, 128, 3), np.uint8)).startswith("data:image/jpeg")


def test_messages_name_the_users_file_not_the_temp_copy():
    temp = tempfile.gettempdir()
    assert tidy(f"{temp}/gradio/ab12/cd34/photo.png: not an image") == "photo.png: not an image"

    @user_errors
    def bad():
        raise UserError(f"{temp}/gradio/x/clip.wav: cannot decode audio")

    with pytest.raises(gr.Error) as err:
        bad()
    assert err.value.message == "clip.wav: cannot decode audio"

    @user_errors
    def bug():
        raise KeyError("a bug stays a bug")

    with pytest.raises(KeyError):
        bug()


def test_job_progress_lines():
    v = JobView(id=1, project="p", project_id=1, kind="render", status="running", upto=None, clip_count=5,
                current_clip=1, step=3, steps=8, eta_s=42)
    assert v.progress_text() == "Rendering clip 2 of 5 · step 3 of 8 · about 42 s left"
    assert JobView(id=1, project="p", project_id=1, kind="render", status="failed", upto=None,
                   error="weights missing").progress_text() == "Failed: weights missing"


def test_finetune_flags_and_names(tmp_path):
    assert flags_from({"lora.rank": 16, "train.error_recycling": False, "recycling.strategy": "fifo",
                       "data.root": None}) == ["--lora-rank", "16", "--no-error-recycling", "--strategy", "fifo"]
    assert run_name_ok(" tiny-1 ") == "tiny-1"
    for bad in ("", "../up", "a b", "x" * 80):
        with pytest.raises(UserError, match="run name"):
            run_name_ok(bad)


def test_storyworld_runs_use_the_bundled_recipe_of_their_variant():
    from finetune.config import load_config_file, storyworld_recipe

    assert storyworld_recipe("shot").name == storyworld_recipe("film").name == storyworld_recipe(None).name \
        == "tiny.yaml"
    talk = load_config_file(storyworld_recipe("talk"))
    assert talk.model.variant == "talk" and talk.train.mouth_weight > 0  # the loss that makes lip sync work
    assert load_config_file(storyworld_recipe("dance")).model.variant == "dance"


def test_uploaded_videos_become_an_svi_dataset(tmp_path):
    from ui.tab_finetune import uploaded_dataset

    vids = []
    for i in range(2):
        v = tmp_path / f"clip{i}.mp4"
        v.write_bytes(b"fake video bytes")
        vids.append(str(v))
    root = uploaded_dataset(tmp_path / "run", vids, "a cat\na dog\n")
    rows = list(csv.DictReader(open(root / "uploads" / "uploads.csv")))
    assert [r["Video Description"] for r in rows] == ["a cat", "a dog"]
    assert all((root / "uploads" / r["Filename"]).is_file() for r in rows)
    with pytest.raises(UserError, match="2 videos but 1 captions"):
        uploaded_dataset(tmp_path / "run2", vids, "only one")


TINY_RUN = {"data.kind": "storyworld", "data.storyworld_videos": 2, "data.storyworld_frames": 17,
            "data.views_per_video": 1, "lora.rank": 4, "lora.alpha": 4, "train.eval_every": 1,
            "train.checkpoint_every": 1, "recycling.buffer_k": 2, "recycling.warmup_iter": 1}


def wait_state(runs, name, states, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        info = runs.info(name)
        if info.state in states:
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.5)


def test_a_finetune_run_in_the_background(tmp_path):
    runs = FinetuneRuns(tmp_path / "runs", tmp_path / "loras")
    (tmp_path / "loras").mkdir()
    with pytest.raises(UserError, match="settings were refused"):
        runs.launch("bad", {"lora.rank": "many"})
    info = runs.launch("tiny", {**TINY_RUN, "train.max_steps": 2})
    assert info.state in ("starting", "running")
    done = wait_state(runs, "tiny", ("done", "failed"))
    assert done.state == "done", done.message
    assert done.lora and done.lora.endswith("loras/tiny.safetensors")
    metrics = runs.metrics("tiny")
    assert [r["step"] for r in metrics if "loss" in r][-1] == 2 and "bank_fill" in metrics[-1]
    from svi.lora import read_lora

    assert read_lora(done.lora).rank == 4
    # the Models tab registers LoRA files the same way (checked, copied, listed)
    from ui.services import build_services
    from ui.tab_models import lora_rows, register_lora

    services = build_services(tmp_path / "data", device="cpu", start_workers=False)
    path = register_lora(services, done.lora, "my style")
    assert path.endswith("loras/my_style.safetensors")
    assert [r[0] for r in lora_rows(services)] == ["my_style"] and lora_rows(services)[0][1] == 4
    with pytest.raises(UserError, match="registered already"):
        register_lora(services, done.lora, "my style")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    from svi.lora import LoraError

    with pytest.raises(LoraError):
        register_lora(services, str(junk))
    services.close()
    with pytest.raises(UserError, match="exists"):
        runs.launch("tiny", TINY_RUN)
    assert runs.names() == ["tiny"]


def test_stop_and_resume_a_run(tmp_path):
    runs = FinetuneRuns(tmp_path / "runs", tmp_path / "loras")
    (tmp_path / "loras").mkdir()
    runs.launch("long", {**TINY_RUN, "train.max_steps": 100000})
    deadline = time.monotonic() + 240
    while runs.info("long").step < 2:
        assert time.monotonic() < deadline and runs.info("long").state not in ("failed", "done")
        time.sleep(0.5)
    stopped = runs.stop("long")
    assert stopped.state == "stopped"
    with pytest.raises(UserError, match="not running"):
        runs.stop("long")
    resumed = runs.resume("long")
    assert resumed.state not in ("stopped", "failed")
    cmd = json.loads((tmp_path / "runs" / "long" / "ui_command.json").read_text())
    assert "--resume" not in cmd  # the saved command stays the original; resume adds the flag
    with pytest.raises(UserError, match="still running"):
        runs.resume("long")
    runs.stop("long")
