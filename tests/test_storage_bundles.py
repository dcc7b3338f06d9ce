"""Project bundles: export/import round trip, and import of hostile or broken zips."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

import pytest

from storage import projects as P
from storage.assets import AssetStore
from storage.bundles import BUNDLE_VERSION, export_project, import_bundle
from storage.db import open_database
from storage.errors import BundleError, ProjectExistsError
from storage.models import Asset, Render
from tests.test_storage_support import (  # noqa: F401 (fixtures)
    FakeRenderer, db, db_url, make_board, media, postgres_cluster, store,
)


@pytest.fixture
def rendered(db, store, media, tmp_path):
    """Project "film": a storyboard with image, audio and pose, every clip rendered, a retake of
    clip 1 not chosen, and a final video."""
    with db.begin() as s:
        P.save_storyboard(s, store, "film", make_board(media))
    with db() as s:
        plan = P.plan_project(s, store, "film")
    results = list(FakeRenderer().stream(plan))
    for r in results:
        with db.begin() as s:
            P.record_take(s, store, "film", r)
    with db.begin() as s:  # an unchosen extra take must not travel
        P.record_take(s, store, "film", FakeRenderer(size=(4, 4)).stream(plan).__next__(), choose=False)
        video = P.add_asset(s, store, b"\x00\x00\x00\x18ftypmp42 fake video", kind="video")
        s.add(Render(project_id=P.get_project(s, "film").id, status="done", model_id=plan.model_id,
                     clip_count=len(plan), output=video))
    return plan


def _snapshot(Session, store: AssetStore, name: str) -> dict:
    """Everything that must survive a round trip, with paths replaced by content hashes."""
    def sha(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    with Session() as s:
        board = P.load_storyboard(s, store, name)
        d = board.to_dict()
        d["start_image"] = sha(d["start_image"])
        for track in ("audio", "poses"):
            for seg in d[track]:
                seg["path"] = sha(seg["path"])
        project = P.get_project(s, name)
        takes = sorted((t.clip_index, t.input_hash, t.carry_hash, t.seed, t.frames.sha256, t.carry.sha256,
                        sha(P.asset_path(store, t.frames)), json.dumps(t.timings, sort_keys=True))
                       for t in P.takes_of(s, name) if t.chosen)
        used = {t[4] for t in takes} | {t[5] for t in takes} | {d["start_image"]}
        used |= {seg["path"] for tr in ("audio", "poses") for seg in d[tr]}
        assets = sorted((a.sha256, a.kind, a.size, a.original_name, json.dumps(a.media, sort_keys=True))
                        for a in s.query(Asset).filter(Asset.sha256.in_(used)))
        final = s.query(Render).filter(Render.project_id == project.id, Render.output_asset_id.is_not(None)).first()
        plan = P.plan_project(s, store, name)
        states = [x.status for x in P.clip_states(s, name, plan)]
        return {"storyboard": d, "takes": takes, "assets": assets, "overrides": project.clip_overrides,
                "final": final.output.sha256 if final else None, "states": states}


def test_round_trip_into_a_fresh_data_folder_is_identical(db, store, rendered, tmp_path):
    bundle = tmp_path / "film.zip"
    with db() as s:
        export_project(s, store, "film", bundle)
    before = _snapshot(db, store, "film")
    assert before["states"] == ["valid"] * len(rendered) and before["final"]

    other = open_database(f"sqlite:///{tmp_path / 'other' / 'svi.db'}")
    other_store = AssetStore(tmp_path / "other" / "assets")
    with other.begin() as s:
        res = import_bundle(s, other_store, bundle)
    assert res.name == "film" and not res.renamed and res.takes == len(rendered)
    after = _snapshot(other, other_store, "film")
    assert after == before  # storyboard, assets, chosen takes (hashes), final video; all clips still valid
    other.kw["bind"].dispose()


def test_import_never_overwrites(db, store, rendered, tmp_path):
    bundle = tmp_path / "film.zip"
    with db() as s:
        export_project(s, store, "film", bundle)
        versions = P.get_project(s, "film").version
    with db.begin() as s:
        assert import_bundle(s, store, bundle).name == "film (2)"
    with db.begin() as s:
        assert import_bundle(s, store, bundle).name == "film (3)"
    with db.begin() as s:
        with pytest.raises(ProjectExistsError, match="already exists"):
            import_bundle(s, store, bundle, on_conflict="error")
    with db() as s:
        assert P.get_project(s, "film").version == versions  # the original is untouched
        assert _snapshot(db, store, "film (2)")["takes"] == _snapshot(db, store, "film")["takes"]


def test_export_is_atomic_and_deterministic_in_content(db, store, rendered, tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    with db() as s:
        export_project(s, store, "film", a)
        export_project(s, store, "film", b)
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        assert za.namelist() == zb.namelist()
        assert all(za.read(n) == zb.read(n) for n in za.namelist())
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".part") == []


# ==================================================================== hostile and broken bundles
@pytest.fixture
def good_bundle(db, store, rendered, tmp_path) -> Path:
    path = tmp_path / "good.zip"
    with db() as s:
        export_project(s, store, "film", path)
    return path


def _rewrite(src: Path, dst: Path, *, manifest=None, add=(), drop=(), raw_names=None) -> Path:
    """A copy of bundle `src` with the manifest transformed and members added or dropped."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    m = json.loads(members.pop("manifest.json"))
    if manifest is not None:
        m = manifest(m) or m
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(m))
        for n, data in members.items():
            if n not in drop:
                z.writestr(n, data)
        for item in add:
            z.writestr(*item) if isinstance(item, tuple) else z.writestr(item, b"x")
    return dst


