"""200 segments on the timeline stay responsive: time to draw it and to save an edit.

Figures go to test-artifacts/timeline-perf.json (and the test output); the bounds asserted are
generous (a loaded 2-core CI box), the figures are what to read."""

from __future__ import annotations

import json
import shutil
import statistics
import time

import pytest
from gradio_client import Client, handle_file

from .conftest import ROOT, shot, wait_ready
from .helpers import wait_saved

pytestmark = pytest.mark.browser
N = 200


def test_200_segments_draw_and_save(page, app_server, tmp_path):
    url, _ = app_server
    image = tmp_path / "perf.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)
    client = Client(url, verbose=False)
    client.predict(handle_file(str(image)), "perf200", api_name="/create_project")
    tl = client.predict("perf200", api_name="/get_timeline")
    F, m, fps = tl["F"], tl["m"], tl["fps"]
    edges = [0.0] + [(F + k * (F - m)) / fps for k in range(N)]
    prompts = [{"start": edges[i], "end": edges[i + 1], "text": f"scene {i + 1}: a red circle on a beach"}
               for i in range(N)]
    t = time.perf_counter()
    client.predict("perf200", tl["version"], {"prompt": prompts, "audio": [], "pose": []}, api_name="/set_timeline")
    api_replace_s = time.perf_counter() - t

    page.reload()
    wait_ready(page)
    page.wait_for_selector("#project-list .pcard")
    t = time.perf_counter()
    page.locator("#project-list .pcard", has_text="perf200").get_by_role("button").click()
    page.wait_for_function(f"() => document.querySelectorAll('#timeline .tl-track-prompt .seg').length === {N}")
    open_s = time.perf_counter() - t
    first_draw_ms = page.evaluate("() => window.__sviTimeline.draws.slice(-1)[0]")

    # redraws (zoom) and saves (delete + undo) with 200 segments
    tl_el = page.locator("#timeline .tl-scroll")
    tl_el.focus()
    for key in ("+", "-", "+", "-"):
        page.keyboard.press(key)
    draws = page.evaluate("() => window.__sviTimeline.draws.slice(-4)")
    page.keyboard.press("ArrowRight")
    saves_before = page.evaluate("() => window.__sviTimeline.saves.length")
    for key in ("Delete", "Control+z", "Delete", "Control+z"):
        page.keyboard.press(key)
        wait_saved(page)
    page.wait_for_function(f"() => window.__sviTimeline.saves.length >= {saves_before} + 2")
    saves = page.evaluate(f"() => window.__sviTimeline.saves.slice({saves_before})")
    assert page.locator("#timeline .tl-track-prompt .seg").count() == N
    shot(page, "40-200-segments")

    figures = {"segments": N, "api_replace_all_s": round(api_replace_s, 3), "open_project_s": round(open_s, 3),
               "first_draw_ms": round(first_draw_ms, 1), "redraw_ms_median": round(statistics.median(draws), 1),
               "save_edit_ms_median": round(statistics.median(saves), 1), "save_edit_ms_max": round(max(saves), 1),
               "saves_measured": len(saves)}
    out = ROOT / "test-artifacts" / "timeline-perf.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    print("timeline with 200 segments:", figures)
    assert figures["redraw_ms_median"] < 500
    assert figures["save_edit_ms_median"] < 3000
