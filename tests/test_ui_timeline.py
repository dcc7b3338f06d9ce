"""The storyboard editor's server side: timeline state, versioned track edits, three-way form merges,
imports, media segments, settings and the clip plan (no browser; the real storage on SQLite)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.errors import ConflictError
from svi.timeline import StoryboardError
from ui import timeline_ops as T
from ui.errors import UserError
from ui.grid import clip_end_s
from ui.project_ops import create_project
from ui.services import build_services


@pytest.fixture
def services(tmp_path):
    s = build_services(tmp_path / "data", device="cpu", start_workers=False)
    yield s
    s.close()


@pytest.fixture
def project(services, start_image):
    return create_project(services, start_image, "edit me")


def edges(state, n):
    F, m, fps = state["F"], state["m"], state["fps"]
    return [0.0] + [(F + k * (F - m)) / fps for k in range(n)]


def test_state_has_the_grid_the_tracks_and_the_version(services, project):
    state = T.timeline_state(services, project)
    assert state["project"] == project and state["version"] == 1
    assert (state["F"], state["m"], state["fps"]) == (17, 1, 8)
    (seg,) = state["tracks"]["prompt"]
    assert seg["start"] == 0 and seg["end"] == pytest.approx(17 / 8) and isinstance(seg["id"], int)
    assert state["tracks"]["audio"] == state["tracks"]["pose"] == []
    assert state["start_image"].startswith("data:image/jpeg;base64,")
    json.loads(T.state_json(state))


def test_apply_tracks_updates_adds_and_deletes_keeping_ids(services, project):
    state = T.timeline_state(services, project)
    e = edges(state, 3)
    first = state["tracks"]["prompt"][0]
    tracks = {"prompt": [{**first, "text": "a beach at noon"},
                         {"cid": "c1", "start": e[1], "end": e[2], "text": "the ball rolls"},
                         {"cid": "c2", "start": e[2], "end": e[3], "text": "dusk"}]}
    new, created = T.apply_tracks(services, project, state["version"], tracks)
    assert set(created) == {"c1", "c2"}
    ids = [s["id"] for s in new["tracks"]["prompt"]]
    assert ids == [first["id"], created["c1"], created["c2"]]
    assert [s["text"] for s in new["tracks"]["prompt"]] == ["a beach at noon", "the ball rolls", "dusk"]
    assert new["version"] > state["version"] and new["clips"] == 3

    # delete the middle one; unchanged segments are not rewritten
    keep = [s for s in new["tracks"]["prompt"] if s["id"] != created["c1"]]
    newer, created2 = T.apply_tracks(services, project, new["version"], {"prompt": keep})
    assert created2 == {} and [s["id"] for s in newer["tracks"]["prompt"]] == [first["id"], created["c2"]]


def test_a_stale_version_is_a_conflict_and_changes_nothing(services, project):
    state = T.timeline_state(services, project)
    T.apply_tracks(services, project, state["version"], {"prompt": [{**state["tracks"]["prompt"][0], "text": "A"}]})
    with pytest.raises(ConflictError, match="changed by someone else"):
        T.apply_tracks(services, project, state["version"], {"prompt": [{**state["tracks"]["prompt"][0], "text": "B"}]})
    assert T.timeline_state(services, project)["tracks"]["prompt"][0]["text"] == "A"


@pytest.mark.parametrize("tracks, message", [
    ({"prompt": [{"start": 0, "end": 3, "text": "a"}, {"start": 2, "end": 4, "text": "b"}]},
     r"prompt 2 \(2-4 s\): overlaps prompt 1"),
    ({"prompt": [{"start": 0, "end": 2, "text": "  "}]}, "prompt 1 .*must not be empty"),
    ({"prompt": []}, "at least one prompt segment"),
    ({"prompt": [{"start": 2, "end": 1, "text": "x"}]}, "end: must be greater than start"),
    ({"prompt": [{"start": "soon", "end": 1, "text": "x"}]}, "must be a number"),
    ({"prompt": "all of them"}, "must be a list"),
    ({"audio": [{"start": 0, "end": 1, "asset": "0" * 64}], "prompt": [{"start": 0, "end": 1, "text": "x"}]},
     "not part of this project"),
])
def test_invalid_tracks_are_refused_whole(services, project, tracks, message):
    state = T.timeline_state(services, project)
    with pytest.raises((StoryboardError, UserError), match=message):
        T.apply_tracks(services, project, state["version"], tracks)
    after = T.timeline_state(services, project)
    assert after["version"] == state["version"] and after["tracks"] == state["tracks"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3), st.text(min_size=1, max_size=12).filter(
    lambda t: t.strip() and t == t.strip())), min_size=1, max_size=6))
def test_any_valid_track_round_trips(services, project, cells):
    """Gaps and lengths in whole clips: what is applied is what the state then shows, in order."""
    state = T.timeline_state(services, project)
    e = edges(state, 40)
    k, prompts = 0, []
    for gap, length, text in cells:
        k += gap
        prompts.append({"start": e[k], "end": e[k + length], "text": text})
        k += length
    new, _ = T.apply_tracks(services, project, state["version"], {"prompt": prompts})
    got = [(s["start"], s["end"], s["text"]) for s in new["tracks"]["prompt"]]
    assert got == [(pytest.approx(p["start"]), pytest.approx(p["end"]), p["text"]) for p in prompts]


def test_form_edits_merge_three_way(services, project):
    state = T.timeline_state(services, project)
    seg = state["tracks"]["prompt"][0]
    base = {k: seg[k] for k in T.FORM_FIELDS if k in seg}
    e = edges(state, 2)
    # someone else moves it; my text edit lands on their move
    T.apply_tracks(services, project, state["version"], {"prompt": [{**seg, "start": e[1], "end": e[2]}]})
    merged = T.merge_segment(services, project, "prompt", seg["id"], base, {**base, "text": "mine"})
    (now,) = merged["tracks"]["prompt"]
    assert (now["start"], now["text"]) == (pytest.approx(e[1]), "mine")
    # the same field changed by both: refused, theirs kept
    with pytest.raises(ConflictError, match="segment.s end changed"):
        T.merge_segment(services, project, "prompt", seg["id"], base, {**base, "start": 0.0, "end": e[2]})
    with pytest.raises(ConflictError, match="select it again"):
        T.merge_segment(services, project, "prompt", seg["id"], base, None)
    with pytest.raises(UserError, match="nothing to apply"):
        fresh = {k: now[k] for k in T.FORM_FIELDS if k in now}
        T.merge_segment(services, project, "prompt", seg["id"], fresh, dict(fresh))


def test_prompt_stream_lands_on_the_clip_grid(services, project, tmp_path):
    f = tmp_path / "stream.txt"
    f.write_text("# my film\na red circle on a beach\n\nthe circle rolls away\n# end\nnight falls\n", encoding="utf-8")
    state = T.import_prompt_stream(services, project, None, str(f))
    spec_edges = edges(state, 3)
    assert [(p["start"], p["end"], p["text"]) for p in state["tracks"]["prompt"]] == [
        (pytest.approx(spec_edges[i]), pytest.approx(spec_edges[i + 1]), t)
        for i, t in enumerate(["a red circle on a beach", "the circle rolls away", "night falls"])]
    state = T.import_prompt_stream(services, project, None, str(f), mode="append")
    assert len(state["tracks"]["prompt"]) == 6 and state["clips"] == 6
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserError, match="not a UTF-8 text file"):
        T.import_prompt_stream(services, project, None, str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("# only comments\n")
    with pytest.raises(UserError, match="no prompts in the file"):
        T.import_prompt_stream(services, project, None, str(empty))


def _wav(path, seconds=1.5, sr=16000):
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.4 * np.sin(2 * np.pi * 330 * t) * (t < seconds / 2)).astype(np.float32), sr)
    return path


def test_storyboard_json_import_with_its_media(services, project, tmp_path):
    wav = _wav(tmp_path / "voice.wav")
    sb = {"format": "svi-storyboard", "version": 1, "start_image": "missing.png",
          "settings": {"seed": 7, "steps": 3},
          "prompts": [{"start": 0, "end": 4, "text": "talking"}],
          "audio": [{"start": 0.5, "end": 2.0, "path": "voice.wav"}]}
    j = tmp_path / "board.json"
    j.write_text(json.dumps(sb))
    with pytest.raises(UserError, match="names files you did not select: voice.wav"):
        T.import_storyboard_json(services, project, None, [str(j)])
    state = T.import_storyboard_json(services, project, None, [str(j), str(wav)])
    assert [p["text"] for p in state["tracks"]["prompt"]] == ["talking"]
    (a,) = state["tracks"]["audio"]
    assert (a["start"], a["end"], a["name"]) == (0.5, 2.0, "voice.wav")
    assert state["settings"]["seed"] == 7 and state["settings"]["steps"] == 3
    preview = state["media"][a["asset"]]
    assert preview["kind"] == "audio" and max(preview["peaks"]) == 1.0
    assert len(preview["peaks"]) == pytest.approx(1.5 * preview["rate"], abs=1)
    with pytest.raises(UserError, match="exactly one storyboard .json"):
        T.import_storyboard_json(services, project, None, [str(wav)])


def test_media_segments_and_their_previews(services, project, tmp_path):
    from svi.conditioning.pose import N_LANDMARKS, PoseTrack

    state = T.add_audio(services, project, None, str(_wav(tmp_path / "a.wav")), None)
    (a,) = state["tracks"]["audio"]
    assert (a["start"], a["end"]) == (0.0, 1.5)
    state = T.add_audio(services, project, None, str(_wav(tmp_path / "b.wav", 1.0)), 0)  # 0: after the last
    assert [(x["start"], x["end"]) for x in state["tracks"]["audio"]] == [(0.0, 1.5), (1.5, 2.5)]
    with pytest.raises(StoryboardError, match="overlaps"):
        T.add_audio(services, project, None, str(_wav(tmp_path / "c.wav")), 1.0)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 10)
    from svi.conditioning.audio import AudioError

    with pytest.raises(AudioError, match="junk.wav: cannot decode audio"):
        T.add_audio(services, project, None, str(junk), None)

    T_, rng = 20, np.random.default_rng(0)
    kp = np.tile(np.linspace(0.2, 0.8, N_LANDMARKS * 2, dtype=np.float32).reshape(N_LANDMARKS, 2), (T_, 1, 1))
    ones = np.ones((T_, N_LANDMARKS), np.float32)
    track = PoseTrack(keypoints=kp + rng.normal(0, 0.01, kp.shape).astype(np.float32), z=0 * ones,
                      visibility=ones, presence=ones, detected=np.ones(T_, bool), fps=10.0, width=64, height=96)
    pose_file = track.save(tmp_path / "dance.pose.json")
    state = T.add_pose(services, project, None, str(pose_file), None)
    (p,) = state["tracks"]["pose"]
    assert (p["start"], p["end"], p["speed"]) == (0.0, 2.0, 1.0)
    prev = state["media"][p["asset"]]
    assert prev["kind"] == "pose" and len(prev["skeletons"]) == 4 and prev["aspect"] == pytest.approx(64 / 96, abs=1e-4)
    assert len(prev["skeletons"][0]) % 4 == 0 and len(prev["skeletons"][0]) > 0
    rows, _ = T.plan_rows(services, project)
    assert "a.wav" in rows[0][3] and "dance.pose.json" in rows[0][4]


def test_settings_are_checked_and_drive_the_plan(services, project, tmp_path):
    state = T.timeline_state(services, project)
    state = T.set_settings(services, project, state["version"], {"steps": 3, "seed": 5})
    assert state["settings"]["steps"] == 3
    rows, estimate = T.plan_rows(services, project)
    assert "3 steps" in estimate and "No speed measured" in estimate and rows[0][-1] == "missing"
    services.speeds.record("storyworld-tiny/shot", "cpu", 3, {"total": 4.0, "denoise": 1.5})
    _, estimate = T.plan_rows(services, project)
    assert "about 4 s" in estimate and "0.50 s per step" in estimate
    with pytest.raises(UserError, match="unknown model preset 'nope'"):
        T.set_settings(services, project, state["version"], {"model": "nope"})
    with pytest.raises(UserError, match="LoRA file not found"):
        T.set_settings(services, project, state["version"], {"loras": [{"path": str(tmp_path / "x.safetensors")}]})
    with pytest.raises(UserError, match="unknown setting"):
        T.set_settings(services, project, state["version"], {"colour": "red"})
    with pytest.raises(ConflictError):
        T.set_settings(services, project, state["version"] - 1, {"seed": 6})


def test_settings_form_merges_its_changes_onto_a_newer_version(services, project):
    """Apply sends the settings the form was filled from: a segment edit since (which moves the version
    on) no longer throws the form away; a setting someone else changed since is still refused."""
    state = T.timeline_state(services, project)
    base = dict(state["settings"])
    e = edges(state, 2)
    newer = T.edit_segment(services, project, state["version"], "prompt", None,
                           {"start": e[1], "end": e[2], "text": "second"})
    with pytest.raises(ConflictError):  # the version check alone refuses the form's stale version
        T.set_settings(services, project, state["version"], {"steps": 2})
    merged = T.merge_settings(services, project, base, {**base, "steps": 2})
    assert merged["settings"]["steps"] == 2 and merged["version"] > newer["version"]
    assert [r["text"] for r in merged["tracks"]["prompt"]] == [r["text"] for r in newer["tracks"]["prompt"]]
    mine = dict(merged["settings"])
    T.set_settings(services, project, merged["version"], {"seed": 7})  # another window
    with pytest.raises(ConflictError, match="seed"):
        T.merge_settings(services, project, mine, {**mine, "seed": 9})
    ok = T.merge_settings(services, project, mine, {**mine, "steps": 4})
    assert (ok["settings"]["seed"], ok["settings"]["steps"]) == (7, 4)  # theirs kept, mine applied
    assert T.merge_settings(services, project, ok["settings"], dict(ok["settings"]))["version"] == ok["version"]


def test_edit_segment_api_adds_changes_and_deletes(services, project):
    state = T.timeline_state(services, project)
    e = edges(state, 2)
    state = T.edit_segment(services, project, state["version"], "prompt", None, {"start": e[1], "end": e[2],
                                                                                 "text": "second"})
    sid = state["tracks"]["prompt"][1]["id"]
    state = T.edit_segment(services, project, None, "prompt", sid, {"text": "2nd"})
    assert state["tracks"]["prompt"][1]["text"] == "2nd"
    state = T.edit_segment(services, project, state["version"], "prompt", sid, None)
    assert len(state["tracks"]["prompt"]) == 1
    with pytest.raises(UserError, match="no prompt segment"):
        T.edit_segment(services, project, None, "prompt", sid, {"text": "gone"})
    with pytest.raises(UserError, match="unknown track"):
        T.edit_segment(services, project, None, "music", None, {})


def test_clip_edges_match_the_planner(services, project):
    from svi.presets import resolve_spec

    spec = resolve_spec("storyworld-tiny", "shot")
    state = T.timeline_state(services, project)
    assert edges(state, 5)[1:] == [pytest.approx(clip_end_s(spec, k)) for k in range(5)]
