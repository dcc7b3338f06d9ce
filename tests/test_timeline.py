"""Storyboard dataclasses: JSON round trip, the example file, and validation that names the fault."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from svi.timeline import (AudioSegment, LoraRef, PoseSegment, PromptSegment, Settings, Storyboard, StoryboardError,
                          load_storyboard, prompts_from_stream, save_storyboard)

from .conftest import ROOT


def board(**kw) -> Storyboard:
    base = dict(start_image="start.png", prompts=(PromptSegment(0, 2, "a red ball"), PromptSegment(2, 5, "a cube")))
    return Storyboard(**{**base, **kw})


def test_round_trip_preserves_everything(tmp_path):
    sb = board(
        audio=(AudioSegment(0, 4, str(tmp_path / "a.wav"), offset=1.5),),
        poses=(PoseSegment(1, 3, str(tmp_path / "p.json"), offset=0.5, speed=1.25),),
        settings=Settings(seed=7, steps=20, cfg=4.0, loras=(LoraRef(str(tmp_path / "x.safetensors"), 0.8),)),
    )
    sb = Storyboard(start_image=str(tmp_path / "start.png"), prompts=sb.prompts, audio=sb.audio, poses=sb.poses,
                    settings=sb.settings)
    path = tmp_path / "sb.json"
    save_storyboard(sb, path)
    raw = json.loads(path.read_text())
    assert raw["start_image"] == "start.png" and raw["audio"][0]["path"] == "a.wav"  # stored relative
    assert load_storyboard(path) == sb


def test_bundled_example_loads_and_references_bundled_files():
    sb = load_storyboard(ROOT / "assets/examples/storyboard.json")
    assert sb.duration > 0 and len(sb.prompts) >= 2
    for p in [sb.start_image, *(a.path for a in sb.audio), *(p.path for p in sb.poses)]:
        assert (ROOT / "assets").resolve() in Path(p).resolve().parents, p
        assert os.path.isfile(p), p


@pytest.mark.parametrize("text, needle", [
    ("", "empty"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"start_image": "a.png", "prompts": []}', "at least one prompt"),
    ('{"start_image": "a.png", "prompts": [{"start": 0, "end": -1, "text": "x"}]}', "prompts[0].end"),
    ('{"start_image": "a.png", "prompts": [{"start": -2, "end": 1, "text": "x"}]}', "prompts[0].start"),
    ('{"start_image": "a.png", "prompts": [{"start": 0, "end": 1e9, "text": "x"}]}', "limit"),
    ('{"start_image": "a.png", "settings": {"duration": -3}, "prompts": [{"start": 0, "end": 1, "text": "x"}]}',
     "settings.duration"),
    ('{"start_image": "a.png", "prompts": [{"start": 0, "end": "2", "text": "x"}]}', "must be a number"),
    ('{"start_image": "a.png", "prompts": [{"start": 0, "end": 2, "text": "  "}]}', "prompts[0].text"),
    ('{"start_image": "a.png", "prompts": [{"start": 0, "end": 2, "txt": "x"}]}', "unknown field"),
    ('{"prompts": [{"start": 0, "end": 2, "text": "x"}]}', "start_image"),
    ('{"start_image": "a.png", "version": 99, "prompts": []}', "version"),
])
def test_malformed_storyboards_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(StoryboardError) as e:
        load_storyboard(path)
    assert needle in str(e.value)


def test_overlapping_segments_in_one_track_are_rejected():
    sb = board(prompts=(PromptSegment(0, 3, "a"), PromptSegment(2, 5, "b")))
    assert any("overlaps" in p for p in sb.problems())
    # Different tracks may overlap freely.
    assert board(audio=(AudioSegment(0, 5, "a.wav"),)).problems() == []


def test_duration_follows_segments_unless_set():
    assert board().duration == 5
    assert board(audio=(AudioSegment(0, 9, "a.wav"),)).duration == 9
    assert board().with_settings(duration=3.0).duration == 3.0


def test_missing_file(tmp_path):
    with pytest.raises(StoryboardError, match="not found"):
        load_storyboard(tmp_path / "nope.json")


def test_prompt_stream_is_parsed_without_executing():
    text = "# comment\nprompts = [__import__('os').system('false')]\n\na cat\n a dog \n"
    segs = prompts_from_stream(text, 2.0)
    assert [s.text for s in segs] == ["prompts = [__import__('os').system('false')]", "a cat", "a dog"]
    assert [(s.start, s.end) for s in segs] == [(0, 2), (2, 4), (4, 6)]