def _expect_refused(db, store, bundle, match, **kw):
    with db() as s:
        names = {p.name for p in P.list_projects(s)}
    with pytest.raises(BundleError, match=match):
        with db.begin() as s:
            import_bundle(s, store, bundle, **kw)
    with db() as s:
        assert {p.name for p in P.list_projects(s)} == names  # nothing half-imported


@pytest.mark.parametrize("evil", ["../../evil.txt", "/etc/evil", "assets/../../evil", "C:/evil", "a\\..\\evil"])
def test_zip_slip_and_absolute_paths_are_refused(db, store, good_bundle, tmp_path, evil):
    bad = _rewrite(good_bundle, tmp_path / "bad.zip", add=[(evil, b"pwned")])
    _expect_refused(db, store, bad, "unsafe member name|unexpected member")
    assert not any(p.name == "evil.txt" for p in tmp_path.parent.rglob("evil*"))


def test_unknown_members_and_symlinks_are_refused(db, store, good_bundle, tmp_path):
    _expect_refused(db, store, _rewrite(good_bundle, tmp_path / "u.zip", add=[("notes.txt", b"hi")]),
                    "unexpected member 'notes.txt'")
    link = zipfile.ZipInfo("assets/" + "a" * 64)
    link.external_attr = (0o120777 << 16)
    _expect_refused(db, store, _rewrite(good_bundle, tmp_path / "l.zip", add=[(link, "/etc/passwd")]),
                    "symbolic link")


def test_unknown_version_and_format_get_clear_messages(db, store, good_bundle, tmp_path):
    newer = _rewrite(good_bundle, tmp_path / "v2.zip", manifest=lambda m: {**m, "version": BUNDLE_VERSION + 1})
    _expect_refused(db, store, newer, r"bundle version 2 is not supported: this build reads version 1 "
                                      r"\(made by a newer SVI Storyboard")
    other = _rewrite(good_bundle, tmp_path / "f.zip", manifest=lambda m: {**m, "format": "something-else"})
    _expect_refused(db, store, other, "not a 'svi-project-bundle'")
    nozip = tmp_path / "no.zip"
    nozip.write_bytes(b"PK but not really a zip")
    _expect_refused(db, store, nozip, "not a zip file")
    nomani = _rewrite(good_bundle, tmp_path / "nm.zip")
    with zipfile.ZipFile(nomani) as z, zipfile.ZipFile(tmp_path / "nm2.zip", "w") as out:
        for n in z.namelist():
            if n != "manifest.json":
                out.writestr(n, z.read(n))
    _expect_refused(db, store, tmp_path / "nm2.zip", "no manifest.json")


def test_oversized_members_and_zip_bombs_are_refused(db, store, good_bundle, tmp_path):
    big = b"\x00" * (3 * 1024 * 1024)  # compresses ~1000:1
    sha = hashlib.sha256(big).hexdigest()

    def listing(m):
        m["assets"].append({"path": f"assets/{sha}", "sha256": sha, "ext": "", "kind": "other",
                            "original_name": "zeros", "size": len(big), "media": {}})

    bomb = _rewrite(good_bundle, tmp_path / "bomb.zip", manifest=listing, add=[(f"assets/{sha}", big)])
    assert bomb.stat().st_size < 100_000
    _expect_refused(db, store, bomb, "over the limit of 1048576", max_member_bytes=1024 * 1024)
    _expect_refused(db, store, bomb, "expands to more than 2000000 bytes", max_total_bytes=2_000_000)

    # a lying header (declared small, real data large) is cut at the declared size and fails its CRC
    liar = tmp_path / "liar.zip"
    data = bytearray(bomb.read_bytes())
    patched = 0
    for i in (i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"):  # central directory entries
        name_len = struct.unpack("<H", data[i + 28:i + 30])[0]
        if data[i + 46:i + 46 + name_len].decode() == f"assets/{sha}":
            data[i + 24:i + 28] = struct.pack("<I", 1000)  # uncompressed size
            patched += 1
    assert patched == 1
    liar.write_bytes(bytes(data))
    _expect_refused(db, store, liar, "damaged zip member")


def test_corrupt_or_missing_assets_and_bad_manifests_are_refused(db, store, good_bundle, tmp_path):
    with zipfile.ZipFile(good_bundle) as z:
        first = next(n for n in z.namelist() if n.startswith("assets/"))
        data = z.read(first)
    flipped = bytes([data[0] ^ 1]) + data[1:]
    corrupt = _rewrite(good_bundle, tmp_path / "c.zip", drop={first}, add=[(first, flipped)])
    _expect_refused(db, store, corrupt, "does not match its sha256")
    missing = _rewrite(good_bundle, tmp_path / "m.zip", drop={first})
    _expect_refused(db, store, missing, "listed but not in the zip")

    def bad_board(m):
        m["storyboard"]["prompts"][0]["end"] = -1
    _expect_refused(db, store, _rewrite(good_bundle, tmp_path / "b.zip", manifest=bad_board),
                    "storyboard is invalid")

    def outside_path(m):
        m["storyboard"]["start_image"] = "/etc/passwd"
    _expect_refused(db, store, _rewrite(good_bundle, tmp_path / "o.zip", manifest=outside_path),
                    "not one of the bundle's assets")

    def two_chosen(m):
        m["takes"].append(dict(m["takes"][0]))
    _expect_refused(db, store, _rewrite(good_bundle, tmp_path / "t.zip", manifest=two_chosen),
                    "two chosen takes for clip 0")

    def bad_seed(m):
        m["takes"][0]["seed"] = -5
    _expect_refused(db, store, _rewrite(good_bundle, tmp_path / "s.zip", manifest=bad_seed), "seed out of range")
