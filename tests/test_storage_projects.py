"""Project operations on SQLite and PostgreSQL: CRUD, storyboard round trip, optimistic locking,
takes, staleness, retakes and the resume point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import projects as P
from storage.errors import ConflictError, NotFoundError, ProjectExistsError, StorageError
from storage.frames import decode_frames
from svi.planning import ClipOverride
from svi.timeline import PromptSegment, Settings
from tests.test_storage_support import (  # noqa: F401 (fixtures)
    FakeRenderer, db, db_url, make_board, media, plan_of, postgres_cluster, store,
)


def _render_all(Session, store, name, plan, renderer=None, choose=True):
    renderer = renderer or FakeRenderer()
    rp_carry = None
    with Session() as s:
        rp = P.resume_point(s, store, name, plan)
        rp_carry = rp.carry
    out = []
    for r in renderer.stream(plan, start_at=rp.start_at, carry=rp_carry):
        with Session.begin() as s:
            out.append(P.TakeInfo.of(P.record_take(s, store, name, r, choose=choose)))
    return out


# ==================================================================== projects
def test_create_list_rename_duplicate_delete(db, store, media):
    with db.begin() as s:
        P.create_project(s, "alpha")
        P.create_project(s, "beta")
    with db.begin() as s:
        with pytest.raises(ProjectExistsError, match="already exists"):
            P.create_project(s, "alpha")
    with db() as s:
        assert [p.name for p in P.list_projects(s)] == ["beta", "alpha"]  # newest first
    with db.begin() as s:
        P.save_storyboard(s, store, "alpha", make_board(media))
    plan = plan_of(make_board(media))
    _render_all(db, store, "alpha", plan)
    with db.begin() as s:
        P.rename_project(s, "alpha", "gamma")
        with pytest.raises(ProjectExistsError):
            P.rename_project(s, "gamma", "beta")
    with db.begin() as s:
        P.duplicate_project(s, "gamma", "gamma copy")
    with db() as s:
        a, b = P.load_storyboard(s, store, "gamma"), P.load_storyboard(s, store, "gamma copy")
        assert a == b
        assert P.clip_states(s, "gamma copy", plan) == [
            replace(x, take_id=y.take_id) for x, y in zip(P.clip_states(s, "gamma", plan),
                                                          P.clip_states(s, "gamma copy", plan))]
        assert all(x.status == "valid" for x in P.clip_states(s, "gamma copy", plan))
    with db.begin() as s:
        P.delete_project(s, "gamma")
    with db() as s:
        assert sorted(p.name for p in P.list_projects(s)) == ["beta", "gamma copy"]
        with pytest.raises(NotFoundError, match="no project named 'gamma'"):
            P.get_project(s, "gamma")
        # the copy's takes survive the original's deletion (files are shared, rows are not)
        assert len(P.takes_of(s, "gamma copy")) == len(plan)


@pytest.mark.parametrize("bad, msg", [("", "empty"), ("   ", "empty"), ("x" * 201, "longer"),
                                      ("a\x00b", "control"), ("tab\there", "control"), (5, "text")])
def test_bad_project_names_are_refused(bad, msg):
    with pytest.raises(StorageError, match=msg):
        P.validate_name(bad)


def test_names_are_trimmed_and_normalised():
    assert P.validate_name("  Caf\u0065\u0301 film ") == "Caf\u00e9 film"


# ==================================================================== storyboards
def test_storyboard_round_trip_resolves_media_to_store_files(db, store, media, tmp_path):
    board = make_board(media)
    with db.begin() as s:
        P.save_storyboard(s, store, "film", board)
    with db() as s:
        back = P.load_storyboard(s, store, "film")
    assert back.prompts == board.prompts and back.settings == board.settings
    for orig, got in [(board.start_image, back.start_image), (board.audio[0].path, back.audio[0].path),
                      (board.poses[0].path, back.poses[0].path)]:
        assert got.startswith(str(store.root)) and open(got, "rb").read() == open(orig, "rb").read()
    assert replace(back.audio[0], path="x") == replace(board.audio[0], path="x")
    assert replace(back.poses[0], path="x") == replace(board.poses[0], path="x")
    # the originals can go away: the project keeps its own copies
    for p in media.values():
        p.unlink()
    with db() as s:
        assert P.load_storyboard(s, store, "film") == back
    # the same plan (hashes) from the stored storyboard
    assert plan_of(back).clips[-1].input_hash("c") == plan_of(back).clips[-1].input_hash("c")


def test_saving_the_same_storyboard_again_changes_nothing(db, store, media):
    board = make_board(media)
    with db.begin() as s:
        v1 = P.save_storyboard(s, store, "film", board).version
    with db.begin() as s:
        v2 = P.save_storyboard(s, store, "film", board).version
    with db.begin() as s:
        v3 = P.save_storyboard(s, store, "film", board.with_settings(seed=99)).version
    assert v1 == v2 and v3 == v2 + 1


def test_segment_edits_bump_the_version_and_show_in_the_storyboard(db, store, media):
    with db.begin() as s:
        P.save_storyboard(s, store, "film", make_board(media))
    with db() as s:
        v0 = P.get_project(s, "film").version
    with db.begin() as s:
        seg = P.add_segment(s, store, "film", PromptSegment(8.0, 10.0, "a blue star spins"), expected_version=v0)
        seg_id = seg.id
    with db.begin() as s:
        P.update_segment(s, store, "film", seg_id, PromptSegment(8.0, 12.0, "a blue star spins slowly", seed=5))
    with db() as s:
        board = P.load_storyboard(s, store, "film")
        assert board.prompts[-1] == PromptSegment(8.0, 12.0, "a blue star spins slowly", seed=5)
        assert P.get_project(s, "film").version == v0 + 2
    with db.begin() as s:
        with pytest.raises(StorageError, match="prompt segment, not audio"):
            P.update_segment(s, store, "film", seg_id, make_board(media).audio[0])
    with db.begin() as s:
        P.delete_segment(s, "film", seg_id)
        P.set_settings(s, "film", Settings(seed=3, steps=2))
    with db() as s:
        board = P.load_storyboard(s, store, "film")
        assert len(board.prompts) == 2 and board.settings.seed == 3
        with pytest.raises(NotFoundError):
            P.delete_segment(s, "film", seg_id)


# ==================================================================== optimistic locking
def test_two_writers_second_gets_a_conflict_not_a_lost_update(db, store, media):
    with db.begin() as s:
        P.save_storyboard(s, store, "film", make_board(media))
    a, b = db(), db()
    try:
        pa, pb = P.get_project(a, "film"), P.get_project(b, "film")  # both read version v
        assert pa.version == pb.version
        P.set_settings(a, "film", Settings(seed=1, steps=2))
        a.commit()
        with pytest.raises(ConflictError, match="changed by someone else"):
            P.set_settings(b, "film", Settings(seed=2, steps=2))  # UPDATE ... WHERE version = v: no row
        b.rollback()
    finally:
        a.close()
        b.close()
    with db() as s:
        assert P.load_storyboard(s, store, "film").settings.seed == 1  # the first write survived


def test_stale_expected_version_is_a_conflict(db, store, media):
    with db.begin() as s:
        v = P.save_storyboard(s, store, "film", make_board(media)).version
    with db.begin() as s:
        P.rename_project(s, "film", "film 2", expected_version=v)
    with db.begin() as s:
        with pytest.raises(ConflictError, match=f"your copy is version {v}"):
            P.add_segment(s, store, "film 2", PromptSegment(8, 9, "x"), expected_version=v)


# ==================================================================== takes, staleness, resume
def test_resume_point_is_first_clip_without_valid_take_with_stored_carry(db, store, media):
    board = make_board(media)
    with db.begin() as s:
        P.save_storyboard(s, store, "film", board)
    plan = plan_of(board)
    assert len(plan) == 4
    renderer = FakeRenderer(fail_at=2)
    with pytest.raises(RuntimeError):
        _render_all(db, store, "film", plan, renderer)
    with db() as s:
        assert [x.status for x in P.clip_states(s, "film", plan)] == ["valid", "valid", "missing", "missing"]
        rp = P.resume_point(s, store, "film", plan)
        take1 = P.takes_of(s, "film", 1)[0]
        assert rp.start_at == 2 and rp.carry_hash == take1.carry_hash
        np.testing.assert_array_equal(rp.carry, decode_frames(str(P.asset_path(store, take1.carry))))
    full = list(FakeRenderer().stream(plan))
    resumed = _render_all(db, store, "film", plan)
    assert [(t.input_hash, t.carry_hash) for t in resumed] == [(r.input_hash, r.carry_hash) for r in full[2:]]
    with db() as s:
        assert P.resume_point(s, store, "film", plan).start_at == 4
        frames = list(P.chosen_frames(s, store, "film", plan))
    np.testing.assert_array_equal(np.concatenate(frames), np.concatenate([r.frames for r in full]))


def test_retake_marks_exactly_the_later_clips_stale(db, store, media):
    board = make_board(media, seconds=10.0)
    with db.begin() as s:
        P.save_storyboard(s, store, "film", board)
    plan = plan_of(board)
    n = len(plan)
    _render_all(db, store, "film", plan)
    k = 2
    # a retake of clip k: another seed, rendered from the carry of clip k-1, chosen
    with db.begin() as s:
        P.set_clip_override(s, "film", k, ClipOverride(seed=12345))
    with db() as s:
        plan2 = P.plan_project(s, store, "film")  # the stored storyboard with its overrides
        assert [x.status for x in P.clip_states(s, "film", plan2)] == ["valid"] * k + ["stale"] * (n - k)
        rp = P.resume_point(s, store, "film", plan2)
    assert rp.start_at == k
    new = next(FakeRenderer().stream(plan2, start_at=k, carry=rp.carry))
    with db.begin() as s:
        P.record_take(s, store, "film", new)
    with db() as s:
        states = P.clip_states(s, "film", plan2)
        assert [x.status for x in states] == ["valid"] * (k + 1) + ["stale"] * (n - k - 1)
        assert P.stale_clips(s, "film", plan2) == list(range(k + 1, n))
        old_take = [t for t in P.takes_of(s, "film", k) if not t.chosen][0]
    # choosing the old take back (and dropping the override) makes everything valid again
    with db.begin() as s:
        P.choose_take(s, "film", old_take.id)
        P.set_clip_override(s, "film", k, None)
    with db() as s:
        assert P.stale_clips(s, "film", plan) == []
        assert sum(t.chosen for t in P.takes_of(s, "film", k)) == 1


def test_editing_a_prompt_makes_its_clip_and_all_later_ones_stale(db, store, media):
    board = make_board(media, seconds=8.0, prompts=4)  # one prompt per 2 s; clips cover ~2 s each
    with db.begin() as s:
        P.save_storyboard(s, store, "film", board)
    plan = plan_of(board)
    _render_all(db, store, "film", plan)
    edited = replace(board, prompts=board.prompts[:3] + (replace(board.prompts[3], text="a green cube"),))
    plan2 = plan_of(edited)
    changed = [c.index for c, d in zip(plan.clips, plan2.clips) if c.own_hash != d.own_hash]
    assert changed and changed[0] > 0
    with db() as s:
        assert P.stale_clips(s, "film", plan2) == list(range(changed[0], len(plan2)))


def test_choose_take_checks_the_project(db, store, media):
    with db.begin() as s:
        P.save_storyboard(s, store, "a", make_board(media))
        P.create_project(s, "b")
    plan = plan_of(make_board(media))
    takes = _render_all(db, store, "a", plan)
    with db.begin() as s:
        with pytest.raises(NotFoundError, match="has no take"):
            P.choose_take(s, "b", takes[0].id)


# ==================================================================== the validity rule, as a property
class _T:  # the two fields the rule reads
    def __init__(self, input_hash, carry_hash, id=0):
        self.input_hash, self.carry_hash, self.id = input_hash, carry_hash, id


def _chain(plan, seed_of):
    """Chosen takes as a renderer would produce them, clip k's carry depending on seed_of(k)."""
    out, carry = {}, ""
    for c in plan.clips:
        ih = c.input_hash(carry)
        carry = f"carry-{c.index}-{seed_of(c.index)}-{ih[:8]}"
        out[c.index] = _T(ih, carry)
    return out


