"""The same flow headless through gradio_client: every action is a named endpoint (docs/api.md)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from gradio_client import Client, handle_file

from .conftest import ROOT


def wait_job(client: Client, project: str, timeout: float = 300.0) -> tuple[dict, bool]:
    """Follow the project's job to its end; also says whether a clip was done while it still ran."""
    st = client.predict(project, 0, 0, api_name="/render_status")
    clip_while_running = False
    deadline = time.monotonic() + timeout
    while st["status"] in ("queued", "loading", "running"):
        assert time.monotonic() < deadline, st
        if st["status"] == "running" and st["clips_done"]:
            clip_while_running = True
        st = client.predict(project, st["rev"], 20, api_name="/render_status")
    return st, clip_while_running


def test_headless_flow(app_server, tmp_path):
    import soundfile as sf

    url, _ = app_server
    client = Client(url, verbose=False)
    image = tmp_path / "api.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)

    # 1. Project, settings, prompts, an audio segment
    name = client.predict(handle_file(str(image)), "api flow", api_name="/create_project")
    assert name == "api flow"
    tl = client.predict(name, api_name="/get_timeline")
    F, m, fps = tl["F"], tl["m"], tl["fps"]
    edge = [0.0] + [(F + k * (F - m)) / fps for k in range(3)]
    tl = client.predict(name, tl["version"], {"steps": 1}, api_name="/set_settings")
    for k, text in ((1, "the ball rolls to the sea"), (2, "the sun sets over the sea")):
        tl = client.predict(name, tl["version"], "prompt", None, {"start": edge[k], "end": edge[k + 1], "text": text},
                            api_name="/edit_segment")
    wav = tmp_path / "hum.wav"
    t = np.arange(int(16000 * 3.0)) / 16000
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    client.predict(name, "", handle_file(str(wav)), 0, api_name="/add_audio")
    plan = client.predict(name, api_name="/clip_plan")
    assert [r[-1] for r in plan["rows"]] == ["missing"] * 3
    assert "hum.wav" in plan["rows"][0][3]

    # 2. Render three clips; a clip is done (and listed) while the job still runs
    job = client.predict(name, api_name="/render")
    assert job["status"] in ("queued", "loading", "running")
    st, early = wait_job(client, name)
    assert st["status"] == "done", st
    assert early, "no clip was reported before the render ended"
    clips = client.predict(name, api_name="/clips")
    assert [c["status"] for c in clips] == ["valid"] * 3
    first_take = clips[1]["take_id"]

    # 3. Retake clip 2: two takes, the new one chosen, clip 3 stale; choosing the first take back
    #    restores its seed, so clips 2 and 3 are valid again
    client.predict(name, 1, None, None, api_name="/retake")
    st, _ = wait_job(client, name)
    assert st["status"] == "done" and st["clips_done"] == [1], st
    takes = client.predict(name, 1, api_name="/takes_of")
    assert len(takes) == 2 and [t["chosen"] for t in takes] == [False, True]
    assert [c["status"] for c in client.predict(name, api_name="/clips")] == ["valid", "valid", "stale"]
    note = client.predict(name, first_take, api_name="/choose_take")
    assert "later clips are stale" in note
    assert [c["status"] for c in client.predict(name, api_name="/clips")] == ["valid"] * 3

    # 4. Export with the audio, measured
    from svi.video import video_info

    video = client.predict(name, api_name="/export_video")
    info = video_info(video["video"] if isinstance(video, dict) else video)
    assert info["frames"] == F + 2 * (F - m) and info["fps"] == fps
    # the audio lasts as long as the video, up to AAC's padding of its last frames (2 x 21 ms at 48 kHz)
    assert info.get("audio_duration") == pytest.approx(info["frames"] / fps, abs=0.05)
    drift = client.predict(name, api_name="/drift")
    assert {r["clip"] for r in drift} == {1, 2, 3}

    # 5. A fresh client (a "reload") finds the same project
    again = Client(url, verbose=False)
    assert any(p["name"] == name and p["clips"] == 3 for p in again.predict(api_name="/list_projects"))
    tl2 = again.predict(name, api_name="/get_timeline")
    assert [p["text"] for p in tl2["tracks"]["prompt"]][1:] == ["the ball rolls to the sea", "the sun sets over the sea"]
    assert len(tl2["tracks"]["audio"]) == 1


def test_api_errors_are_clear(app_server, tmp_path):
    from gradio_client.exceptions import AppError

    url, _ = app_server
    client = Client(url, verbose=False)
    text = tmp_path / "letter.png"
    text.write_text("not a picture")
    with pytest.raises(AppError, match="letter.png: not an image file"):
        client.predict(handle_file(str(text)), "nope", api_name="/create_project")
    with pytest.raises(AppError, match="no project named 'ghost'"):
        client.predict("ghost", api_name="/get_timeline")
    image = tmp_path / "ok.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)
    name = client.predict(handle_file(str(image)), "api errors", api_name="/create_project")
    tl = client.predict(name, api_name="/get_timeline")
    overlapping = {"prompt": [{"start": 0, "end": 3, "text": "a"}, {"start": 2, "end": 4, "text": "b"}]}
    with pytest.raises(AppError, match=r"prompt 2 \(2-4 s\): overlaps prompt 1"):
        client.predict(name, tl["version"], overlapping, api_name="/set_timeline")
    with pytest.raises(AppError, match="changed by someone else"):
        client.predict(name, tl["version"] - 1, {"prompt": [{"start": 0, "end": 2, "text": "x"}]},
                       api_name="/set_timeline")
    with pytest.raises(AppError, match="confirm by repeating the project name"):
        client.predict(name, "yes", api_name="/delete_project")
    assert client.predict(name, api_name="/get_timeline")["version"] == tl["version"]  # nothing changed
