"""The app in a subprocess on a free port with a temporary data folder, and Debian's chromium.

One server per test session (the tiny model loads once); each test makes its own projects. Browser
tests are skipped where /usr/bin/chromium is missing (`apt-get install -y chromium`); they never
download a browser.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--autoplay-policy=no-user-gesture-required"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
STARTUP_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """(base URL, data folder) of a running `python app.py ui` on a free port."""
    data = tmp_path_factory.mktemp("svi-data")
    port = free_port()
    env = {**os.environ, "SVI_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "GRADIO_ANALYTICS_ENABLED": "False", "SVI_AUTH": ""}
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "app.py", "ui", "--port", str(port), "--data-dir", str(data)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_S
    while True:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{(data / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the app did not start in time")
            time.sleep(0.5)
    yield url, data
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "page" in item.funcargs:
        try:  # the page as it was when the test failed, for the artefacts
            shot(item.funcargs["page"], f"FAILED-{item.name}")
        except Exception:  # noqa: BLE001 - a dead page cannot be photographed
            pass


@pytest.fixture
def page(browser, app_server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(app_server[0])
    wait_ready(pg)
    pg.js_errors = errors  # checked by tests that care
    yield pg
    ctx.close()


def wait_ready(page) -> None:
    """Until the page's load chain (restore the last project, fill the tabs) has run."""
    page.wait_for_selector("#app-ready [data-ready]", state="attached", timeout=60_000)


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