@pytest.fixture(scope="module")
def long_plan(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    from tests.test_storage_support import write_pose, write_png, write_wav

    m = {"image": write_png(d / "i.png"), "audio": write_wav(d / "a.wav"), "pose": write_pose(d / "p.json")}
    return plan_of(make_board(m, seconds=20.0))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_retake_property_exactly_later_clips_stale(long_plan, data):
    n = len(long_plan)
    k = data.draw(st.integers(0, n - 1), label="retaken clip")
    chosen = _chain(long_plan, lambda i: 0)
    assert {s.status for s in P.states_from_takes(long_plan, chosen)} == {"valid"}
    # the retake: same inputs for clip k (its carry in is unchanged), different pixels out
    retake = _T(chosen[k].input_hash, chosen[k].carry_hash + "-retake")
    chosen = {**chosen, k: retake}
    states = P.states_from_takes(long_plan, chosen)
    assert [s.index for s in states if s.status == "stale"] == list(range(k + 1, n))
    assert all(s.status == "valid" for s in states[: k + 1])
    # dropping a take in the middle: that clip is missing, everything after it stale
    j = data.draw(st.integers(0, n - 1), label="dropped clip")
    states = P.states_from_takes(long_plan, {i: t for i, t in chosen.items() if i != j})
    assert states[j].status == "missing"
    assert all(s.status == "stale" for s in states[j + 1:])
