"""A real browser (Debian's chromium, driven by playwright) uses the page as a person would."""

import shutil
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium: apt-get install -y chromium")


@pytest.fixture(scope="module")
def page(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app.url, wait_until="networkidle")
        yield page
        browser.close()


def test_upload_shows_k_products_and_the_button_searches_again(page, catalog_rows, tmp_path):
    query = tmp_path / "jacket.jpg"
    catalog_rows[30]["image"].save(query, quality=92)
    results = page.locator("#results .thumbnail-item")

    page.locator("input[type=file]").first.set_input_files(str(query))  # searches at once, with the default k
    results.nth(7).wait_for(timeout=60_000)
    assert results.count() == 8
    assert catalog_rows[30]["productDisplayName"] in results.first.inner_text()

    page.locator("#k input[type=number]").fill("5")
    page.get_by_role("button", name="Find similar products").click()
    page.wait_for_function("document.querySelectorAll('#results .thumbnail-item').length === 5", timeout=60_000)
    assert results.count() == 5
    page.wait_for_timeout(1000)  # let the gallery's fade-in finish before the README screenshot
    page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
