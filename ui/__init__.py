"""The browser editor: a Gradio Blocks app over the engine (svi), storage and finetune.

One builder per tab (`build_<tab>(services) -> Handles`); `ui.app.build_app` composes them and
`ui.app.launch(args)` serves them. No model maths and no SQL here: storage functions and the svi
engine do the work; renders and training runs are server-owned jobs that any page attaches to.
"""
