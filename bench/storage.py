"""Storage speed: list 1,000 projects, load a project of 1,000 segments (goal: under 100 ms each).

    python bench/storage.py [--database-url URL] [--repeats 15]

Builds a throwaway SQLite database in a temp folder (or uses --database-url, which should point at
an empty database), fills it through the same operations the app uses, then times each read in a
fresh session (median of --repeats; the first, cold read is reported too). Last line:
`storage: list_1000_ms=... load_1000_segments_ms=...`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from storage import projects as P  # noqa: E402
from storage.assets import AssetStore  # noqa: E402
from storage.db import database_url_for_display, open_database  # noqa: E402
from storage.models import Project  # noqa: E402
from svi.timeline import AudioSegment, PromptSegment, Settings, Storyboard  # noqa: E402

N_PROJECTS = 1000
N_SEGMENTS = 1000


def build(Session, store: AssetStore, tmp: Path) -> None:
    image = tmp / "start.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(image)
    audio = tmp / "voice.wav"
    audio.write_bytes(b"RIFF....WAVEfmt ")  # only hashed and stored here, never decoded
    with Session.begin() as s:
        start = P.add_asset(s, store, image, kind="image")
        for i in tqdm(range(N_PROJECTS - 1), desc="projects", unit="project", leave=False):
            s.add(Project(name=f"project {i:04d}", settings={"seed": i}, clip_overrides={}, start_image=start))
    # The big one goes through save_storyboard, like a real project: 900 prompts, 100 audio segments.
    prompts = tuple(PromptSegment(i * 2.0, i * 2.0 + 2.0, f"a red circle moves {i}") for i in range(900))
    sounds = tuple(AudioSegment(i * 10.0, i * 10.0 + 10.0, str(audio), offset=0.5) for i in range(100))
    board = Storyboard(str(image), prompts, sounds, settings=Settings(seed=1))
    with Session.begin() as s:
        P.save_storyboard(s, store, "big", board)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first, median of the rest) in milliseconds."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times[0], statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", help="an empty database to use (default: SQLite in a temp folder)")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="svi-bench-") as d:
        tmp = Path(d)
        url = args.database_url or f"sqlite:///{tmp / 'svi.db'}"
        Session = open_database(url)
        store = AssetStore(tmp / "assets")
        t0 = time.perf_counter()
        build(Session, store, tmp)
        print(f"database: {database_url_for_display(url)}; built {N_PROJECTS} projects and one of "
              f"{N_SEGMENTS} segments in {time.perf_counter() - t0:.1f} s")

        def list_all():
            with Session() as s:
                rows = P.list_projects(s)
            assert len(rows) == N_PROJECTS

        def load_big():
            with Session() as s:
                board = P.load_storyboard(s, store, "big")
            assert len(board.prompts) + len(board.audio) == N_SEGMENTS

        list_first, list_ms = timed(list_all, args.repeats)
        load_first, load_ms = timed(load_big, args.repeats)
        print(f"list {N_PROJECTS} projects:        median {list_ms:7.2f} ms (first {list_first:.2f} ms)")
        print(f"load {N_SEGMENTS}-segment project:   median {load_ms:7.2f} ms (first {load_first:.2f} ms)"
              f"  [SQL + svi.timeline validation]")
        Session.kw["bind"].dispose()
    print(f"storage: list_1000_ms={list_ms:.2f} load_1000_segments_ms={load_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
