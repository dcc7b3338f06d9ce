"""Page actions shared by the browser tests (selectors are the app's elem_ids)."""

from __future__ import annotations

import time

TEXT = "textarea, input"


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id}").locator(TEXT).first.fill(str(value))


def upload(page, elem_id: str, path) -> None:
    """Put a file in a gr.File, replacing the one it holds (its Clear button brings the input back)."""
    box = page.locator(f"#{elem_id}")
    box.locator("input[type=file], button[aria-label='Clear']").first.wait_for(state="attached")
    if box.locator("input[type=file]").count() == 0:
        box.locator("button[aria-label='Clear']").first.click()
        box.locator("input[type=file]").first.wait_for(state="attached")
    page.set_input_files(f"#{elem_id} input[type=file]", str(path))
    # the upload has finished when the file's name shows in the component (stem and suffix apart)
    page.wait_for_function("([id, name]) => document.getElementById(id).innerText.replace(/\\s+/g, '').includes(name)",
                           arg=[elem_id, path.name.replace(" ", "")])


def toast_with(page, text: str, timeout: float = 30.0) -> str:
    """The message of the toast that says `text` (waits for it); fails listing the toasts shown."""
    try:
        page.locator(".toast-body", has_text=text).first.wait_for(timeout=timeout * 1000)
    except Exception:  # noqa: BLE001 - re-raised with what the page did show
        raise AssertionError(f"no message saying {text!r}; the page shows: "
                             f"{page.locator('.toast-body').all_inner_texts()}") from None
    return page.locator(".toast-body", has_text=text).first.inner_text()


def close_toasts(page) -> None:
    for btn in page.locator(".toast-close").all():
        try:
            btn.click(timeout=1000)
        except Exception:  # noqa: BLE001 - a toast that timed out meanwhile
            pass


def create_project(page, image, name: str) -> None:
    upload(page, "new-image", image)
    fill(page, "new-name", name)
    page.click("#create-project")
    page.wait_for_selector("#timeline .seg")
    page.wait_for_function("n => document.querySelector('#current-project').innerText.includes(n)", arg=name)


def segments(page, track: str = "prompt") -> int:
    return page.locator(f"#timeline .tl-track-{track} .seg").count()


def wait_saved(page, timeout: float = 20.0) -> None:
    """Until no edit is waiting to be saved."""
    page.wait_for_function("() => !document.querySelector('#timeline .seg.unsaved') && "
                           "/Saved|Updated|Selected|Playhead|Added|Moved|Resized|Deleted|Undo|Redo/"
                           ".test(document.querySelector('#timeline .tl-status').innerText)",
                           timeout=timeout * 1000)
    page.wait_for_function("() => document.querySelector('#timeline .tl-status').innerText.indexOf('Saving') < 0",
                           timeout=timeout * 1000)


def drag_in_cell(page, k: int, track: str = "prompt") -> None:
    """Drag across the middle of clip cell k (0-based) on a track: the timeline adds a segment there."""
    cell = page.locator("#timeline .tl-cell").nth(k).bounding_box()
    row = page.locator(f"#timeline .tl-track-{track}").bounding_box()
    y = row["y"] + row["height"] / 2
    x0, x1 = cell["x"] + cell["width"] * 0.2, cell["x"] + cell["width"] * 0.8
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=6)
    page.mouse.up()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def wait_progress(page, pattern: str, timeout: float = 240.0) -> str:
    page.wait_for_function(f"() => /{pattern}/.test(document.querySelector('#render-progress').innerText)",
                           timeout=timeout * 1000, polling=200)
    return page.inner_text("#render-progress")


def now() -> float:
    return time.monotonic()
