"""The SVI engine: timeline, planning, models, scheduler, renderer and video io.

Imports no UI or storage code (ARCHITECTURE.md section 2). Torch-heavy modules are imported lazily
by their users, so `svi.plan` and `svi.timeline` stay cheap to import.
"""

from .planning import ClipOverride, ClipPlan, ClipSpec, MediaPiece, plan
from .presets import ModelSpec, resolve_spec
from .timeline import Storyboard, StoryboardError, load_storyboard, save_storyboard

__all__ = [
    "ClipOverride", "ClipPlan", "ClipSpec", "MediaPiece", "ModelSpec", "Storyboard", "StoryboardError",
    "load_storyboard", "plan", "resolve_spec", "save_storyboard",
]
