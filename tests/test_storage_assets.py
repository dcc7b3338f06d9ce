"""The asset store: content addressing, dedup, atomic writes, size limits, hostile names, sweeping;
the frames codec; garbage collection against the database."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import projects as P
from storage.assets import AssetStore, safe_display_name, safe_ext
from storage.errors import AssetError, AssetTooLargeError
from storage.frames import decode_frames, encode_frames
from storage.gc import collect_garbage
from tests.test_storage_support import (  # noqa: F401 (fixtures)
    FakeRenderer, db, db_url, make_board, media, postgres_cluster, store,
)


def test_content_addressed_and_deduplicated(store):
    a = store.put_bytes(b"hello", ".txt")
    b = store.put_bytes(b"hello", ".txt")
    c = store.put_bytes(b"other", ".txt")
    assert a == b and a.sha256 != c.sha256
    assert a.path == store.root / "objects" / a.sha256[:2] / f"{a.sha256}.txt"
    assert a.path.read_bytes() == b"hello" and store.verify(a.sha256, ".txt")
    assert len(list(store.iter_files())) == 2
    assert list(store.tmp.iterdir()) == []  # no temp file left behind


def test_size_limit_stops_the_write_and_leaves_nothing(tmp_path):
    store = AssetStore(tmp_path / "s", max_bytes=1000)
    store.put_bytes(b"x" * 1000)
    with pytest.raises(AssetTooLargeError, match="over the asset limit of 1000 bytes"):
        store.put_bytes(b"x" * 1001)

    class Endless(io.RawIOBase):  # a source that never ends must not fill the disk
        def readinto(self, b):
            b[:] = b"y" * len(b)
            return len(b)

    with pytest.raises(AssetTooLargeError):
        store.put_stream(Endless())
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * 2000)
    with pytest.raises(AssetTooLargeError, match="big.bin"):
        store.put_file(big)
    assert list(store.tmp.iterdir()) == [] and len(list(store.iter_files())) == 1


def test_expected_hash_and_size_are_checked(store):
    good = store.put_bytes(b"abc")
    with pytest.raises(AssetError, match="does not match its sha256"):
        store.put_stream(io.BytesIO(b"abd"), expected_sha256=good.sha256)
    with pytest.raises(AssetError, match="larger than its declared 2 bytes"):
        store.put_stream(io.BytesIO(b"abc"), expected_size=2)
    with pytest.raises(AssetError, match="expected 4"):
        store.put_stream(io.BytesIO(b"abc"), expected_size=4)


@pytest.mark.parametrize("name, ext, shown", [
    ("../../etc/passwd", "", "passwd"),
    ("..\\..\\windows\\system32\\evil.DLL", ".dll", "evil.DLL"),
    ("/abs/path/song.WAV", ".wav", "song.WAV"),
    ("x.wav/../../..", "", "unnamed"),
    ("bad\x00name\n.png", ".png", "badname.png"),
    ("pose.json.;rm -rf", "", "pose.json.;rm -rf"),
    ("weird.ext with space", "", "weird.ext with space"),
    ("\u202egnp.exe", ".exe", "gnp.exe"),  # right-to-left override stripped from the display name
    (".hidden", "", "hidden"),
    ("", "", "unnamed"),
])
def test_hostile_names_never_reach_the_filesystem(store, db, tmp_path, name, ext, shown):
    assert safe_ext(name) == ext
    assert safe_display_name(name) == shown
    with db.begin() as s:
        asset = P.add_asset(s, store, b"payload", kind="other", original_name=name)
        assert asset.original_name == (shown if name else asset.sha256[:12])
        path = P.asset_path(store, asset)
    assert path.parent.parent == store.objects and path.name.startswith(asset.sha256)


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=300))
def test_any_name_gives_a_safe_ext_and_display_name(name):
    ext = safe_ext(name)
    assert ext == "" or (ext.startswith(".") and ext[1:].isalnum() and ext.isascii() and len(ext) <= 11)
    shown = safe_display_name(name)
    assert 0 < len(shown) <= 255 and "/" not in shown and "\\" not in shown and "\x00" not in shown


def test_unsafe_extensions_are_refused(store):
    with pytest.raises(AssetError, match="unsafe file extension"):
        store.put_bytes(b"x", "/../x")
    with pytest.raises(AssetError, match="not a sha256"):
        store.path_for("../" * 20)


def test_concurrent_writers_of_the_same_content_leave_one_file(store):
    from concurrent.futures import ThreadPoolExecutor

    data = os.urandom(256 * 1024)
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: store.put_bytes(data, ".bin"), range(16)))
    assert len({r.path for r in results}) == 1 and store.verify(results[0].sha256, ".bin")
    assert list(store.tmp.iterdir()) == []


def test_sweep_spares_kept_and_recent_files(store):
    keep = store.put_bytes(b"keep")
    old = store.put_bytes(b"old")
    new = store.put_bytes(b"new")
    past = time.time() - 7200
    for f in (keep, old):
        os.utime(f.path, (past, past))
    (store.tmp / "crashed.part").write_bytes(b"half")
    os.utime(store.tmp / "crashed.part", (past, past))
    rep = store.sweep({keep.sha256}, grace_s=3600)
    assert (rep.files_removed, rep.bytes_freed, rep.temp_removed) == (1, 3, 1)
    assert keep.path.exists() and new.path.exists() and not old.path.exists()


# ==================================================================== frames codec
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       compress=st.booleans())
def test_frames_round_trip_and_are_deterministic(n, h, w, seed, compress):
    frames = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    data = encode_frames(frames, compress=compress)
    assert data == encode_frames(frames.copy(), compress=compress)  # same frames, same bytes, same asset
    np.testing.assert_array_equal(decode_frames(data), frames)


def test_frames_codec_refuses_wrong_arrays_and_pickles(tmp_path):
    with pytest.raises(AssetError, match="uint8"):
        encode_frames(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(AssetError, match="uint8"):
        encode_frames(np.zeros((4, 4, 3), np.uint8))
    p = tmp_path / "evil.npz"
    np.savez(p, frames=np.array([object()], dtype=object))
    with pytest.raises(AssetError, match="not a readable frames file"):
        decode_frames(str(p))
    with pytest.raises(AssetError, match="not a readable frames file"):
        decode_frames(b"not a zip")


# ==================================================================== garbage collection
def test_gc_removes_only_what_no_project_uses(db, store, media):
    board = make_board(media)
    with db.begin() as s:
        P.save_storyboard(s, store, "keep", board)
        P.save_storyboard(s, store, "drop", board.with_settings(seed=1))
    for name, seed in (("keep", 7), ("drop", 1)):
        with db() as s:
            plan = P.plan_project(s, store, name)
        for r in FakeRenderer().stream(plan):
            with db.begin() as s:
                P.record_take(s, store, name, r)
    with db.begin() as s:
        P.add_asset(s, store, b"orphan upload", kind="other")
        P.delete_project(s, "drop")
    orphan_file = store.put_bytes(b"file without a row")
    before = {sha for sha, _ in store.iter_files()}

    # young files and rows are spared
    rep = collect_garbage(db, store, grace_s=3600)
    assert (rep.rows_removed, rep.files_removed) == (0, 0)

    rep = collect_garbage(db, store, grace_s=0)
    after = {sha for sha, _ in store.iter_files()}
    assert orphan_file.sha256 in before - after
    assert rep.files_removed == len(before - after) and rep.rows_removed == len(before - after) - 1
    with db() as s:
        board_back = P.load_storyboard(s, store, "keep")  # everything "keep" needs is still there
        plan = P.plan_project(s, store, "keep")
        assert all(x.status == "valid" for x in P.clip_states(s, "keep", plan))
        assert len(list(P.chosen_frames(s, store, "keep", plan))) == len(plan)
    assert board_back.prompts == board.prompts
