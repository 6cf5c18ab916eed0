"""No photo kept in the server's memory of a session (issue 21): Gradio records every input's and output's value in
the session's state, for deep links; after a page search and an explanation, the running app's session state holds
no copy of the photo (its small copy, the overlays), and the deep-link route writes nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import httpx
import pytest

import synthetic_catalog
from app_process import ROOT, RunningApp
from browser_page import CHROMIUM, CHROMIUM_ARGS, WAIT
from fake_camera import frame_showing, jpeg
from live_viewer import ScriptedViewer
from recommender.serve.live import LIVE_FORGET_SECONDS


@pytest.fixture(scope="module")
def state_app(built_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("session-state")
    env = {"INDEX_DIR": str(built_index[0]), "GRADIO_TEMP_DIR": str(folder / "gradio"),
           "SESSION_STATE_DUMP": str(folder / "state.json"), "TRUSTED_PROXY_HOPS": "1"}  # a live viewer per address
    with RunningApp(env, folder / "app.log", [sys.executable, str(ROOT / "tests" / "session_state_app.py")]) as app:
        app.folder = folder
        yield app.wait_until_ready()


def session_state(app) -> str:
    """What the running app holds in its sessions' state, as JSON text (arrays by shape)."""
    dump = app.folder / "state.json"
    dump.unlink(missing_ok=True)
    os.kill(app.process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while not dump.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return dump.read_text()


def test_after_a_search_and_an_explanation_the_session_holds_no_photo(state_app, catalog_rows, tmp_path):
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "me.jpg"
    catalog_rows[30]["image"].resize((640, 480)).save(photo, quality=90)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1300})
        page.goto(state_app.url)
        page.locator("#photo .picker").wait_for(timeout=WAIT)
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.wait_for_function("(document.querySelector('#status')?.innerText || '').startsWith('8 results')",
                               timeout=WAIT)
        page.locator("#why input[type=checkbox]").check()
        page.locator("#results .thumbnail-item").nth(1).click()
        page.wait_for_function("(document.querySelector('#why-text')?.innerText || '').includes('% similar')",
                               timeout=WAIT)
        page.locator("#why-query img").first.wait_for(timeout=WAIT)  # the overlay on the photo reached the page
        held = session_state(state_app)
        session = page.evaluate("() => window.__gradio_session_hash__ || ''")
        deep_link = httpx.get(f"{state_app.url}/gradio_api/deep_link", params={"session_hash": session or "x"})
        browser.close()
    assert json.loads(held)["sessions"], "no session recorded: the dump does not show the page's session"
    assert "data:image" not in held, "a photo's copy (a data URL) is held in the session state"
    assert not re.search(r"[A-Za-z0-9+/=]{400,}", held), "base64 data is held in the session state"
    assert not re.search(r'"ndarray": \[\d+, \d+', held), "an image array is held in the session state"
    assert deep_link.status_code == 404
    assert not list((state_app.folder / "gradio").rglob("state.json")), "a deep link was written"


def test_a_live_viewers_frames_are_not_in_its_session_and_forgotten_soon_after(state_app):
    """The last searched frame, which the next is compared with, is a small picture of whoever faces the camera:
    never in the session's state, and gone from the page LIVE_FORGET_SECONDS after the viewer's last frame."""
    frames = [jpeg(frame_showing(row["image"])) for row in synthetic_catalog.products()[:6]]  # each unlike the last
    viewer = ScriptedViewer(state_app.url, frames)
    viewer.start()
    try:
        deadline = time.monotonic() + 120  # the live model loads
        while viewer.updates < 3 and viewer.failure is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert viewer.updates >= 3, viewer.failure or state_app.output()
        held = json.loads(session_state(state_app))
    finally:
        viewer.stop()
    session = json.dumps(held["sessions"][viewer.session])
    assert '"searched": ' in session, "the viewer's LiveState was not found in its session"
    assert not re.search(r'"ndarray": \[\d+, \d+', session), "a frame is held in the session state"
    assert held["live frames remembered"] >= 1  # the page compares frames: it holds the last one, for now
    time.sleep(LIVE_FORGET_SECONDS * 1.5)
    assert json.loads(session_state(state_app))["live frames remembered"] == 0
