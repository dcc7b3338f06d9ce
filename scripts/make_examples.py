"""Regenerate assets/examples/: a storyworld start image, a voice track and a dance skeleton track,
and the storyboards that use them (prompt stream, talk, dance). Deterministic.

    .venv/bin/python scripts/make_examples.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storyworld.audio import SAMPLE_RATE, speech_like  # noqa: E402
from storyworld.generator import render  # noqa: E402
from svi.conditioning.pose import N_LANDMARKS, PoseTrack  # noqa: E402

OUT = ROOT / "assets" / "examples"


def storyboard(prompts, variant=None, audio=(), poses=()):
    return {"format": "svi-storyboard", "version": 1, "start_image": "start.png",
            "settings": {"model": "storyworld-tiny", "variant": variant, "seed": 42, "duration": None, "steps": None,
                         "cfg": None, "negative_prompt": None, "loras": []},
            "prompts": [{"start": s, "end": e, "text": t, "negative": None, "cfg": None, "seed": None}
                        for s, e, t in prompts],
            "audio": list(audio), "poses": list(poses)}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    dance = render("a red circle bounces on a beach by day while a person dances", frames_per_scene=64, seed=3)
    Image.fromarray(dance.frames[0]).save(OUT / "start.png")

    sf.write(OUT / "voice.wav", speech_like(8.0, np.random.default_rng(7)), SAMPLE_RATE)

    # The generator's figure keypoints (x/W, y/H, visibility) as an svi-pose track at the video's fps.
    kp = dance.keypoints.astype(np.float32)
    vis = kp[..., 2]
    n = len(kp)
    PoseTrack(kp[..., :2].copy(), np.zeros((n, N_LANDMARKS), np.float32), vis.copy(), vis.copy(),
              vis.max(axis=1) > 0, float(dance.fps), dance.size[0], dance.size[1],
              source="storyworld seed 3").save(OUT / "dance.pose.json")

    (OUT / "storyboard.json").write_text(json.dumps(storyboard([
        (0.0, 4.0, "a red circle bounces on a beach by day while a person waves"),
        (4.0, 8.0, "a red circle moves left on a beach at dusk while a person walks")]), indent=2) + "\n")
    (OUT / "talk.json").write_text(json.dumps(storyboard(
        [(0.0, 8.0, "a red circle rests on a beach by day while a person stands")], "talk",
        audio=[{"start": 0.0, "end": 8.0, "path": "voice.wav", "offset": 0.0}]), indent=2) + "\n")
    (OUT / "dance.json").write_text(json.dumps(storyboard(
        [(0.0, 8.0, "a red circle bounces on a beach by day while a person dances")], "dance",
        poses=[{"start": 0.0, "end": 8.0, "path": "dance.pose.json", "offset": 0.0, "speed": 1.0}]), indent=2) + "\n")
    (OUT / "prompts.txt").write_text("# an SVI prompt stream: one prompt per clip\n"
                                     "a red circle bounces on a beach by day while a person waves\n"
                                     "a red circle moves left on a beach at dusk while a person walks\n"
                                     "a blue star spins in a forest at night as the camera pans left\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
