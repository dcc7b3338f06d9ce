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


class JsonHtml(gr.HTML):
    """A gr.HTML whose value is a JSON string drawn by `<name>.js` with `<name>.css`."""

    def __init__(self, name: str, value: Any = None, *, shell: str, server_functions: list[Callable] | None = None,
                 **kwargs):
        super().__init__(value=dumps(value), html_template=shell, css_template=static_text(f"{name}.css"),
                         js_on_load=static_text(f"{name}.js"), server_functions=server_functions,
                         apply_default_css=False, **kwargs)


def dumps(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class ProjectList(JsonHtml):
    """Project cards (thumbnail, name, length, last edit); events `pick` and `open_project` carry {name}."""

    def __init__(self, value: Any = None, **kwargs):
        super().__init__("project_list", value if value is not None else [],
                         shell='<div class="plist" role="list" aria-label="Projects"></div>', **kwargs)


TIMELINE_SHELL = """
<div class="tl">
  <div class="tl-toolbar" role="toolbar" aria-label="Timeline tools">
    <button type="button" data-act="add" aria-label="Add a prompt segment (N)" title="Add a prompt segment (N)">+ Prompt</button>
    <button type="button" data-act="split" aria-label="Split the selected segment (S)" title="Split at the playhead (S)">Split</button>
    <button type="button" data-act="delete" aria-label="Delete the selected segment (Delete)" title="Delete (Del)">Delete</button>
    <button type="button" data-act="undo" aria-label="Undo (Ctrl+Z)" title="Undo (Ctrl+Z)">Undo</button>
    <button type="button" data-act="redo" aria-label="Redo (Ctrl+Shift+Z)" title="Redo (Ctrl+Shift+Z)">Redo</button>
    <button type="button" data-act="zoomout" aria-label="Zoom out (-)" title="Zoom out (-)">−</button>
    <button type="button" data-act="zoomin" aria-label="Zoom in (+)" title="Zoom in (+)">+</button>
    <button type="button" data-act="fit" aria-label="Fit the storyboard in view" title="Fit">Fit</button>
    <span class="tl-status" role="status" aria-live="polite"></span>
  </div>
  <div class="tl-body">
    <div class="tl-labels" aria-hidden="true"><div class="lab-ruler"></div><div>Prompt</div><div>Audio</div><div>Pose</div></div>
    <div class="tl-scroll" tabindex="0" role="listbox" aria-label="Timeline. Arrows select segments, Up and Down change track, Shift+Arrow moves, Alt+Arrow resizes the end (Alt+Shift the start), N adds, S splits, Delete removes, Ctrl+Z undoes, Enter edits the text.">
      <div class="tl-canvas"></div>
    </div>
  </div>
  <div class="tl-alert" role="alert" hidden></div>
  <div class="tl-help">Drag on the prompt track to add a segment · drag a segment to move it, its edges to resize · edges snap to clips (hold Alt for frames) · click the ruler to move the playhead</div>
</div>
"""


class Timeline(JsonHtml):
    """The storyboard timeline. Value: timeline_ops.timeline_state JSON. Events: `select_segment`
    ({track, id, segment}) and `saved` ({version}). Edits are saved through `save_tracks`."""

    def __init__(self, save_tracks: Callable, value: Any = None, **kwargs):
        if save_tracks.__name__ != "save_tracks":
            raise ValueError("the timeline's JS calls server.save_tracks; pass a function of that name")
        super().__init__("timeline", value if value is not None else {}, shell=TIMELINE_SHELL,
                         server_functions=[save_tracks], **kwargs)


class ClipStrip(JsonHtml):
    """Clip cards (thumbnail, time, status, takes). Value: {cards, selected, rendering}; event `pick_clip` {index}."""

    def __init__(self, value: Any = None, **kwargs):
        super().__init__("clip_strip", value if value is not None else {"cards": []},
                         shell='<div class="cstrip" role="list" aria-label="Clips"></div>', **kwargs)
