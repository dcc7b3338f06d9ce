"""Custom `gr.HTML` components: a static shell whose contents the component's own JS draws.

Why a static html_template: gr.HTML evaluates its template as Handlebars *and* as a JS template
literal, so user text (a project name holding "${...}") placed in the template would run as code.
Here the template never sees the value; the JS (ui/static/*.js) parses `props.value` (a JSON string)
and builds the DOM with textContent, redrawing when Python sends a new value (`watch('value')`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import gradio as gr

STATIC = Path(__file__).resolve().parent / "static"


def static_text(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")

from gradio.events import Dependency

class JsonHtml(gr.HTML):
    """A gr.HTML whose value is a JSON string drawn by `<name>.js` with `<name>.css`."""

    def __init__(self, name: str, value: Any = None, *, shell: str, server_functions: list[Callable] | None = None,
                 **kwargs):
        super().__init__(value=dumps(value), html_template=shell, css_template=static_text(f"{name}.css"),
                         js_on_load=static_text(f"{name}.js"), server_functions=server_functions,
                         apply_default_css=False, **kwargs)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def dumps(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class ProjectList(JsonHtml):
    """Project cards (thumbnail, name, length, last edit); events `pick` and `open_project` carry {name}."""

    def __init__(self, value: Any = None, **kwargs):
        super().__init__("project_list", value if value is not None else [],
                         shell='<div class="plist" role="list" aria-label="Projects"></div>', **kwargs)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component
class Timeline(JsonHtml):
    """The storyboard timeline. Value: timeline_ops.timeline_state JSON. Events: `select_segment`
    ({track, id, segment}) and `saved` ({version}). Edits are saved through `save_tracks`."""

    def __init__(self, save_tracks: Callable, value: Any = None, **kwargs):
        if save_tracks.__name__ != "save_tracks":
            raise ValueError("the timeline's JS calls server.save_tracks; pass a function of that name")
        super().__init__("timeline", value if value is not None else {}, shell=TIMELINE_SHELL,
                         server_functions=[save_tracks], **kwargs)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    
class ClipStrip(JsonHtml):
    """Clip cards (thumbnail, time, status, takes). Value: {cards, selected, rendering}; event `pick_clip` {index}."""

    def __init__(self, value: Any = None, **kwargs):
        super().__init__("clip_strip", value if value is not None else {"cards": []},
                         shell='<div class="cstrip" role="list" aria-label="Clips"></div>', **kwargs)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    