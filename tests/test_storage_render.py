"""The render job (one transaction per finished clip, resume, cancel, failure) with the tiny fake
renderer, and the `projects` commands of the CLI."""

from __future__ import annotations

import zipfile

import pytest

from storage import cli
from storage import projects as P
from storage.render_job import RenderProgress, latest_render, render_project
from tests.test_storage_support import (  # noqa: F401 (fixtures)
    FakeRenderer, db, db_url, make_board, media, postgres_cluster, store,
)


@pytest.fixture
def film(db, store, media):
    with db.begin() as s:
        P.save_storyboard(s, store, "film", make_board(media, seconds=10.0))
    with db() as s:
        return P.plan_project(s, store, "film")


def test_render_records_every_clip_and_reports_progress(db, store, film):
    events: list[RenderProgress] = []
    takes = render_project(db, store, "film", FakeRenderer(), film, progress=events.append)
    assert [t.clip_index for t in takes] == list(range(len(film))) and all(t.chosen for t in takes)
    assert [e.clip_index for e in events] == list(range(len(film)))
    assert events[-1].done_this_run == len(film) and events[0].clip_count == len(film)
    with db() as s:
        assert P.resume_point(s, store, "film", film).start_at == len(film)
        r = latest_render(s, "film")
        assert (r.status, r.clips_done, r.start_at, r.error) == ("done", len(film), 0, None)
    # nothing left to do: a second run renders nothing and records no render
    renderer = FakeRenderer()
    assert render_project(db, store, "film", renderer, film) == [] and renderer.rendered == []


def test_a_failed_render_keeps_finished_clips_and_resumes_from_the_stored_carry(db, store, film):
    with pytest.raises(RuntimeError, match="failed at clip 3"):
        render_project(db, store, "film", FakeRenderer(fail_at=3), film)
    with db() as s:
        r = latest_render(s, "film")
        assert r.status == "failed" and "failed at clip 3" in r.error and r.clips_done == 3
        first = {t.clip_index: (t.id, t.input_hash, t.carry_hash) for t in P.takes_of(s, "film")}
    assert sorted(first) == [0, 1, 2]
    renderer = FakeRenderer()
    takes = render_project(db, store, "film", renderer, film)
    assert renderer.rendered == list(range(3, len(film)))  # finished clips are not re-rendered
    assert renderer.carries_in == [first[2][2]]  # resumed from the carry stored with clip 2
    with db() as s:
        again = {t.clip_index: (t.id, t.input_hash, t.carry_hash) for t in P.takes_of(s, "film") if t.clip_index < 3}
        assert again == first
        assert all(x.status == "valid" for x in P.clip_states(s, "film", film))
    full = list(FakeRenderer().stream(film))
    assert [t.input_hash for t in takes] == [r.input_hash for r in full[3:]]


def test_should_stop_between_clips_cancels_and_keeps_what_finished(db, store, film):
    done: list[int] = []
    takes = render_project(db, store, "film", FakeRenderer(), film, progress=lambda p: done.append(p.clip_index),
                           should_stop=lambda: len(done) >= 2)
    assert [t.clip_index for t in takes] == [0, 1]
    with db() as s:
        assert latest_render(s, "film").status == "cancelled"
        assert P.resume_point(s, store, "film", film).start_at == 2


def test_cancel_inside_a_clip_is_not_an_error(db, store, film):
    """svi.render raises RenderCancelled from inside a clip; the job returns what finished."""
    calls = {"n": 0}

    def stop() -> bool:  # true from the 3rd poll on: the renderer polls once per clip here
        calls["n"] += 1
        return calls["n"] > 2

    takes = render_project(db, store, "film", FakeRenderer(), film, should_stop=stop)
    assert [t.clip_index for t in takes] == [0]
    with db() as s:
        assert latest_render(s, "film").status == "cancelled"


def test_a_deleted_project_stops_the_render(db, store, film):
    def delete_after_first(p: RenderProgress) -> None:
        with db.begin() as s:
            P.delete_project(s, "film")

    with pytest.raises(Exception, match="no project named|deleted during the render"):
        render_project(db, store, "film", FakeRenderer(), film, progress=delete_after_first)


# ==================================================================== CLI: projects
def _cli(capsys, tmp_path, *argv) -> tuple[int, str, str]:
    rc = cli.main(["projects", "--data-dir", str(tmp_path / "data"), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_projects_commands(capsys, tmp_path, media):
    from storage.assets import AssetStore
    from storage.db import open_database

    data = tmp_path / "data"
    Session, store = open_database(f"sqlite:///{data / 'svi.db'}"), AssetStore(data / "assets")
    with Session.begin() as s:
        P.save_storyboard(s, store, "film", make_board(media))
    Session.kw["bind"].dispose()

    rc, out, _ = _cli(capsys, tmp_path, "list")
    assert rc == 0 and out.startswith("film\tversion 1")
    bundle = tmp_path / "film.zip"
    assert _cli(capsys, tmp_path, "export", "film", str(bundle))[0] == 0
    assert "manifest.json" in zipfile.ZipFile(bundle).namelist()
    rc, out, _ = _cli(capsys, tmp_path, "import", str(bundle))
    assert rc == 0 and "as 'film (2)' (the name was taken)" in out
    rc, _, err = _cli(capsys, tmp_path, "import", str(bundle), "--on-conflict", "error")
    assert rc == 2 and "error: a project named 'film' already exists" in err
    assert _cli(capsys, tmp_path, "rename", "film (2)", "copy")[0] == 0
    assert _cli(capsys, tmp_path, "duplicate", "copy", "copy 2")[0] == 0
    rc, _, err = _cli(capsys, tmp_path, "delete", "copy")
    assert rc == 2 and "add --yes" in err
    assert _cli(capsys, tmp_path, "delete", "copy", "--yes")[0] == 0
    rc, out, _ = _cli(capsys, tmp_path, "list")
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == ["copy 2", "film"]
    rc, out, _ = _cli(capsys, tmp_path, "gc", "--grace-seconds", "0")
    assert rc == 0 and out.startswith("removed 0 unused assets")  # every file is still used
    rc, _, err = _cli(capsys, tmp_path, "export", "nope", str(tmp_path / "x.zip"))
    assert rc == 2 and "no project named 'nope'" in err
    rc, _, err = _cli(capsys, tmp_path, "import", str(tmp_path / "missing.zip"))
    assert rc == 2 and "file not found" in err


def test_add_commands_extends_an_existing_render_parser():
    """app.py owns `render`; add_commands adds --project and the storage options to it."""
    import argparse

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    render = sub.add_parser("render")
    render.add_argument("storyboard")
    render.add_argument("--project")
    cli.add_commands(sub)
    args = ap.parse_args(["render", "sb.json", "--project", "p", "--data-dir", "/tmp/x"])
    assert args.project == "p" and str(args.data_dir) == "/tmp/x" and args.storage_run is cli.run_render
    args = ap.parse_args(["projects", "list"])
    assert args.storage_run is cli.run_projects


def test_project_video_has_every_chosen_frame_and_the_storyboard_audio(db, store, film, tmp_path):
    from svi.video import read_video, video_info

    render_project(db, store, "film", FakeRenderer(size=(16, 16)), film)
    out = cli.write_project_video(db, store, "film", film, tmp_path / "film.mp4")
    info = video_info(out)
    assert info["frames"] == film.total_frames and info["fps"] == film.fps
    assert abs(info["audio_duration"] - film.total_frames / film.fps) < 0.05  # audio ends with the video
    assert read_video(out).shape == (film.total_frames, 16, 16, 3)
    with db() as s:
        assert latest_render(s, "film").output.kind == "video"
