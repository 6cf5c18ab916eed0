"""The page in a real browser (Debian's chromium, driven by playwright): fixtures and what a person does on it."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
WAIT = 60_000  # ms; the first query of a fresh app traces the model


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, app):
    """open_page(query, width, height, init_script): a new page of the app, its photo picker ready."""
    contexts = []

    def open_page(query: str = "", width: int = 1280, height: int = 1000, init_script: str | None = None):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.goto(app.url + query)
        page.locator("#photo .picker").wait_for(timeout=WAIT)  # the picker is ready for a photo
        return page

    yield open_page
    for context in contexts:
        context.close()


def upload(page, path):
    page.locator("#photo input[type=file]").set_input_files(str(path))


def drag_a_frame(page, left: float, top: float, right: float, bottom: float):
    """Drag on the picker's photo from (left, top) to (right, bottom), given as shares of the photo shown."""
    box = page.locator("#photo canvas.photo").bounding_box()
    page.mouse.move(box["x"] + box["width"] * left, box["y"] + box["height"] * top)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * right, box["y"] + box["height"] * bottom, steps=10)
    page.mouse.up()


def results(page):
    return page.locator("#results .thumbnail-item")


def name_of(item) -> str:
    return item.locator("img").get_attribute("alt").split("\n")[0]  # the caption's first line


def wait_for_status(page, text: str):
    try:
        page.wait_for_function("text => (document.querySelector('#status')?.innerText || '').includes(text)",
                               arg=text, timeout=WAIT)
    except Exception:
        raise AssertionError(f"the status never said {text!r}; it says {page.locator('#status').inner_text()!r}")
    return page.locator("#status").inner_text()


def picker_says(page, text: str) -> str:
    """Wait until the picker's message line (under the photo) says `text`; what it says."""
    try:
        page.wait_for_function("text => (document.querySelector('#photo .message')?.innerText || '').includes(text)",
                               arg=text, timeout=WAIT)
    except Exception:
        said = page.locator("#photo .message").inner_text()
        raise AssertionError(f"the picker never said {text!r}; it says {said!r}") from None
    return page.locator("#photo .message").inner_text()


def choose(page, dropdown: str, value: str):
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=value, exact=True).click()
