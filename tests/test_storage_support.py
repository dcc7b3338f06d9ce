"""Shared pieces of the storage tests: the database backends, an asset store, small media files,
storyboards, and a tiny deterministic renderer for the storage-operation tests (the crash test
uses the real one, svi.render).

Database backends: every test using the `db` fixture runs on SQLite and on PostgreSQL. PostgreSQL
comes from `SVI_TEST_POSTGRES_URL` (an existing server: each test gets its own database in it) or
from a throwaway cluster started here with Debian's postgresql binaries (/usr/lib/postgresql/*/bin)
in a temp folder, as the `postgres` user when running as root; unavailable -> skipped with the reason.
`SVI_TEST_POSTGRES=0` turns PostgreSQL off.

Other storage test modules import what they need from here (fixtures included).
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.assets import AssetStore
from storage.db import open_database
from svi.planning import ClipPlan, plan
from svi.presets import resolve_spec
from svi.timeline import AudioSegment, PoseSegment, PromptSegment, Settings, Storyboard

SPEC = resolve_spec("storyworld-tiny", "shot")  # F=17, m=1, 8 fps: 2 s of new video per clip


# ==================================================================== PostgreSQL
class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temp folder, reachable only through a unix socket."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.bindir: Path | None = None
        self.user: str | None = None
        self.error: str | None = None
        self.admin_url: str | None = None
        self._counter = itertools.count()

    def start(self) -> None:
        if os.environ.get("SVI_TEST_POSTGRES", "1") == "0":
            self.error = "SVI_TEST_POSTGRES=0"
            return
        try:
            import psycopg  # noqa: F401
        except ImportError:
            self.error = "psycopg is not installed (pip install 'psycopg[binary]')"
            return
        if url := os.environ.get("SVI_TEST_POSTGRES_URL"):
            self.admin_url = url
            return
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
        if not candidates:
            self.error = "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin; Debian package postgresql)"
            return
        self.bindir = Path(candidates[0]).parent
        run_as: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                self.error = "running as root and there is no 'postgres' user to run the server as"
                return
            run_as = ["runuser", "-u", "postgres", "--"]
            self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="svi-pg-"))
        if self.user:
            shutil.chown(self.dir, self.user)
        data, sock = self.dir / "data", str(self.dir)
        try:
            subprocess.run([*run_as, str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "svi",
                            "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
            subprocess.run([*run_as, str(self.bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
                            "-l", str(self.dir / "log"), "-o",
                            f"-k {sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off",
                            "start"], check=True, capture_output=True, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            out = getattr(e, "stderr", b"") or b""
            self.error = f"could not start a throwaway PostgreSQL: {e} {out.decode(errors='replace')[-300:]}"
            return
        self._run_as = run_as
        self.admin_url = f"postgresql+psycopg://svi@/postgres?host={sock}"

    def new_database(self) -> str:
        import psycopg
        from sqlalchemy.engine import make_url

        name = f"svi_test_{os.getpid()}_{next(self._counter)}"
        admin = make_url(self.admin_url)
        with psycopg.connect(**_psycopg_args(admin), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return admin.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        admin = make_url(self.admin_url)
        with psycopg.connect(**_psycopg_args(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def stop(self) -> None:
        if self.dir is None:
            return
        if self.bindir is not None and (self.dir / "data").exists():
            subprocess.run([*self._run_as, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"),
                            "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def _psycopg_args(url) -> dict:
    args = {"dbname": url.database, "user": url.username}
    if url.password:
        args["password"] = url.password
    if url.host:
        args["host"] = url.host
    if url.port:
        args["port"] = url.port
    args.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return args


@pytest.fixture(scope="session")
def postgres_cluster():
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'svi.db'}"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    if cluster.error:
        pytest.skip(f"PostgreSQL unavailable: {cluster.error}")
    url = cluster.new_database()
    yield url
    cluster.drop_database(url)


@pytest.fixture
def db(db_url):
    """A sessionmaker on a database upgraded to the newest migration (as the app does on start)."""
    Session = open_database(db_url)
    yield Session
    Session.kw["bind"].dispose()


@pytest.fixture
def store(tmp_path) -> AssetStore:
    return AssetStore(tmp_path / "assets", max_bytes=50 * 1024 * 1024)


# ==================================================================== media and storyboards
def write_png(path: Path, w: int = 32, h: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def write_wav(path: Path, seconds: float = 1.0, rate: int = 8000, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * freq * t) * 20000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def write_pose(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text('{"fps": 8, "keypoints": %s}' % rng.random((4, 3)).round(3).tolist())
    return path


@pytest.fixture
def media(tmp_path) -> dict[str, Path]:
    d = tmp_path / "media"
    d.mkdir()
    return {"image": write_png(d / "start.png"), "audio": write_wav(d / "voice.wav"),
            "pose": write_pose(d / "dance.pose.json")}


def make_board(media: dict[str, Path], seconds: float = 8.0, prompts: int = 2, seed: int = 7) -> Storyboard:
    """A storyboard with `prompts` back-to-back prompt segments, one audio and one pose segment."""
    step = seconds / prompts
    return Storyboard(
        start_image=str(media["image"]),
        prompts=tuple(PromptSegment(i * step, (i + 1) * step, f"a red circle moves {i}", cfg=4.0 if i else None)
                      for i in range(prompts)),
        audio=(AudioSegment(0.0, 1.0, str(media["audio"]), offset=0.25),),
        poses=(PoseSegment(1.0, 3.0, str(media["pose"]), offset=0.5, speed=1.5),),
        settings=Settings(seed=seed, steps=2),
    ).validate()


def plan_of(board: Storyboard, overrides=None) -> ClipPlan:
    return plan(board, SPEC, overrides=overrides)


# ==================================================================== a tiny deterministic renderer
def frames_hash(frames: np.ndarray) -> str:
    """Same definition as svi.render.frames_hash (shape, then bytes), without importing torch."""
    h = hashlib.sha256(repr(frames.shape).encode())
    h.update(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
    return h.hexdigest()


@dataclass
class FakeClipResult:
    index: int
    frames: np.ndarray
    carry: np.ndarray
    input_hash: str
    carry_hash: str
    seed: int
    timings: dict = field(default_factory=dict)
    forwards: int = 0


class FakeRenderer:
    """Follows the svi.render.Renderer.stream contract (start_at, carry, hashes chained through the
    carry) with frames that are a pure function of the clip's input hash: 8x8 pixels, instant."""

    def __init__(self, size: tuple[int, int] = (8, 8), fail_at: int | None = None):
        self.size = size
        self.fail_at = fail_at
        self.rendered: list[int] = []  # clip indices, in the order they were rendered
        self.carries_in: list[str] = []  # carry hash each stream started from

    def stream(self, plan: ClipPlan, *, start_at: int = 0, carry=None, should_stop=None, **_):
        if not 0 <= start_at < len(plan.clips):
            raise ValueError(f"start_at must be in [0, {len(plan.clips)}), got {start_at}")
        if start_at > 0 and carry is None:
            raise ValueError(f"resuming at clip {start_at} needs the carry frames of clip {start_at - 1}")
        carry_hash = frames_hash(np.asarray(carry)) if start_at > 0 else ""
        self.carries_in.append(carry_hash)
        for clip in plan.clips[start_at:]:
            if should_stop is not None and should_stop():
                raise RenderCancelledForTest(f"cancelled at clip {clip.index}")
            if self.fail_at == clip.index:
                raise RuntimeError(f"renderer failed at clip {clip.index}")
            ih = clip.input_hash(carry_hash)
            rng = np.random.default_rng(int(ih[:16], 16))
            frames = rng.integers(0, 256, (clip.out_end - clip.out_start, *self.size, 3), dtype=np.uint8)
            carry_frames = frames[-clip.motion_frames:].copy()
            self.rendered.append(clip.index)
            result = FakeClipResult(index=clip.index, frames=frames, carry=carry_frames, input_hash=ih,
                                    carry_hash=frames_hash(carry_frames), seed=clip.seed,
                                    timings={"total": 0.001}, forwards=clip.steps)
            carry_hash = result.carry_hash
            yield result


from svi.errors import RenderCancelled as RenderCancelledForTest  # noqa: E402 - what the real renderer raises


# ==================================================================== tests of the helpers themselves
def test_fake_renderer_chains_hashes_like_the_plan(media):
    """A resumed stream (start_at=k with the carry of k-1) gives the same results as a full one."""
    p = plan_of(make_board(media))
    full = list(FakeRenderer().stream(p))
    assert [r.index for r in full] == list(range(len(p)))
    assert full[0].input_hash == p.clips[0].input_hash("")
    for k in range(1, len(p)):
        assert full[k].input_hash == p.clips[k].input_hash(full[k - 1].carry_hash)
    resumed = list(FakeRenderer().stream(p, start_at=2, carry=full[1].carry))
    assert [(r.input_hash, r.carry_hash) for r in resumed] == [(r.input_hash, r.carry_hash) for r in full[2:]]


def test_db_fixture_backends_are_empty_and_at_head(db):
    from sqlalchemy import inspect

    from storage.db import current_revision

    engine = db.kw["bind"]
    assert current_revision(engine) is not None
    assert {"projects", "segments", "assets", "renders", "takes", "finetune_jobs"} <= set(inspect(engine).get_table_names())
