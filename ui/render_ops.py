"""The render view's data: clip cards with their takes, a clip's details, retakes, choosing a take,
and drift statistics. Plain functions over `Services` (storage does the bookkeeping, svi the plan).

Retake (ARCHITECTURE 3): a retake is a per-clip override (another seed and/or prompt) stored with
the project, then a job that renders up to that clip. The override changes the clip's input hash,
so its old take is stale, the new take becomes the chosen one, and every later clip turns stale
(their carry changed) until they are re-rendered on request. Choosing an older take restores the
override it was made with when one of the candidates reproduces its input hash, so it counts as
valid again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from storage import projects as P
from storage.frames import decode_frames
from svi.planning import ClipOverride, plan

from .drift import clip_stats, drift_table
from .errors import UserError
from .jobs import JobView, write_take_video
from .services import Services
from .thumbs import frame_data_uri


@dataclass(frozen=True)
class ClipCard:
    index: int
    start_s: float
    end_s: float
    prompt: str
    seed: int
    status: str  # valid | stale | missing
    take_id: int | None
    takes: int
    thumb: str

    def to_dict(self) -> dict:
        return dict(index=self.index, start_s=round(self.start_s, 3), end_s=round(self.end_s, 3), prompt=self.prompt,
                    seed=self.seed, status=self.status, take_id=self.take_id, takes=self.takes, thumb=self.thumb)


def _plan_and_states(s, services: Services, name: str):
    board = P.load_storyboard(s, services.store, name)
    spec = P.spec_of(board)
    clip_plan = P.plan_project(s, services.store, name, spec)
    return board, spec, clip_plan, P.clip_states(s, name, clip_plan)


def clip_cards(services: Services, name: str) -> list[ClipCard]:
    with services.Session() as s:
        _, _, clip_plan, states = _plan_and_states(s, services, name)
        takes = P.takes_of(s, name)
    count: dict[int, int] = {}
    chosen: dict[int, P.Take] = {}
    for t in takes:
        count[t.clip_index] = count.get(t.clip_index, 0) + 1
        if t.chosen:
            chosen[t.clip_index] = t
    cards = []
    for c, st in zip(clip_plan.clips, states):
        take = chosen.get(c.index)
        thumb = take_thumb(services, take.frames.sha256) if take is not None else ""
        cards.append(ClipCard(index=c.index, start_s=c.out_start / clip_plan.fps, end_s=c.out_end / clip_plan.fps,
                              prompt=c.prompt, seed=c.seed, status=st.status, take_id=st.take_id,
                              takes=count.get(c.index, 0), thumb=thumb))
    return cards


def take_thumb(services: Services, frames_sha256: str) -> str:
    return _thumb(str(services.store.path_for(frames_sha256, ".npz")), frames_sha256)


@lru_cache(maxsize=2048)
def _thumb(path: str, sha: str) -> str:
    try:
        frames = decode_frames(path)
    except Exception:  # noqa: BLE001 - a missing frames file shows as a card without a picture
        return ""
    return frame_data_uri(frames[len(frames) // 2])


@dataclass(frozen=True)
class ClipDetail:
    index: int
    status: str
    prompt: str
    seed: int
    start_s: float
    end_s: float
    takes: list[dict]  # id, seed, chosen, seconds, created
    chosen_video: str | None  # mp4 of the chosen take


def clip_detail(services: Services, name: str, index: int) -> ClipDetail:
    with services.Session() as s:
        _, spec, clip_plan, states = _plan_and_states(s, services, name)
        if not 0 <= index < len(clip_plan):
            raise UserError(f"clip {index + 1} does not exist: the plan has {len(clip_plan)} clips")
        takes = P.takes_of(s, name, index)
        rows = [dict(id=t.id, seed=t.seed, chosen=t.chosen, seconds=round(float(t.timings.get("total", 0.0)), 2),
                     created=t.created_at.strftime("%H:%M:%S"), frames=t.frames.sha256) for t in takes]
    c = clip_plan.clips[index]
    chosen = next((r for r in rows if r["chosen"]), None)
    video = str(write_take_video(services, chosen["id"], chosen["frames"], clip_plan.fps)) if chosen else None
    return ClipDetail(index=index, status=states[index].status, prompt=c.prompt, seed=c.seed,
                      start_s=c.out_start / clip_plan.fps, end_s=c.out_end / clip_plan.fps,
                      takes=[{k: v for k, v in r.items() if k != "frames"} for r in rows], chosen_video=video)


def take_video(services: Services, name: str, take_id: int) -> str:
    with services.Session() as s:
        take = next((t for t in P.takes_of(s, name) if t.id == int(take_id)), None)
        if take is None:
            raise UserError(f"project {name!r} has no take {take_id}")
        fps = P.spec_of(P.load_storyboard(s, services.store, name)).fps
        return str(write_take_video(services, take.id, take.frames.sha256, fps))


def retake(services: Services, name: str, index: int, seed: int | None = None, prompt: str | None = None) -> JobView:
    """Render clip `index` again with another seed (random when None) and/or an edited prompt."""
    if services.jobs is None:
        raise UserError("rendering is not available in this server")
    if services.jobs.is_busy(name):
        raise UserError(f"{name!r} is rendering; wait for it to finish or cancel it before a retake")
    with services.Session.begin() as s:
        board, spec, clip_plan, _ = _plan_and_states(s, services, name)
        if not isinstance(index, int) or not 0 <= index < len(clip_plan):
            raise UserError(f"clip {index + 1 if isinstance(index, int) else index} does not exist: the plan has "
                            f"{len(clip_plan)} clips")
        if seed is None:
            seed = random.SystemRandom().randrange(2**63)
        if not 0 <= int(seed) < 2**63:
            raise UserError("seed must be a whole number in [0, 2^63)")
        others = P.clip_overrides(P.get_project(s, name))
        others.pop(index, None)
        board_prompt = plan(board, spec, overrides=others, max_clips=index + 1).clips[index].prompt
        text = (prompt or "").strip()
        new_prompt = text if text and text != board_prompt else None
        P.set_clip_override(s, name, index, ClipOverride(seed=int(seed), prompt=new_prompt))
    return services.jobs.submit(name, upto=index, kind="retake")


def choose(services: Services, name: str, take_id: int) -> str:
    """Make take `take_id` its clip's chosen one; returns a sentence on what that means for the clips."""
    with services.Session.begin() as s:
        take = P.choose_take(s, name, int(take_id))
        k = take.clip_index
        project = P.get_project(s, name)
        board = P.storyboard_of(project, services.store)
        spec = P.spec_of(board)
        base = P.clip_overrides(project)
        chosen = P.chosen_takes(s, project.id)
        prev_carry = chosen[k - 1].carry_hash if k > 0 and (k - 1) in chosen else ""
        current = base.get(k)
        candidates = [current, ClipOverride(seed=take.seed, prompt=current.prompt if current else None),
                      ClipOverride(seed=take.seed), None]
        for ov in candidates:
            overrides = dict(base)
            if ov is None or (ov.seed is None and ov.prompt is None):
                overrides.pop(k, None)
            else:
                overrides[k] = ov
            clip = plan(board, spec, overrides=overrides, max_clips=k + 1).clips[k]
            if clip.input_hash(prev_carry) == take.input_hash:
                if overrides.get(k) != base.get(k):
                    P.set_clip_override(s, name, k, overrides.get(k))
                return f"Clip {k + 1} now uses take {take.id}; later clips are stale until you render them again."
    return (f"Clip {k + 1} now uses take {take.id}, made from inputs that have changed since (prompt, settings or "
            f"the clip before): it shows as stale.")


def drift(services: Services, name: str) -> list[dict]:
    """Drift rows (clip, metric, value) over the chosen takes that are valid, in clip order."""
    with services.Session() as s:
        project = P.get_project(s, name)
        _, _, clip_plan, states = _plan_and_states(s, services, name)
        chosen = P.chosen_takes(s, project.id)
        shas = {st.index: chosen[st.index].frames.sha256 for st in states
                if st.status == P.VALID and st.index in chosen}
    stats = {k: _stats(str(services.store.path_for(sha, ".npz")), sha) for k, sha in shas.items()}
    return drift_table(stats)


@lru_cache(maxsize=1024)
def _stats(path: str, sha: str):
    return clip_stats(decode_frames(path))
