"""Which exceptions are the user's to fix (bad input, missing files), as opposed to our bugs."""

from __future__ import annotations


class RenderCancelled(Exception):
    """Raised out of `Renderer.stream` when `should_stop()` turned true; finished clips were yielded.

    Lives here, free of torch, so storage and UI code can catch it without importing the engine."""


def user_error_types() -> tuple[type[BaseException], ...]:
    from .images import ImageError
    from .lora import LoraError
    from .models import MissingWeightsError
    from .timeline import StoryboardError

    types: list[type[BaseException]] = [StoryboardError, ImageError, MissingWeightsError, LoraError]
    try:
        from .conditioning.audio import AudioError
        from .conditioning.pose import PoseError

        types += [AudioError, PoseError]
    except ImportError:  # conditioning not installed in this build
        pass
    return tuple(types)


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, user_error_types())
