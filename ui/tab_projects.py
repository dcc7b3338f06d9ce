"""Projects tab: cards (thumbnail, name, length, last edit), create from an image, open, rename,
duplicate, delete with confirmation, export and import bundles."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from . import project_ops as ops
from .components import ProjectList, dumps
from .errors import user_errors
from .services import Services


@dataclass
class ProjectsHandles:
    plist: ProjectList
    select: gr.Dropdown
    status: gr.Markdown
    opened: list = field(default_factory=list)  # events after which `current` names the project to show
    refresh_outputs: list = field(default_factory=list)


def build_projects(services: Services, current: gr.Textbox) -> ProjectsHandles:
    with gr.Row():
        with gr.Column(scale=3):
            plist = ProjectList(elem_id="project-list")
        with gr.Column(scale=2, min_width=320):
            gr.Markdown("#### New project")
            image = gr.File(label="Start image", file_types=["image"], type="filepath", elem_id="new-image")
            new_name = gr.Textbox(label="Project name", placeholder="default: the image's file name",
                                  elem_id="new-name")
            create = gr.Button("Create project", variant="primary", elem_id="create-project")
            examples_btn = gr.Button("Add the example projects (prompt stream, talk, dance)",
                                     elem_id="add-examples")
            gr.Markdown("#### Selected project")
            select = gr.Dropdown(label="Project", choices=[], value=None, allow_custom_value=True,
                                 elem_id="project-select")
            with gr.Row():
                open_btn = gr.Button("Open", variant="primary", elem_id="open-project")
                dup_btn = gr.Button("Duplicate", elem_id="duplicate-project")
                export_btn = gr.Button("Export bundle", elem_id="export-project")
            with gr.Row():
                rename_to = gr.Textbox(label="New name", scale=3, elem_id="rename-to")
                rename_btn = gr.Button("Rename", scale=1, elem_id="rename-project")
            delete_btn = gr.Button("Delete…", variant="stop", elem_id="delete-project")
            with gr.Group(visible=False, elem_id="confirm-delete") as confirm_box:
                confirm_md = gr.Markdown()
                with gr.Row():
                    yes = gr.Button("Yes, delete it", variant="stop", elem_id="confirm-delete-yes")
                    no = gr.Button("Cancel", elem_id="confirm-delete-no")
            export_file = gr.File(label="Exported bundle", interactive=False, elem_id="exported-bundle")
            gr.Markdown("#### Import")
            bundle = gr.File(label="Project bundle (.zip)", file_types=[".zip"], type="filepath",
                             elem_id="import-bundle")
            import_btn = gr.Button("Import bundle", elem_id="import-project")
            status = gr.Markdown(elem_id="projects-status")

    # ------------------------------------------------------------------ handlers
    def refresh(selected: str | None = None):
        rows = ops.list_rows(services)
        names = [r.name for r in rows]
        keep = selected if selected in names else (names[0] if names else None)
        return dumps([r.to_dict() for r in rows]), gr.Dropdown(choices=names, value=keep)

    @user_errors
    def create_project(image_path: str | None, name: str | None) -> str:
        """Create a project from a start image; returns its name (also opened in the page)."""
        return ops.create_project(services, image_path, name)

    @user_errors
    def add_examples() -> str:
        """Create projects from the bundled examples; returns (and opens) the first one's name."""
        return ops.create_examples(services)

    @user_errors
    def open_project(name: str | None) -> str:
        return ops.require_project(services, name)

    def open_card(evt: gr.EventData) -> str:
        return open_project(evt._data.get("name"))

    def pick_card(evt: gr.EventData):
        return gr.Dropdown(value=evt._data.get("name"))

    @user_errors
    def rename(name: str | None, new_name: str | None, cur: str | None):
        new = ops.rename_project(services, ops.require_project(services, name), new_name or "")
        return (*refresh(new), new if cur == name else cur, f"Renamed {name!r} to {new!r}.")

    @user_errors
    def duplicate(name: str | None):
        new = ops.duplicate_project(services, ops.require_project(services, name))
        return (*refresh(new), f"Copied {name!r} to {new!r}.")

    @user_errors
    def ask_delete(name: str | None):
        ops.require_project(services, name)
        return gr.Group(visible=True), (f"**Delete {name!r}?** Its storyboard, takes and renders go; "
                                        f"this cannot be undone.")

    @user_errors
    def delete(name: str | None, cur: str | None):
        ops.delete_project(services, name or "", name or "")
        return (*refresh(None), gr.Group(visible=False), "" if cur == name else cur, f"Deleted {name!r}.")

    @user_errors
    def export_project(name: str | None) -> str:
        """Export a project as a .zip bundle (storyboard, media, chosen takes)."""
        return ops.export_bundle(services, ops.require_project(services, name))

    @user_errors
    def import_project(path: str | None) -> str:
        """Import a project bundle (.zip); returns the new project's name."""
        return ops.import_bundle(services, path)[0]

    # ------------------------------------------------------------------ wiring
    lists = [plist, select]
    created = create.click(create_project, [image, new_name], [current], api_name="create_project")
    created.success(lambda: (None, ""), None, [image, new_name], api_visibility="private")
    opened = open_btn.click(open_project, [select], [current], api_name="open_project")
    examples_added = examples_btn.click(add_examples, None, [current], api_name="add_examples")
    card_opened = plist.open_project(open_card, None, [current], api_visibility="private")
    plist.pick(pick_card, None, [select], api_visibility="private")
    rename_btn.click(rename, [select, rename_to, current], [*lists, current, status], api_visibility="private")
    dup_btn.click(duplicate, [select], [*lists, status], api_visibility="private")
    delete_btn.click(ask_delete, [select], [confirm_box, confirm_md], api_visibility="private")
    no.click(lambda: gr.Group(visible=False), None, [confirm_box], api_visibility="private")
    yes.click(delete, [select, current], [*lists, confirm_box, current, status], api_visibility="private")
    export_btn.click(export_project, [select], [export_file], api_name="export_project")
    imported = import_btn.click(import_project, [bundle], [current], api_name="import_project")

    # Clean API endpoints for the same actions (gradio_client); typed, no UI outputs.
    @user_errors
    def list_projects() -> list[dict]:
        """Every project, most recently edited first: name, version, updated_at, duration_s, clips, model."""
        return [{k: v for k, v in r.to_dict().items() if k != "thumb"} for r in ops.list_rows(services)]

    @user_errors
    def rename_project(name: str, new_name: str) -> str:
        """Rename a project; returns the new name."""
        return ops.rename_project(services, name, new_name)

    @user_errors
    def duplicate_project(name: str, new_name: str = "") -> str:
        """Copy a project (storyboard and takes); returns the copy's name."""
        return ops.duplicate_project(services, name, new_name or None)

    @user_errors
    def delete_project(name: str, confirm: str) -> str:
        """Delete a project; `confirm` must repeat its name."""
        ops.delete_project(services, name, confirm)
        return f"deleted {name!r}"

    for fn in (list_projects, rename_project, duplicate_project, delete_project):
        gr.api(fn, api_name=fn.__name__)

    handles = ProjectsHandles(plist=plist, select=select, status=status, refresh_outputs=lists)
    handles.opened = [created, opened, card_opened, imported, examples_added]
    handles.refresh = refresh  # type: ignore[attr-defined]
    return handles
