"""The final video: the chosen take of every clip, each frame encoded once, with the storyboard's
audio laid under it on the same frame grid; kept as the project's output."""

from __future__ import annotations

import re
import time

from storage import projects as P
from storage.render_job import latest_render

from .services import Services


def export_video(services: Services, name: str) -> str:
    from svi.video import VideoWriter, mux_audio

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "project"
    out = services.media_dir / "exports" / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}.mp4"
    silent = out.with_name(out.stem + ".silent.mp4")
    with services.Session() as s:
        board = P.load_storyboard(s, services.store, name)
        plan = P.plan_project(s, services.store, name, P.spec_of(board))
        with VideoWriter(silent, plan.fps) as writer:
            for frames in P.chosen_frames(s, services.store, name, plan):  # StorageError names unrendered clips
                writer.append(frames)
    if board.audio:
        from svi.conditioning.audio import timeline_audio

        samples, sr = timeline_audio(board.audio, plan.total_frames, plan.fps)
        mux_audio(silent, samples, sr, out)
        silent.unlink()
    else:
        silent.replace(out)
    with services.Session.begin() as s:
        asset = P.add_asset(s, services.store, out, kind="video",
                            media={"frames": plan.total_frames, "fps": plan.fps, "audio": bool(board.audio)})
        render = latest_render(s, name)
        if render is not None:
            render.output = asset
    return str(out)


def latest_export(services: Services, name: str) -> str | None:
    """The newest exported mp4 of the project still on disk (shown again after a reload)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "project"
    pattern = re.compile(re.escape(safe) + r"-\d{8}-\d{6}\.mp4$")
    found = sorted(p for p in (services.media_dir / "exports").glob("*.mp4") if pattern.match(p.name))
    return str(found[-1]) if found else None

