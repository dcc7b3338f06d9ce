"""Storage commands: `render STORYBOARD.json --project NAME [--out OUT.mp4]` and `projects ...`.

    app.py render SB.json --project NAME [--out OUT.mp4] [--clips N]   create or open the project,
                                                                        persist takes, resume on re-run
    app.py projects list
    app.py projects export NAME OUT.zip
    app.py projects import BUNDLE.zip [--name NAME] [--on-conflict rename|error]
    app.py projects rename OLD NEW | duplicate NAME NEW | delete NAME --yes | gc

app.py calls `add_commands(subparsers)` and, for these commands, `run(args)`. Also runnable on its
own: `python -m storage.cli ...` (what the crash-safety test does).
Settings: SVI_DATA_DIR / SVI_DATABASE_URL, or --data-dir / --database-url.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from svi.timeline import StoryboardError

from .errors import StorageError
from .settings import StorageSettings


# ==================================================================== parser
def add_commands(subparsers) -> None:
    """Add `projects` and the project options of `render` (creating `render` if app.py has none)."""
    render = subparsers.choices.get("render") if hasattr(subparsers, "choices") else None
    if render is None:
        from svi.cli import add_render_arguments

        render = subparsers.add_parser("render", help="render a storyboard JSON, optionally into a project")
        add_render_arguments(render)
    _add(render, "--project", help="persist takes in this project; a re-run resumes where the last one stopped")
    _add_storage_options(render)
    render.set_defaults(storage_run=run_render)

    projects = subparsers.add_parser("projects", help="list, export, import, rename, duplicate, delete projects")
    _add_storage_options(projects)
    sub = projects.add_subparsers(dest="projects_command", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="all projects, most recently changed first")
    p = sub.add_parser("export", help="write a project as a .zip bundle")
    p.add_argument("name")
    p.add_argument("out", type=Path, help="bundle file to write (.zip)")
    p = sub.add_parser("import", help="import a .zip bundle as a new project")
    p.add_argument("bundle", type=Path)
    p.add_argument("--name", help="name of the new project (default: the bundle's)")
    p.add_argument("--on-conflict", choices=("rename", "error"), default="rename",
                   help="when the name exists: pick 'NAME (2)' (default) or stop with an error")
    p = sub.add_parser("rename", help="rename a project")
    p.add_argument("name")
    p.add_argument("new_name")
    p = sub.add_parser("duplicate", help="copy a project (storyboard and takes)")
    p.add_argument("name")
    p.add_argument("new_name")
    p = sub.add_parser("delete", help="delete a project (its files go at the next gc)")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="really delete")
    p = sub.add_parser("gc", help="remove stored files no project uses")
    p.add_argument("--grace-seconds", type=float, default=3600.0,
                   help="spare files newer than this (a render may still be writing them)")
    projects.set_defaults(storage_run=run_projects)


def _add(parser: argparse.ArgumentParser, *flags: str, **kw) -> None:
    """Add an option unless the parser already has it (app.py may declare --project itself)."""
    if any(f in parser._option_string_actions for f in flags):  # argparse has no public query for this
        return
    parser.add_argument(*flags, **kw)


def _add_storage_options(p: argparse.ArgumentParser) -> None:
    _add(p, "--data-dir", type=Path, help="data folder (default: SVI_DATA_DIR or a per-user folder)")
    _add(p, "--database-url", help="SQLAlchemy URL (default: SVI_DATABASE_URL or <data>/svi.db)")


def run(args: argparse.Namespace) -> int:
    """Run a command added by `add_commands`; errors print one clear line and return 2."""
    handler = getattr(args, "storage_run", None)
    if handler is None:
        raise ValueError("not a storage command (add_commands was not used to parse these arguments)")
    try:
        return handler(args)
    except (StorageError, StoryboardError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _open(args):
    """Settings (flags override their environment variable one to one), sessionmaker, asset store."""
    import os

    from .assets import AssetStore
    from .db import open_database

    env = dict(os.environ)
    if getattr(args, "data_dir", None):
        env["SVI_DATA_DIR"] = str(args.data_dir)
    if getattr(args, "database_url", None):
        env["SVI_DATABASE_URL"] = args.database_url
    settings = StorageSettings.from_env(env)
    Session = open_database(settings.database_url)
    return Session, AssetStore(settings.assets_dir, max_bytes=settings.max_asset_bytes), settings


# ==================================================================== render
def run_render(args: argparse.Namespace) -> int:
    if not getattr(args, "project", None):
        raise StorageError("render into a project needs --project NAME")
    from svi.timeline import load_storyboard

    from .projects import clip_states, plan_project, save_storyboard, spec_of
    from .render_job import render_project

    board = load_storyboard(args.storyboard)
    changes = {k: getattr(args, k, None) for k in ("seed", "model", "variant", "steps")}
    board = board.with_settings(**{k: v for k, v in changes.items() if v is not None})
    Session, store, _ = _open(args)
    name = args.project

    # 1. The storyboard file is the source of truth in this mode: the project takes its content
    with Session.begin() as s:
        project = save_storyboard(s, store, name, board)
        version = project.version
    spec = spec_of(board)
    with Session() as s:
        plan = plan_project(s, store, name, spec, max_clips=getattr(args, "clips", None))
        states = clip_states(s, name, plan)
    start = next((st.index for st in states if st.status != "valid"), len(plan.clips))
    stale = [st.index for st in states if st.status == "stale"]
    print(f"project {name!r} (version {version}): {len(plan.clips)} clips of {spec.model_id}; "
          f"{start} already rendered" + (f", {len(stale)} stale" if stale else "")
          + (f"; rendering from clip {start}" if start < len(plan.clips) else "; nothing to render"),
          file=sys.stderr)

    # 2. Render what is missing, one transaction per finished clip
    if start < len(plan.clips):
        from tqdm import tqdm

        from svi.engine import build_renderer

        renderer, _ = build_renderer(spec, getattr(args, "device", None))
        bar = tqdm(total=len(plan.clips), initial=start, desc="clips", unit="clip")

        def progress(p) -> None:
            bar.update(1)
            bar.set_postfix(clip=p.clip_index, s_per_clip=f"{p.seconds:.1f}")

        try:
            render_project(Session, store, name, renderer, plan, progress=progress)
        finally:
            bar.close()

    # 3. The video, from the chosen takes
    if getattr(args, "out", None):
        out = write_project_video(Session, store, name, plan, Path(args.out))
        print(f"wrote {out}", file=sys.stderr)
    return 0


def write_project_video(Session, store, name: str, plan, out: Path) -> Path:
    """Encode the chosen takes as one mp4 (each frame once, the storyboard's audio muxed under it)
    and keep it as the project's final video."""
    from svi.video import VideoWriter, mux_audio

    from .models import Render
    from .projects import add_asset, chosen_frames, get_project, load_storyboard
    from .render_job import latest_render

    out = Path(out)
    silent = out.with_name(out.stem + ".silent.mp4")
    with Session() as s:
        board = load_storyboard(s, store, name)
        with VideoWriter(silent if board.audio else out, plan.fps) as writer:
            for frames in chosen_frames(s, store, name, plan):
                writer.append(frames)
    if board.audio:
        from svi.conditioning.audio import timeline_audio

        samples, sr = timeline_audio(board.audio, plan.total_frames, plan.fps)
        mux_audio(silent, samples, sr, out)
        silent.unlink()
    with Session.begin() as s:
        asset = add_asset(s, store, out, kind="video", media={"frames": plan.total_frames, "fps": plan.fps})
        render = latest_render(s, name)
        if render is None:
            render = Render(project_id=get_project(s, name).id, status="done", model_id=plan.model_id,
                            clip_count=len(plan.clips), start_at=len(plan.clips))
            s.add(render)
        render.output = asset
    return out


# ==================================================================== projects
def run_projects(args: argparse.Namespace) -> int:
    from . import bundles, projects
    from .gc import collect_garbage

    Session, store, settings = _open(args)
    cmd = args.projects_command
    if cmd == "list":
        with Session() as s:
            rows = projects.list_projects(s)
        if not rows:
            print(f"no projects yet (data folder {settings.data_dir})")
        for r in rows:
            print(f"{r.name}\tversion {r.version}\tupdated {r.updated_at:%Y-%m-%d %H:%M}")
    elif cmd == "export":
        with Session() as s:
            out = bundles.export_project(s, store, args.name, args.out)
        print(f"exported {args.name!r} to {out}")
    elif cmd == "import":
        with Session.begin() as s:
            res = bundles.import_bundle(s, store, args.bundle, name=args.name, on_conflict=args.on_conflict)
        note = " (the name was taken)" if res.renamed else ""
        print(f"imported {args.bundle.name} as {res.name!r}{note}: {res.assets} files, {res.takes} takes")
    elif cmd == "rename":
        with Session.begin() as s:
            projects.rename_project(s, args.name, args.new_name)
        print(f"renamed {args.name!r} to {args.new_name!r}")
    elif cmd == "duplicate":
        with Session.begin() as s:
            projects.duplicate_project(s, args.name, args.new_name)
        print(f"copied {args.name!r} to {args.new_name!r}")
    elif cmd == "delete":
        if not args.yes:
            raise StorageError(f"deleting {args.name!r} cannot be undone: add --yes")
        with Session.begin() as s:
            projects.delete_project(s, args.name)
        print(f"deleted {args.name!r} (run `projects gc` to free its files)")
    elif cmd == "gc":
        rep = collect_garbage(Session, store, grace_s=args.grace_seconds)
        print(f"removed {rep.rows_removed} unused assets, {rep.files_removed} files "
              f"({rep.bytes_freed / 1e6:.1f} MB), {rep.temp_removed} leftover temp files")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storage.cli", description="SVI Storyboard projects.")
    add_commands(ap.add_subparsers(dest="command", required=True))
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
