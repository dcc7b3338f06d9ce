"""storyworld: a procedural world of captioned videos with audio and a skeleton, and analyzers that
read its frames back (docs/storyworld.md).

It trains and measures the bundled storyworld-tiny model: the generator makes the training data
and the analyzers score what the model renders (prompt following, pose, lip sync, drift). Imports
numpy and scipy only (PyAV / soundfile for file output); no torch, no ui/storage.
"""

from .world import (ACTIONS, COLOURS, MOTIONS, PANS, PLACES, SHAPES, TIMES, VOCABULARY, CaptionError, SceneSpec,
                    caption_of, parse_caption, random_caption, random_scene)
from .generator import CaptionSpan, FrameTruth, SceneLayout, Video, random_specs, render, render_random

__all__ = [
    "ACTIONS", "COLOURS", "MOTIONS", "PANS", "PLACES", "SHAPES", "TIMES", "VOCABULARY", "CaptionError", "SceneSpec",
    "caption_of", "parse_caption", "random_caption", "random_scene", "CaptionSpan", "FrameTruth", "SceneLayout",
    "Video", "random_specs", "render", "render_random",
]
