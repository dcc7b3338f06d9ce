"""The composition of the browser editor: `build_app(services) -> gr.Blocks` and `launch(args)`.

app.py (the repository's composition root) calls `launch(args)` with --host, --port, --data-dir,
--model, --weights-dir and --share. Each tab is built by its own `build_<tab>(services, ...)`; this
module only lays them out and chains "a project was opened" to every tab's loader.
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from .services import Services, build_services

THEME_CSS = """
.gradio-container { max-width: 1500px !important; }
#app-title h1 { margin: 0; font-size: 1.4rem; }
#app-ready { display: none !important; }
"""


def build_app(services: Services) -> gr.Blocks:
    from .tab_finetune import build_finetune
    from .tab_models import build_models
    from .tab_projects import build_projects
    from .tab_render import build_render
    from .tab_storyboard import build_storyboard

    with gr.Blocks(title="SVI Storyboard", analytics_enabled=False) as demo:
        with gr.Row():
            gr.Markdown("# SVI Storyboard", elem_id="app-title")
            header = gr.Markdown("No project open.", elem_id="current-project")
        current = gr.Textbox(visible=False, label="current project", elem_id="current-project-name")
        # Set once the page's load chain has run (tests and scripts wait for it before acting).
        ready = gr.HTML("", elem_id="app-ready", container=False)
        saved = gr.BrowserState("", storage_key="svi_storyboard_project")
        with gr.Tabs(selected="projects") as tabs:
            with gr.Tab("Projects", id="projects"):
                projects = build_projects(services, current)
            with gr.Tab("Storyboard", id="storyboard"):
                storyboard = build_storyboard(services, current)
            with gr.Tab("Render", id="render"):
                render = build_render(services, current)
            with gr.Tab("Models", id="models"):
                models = build_models(services)
            with gr.Tab("Finetune", id="finetune"):
                finetune = build_finetune(services)
        loaders = [(projects.refresh, [current], projects.refresh_outputs), storyboard.loader, render.loader]

        def show_header(name: str | None) -> str:
            return f"Project: **{name}**" if name else "No project open."

        lock = storyboard.settings_lock

        def opening(n: str | None, switch: bool):
            """First step of opening: header, tab, and the settings form locked until the storyboard
            loader below fills it (a reload of the page runs the same chain)."""
            locked = [gr.update(interactive=False) if n else gr.skip() for _ in lock]
            return (n, show_header(n), gr.Tabs(selected="storyboard") if switch and n else gr.Tabs(), *locked)

        def after_open(event, switch: bool):
            dep = event.success(lambda n: opening(n, switch), [current], [saved, header, tabs, *lock],
                                api_visibility="private")
            for fn, inputs, outputs in loaders:
                dep = dep.then(fn, inputs, outputs, api_visibility="private")
            fn, inputs, outputs, kw = render.follow
            dep.then(fn, inputs, outputs, **kw)  # attach to a render in progress, if any
            return dep

        for ev in projects.opened:
            after_open(ev, switch=True)

        # A reload (or a second tab) reopens the last project this browser had open.
        def restore(name: str | None) -> str:
            from storage.projects import project_exists

            if not name:
                return ""
            with services.Session() as s:
                return name if project_exists(s, name) else ""

        loaded = after_open(demo.load(restore, [saved], [current], api_visibility="private"), switch=True)
        for fn, inputs, outputs in (models.loader, finetune.loader):
            loaded = loaded.then(fn, inputs, outputs, api_visibility="private")
        loaded.then(lambda: '<span data-ready="1"></span>', None, [ready], api_visibility="private")
    return demo


def auth_from_env(env: dict[str, str] | None = None) -> list[tuple[str, str]] | None:
    """SVI_AUTH="user:password[,user2:password2]" turns on Gradio's login for shared deployments."""
    env = os.environ if env is None else env
    raw = env.get("SVI_AUTH", "").strip()
    if not raw:
        return None
    pairs = []
    for item in raw.split(","):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError("SVI_AUTH must look like user:password[,user2:password2]")
        pairs.append((user.strip(), password))
    return pairs


def server_host(host: str | None, env: dict[str, str] | None = None) -> str:
    """The interface to bind: --host, except on a Hugging Face Space, whose proxy needs 0.0.0.0
    (Spaces set GRADIO_SERVER_NAME); the local default stays localhost-only."""
    env = os.environ if env is None else env
    host = host or "127.0.0.1"
    if env.get("SPACE_ID") and host == "127.0.0.1":
        return env.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    return host


def launch(args: argparse.Namespace) -> int:
    services = build_services(getattr(args, "data_dir", None), model=getattr(args, "model", None),
                              weights_dir=getattr(args, "weights_dir", None))
    demo = build_app(services)
    # Waiting jobs are capped: a render is one queued job per project, never one per click.
    demo.queue(max_size=64, default_concurrency_limit=4)
    try:
        demo.launch(server_name=server_host(getattr(args, "host", None)), server_port=getattr(args, "port", 7860),
                    share=bool(getattr(args, "share", False)), auth=auth_from_env(),
                    allowed_paths=[str(services.media_dir)], show_error=True, ssr_mode=False,
                    max_file_size="512mb", css=THEME_CSS, footer_links=["api"])
    finally:
        services.close()
    return 0
