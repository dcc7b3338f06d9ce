"""Project actions behind the Projects tab and the API: create from an image, list, rename,
duplicate, confirmed delete, bundles; plus the app's start-up settings."""

from __future__ import annotations

import shutil
from pathlib import Path
import struct
import zlib

import pytest

from storage.errors import BundleError, ProjectExistsError
from svi.images import ImageError
from ui import project_ops as ops
from ui.app import auth_from_env, build_app, server_host
from ui.errors import UserError
from ui.services import build_services, space_data_dir


@pytest.fixture
def services(tmp_path):
    s = build_services(tmp_path / "data", device="cpu", start_workers=False)
    yield s
    s.close()


def header_only_png(path, w, h):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_create_from_an_image_and_list(services, start_image, tmp_path):
    named = tmp_path / "My_Holiday  beach.png"
    shutil.copy(start_image, named)
    assert ops.create_project(services, str(named)) == "My Holiday beach"  # the file's name, tidied
    assert ops.create_project(services, str(named)) == "My Holiday beach (2)"
    assert ops.create_project(services, start_image, "  Story  ") == "Story"
    with pytest.raises(ProjectExistsError, match="'Story' already exists"):
        ops.create_project(services, start_image, "Story")
    rows = ops.list_rows(services)
    assert [r.name for r in rows] == ["Story", "My Holiday beach (2)", "My Holiday beach"]
    r = rows[0]
    assert (r.clips, r.duration_s, r.model, r.version) == (1, 2.125, "storyworld-tiny", 1)
    assert r.thumb.startswith("data:image/jpeg;base64,") and r.updated_at.endswith("+00:00")


def written(data: bytes):
    def make(path):
        path.write_bytes(data)
        return path
    return make


@pytest.mark.parametrize("make, message", [
    (written(b"hello"), "not an image file"),
    (written(b""), "the image file is empty"),
    (lambda p: header_only_png(p, 9000, 9000), r"image too large \(9000x9000 pixels"),
])
def test_bad_start_images_are_refused_with_the_reason(services, tmp_path, make, message):
    path = make(tmp_path / "upload.png")
    with pytest.raises(ImageError, match=message):
        ops.create_project(services, str(path), "x")
    assert ops.list_rows(services) == []


def test_rename_duplicate_and_confirmed_delete(services, start_image):
    ops.create_project(services, start_image, "a")
    assert ops.rename_project(services, "a", "b") == "b"
    assert ops.duplicate_project(services, "b") == "b copy"
    assert ops.duplicate_project(services, "b", "third") == "third"
    with pytest.raises(UserError, match="confirm by repeating the project name 'b'"):
        ops.delete_project(services, "b", "B")
    ops.delete_project(services, "b", "b")
    assert sorted(r.name for r in ops.list_rows(services)) == ["b copy", "third"]
    with pytest.raises(UserError, match="open a project first"):
        ops.require_project(services, "")
    with pytest.raises(Exception, match="no project named 'b'"):
        ops.rename_project(services, "b", "c")


def test_bundles_round_trip_and_malformed_ones_are_refused(services, start_image, tmp_path):
    ops.create_project(services, start_image, "trip")
    path = ops.export_bundle(services, "trip")
    assert path.endswith(".zip") and str(services.media_dir) in path
    name, note = ops.import_bundle(services, path)
    assert name == "trip (2)" and "the name was taken" in note
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04nonsense")
    with pytest.raises(BundleError, match="bad.zip: not a zip file"):
        ops.import_bundle(services, str(bad))
    with pytest.raises(UserError, match="choose a project bundle"):
        ops.import_bundle(services, None)
    assert len(ops.list_rows(services)) == 2


def test_start_up_settings(tmp_path):
    assert auth_from_env({}) is None
    assert auth_from_env({"SVI_AUTH": "ann:pw1, bob:p:w"}) == [("ann", "pw1"), ("bob", "p:w")]
    with pytest.raises(ValueError, match="user:password"):
        auth_from_env({"SVI_AUTH": "nobody"})
    assert space_data_dir({"SVI_DATA_DIR": "/x", "SPACE_ID": "a/b"}) is None
    assert server_host("127.0.0.1", {}) == "127.0.0.1" and server_host(None, {}) == "127.0.0.1"
    assert server_host("127.0.0.1", {"SPACE_ID": "a/b"}) == "0.0.0.0"
    assert server_host("10.0.0.2", {"SPACE_ID": "a/b"}) == "10.0.0.2"
    assert space_data_dir({}) is None
    with pytest.raises(ValueError, match="unknown model preset 'tiny-typo'"):
        build_services(tmp_path / "d", model="tiny-typo", start_workers=False)


def test_every_public_endpoint_is_named_and_helpers_are_private(services):
    demo = build_app(services)
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert {"create_project", "list_projects", "open_project", "rename_project", "duplicate_project",
            "delete_project", "export_project", "import_project", "get_timeline", "set_timeline", "edit_segment",
            "set_settings", "clip_plan", "import_prompt_stream", "import_storyboard", "add_audio", "add_pose",
            "set_start_image", "render", "render_status", "cancel", "clips", "takes_of", "retake", "choose_take",
            "export_video", "drift", "models", "register_lora", "finetune_launch", "finetune_status",
            "finetune_stop", "finetune_resume"} <= public
    assert all(isinstance(n, str) and n for n in public)
    gpu = [fn for fn in demo.fns.values() if fn.concurrency_id == "gpu"]
    assert gpu and all(fn.concurrency_limit == 1 for fn in gpu)


def test_example_projects_open_with_their_media(services):
    from storage import projects as P

    first = ops.create_examples(services)
    assert first == "Example: prompt stream"
    with services.Session() as s:
        talk = P.load_storyboard(s, services.store, "Example: talk")
        dance = P.load_storyboard(s, services.store, "Example: dance")
    assert talk.settings.variant == "talk" and len(talk.audio) == 1
    assert dance.settings.variant == "dance" and len(dance.poses) == 1
    # media were copied into the asset store (the project does not depend on the repo's files)
    assert services.store.root in Path(talk.audio[0].path).parents
    assert ops.create_examples(services) == "Example: prompt stream (2)"  # pressing twice is fine
