"""The camera as a person uses it: Chromium's fake camera, fed from a video of catalog products, on the real page."""

import shutil
from pathlib import Path

import pytest

from app_process import ROOT, RunningApp
from fake_camera import frame_showing, write_y4m
from quiet import quiet_waiter

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium: apt-get install -y chromium")
WAIT = 60_000  # ms; the first query of a fresh app traces the model


@pytest.fixture(scope="module")
def served(built_index, tmp_path_factory):
    """The app in its own process with its own Gradio temp folder, so that what this file's tests leave there is
    theirs (each checks that it is empty); the last test stops it and checks again."""
    folder = tmp_path_factory.mktemp("camera")
    running = RunningApp({"INDEX_DIR": str(built_index[0]), "GRADIO_TEMP_DIR": str(folder / "gradio")},
                         folder / "app.log").wait_until_ready()
    running.temp_dir = folder / "gradio"
    try:
        yield running
    finally:
        running.stop()


def camera_page(app, video: Path, playwright, init_script: str | None = None):
    """A page whose camera shows `video` (looped), the camera permission granted; (browser, page, quiet)."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={video}"])
    context = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 1000})
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    wait_for_quiet = quiet_waiter(page)
    page.goto(app.url)
    page.locator("#photo .picker").wait_for(timeout=WAIT)
    return browser, page, wait_for_quiet


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def start_camera(page, component: str):
    """Click to Access Webcam, then wait until the camera's picture plays, as a person waits to see it."""
    page.locator(component).get_by_text("Click to Access Webcam").click()
    page.wait_for_function("selector => document.querySelector(selector + ' video')?.readyState >= 2",
                           arg=component, timeout=WAIT)


def top_result(page) -> str:
    return page.locator("#results .thumbnail-item").first.locator("img").get_attribute("alt").split("\n")[0]


def wait_for_top_result(page, name: str):
    try:
        page.wait_for_function("name => (document.querySelector('#results .thumbnail-item img')?.alt || '')"
                               ".startsWith(name)", arg=name, timeout=WAIT)
    except Exception:
        shown = top_result(page) if page.locator("#results .thumbnail-item").count() else "no results"
        raise AssertionError(f"the first result never became {name!r}; it is {shown!r}") from None


def snapshot(page):
    """The picker's Camera, then Take the photo once the camera's picture plays."""
    page.locator("#photo button.camera-on").click()
    page.wait_for_function("document.querySelector('#photo video')?.readyState >= 2", timeout=WAIT)
    page.locator("#photo button.snap").click()


def test_the_snapshot_is_the_cameras_true_picture(served, tmp_path):
    """Gradio mirrors the picture it captures, not only the preview, when its webcam option `mirror` is on: a frame
    red on the left and blue on the right must reach the picker (whose photo is what is searched) that way round."""
    import io

    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    frame = np.full((480, 640, 3), 255, np.uint8)
    frame[120:360, 40:280] = (220, 20, 20)
    frame[120:360, 360:600] = (20, 20, 220)
    video = write_y4m(tmp_path / "camera.y4m", [frame] * 5)
    with sync_playwright() as playwright:
        browser, page, wait_for_quiet = camera_page(served, video, playwright)
        snapshot(page)
        page.locator("#results .thumbnail-item").first.wait_for(timeout=WAIT)
        shown = np.asarray(Image.open(io.BytesIO(page.locator("#photo canvas.photo").screenshot())).convert("RGB"),
                           dtype=int)
        wait_for_quiet()
        browser.close()
    red = (shown[..., 0] > 150) & (shown[..., 2] < 100)
    blue = (shown[..., 2] > 150) & (shown[..., 0] < 100)
    assert red.sum() > 100 and blue.sum() > 100
    assert np.nonzero(red)[1].mean() < np.nonzero(blue)[1].mean()  # red on the left, as the camera sees it


def test_live_results_follow_the_camera_from_one_product_to_another(served, catalog_rows, tmp_path):
    """A video that shows product A for 3 s, then product B for 3 s (looped): after one click on Record, the results
    move from A's neighbours to B's, with nothing kept on disk."""
    from playwright.sync_api import sync_playwright

    first, second = catalog_rows[30], catalog_rows[23]  # a red cap, then a green watch
    frames = [frame_showing(first["image"])] * 15 + [frame_showing(second["image"])] * 15
    video = write_y4m(tmp_path / "camera.y4m", frames)
    with sync_playwright() as playwright:
        browser, page, wait_for_quiet = camera_page(served, video, playwright)
        page.get_by_role("tab", name="Live").click()
        start_camera(page, "#live")
        page.locator("#live button[aria-label='capture photo']").click(timeout=WAIT)  # "Record": starts the stream
        wait_for_top_result(page, first["productDisplayName"])
        wait_for_top_result(page, second["productDisplayName"])
        status = page.locator("#status").inner_text()
        assert "Live: 8 results" in status, status
        page.screenshot(path=str(ROOT / "docs" / "screenshot-live.png"))  # the README's
        wait_for_top_result(page, first["productDisplayName"])  # and back, as the video loops
        assert files_in(served.temp_dir) == []
        page.locator("#live button[aria-label='capture photo']").click()  # now "Stop"
        wait_for_quiet()
        # live results offer no marks (the next frame would replace what was marked: steering.py), and the bar says
        # so; a result clicked becomes the query, whose results can be marked
        assert page.locator("#results .steer-toggles").count() == 0
        assert "live camera" in page.locator("#steer").inner_text()
        page.locator("#results .thumbnail-item").nth(1).click()
        page.locator("#results .steer-toggles").first.wait_for(timeout=WAIT)
        assert "live camera" not in page.locator("#steer").inner_text()
        browser.close()
    assert files_in(served.temp_dir) == []


def test_a_webcam_snapshot_finds_the_product_and_leaves_no_photo(served, catalog_rows, tmp_path):
    """A 1920x1080 camera, as a laptop's or a phone's: the snapshot is scaled in the browser, so the page sends
    under 1 MB for it; the product is found; nothing is kept. Last: it stops the app of the file's tests."""
    from playwright.sync_api import sync_playwright

    from page_traffic import SENT_BYTES, sent_bytes

    product = catalog_rows[30]
    video = write_y4m(tmp_path / "camera.y4m", [frame_showing(product["image"], 1920, 1080)] * 5)
    with sync_playwright() as playwright:
        browser, page, wait_for_quiet = camera_page(served, video, playwright, init_script=SENT_BYTES)
        before = sent_bytes(page)
        snapshot(page)
        wait_for_top_result(page, product["productDisplayName"])
        assert page.locator("#results .thumbnail-item").count() == 8
        sent = sent_bytes(page) - before
        assert sent <= 1_000_000, f"the page sent {sent:,} bytes for one snapshot"
        assert page.evaluate("[document.querySelector('#photo canvas.photo').width,"
                             " document.querySelector('#photo canvas.photo').height]") == [1920, 1080]
        wait_for_quiet()
        assert files_in(served.temp_dir) == []
        page.wait_for_timeout(5000)  # anything the page still sends late
        wait_for_quiet()
        assert files_in(served.temp_dir) == []
        browser.close()
    served.stop()
    assert files_in(served.temp_dir) == []
