"""Server-owned render jobs on the bundled tiny model: progress, per-clip segments, cancel, resume,
retake, choosing a take, export with audio, drift. One denoising step per clip keeps them fast."""

from __future__ import annotations

import numpy as np
import pytest

from storage import projects as P
from ui import render_ops as R
from ui import timeline_ops as T
from ui.export import export_video, latest_export
from ui.grid import clip_end_s
from ui.jobs import JobView
from ui.project_ops import create_project
from ui.services import build_services
from svi.presets import resolve_spec


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    s = build_services(tmp_path_factory.mktemp("jobs") / "data", device="cpu")
    yield s
    s.close()


def make_project(services, image, name, clips=3):
    create_project(services, image, name)
    spec = resolve_spec("storyworld-tiny", "shot")
    edges = [0.0] + [clip_end_s(spec, k) for k in range(clips)]
    state = T.timeline_state(services, name)
    state = T.set_settings(services, name, state["version"], {"steps": 1})
    prompts = [{"start": edges[k], "end": edges[k + 1], "text": f"scene {k + 1}"} for k in range(clips)]
    T.apply_tracks(services, name, state["version"], {"prompt": prompts})
    return name


def follow(services, view: JobView, timeout=240.0) -> list[JobView]:
    """Every revision of the job until it ends (what a page's follower sees)."""
    seen = [view]
    while view.active:
        view = services.jobs.wait(view.id, view.rev, timeout=timeout)
        seen.append(view)
    return seen


def test_render_streams_clips_and_resumes(services, start_image):
    name = make_project(services, start_image, "render me")
    seen = follow(services, services.jobs.submit(name))
    last = seen[-1]
    assert last.status == "done", last.error
    assert last.clips_done == (0, 1, 2) and len(last.take_ids) == 3
    # progress went through clips and steps, and a clip was out while the job still ran
    assert any(v.status == "running" and v.current_clip == 1 for v in seen)
    assert any(v.active and v.segments for v in seen)
    assert "Rendering clip 1 of 3 · step 1 of 1" in "\n".join(v.progress_text() for v in seen)
    from svi.video import video_info

    infos = [video_info(p) for p in last.segments]
    assert [i["frames"] for i in infos] == [17, 16, 16] and all(i["duration"] > 1.0 for i in infos)
    assert last.progress_text().startswith("Done: 3 clips rendered")
    # measured speeds now give an estimate; a second render has nothing to do
    assert services.speeds.clip_seconds("storyworld-tiny/shot", "cpu", 1) > 0
    again = follow(services, services.jobs.submit(name))[-1]
    assert again.status == "done" and again.message.startswith("Nothing to render")
    cards = R.clip_cards(services, name)
    assert [c.status for c in cards] == ["valid"] * 3 and all(c.thumb for c in cards)


def test_cancel_keeps_finished_clips_and_resume_continues(services, start_image):
    name = make_project(services, start_image, "cancel me", clips=3)
    view = services.jobs.submit(name)
    while not view.clips_done:  # cancel once the first clip is in
        view = services.jobs.wait(view.id, view.rev, 120)
        assert view.status != "failed", view.error
    services.jobs.cancel(name)
    last = follow(services, view)[-1]
    assert last.status == "cancelled" and 0 < len(last.clips_done) < 3
    assert "finished clip" in last.progress_text()
    with services.Session() as s:
        plan = P.plan_project(s, services.store, name)
        states = [st.status for st in P.clip_states(s, name, plan)]
    assert states[0] == "valid" and "missing" in states
    resumed = follow(services, services.jobs.submit(name))[-1]
    assert resumed.status == "done" and resumed.first_clip == len(last.clips_done)
    assert [c.status for c in R.clip_cards(services, name)] == ["valid"] * 3


def test_retake_choose_export_and_drift(services, start_image, tmp_path):
    name = make_project(services, start_image, "retake me", clips=3)
    assert follow(services, services.jobs.submit(name))[-1].status == "done"
    first = R.clip_detail(services, name, 1)
    # a retake with an edited prompt: only clip 2 renders; clip 3 turns stale
    view = R.retake(services, name, 1, seed=1234, prompt="scene 2, at night")
    last = follow(services, view)[-1]
    assert last.status == "done" and last.clips_done == (1,)
    detail = R.clip_detail(services, name, 1)
    assert len(detail.takes) == 2 and detail.seed == 1234 and detail.prompt == "scene 2, at night"
    assert [c.status for c in R.clip_cards(services, name)] == ["valid", "valid", "stale"]
    # back to the first take: its seed and prompt come back, so clips 2 and 3 are valid again
    note = R.choose(services, name, first.takes[0]["id"])
    assert "now uses take" in note and "stale" in note
    assert [c.status for c in R.clip_cards(services, name)] == ["valid"] * 3
    assert R.clip_detail(services, name, 1).prompt == "scene 2"
    with pytest.raises(Exception, match="clip 9 does not exist"):
        R.retake(services, name, 8)

    # export with the storyboard's audio
    import soundfile as sf

    wav = tmp_path / "tone.wav"
    sf.write(wav, 0.2 * np.sin(np.linspace(0, 900, 16000 * 2)), 16000)
    state = T.add_audio(services, name, None, str(wav), None)
    assert state["tracks"]["audio"]
    with pytest.raises(Exception, match="not rendered"):  # the audio changed every clip's inputs
        export_video(services, name)
    assert follow(services, services.jobs.submit(name))[-1].status == "done"
    from svi.video import video_info

    out = export_video(services, name)
    info = video_info(out)
    assert info["frames"] == 49 and info["audio_duration"] == pytest.approx(49 / 8, abs=0.05)
    assert latest_export(services, name) == out
    rows = R.drift(services, name)
    assert {r["clip"] for r in rows} == {1, 2, 3}
    assert all(r["value"] == 0 for r in rows if r["clip"] == 1)
