"""Two browser sessions on one project: the second writer is told, and nothing is silently lost."""

from __future__ import annotations

import shutil

import pytest
from gradio_client import Client

from .conftest import ROOT, shot, wait_ready
from .helpers import create_project, wait_saved

pytestmark = pytest.mark.browser


def seg_box(page) -> str:
    """The accessible label of the first prompt segment: 'Prompt 1, 2.125 to 4.125 seconds: ...'."""
    return page.locator("#timeline .tl-track-prompt .seg").first.get_attribute("aria-label")


def test_second_session_gets_a_conflict_not_a_silent_overwrite(browser, app_server, page, tmp_path):
    url, _ = app_server
    image = tmp_path / "two.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)
    create_project(page, image, "shared")

    # Session B opens the same project
    ctx_b = browser.new_context(viewport={"width": 1400, "height": 1000})
    b = ctx_b.new_page()
    b.goto(url)
    wait_ready(b)
    b.locator("#project-list .pcard", has_text="shared").get_by_role("button", name="Open project shared").click()
    b.wait_for_selector("#timeline .seg")

    # A moves the prompt one clip later (keyboard) and saves
    page.locator("#timeline .tl-track-prompt .seg").first.click()
    page.keyboard.press("Shift+ArrowRight")
    wait_saved(page)
    assert "2.125 to 4.125" in seg_box(page)

    # B, still on the old version, stretches it: refused, told, and shown A's version
    b.locator("#timeline .tl-track-prompt .seg").first.click()
    b.keyboard.press("Alt+ArrowRight")
    b.wait_for_function("() => /changed in another window/.test(document.querySelector('#timeline .tl-alert').innerText)")
    b.wait_for_function("() => /2\\.125 to 4\\.125/.test(document.querySelector('#timeline .tl-track-prompt .seg')"
                        ".getAttribute('aria-label'))")
    shot(b, "20-conflict-second-session")

    # B's side form was filled before A's move; applying a new text merges onto A's version
    b.locator("#timeline .tl-track-prompt .seg").first.click()
    b.locator("#seg-text textarea").fill("edited by B after seeing A's move")
    b.click("#seg-apply")
    b.wait_for_function("() => /edited by B/.test(document.querySelector('#timeline .tl-track-prompt').innerText)")

    # The server holds A's move and B's later text: nothing lost, nothing silently overwritten
    tl = Client(url, verbose=False).predict("shared", api_name="/get_timeline")
    (seg,) = tl["tracks"]["prompt"]
    assert (seg["start"], seg["end"], seg["text"]) == (2.125, 4.125, "edited by B after seeing A's move")

    # A is now stale in turn: its next edit is refused the same way
    page.keyboard.press("Alt+ArrowRight")
    page.wait_for_function("() => /changed in another window/.test(document.querySelector('#timeline .tl-alert')"
                           ".innerText)")
    assert "edited by B" in page.inner_text("#timeline .tl-track-prompt")
    ctx_b.close()
