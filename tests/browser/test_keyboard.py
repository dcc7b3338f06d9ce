"""Keyboard use of the timeline (select, move, resize, add, split, delete, undo/redo) and labelled
controls."""

from __future__ import annotations

import shutil

import pytest

from .conftest import ROOT, shot, wait_ready
from .helpers import create_project, segments, wait_saved

pytestmark = pytest.mark.browser


def selected_label(page) -> str:
    return page.evaluate("() => { const s = document.querySelector('#timeline .seg.sel'); "
                         "return s ? s.getAttribute('aria-label') : ''; }")


def test_timeline_by_keyboard_alone(page, tmp_path):
    image = tmp_path / "keys.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)
    create_project(page, image, "keys")
    tl = page.locator("#timeline .tl-scroll")
    tl.focus()

    # add two prompts after the first (N), each one clip long
    page.keyboard.press("ArrowRight")
    assert selected_label(page).startswith("Prompt 1, 0 to 2.125")
    page.keyboard.press("n")
    page.keyboard.press("n")
    wait_saved(page)
    assert segments(page) == 3
    assert selected_label(page).startswith("Prompt 3, 4.125 to 6.125")
    assert page.evaluate("() => document.querySelector('#timeline .tl-scroll').getAttribute('aria-activedescendant')"
                         " === document.querySelector('#timeline .seg.sel').id")

    # select with arrows, move with Shift, resize with Alt
    page.keyboard.press("Shift+ArrowRight")
    wait_saved(page)
    assert selected_label(page).startswith("Prompt 3, 6.125 to 8.125")
    page.keyboard.press("Alt+ArrowRight")
    wait_saved(page)
    assert selected_label(page).startswith("Prompt 3, 6.125 to 10.125")
    page.keyboard.press("s")  # split at the clip edge inside it
    wait_saved(page)
    assert segments(page) == 4
    page.keyboard.press("ArrowLeft")
    assert selected_label(page).startswith("Prompt 2, 2.125 to 4.125")

    # delete, undo, redo
    page.keyboard.press("Delete")
    wait_saved(page)
    assert segments(page) == 3
    page.keyboard.press("Control+z")
    wait_saved(page)
    assert segments(page) == 4
    page.keyboard.press("Control+Shift+z")
    wait_saved(page)
    assert segments(page) == 3

    # Enter edits the selected prompt in the side form
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement && document.activeElement.closest('#seg-text')")
    shot(page, "30-keyboard")

    # the edits were saved: a reload shows them
    page.reload()
    wait_ready(page)
    page.wait_for_selector("#timeline .seg")
    labels = page.locator("#timeline .tl-track-prompt .seg").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    assert [lab.split(":")[0] for lab in labels] == [
        "Prompt 1, 0 to 2.125 seconds", "Prompt 2, 6.125 to 8.125 seconds", "Prompt 3, 8.125 to 10.125 seconds"]


UNNAMED = """() => {
  const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const name = (e) => (e.getAttribute('aria-label') || e.getAttribute('title') || e.innerText || '').trim()
    || (e.labels && Array.from(e.labels).map(l => l.innerText).join(' ').trim())
    || (e.getAttribute('aria-labelledby') ? 'by' : '');
  return Array.from(document.querySelectorAll('button, input:not([type=hidden]):not([type=file]), textarea, select, [role=listbox], [role=option]'))
    .filter(visible).filter(e => !name(e)).map(e => e.outerHTML.slice(0, 120));
}"""


def test_every_control_has_a_name(page, tmp_path):
    image = tmp_path / "names.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)
    create_project(page, image, "names")
    for tab in ("Storyboard", "Render", "Projects", "Models", "Finetune"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        assert page.evaluate(UNNAMED) == [], f"unnamed controls on the {tab} tab"
    page.get_by_role("tab", name="Storyboard").click()
    for label in ("Prompt", "Start (s)", "End (s)", "Negative prompt (blank: the preset's)"):
        assert page.get_by_label(label, exact=True).count() >= 1, label
    assert page.get_by_role("listbox", name="Timeline").count() == 1
    assert page.get_by_role("button", name="Undo (Ctrl+Z)").count() == 1
