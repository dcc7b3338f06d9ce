"""Properties of plan(): the clip grid, seeds, media slices and input hashes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svi import ClipOverride, plan, resolve_spec
from svi.planning import clip_count, clip_seed
from svi.timeline import AudioSegment, PoseSegment, PromptSegment, Storyboard

fake_hash = "h:{}".format  # plan only needs a stable content id per path


@st.composite
def storyboards(draw):
    n = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.floats(0.1, 60), min_size=n, max_size=n, unique=True)))
    starts = [0.0, *cuts[:-1]]
    prompts = tuple(PromptSegment(s, e, f"prompt {i}") for i, (s, e) in enumerate(zip(starts, cuts)))
    audio = ()
    if draw(st.booleans()):
        a0 = draw(st.floats(0, 30))
        audio = (AudioSegment(a0, a0 + draw(st.floats(0.2, 30)), "voice.wav", offset=draw(st.floats(0, 5))),)
    poses = ()
    if draw(st.booleans()):
        p0 = draw(st.floats(0, 30))
        poses = (PoseSegment(p0, p0 + draw(st.floats(0.2, 30)), "dance.json", offset=draw(st.floats(0, 5)),
                             speed=draw(st.floats(0.5, 2))),)
    return Storyboard("start.png", prompts, audio, poses).with_settings(seed=draw(st.integers(0, 2**62)))


specs = st.sampled_from([resolve_spec("storyworld-tiny", "shot"), resolve_spec("storyworld-tiny", "film"),
                         resolve_spec("wan2.1-i2v-14b-480p", "film"), resolve_spec("wan2.1-i2v-14b-480p", "talk")])


@settings(max_examples=150, deadline=None)
@given(storyboards(), specs)
def test_clips_tile_the_output_and_cover_the_duration(sb, spec):
    p = plan(sb, spec, asset_hash=fake_hash)
    F, m = spec.frames_per_clip, spec.motion_frames
    assert p.clips[0].out_start == 0
    for a, b in zip(p.clips, p.clips[1:]):
        assert b.out_start == a.out_end  # no gap, no duplicated frame
        assert b.gen_start == a.gen_start + F - m  # clip k+1 starts m frames before clip k ends
        assert b.gen_start + b.skip_frames == a.out_end
    assert p.total_frames == (F - m) * len(p) + m
    assert p.total_frames >= round(sb.duration * spec.fps)
    assert len(p) == 1 or p.total_frames - (F - m) < max(F, round(sb.duration * spec.fps))  # minimal
    assert [c.condition_frames for c in p.clips] == [1] + [m] * (len(p) - 1)


@settings(max_examples=100, deadline=None)
@given(storyboards(), specs)
def test_seeds_distinct_and_reproducible(sb, spec):
    p1, p2 = plan(sb, spec, asset_hash=fake_hash), plan(sb, spec, asset_hash=fake_hash)
    assert p1 == p2  # pure
    seeds = [c.seed for c in p1.clips]
    assert len(set(seeds)) == len(seeds)
    other = plan(sb.with_settings(seed=sb.settings.seed + 1), spec, asset_hash=fake_hash)
    assert not set(seeds) & {c.seed for c in other.clips}


@settings(max_examples=100, deadline=None)
@given(storyboards(), specs)
def test_media_slices_sit_on_the_video_frame_grid(sb, spec):
    p = plan(sb, spec, asset_hash=fake_hash)
    fps = spec.fps
    for segs, field in ((sb.audio, "audio"), (sb.poses, "pose")):
        covered = {}
        for clip in p.clips:
            for piece in getattr(clip, field):
                assert 0 <= piece.dst_start and piece.dst_start + piece.length <= clip.frames
                seg = segs[0]
                g0 = clip.gen_start + piece.dst_start  # global frame of the piece's first frame
                # the asset time of global frame g is offset + (g - seg_start_frame)/fps * speed
                want = seg.offset + (g0 - round(seg.start * fps)) / fps * getattr(seg, "speed", 1.0)
                assert piece.src_start_s == pytest.approx(want)
                for g in range(g0, g0 + piece.length):
                    covered[g] = covered.get(g, 0) + 1
        if segs:
            s0, s1 = round(segs[0].start * fps), round(segs[0].end * fps)
            in_range = [g for g in range(s0, s1) if g < p.clips[-1].gen_start + spec.frames_per_clip]
            assert all(g in covered for g in in_range)  # every frame in the segment is conditioned


def test_prompt_is_the_segment_covering_most_of_the_clip():
    spec = resolve_spec("storyworld-tiny", "shot")  # F=17, m=1, fps 8: clip k outputs 2 s
    sb = Storyboard("s.png", (PromptSegment(0, 2.9, "first"), PromptSegment(2.9, 8, "second")))
    p = plan(sb, spec, asset_hash=fake_hash)
    assert [c.prompt for c in p.clips] == ["first", "second", "second", "second"]
    # clip 2 outputs [4.125, 6.125) s: mostly gap, but it is where "third" starts
    gap = Storyboard("s.png", (PromptSegment(0, 2, "first"), PromptSegment(6, 8, "third")))
    assert [c.prompt for c in plan(gap, spec, asset_hash=fake_hash).clips] == ["first", "first", "third", "third"]


def test_input_hash_changes_exactly_where_inputs_change():
    spec = resolve_spec("storyworld-tiny", "shot")
    sb = Storyboard("s.png", (PromptSegment(0, 4, "a"), PromptSegment(4, 8, "b")))
    p = plan(sb, spec, asset_hash=fake_hash)
    edited = plan(replace(sb, prompts=(PromptSegment(0, 4, "a"), PromptSegment(4, 8, "B!"))), spec,
                  asset_hash=fake_hash)
    same = [x.own_hash == y.own_hash for x, y in zip(p.clips, edited.clips)]
    assert same == [True, True, False, False]
    # the carry is part of the identity from clip 1 on, not for clip 0
    c0, c1 = p.clips[0], p.clips[1]
    assert c0.input_hash("x") == c0.input_hash("y")
    assert c1.input_hash("x") != c1.input_hash("y")
    # the image content is part of every clip's identity
    other_img = plan(sb, spec, asset_hash=lambda path: "other")
    assert all(x.own_hash != y.own_hash for x, y in zip(p.clips, other_img.clips))


def test_overrides_retake_one_clip():
    spec = resolve_spec("storyworld-tiny", "shot")
    sb = Storyboard("s.png", (PromptSegment(0, 8, "a"),))
    p = plan(sb, spec, asset_hash=fake_hash)
    q = plan(sb, spec, asset_hash=fake_hash, overrides={2: ClipOverride(seed=123, prompt="z")})
    assert (q.clips[2].seed, q.clips[2].prompt) == (123, "z")
    assert [a.own_hash == b.own_hash for a, b in zip(p.clips, q.clips)] == [True, True, False, True]


def test_clip_count_and_seed_helpers():
    assert clip_count(0.1, 8, 17, 1) == 1
    assert clip_count(2.0, 8, 17, 1) == 1  # 16 frames wanted, clip 0 gives 17
    assert clip_count(4.0, 8, 17, 1) == 2  # 32 wanted: 17 + 16 = 33
    assert clip_count(5.0, 24, 81, 5) == 2  # 120 wanted: 81 + 76 = 157
    assert clip_seed(42, 0) != clip_seed(42, 1) and clip_seed(42, 0) == clip_seed(42, 0)
    assert 0 <= clip_seed(2**62, 10**6) < 2**63


def test_missing_media_file_is_named(tmp_path):
    from svi.timeline import StoryboardError

    sb = Storyboard(str(tmp_path / "nope.png"), (PromptSegment(0, 1, "a"),))
    with pytest.raises(StoryboardError, match="nope.png"):
        plan(sb, resolve_spec())
