"""Project bundles: one project as a zip (storyboard, its media, chosen takes, final video) and back.

Layout (format "svi-project-bundle", version 1)::

    manifest.json                 what follows, and everything needed to rebuild the rows
    assets/<sha256><ext>          every file the project uses, named by content

Import treats the zip as hostile: only `manifest.json` and `assets/<64 hex><safe ext>` members
are accepted (no absolute paths, no `..`, no backslashes: zip-slip is impossible because no
member name ever becomes a path); sizes are capped per member and in total and checked while
reading (a zip bomb is stopped at its declared size, which must fit the caps, whatever the data
says; overlapping-member bombs hit the total cap); each
asset must hash to its name; unknown formats and versions are refused with a message saying which
version this build reads. An import never overwrites: an existing name gets " (2)", " (3)"...
or, with on_conflict="error", a ProjectExistsError.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from svi.timeline import Storyboard, StoryboardError

from .assets import AssetStore, StoredFile, check_sha256, safe_display_name
from .errors import AssetError, BundleError, ProjectExistsError
from .models import ASSET_KINDS, Asset, Project, Render, Take
from .projects import (
    add_asset, asset_path, get_project, project_exists, save_storyboard, storyboard_of,
    unique_name, validate_name,
)

BUNDLE_FORMAT = "svi-project-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a manifest lists segments and takes; 64 MiB is ~100k of them
MAX_MEMBERS = 200_000
_ASSET_MEMBER = re.compile(r"^assets/([0-9a-f]{64})(\.[a-z0-9]{1,10})?$")
_STORED_EXTS = {".npz", ".mp4", ".png", ".jpg", ".jpeg", ".webp", ".mp3", ".m4a", ".ogg", ".flac", ".safetensors"}


@dataclass(frozen=True)
class ImportResult:
    project_id: int
    name: str
    renamed: bool  # the bundle's name was taken, so another was picked
    assets: int
    takes: int


# ==================================================================== export
def export_project(session: Session, store: AssetStore, name: str, out_path: str | os.PathLike) -> Path:
    """Write project `name` as a bundle at `out_path` (atomically: temp file, then rename)."""
    project = get_project(session, name)
    board = storyboard_of(project, store)
    assets: dict[str, Asset] = {}

    def ref(asset: Asset | None) -> str | None:
        if asset is None:
            return None
        asset_path(store, asset)  # fails with the asset's name if the file is missing
        assets[asset.sha256] = asset
        return f"assets/{asset.sha256}{asset.ext}"

    by_path = {str(asset_path(store, a)): a for a in _project_media(project)}
    storyboard = board.to_dict()
    storyboard["start_image"] = ref(project.start_image)
    for track in ("audio", "poses"):
        for seg in storyboard[track]:
            seg["path"] = ref(by_path[seg["path"]])

    takes = session.scalars(select(Take).where(Take.project_id == project.id, Take.chosen.is_(True))
                            .order_by(Take.clip_index)).all()
    take_rows = [dict(clip_index=t.clip_index, input_hash=t.input_hash, carry_hash=t.carry_hash, seed=t.seed,
                      frames=ref(t.frames), carry=ref(t.carry), timings=t.timings, chosen=True) for t in takes]
    final = session.scalars(select(Render).where(Render.project_id == project.id,
                                                 Render.output_asset_id.is_not(None))
                            .order_by(Render.id.desc()).limit(1)).first()
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "project": {"name": project.name, "clip_overrides": project.clip_overrides,
                    "created_at": project.created_at.isoformat()},
        "storyboard": storyboard,
        "takes": take_rows,
        "final_video": ref(final.output) if final is not None else None,
        "assets": [{"path": f"assets/{a.sha256}{a.ext}", "sha256": a.sha256, "ext": a.ext, "kind": a.kind,
                    "original_name": a.original_name, "size": a.size, "media": a.media}
                   for a in sorted(assets.values(), key=lambda a: a.sha256)],
    }

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".part", dir=out_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
            for a in sorted(assets.values(), key=lambda a: a.sha256):
                # Already-compressed media gains nothing from deflate; store it as is.
                kind = zipfile.ZIP_STORED if a.ext in _STORED_EXTS else zipfile.ZIP_DEFLATED
                z.write(asset_path(store, a), f"assets/{a.sha256}{a.ext}", compress_type=kind)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def _project_media(project: Project) -> list[Asset]:
    out = [project.start_image] if project.start_image is not None else []
    return out + [s.asset for s in project.segments if s.asset is not None]


# ==================================================================== import
def import_bundle(session: Session, store: AssetStore, bundle_path: str | os.PathLike, *, name: str | None = None,
                  on_conflict: str = "rename", max_member_bytes: int | None = None,
                  max_total_bytes: int | None = None) -> ImportResult:
    """Validate and import a bundle as a new project. Asset files are written to the store first
    (unreferenced ones are collected later if the transaction fails); rows are added to `session`.

    Args:
        name: the new project's name (default: the bundle's).
        on_conflict: "rename" picks a free name like "name (2)"; "error" raises ProjectExistsError.
        max_member_bytes / max_total_bytes: caps on one member and on the whole (defaults: the
            store's asset limit, and 4x that).
    """
    if on_conflict not in ("rename", "error"):
        raise ValueError(f"on_conflict must be 'rename' or 'error', got {on_conflict!r}")
    bundle_path = Path(bundle_path)
    member_cap = max_member_bytes or store.max_bytes
    total_cap = max_total_bytes or 4 * store.max_bytes
    if not bundle_path.is_file():
        raise BundleError(f"{bundle_path}: file not found")
    if not zipfile.is_zipfile(bundle_path):
        raise BundleError(f"{bundle_path.name}: not a zip file (a project bundle is a .zip)")

    with zipfile.ZipFile(bundle_path) as z:
        # 1. Every member: a known, safe name; plausible sizes
        infos = z.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BundleError(f"bundle has {len(infos)} members, more than the {MAX_MEMBERS} allowed")
        members = _check_members(infos, member_cap, total_cap)

        # 2. The manifest: format, version, shape
        if MANIFEST not in members:
            raise BundleError(f"{bundle_path.name}: no {MANIFEST} (not a project bundle)")
        manifest = _read_manifest(z, members[MANIFEST])
        listed = _check_manifest(manifest, members)

        # 3. Assets into the store, each verified against its name as it streams
        stored: dict[str, StoredFile] = {}
        for path, entry in listed.items():
            info = members[path]
            try:
                with z.open(info) as src:
                    stored[path] = store.put_stream(src, entry["ext"], expected_sha256=entry["sha256"],
                                                    expected_size=info.file_size)
            except AssetError as e:
                raise BundleError(f"{path}: {e}") from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC errors, truncated data
                raise BundleError(f"{path}: damaged zip member ({e})") from None

    # 4. Rows: assets, the storyboard (validated as any storyboard), takes, final video
    wanted = validate_name(name if name is not None else manifest["project"]["name"])
    renamed = False
    if project_exists(session, wanted):
        if on_conflict == "error":
            raise ProjectExistsError(f"a project named {wanted!r} already exists; import it under another name")
        wanted, renamed = unique_name(session, wanted), True
    rows: dict[str, Asset] = {}
    for path, entry in listed.items():
        rows[path] = add_asset(session, store, stored[path], kind=entry["kind"],
                               original_name=safe_display_name(entry.get("original_name")),
                               media=entry.get("media") if isinstance(entry.get("media"), dict) else {})

    def local(p: Any, where: str) -> str:
        if p not in rows:
            raise BundleError(f"manifest {where}: {p!r} is not one of the bundle's assets")
        return str(asset_path(store, rows[p]))

    sb = manifest["storyboard"]
    try:
        sb = {**sb, "start_image": local(sb.get("start_image"), "storyboard.start_image"),
              "audio": [{**a, "path": local(a.get("path"), f"storyboard.audio[{i}].path")}
                        for i, a in enumerate(sb.get("audio") or [])],
              "poses": [{**p, "path": local(p.get("path"), f"storyboard.poses[{i}].path")}
                        for i, p in enumerate(sb.get("poses") or [])]}
        board = Storyboard.from_dict(sb)
    except (StoryboardError, TypeError, AttributeError) as e:
        raise BundleError(f"manifest storyboard is invalid: {e}") from None
    project = save_storyboard(session, store, wanted, board)
    overrides = _check_overrides(manifest["project"].get("clip_overrides") or {})
    if overrides:
        project.clip_overrides = overrides

    takes = manifest["takes"]
    for i, t in enumerate(takes):
        session.add(Take(project_id=project.id, clip_index=t["clip_index"], input_hash=t["input_hash"],
                         carry_hash=t["carry_hash"], seed=t["seed"], frames=rows[t["frames"]],
                         carry=rows[t["carry"]], timings=t.get("timings") or {}, chosen=bool(t.get("chosen"))))
    if manifest.get("final_video"):
        session.add(Render(project_id=project.id, status="done", model_id=str(board.settings.model),
                           clip_count=len(takes), start_at=0, clips_done=0,
                           output=rows[manifest["final_video"]]))
    session.flush()
    return ImportResult(project_id=project.id, name=wanted, renamed=renamed, assets=len(rows), takes=len(takes))


def _check_members(infos: list[zipfile.ZipInfo], member_cap: int, total_cap: int) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        n = info.filename
        if "\x00" in n or "\\" in n or n.startswith("/") or re.match(r"^[A-Za-z]:", n) or ".." in n.split("/"):
            raise BundleError(f"unsafe member name {n!r} (absolute path or '..'): refusing the bundle")
        if info.is_dir():
            if n not in ("assets/",):
                raise BundleError(f"unexpected folder {n!r} in the bundle")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BundleError(f"member {n!r} is a symbolic link: refusing the bundle")
        if n != MANIFEST and not _ASSET_MEMBER.match(n):
            raise BundleError(f"unexpected member {n!r}: a bundle holds only {MANIFEST} and assets/<sha256>")
        if n in members:
            raise BundleError(f"member {n!r} appears twice")
        if info.flag_bits & 0x1:
            raise BundleError(f"member {n!r} is encrypted")
        cap = MAX_MANIFEST_BYTES if n == MANIFEST else member_cap
        if info.file_size > cap:
            raise BundleError(f"member {n!r} is {info.file_size} bytes, over the limit of {cap}")
        total += info.file_size
        if total > total_cap:
            raise BundleError(f"bundle expands to more than {total_cap} bytes: refusing it")
        members[n] = info
    return members


def _read_manifest(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict:
    with z.open(info) as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)  # never trust the header's size
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST}: expected a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{MANIFEST}: format is {manifest.get('format')!r}, not a {BUNDLE_FORMAT!r}")
    version = manifest.get("version")
    if version != BUNDLE_VERSION:
        hint = " (made by a newer SVI Storyboard: update this one)" if isinstance(version, int) and version > BUNDLE_VERSION else ""
        raise BundleError(f"bundle version {version!r} is not supported: this build reads version "
                          f"{BUNDLE_VERSION}{hint}")
    return manifest


def _check_manifest(m: dict, members: dict[str, zipfile.ZipInfo]) -> dict[str, dict]:
    """Shape checks with messages naming the field; returns the asset entries by member path."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise BundleError(f"{MANIFEST}: {msg}")

    need(isinstance(m.get("project"), dict) and isinstance(m["project"].get("name"), str), "project.name missing")
    need(isinstance(m.get("storyboard"), dict), "storyboard missing")
    need(isinstance(m.get("assets"), list), "assets must be a list")
    need(isinstance(m.get("takes"), list), "takes must be a list")
    listed: dict[str, dict] = {}
    for i, a in enumerate(m["assets"]):
        need(isinstance(a, dict), f"assets[{i}] must be an object")
        path, sha, ext = a.get("path"), a.get("sha256"), a.get("ext", "")
        need(isinstance(sha, str) and isinstance(ext, str), f"assets[{i}]: sha256 and ext required")
        try:
            check_sha256(sha)
        except AssetError:
            raise BundleError(f"{MANIFEST}: assets[{i}].sha256 is not a sha256 digest") from None
        need(path == f"assets/{sha}{ext}" and _ASSET_MEMBER.match(path or "") is not None,
             f"assets[{i}].path {path!r} does not match its sha256 and ext")
        need(path in members, f"assets[{i}]: {path} is listed but not in the zip")
        need(a.get("kind") in ASSET_KINDS, f"assets[{i}].kind must be one of {', '.join(ASSET_KINDS)}")
        listed[path] = a
    unlisted = [n for n in members if n != MANIFEST and n not in listed]
    need(not unlisted, f"zip members not listed in the manifest: {', '.join(unlisted[:3])}")
    seen_chosen: set[int] = set()
    for i, t in enumerate(m["takes"]):
        need(isinstance(t, dict), f"takes[{i}] must be an object")
        ci = t.get("clip_index")
        need(isinstance(ci, int) and not isinstance(ci, bool) and 0 <= ci < 1_000_000,
             f"takes[{i}].clip_index must be a whole number >= 0")
        for key in ("input_hash", "carry_hash"):
            need(isinstance(t.get(key), str) and len(t[key]) <= 64, f"takes[{i}].{key} must be a hash string")
        need(isinstance(t.get("seed"), int) and 0 <= t["seed"] < 2**63, f"takes[{i}].seed out of range")
        for key in ("frames", "carry"):
            need(t.get(key) in listed, f"takes[{i}].{key} is not one of the bundle's assets")
        need(t.get("timings") is None or isinstance(t["timings"], dict), f"takes[{i}].timings must be an object")
        if t.get("chosen"):
            need(ci not in seen_chosen, f"takes[{i}]: two chosen takes for clip {ci}")
            seen_chosen.add(ci)
    fv = m.get("final_video")
    need(fv is None or fv in listed, "final_video is not one of the bundle's assets")
    return listed


def _check_overrides(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise BundleError(f"{MANIFEST}: project.clip_overrides must be an object")
    out = {}
    for k, v in raw.items():
        if not (isinstance(k, str) and k.isdigit() and isinstance(v, dict)):
            raise BundleError(f"{MANIFEST}: project.clip_overrides[{k!r}] is malformed")
        seed, prompt = v.get("seed"), v.get("prompt")
        if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2**63):
            raise BundleError(f"{MANIFEST}: project.clip_overrides[{k!r}].seed out of range")
        if prompt is not None and not isinstance(prompt, str):
            raise BundleError(f"{MANIFEST}: project.clip_overrides[{k!r}].prompt must be text")
        out[k] = {"seed": seed, "prompt": prompt}
    return out
