"""Bad input through the page: each gets a clear message in the page and nothing is lost."""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pytest

from .conftest import ROOT, shot, wait_ready
from .helpers import close_toasts, create_project, open_tab, segments, toast_with, upload

pytestmark = pytest.mark.browser


def huge_png(path, w=9000, h=9000):
    """A PNG whose header says w x h (81 megapixels); only the header is read before it is refused."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def cards(page) -> list[str]:
    return page.locator("#project-list .pcard .pname").all_inner_texts()


def test_bad_files_get_clear_messages_and_lose_nothing(page, tmp_path):
    image = tmp_path / "keep.png"
    shutil.copy(ROOT / "assets" / "examples" / "start.png", image)
    create_project(page, image, "keep me")
    page.get_by_role("tab", name="Projects").click()
    before = cards(page)
    assert "keep me" in before

    # 1. Not an image (text with an image's extension)
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture")
    upload(page, "new-image", fake)
    page.click("#create-project")
    toast_with(page, "notes.png: not an image file")
    close_toasts(page)

    # 2. A huge image
    upload(page, "new-image", huge_png(tmp_path / "huge.png"))
    page.click("#create-project")
    toast_with(page, "huge.png: image too large (9000x9000 pixels")
    page.wait_for_timeout(800)  # the message fades in
    shot(page, "10-bad-image")
    close_toasts(page)

    # 3. A malformed bundle: not a zip, then a zip that is not a bundle
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    upload(page, "import-bundle", bad)
    page.click("#import-project")
    toast_with(page, "broken.zip: not a zip file")
    close_toasts(page)
    odd = tmp_path / "odd.zip"
    with zipfile.ZipFile(odd, "w") as z:
        z.writestr("manifest.json", json.dumps({"format": "svi-project-bundle", "version": 99}))
    upload(page, "import-bundle", odd)
    page.click("#import-project")
    toast_with(page, "bundle version 99 is not supported")
    page.wait_for_timeout(800)  # the message fades in
    shot(page, "11-bad-bundle")
    close_toasts(page)
    assert cards(page) == before  # no half project appeared, none vanished

    # 4. Corrupt audio and a video with no person, on the storyboard
    page.get_by_role("tab", name="Storyboard").click()
    page.wait_for_selector("#timeline .seg")
    n_prompts = segments(page)
    page.get_by_text("Add audio or pose", exact=True).click()
    noise = tmp_path / "voice.wav"
    noise.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    upload(page, "audio-file", noise)
    page.click("#add-audio")
    toast_with(page, "voice.wav: cannot decode audio")
    close_toasts(page)

    from svi.video import write_video

    empty = write_video(tmp_path / "empty-room.mp4", np.full((12, 64, 64, 3), 90, np.uint8), 8)
    upload(page, "pose-file", empty)
    page.click("#add-pose")
    toast_with(page, "no person found in any of the 12 frames", timeout=90)
    page.wait_for_timeout(800)  # the message fades in
    shot(page, "12-bad-media")
    close_toasts(page)
    assert segments(page) == n_prompts
    assert segments(page, "audio") == 0 and segments(page, "pose") == 0

    # 5. The project is intact after a reload
    page.reload()
    wait_ready(page)
    page.wait_for_selector("#timeline .seg")
    assert segments(page) == n_prompts
    open_tab(page, "Projects")
    assert cards(page) == before
    assert not page.js_errors, page.js_errors
