"""The page on a phone, as a visitor uses it: Chromium at a phone's viewport, a 12 MP phone photo chosen in the photo
picker, or a 1920x1080 camera's snapshot, timed until 8 result images are shown, on an unthrottled link and on a
phone's (DevTools network emulation: 5 Mbit/s up, 20 down, 40 ms). Part of scripts/bench.py (inside `served`).
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from fake_camera import frame_showing, write_y4m
from page_traffic import SENT_BYTES
from phone_photos import phone_jpeg
from synthetic_catalog import products

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PHONE = {"viewport": {"width": 412, "height": 915}, "device_scale_factor": 2.625, "is_mobile": True,
         "has_touch": True}  # a common Android phone's screen
PHONE_LINK = {"offline": False, "latency": 40, "uploadThroughput": 5e6 / 8, "downloadThroughput": 20e6 / 8}
WAIT = 60_000  # ms
# In the page: when a file was chosen or the snapshot clicked, when the picker's upload started (what the browser
# spent decoding and scaling the photo lies between), and the bytes sent (page_traffic.SENT_BYTES).
MARKS = """(() => {
  window.__marks = {};
  const mark = (name) => { if (window.__marks[name] === undefined) window.__marks[name] = performance.now(); };
  document.addEventListener("change", (event) => { if (event.target.type === "file") mark("chosen"); }, true);
  document.addEventListener("click", (event) => { if (event.target.closest?.(".snap")) mark("chosen"); }, true);
  const fetch = window.fetch;
  window.fetch = function (input, init) {
    if (String(input?.url || input).includes("/gradio_api/upload")) mark("upload");
    return fetch.apply(this, arguments);
  };
})();"""
SHOWN = """() => { const images = [...document.querySelectorAll('#results .thumbnail-item img')];
  return images.length === 8 && images.every(image => image.complete && image.naturalWidth > 0) && window.__marks.upload
    ? performance.now() : false; }"""


def bench_page(bench, app, client) -> None:
    report, section = bench.report, "The page on a phone (Chromium)"
    if not Path(CHROMIUM).exists():
        return report.add(section, "phone photos in the page", "not measured: needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    runs = 3 if bench.quick else 7
    rows = products()
    camera = write_y4m(bench.work / "camera-1080p.y4m", [frame_showing(rows[30]["image"], 1920, 1080)] * 5)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={camera}"])
        try:
            for link, conditions in (("unthrottled", None), ("phone link: 5 Mbit/s up, 20 down, 40 ms", PHONE_LINK)):
                page = _phone_page(browser, app.url, conditions)
                photos = [bench.work / f"phone-{link[:5]}-{number}.jpg" for number in range(runs + 1)]
                for number, path in enumerate(photos):  # a new photo each time: no cached vector
                    path.write_bytes(phone_jpeg(rows[number % len(rows)]["image"]))
                _choose(page, photos[0])  # a first search warms the page's scripts
                measured = [_choose(page, path) for path in photos[1:]]
                _report_photo(bench, section, link, measured, photos[1:], throttled=conditions is not None)
                page.context.close()
            page = _phone_page(browser, app.url, None)
            _snapshot(page)
            measured = [_snapshot(page) for _ in range(runs)]
            total, _, sent = _medians(measured)
            report.add(section, "1920x1080 camera snapshot, unthrottled: click to 8 results shown, p50",
                       f"{total:.0f} ms, {sent / 1e3:.0f} kB sent")
            report.target("camera snapshot in the page, unthrottled", f"{total:.0f} ms", "<= 1,500 ms", total <= 1500)
            report.target("bytes sent for a 1920x1080 snapshot", f"{sent / 1e3:.0f} kB", "<= 1 MB", sent <= 1e6,
                          gate=True)
            page.context.close()
        finally:
            browser.close()


def _phone_page(browser, url: str, conditions: dict | None):
    context = browser.new_context(**PHONE, permissions=["camera"])
    context.add_init_script(SENT_BYTES)
    context.add_init_script(MARKS)
    page = context.new_page()
    if conditions:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", conditions)
    page.goto(url)
    page.locator("#photo .picker").wait_for(timeout=WAIT)
    return page


def _reset(page) -> int:
    """An empty page (Remove), the marks cleared; the bytes sent so far."""
    if page.locator("#photo button.remove").is_visible():
        page.locator("#photo button.remove").click()
    page.wait_for_function("document.querySelectorAll('#results .thumbnail-item').length === 0", timeout=WAIT)
    return page.evaluate("window.__marks = {}, window.__sentBytes()")


def _measured(page, sent_before: int) -> tuple[float, float, int]:
    """(ms from chosen to 8 results shown, ms the browser spent before the upload started, bytes sent)."""
    shown = page.wait_for_function(SHOWN, timeout=WAIT, polling="raf").json_value()
    marks = page.evaluate("window.__marks")
    return shown - marks["chosen"], marks["upload"] - marks["chosen"], page.evaluate("window.__sentBytes()") - sent_before


def _choose(page, photo: Path) -> tuple[float, float, int]:
    sent = _reset(page)
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    return _measured(page, sent)


def _snapshot(page) -> tuple[float, float, int]:
    sent = _reset(page)
    page.locator("#photo button.camera-on").click()
    page.wait_for_function("document.querySelector('#photo video')?.readyState >= 2", timeout=WAIT)
    page.evaluate("delete window.__marks.chosen")
    page.locator("#photo button.snap").click()
    return _measured(page, sent)


def _medians(measured) -> tuple[float, float, float]:
    return tuple(statistics.median(column) for column in zip(*measured))


def _report_photo(bench, section: str, link: str, measured, photos, throttled: bool) -> None:
    total, browser_ms, sent = _medians(measured)
    size = statistics.median(path.stat().st_size for path in photos)
    bench.report.add(section, f"12 MP phone JPEG ({size / 1e6:.1f} MB), {link}: chosen to 8 results shown, p50 "
                     f"(of {len(measured)}; the browser's own decoding and scaling before the upload)",
                     f"{total:.0f} ms ({browser_ms:.0f} ms in the browser, {total - browser_ms:.0f} ms network and "
                     f"server), {sent / 1e3:.0f} kB sent ({sent / size:.2f}x the file)")
    wanted = 3000 if throttled else 1500
    bench.report.target(f"12 MP phone photo in the page, {'phone link' if throttled else 'unthrottled'}",
                        f"{total:.0f} ms", f"<= {wanted:,} ms", total <= wanted)
    if not throttled:
        bench.report.target("bytes sent for a 12 MP phone photo", f"{sent / size:.2f}x its file", "<= 0.5x",
                            sent <= 0.5 * size, gate=True)
