"""The main flow in a real browser: create a project, add prompt segments with the mouse, render
three clips with the tiny model and see the first one in the page before the render ends, retake
clip 2, reload and find everything. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import shutil
import time

import pytest

from .conftest import ROOT, shot, wait_ready
from .helpers import create_project, drag_in_cell, fill, open_tab, segments, wait_progress, wait_saved

pytestmark = pytest.mark.browser
STEPS = 1  # denoising steps per clip: the flow, not the picture, is under test


def set_steps(page, steps: int) -> None:
    page.get_by_text("Settings", exact=True).click()
    shown = f"() => /, {steps} steps?[;)]/.test(document.querySelector('#plan-estimate').innerText)"
    for attempt in range(2):
        # the form is disabled while a project opens (fill waits for it), so an opening project can
        # no longer overwrite the value typed here
        fill(page, "set-steps", str(steps))
        page.click("#apply-settings")
        try:
            page.wait_for_function(shown, timeout=15000 if attempt == 0 else 30000)
            return
        except Exception:
            # Seen once on a loaded CI machine before the settings form merged its changes
            # (ui.timeline_ops.merge_settings): the form back at the saved settings after Apply,
            # which is what a stale timeline version refused as a conflict looked like. The merge
            # removes that cause; not reproduced since, so one more apply stays as a guard. What is
            # under test is that applied settings reach the plan.
            if attempt == 1 or page.locator("#set-steps input").first.input_value() == str(steps):
                raise


def stream_seconds(page) -> float:
    return page.evaluate("() => { const v = document.querySelector('#render-stream video'); "
                         "return v && isFinite(v.duration) ? v.duration : 0; }")


def test_create_edit_render_retake_reload(page, app_server, tmp_path):
    image = tmp_path / "beach.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)

    # 1. A project from an image; it opens in the storyboard with one prompt of one clip
    create_project(page, image, "flow")
    assert segments(page) == 1

    # 2. Two more prompt segments, drawn with the mouse on clip cells 2 and 3
    drag_in_cell(page, 1)
    wait_saved(page)
    drag_in_cell(page, 2)
    wait_saved(page)
    assert segments(page) == 3
    # the selected (new) segment's text, edited in the side form
    fill(page, "seg-text", "the ball rolls away at dusk")
    page.click("#seg-apply")
    page.wait_for_function("() => /rolls away/.test(document.querySelector('#timeline .tl-track-prompt').innerText)")
    # let the edit's plan refresh (a separate listener from the settings' own) land first
    page.wait_for_function("() => /rolls away/.test(document.querySelector('#plan-table').innerText)")
    set_steps(page, STEPS)
    page.wait_for_function("() => /4\\.125-6\\.125 s/.test(document.querySelector('#plan-table').innerText)")
    shot(page, "01-storyboard")

    # 3. Render: the first clip plays in the page while the others are still rendering
    open_tab(page, "Render")
    page.click("#render-btn")
    t0 = time.monotonic()
    first_seen = done_at = None
    while time.monotonic() - t0 < 300:
        text = page.inner_text("#render-progress")
        if first_seen is None and stream_seconds(page) > 0:
            first_seen = time.monotonic() - t0
            first_text = text
            shot(page, "02-first-clip-while-rendering")
        if "Done" in text or "Failed" in text:
            done_at = time.monotonic() - t0
            break
        time.sleep(0.2)
    assert done_at is not None and "Done" in text, text
    assert first_seen is not None, "no clip appeared in the page"
    assert first_seen < done_at, (first_seen, done_at)
    assert "Done" not in first_text and "clip" in first_text
    page.wait_for_function("() => document.querySelectorAll('#clip-strip .badge.valid').length === 3")
    assert stream_seconds(page) > 5.5  # three clips of ~2 s streamed into one video
    shot(page, "03-rendered")

    # 4. Retake clip 2 with a new seed: a second take, chosen; clip 3 turns stale
    page.click("#clip-strip button[data-index='1']")
    page.wait_for_function("() => /Clip 2/.test(document.querySelector('#clip-info').innerText)")
    page.click("#retake-btn")
    wait_progress(page, "Done")
    page.wait_for_function("() => document.querySelectorAll('#takes input[type=radio]').length === 2")
    page.wait_for_function("() => document.querySelectorAll('#clip-strip .badge.stale').length === 1")
    shot(page, "04-retake")

    # 5. Reload: the project reopens with its segments, takes and clip states
    page.reload()
    wait_ready(page)
    page.wait_for_selector("#timeline .seg")
    page.wait_for_function("() => document.querySelector('#current-project').innerText.includes('flow')")
    assert segments(page) == 3
    assert "rolls away" in page.inner_text("#timeline .tl-track-prompt")
    open_tab(page, "Render")
    page.wait_for_function("() => document.querySelectorAll('#clip-strip .ccard').length === 3")
    cards = page.locator("#clip-strip .ccard").all_inner_texts()
    assert "2 takes" in cards[1] and "valid" in cards[1]
    assert "stale" in cards[2]
    shot(page, "05-after-reload")
    assert not page.js_errors, page.js_errors
