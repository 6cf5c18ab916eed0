"""A real browser (Debian's chromium, driven by playwright) uses the page as a person would."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_page import browser, open_page  # noqa: F401 (fixtures)
from browser_page import CHROMIUM, WAIT, choose, drag_a_frame, name_of, results, upload, wait_for_status
from conftest import ROOT
from quiet import quiet_waiter

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium: apt-get install -y chromium")


@pytest.fixture
def query_photo(tmp_path, catalog_rows):
    path = tmp_path / "jacket.jpg"
    catalog_rows[30]["image"].save(path, quality=92)
    return path


def test_upload_shows_k_products_and_the_button_searches_again(open_page, catalog_rows, query_photo):
    page = open_page()
    upload(page, query_photo)  # searches at once, with the default k
    results(page).nth(7).wait_for(timeout=WAIT)
    assert results(page).count() == 8
    assert catalog_rows[30]["productDisplayName"] in results(page).first.inner_text()
    status = wait_for_status(page, "8 results from")
    assert f"from {len(catalog_rows) + 1} products in" in status and " ms" in status

    page.locator("#k input[type=number]").fill("5")
    page.get_by_role("button", name="Find similar products").click()
    page.wait_for_function("document.querySelectorAll('#results .thumbnail-item').length === 5", timeout=WAIT)
    assert results(page).count() == 5
    links = page.locator("#links a")
    assert links.count() == 5 and links.first.get_attribute("href") == f"?item={catalog_rows[30]['id']}"
    page.wait_for_timeout(1000)  # let the gallery's fade-in finish before the README screenshot
    page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))


def test_filters_narrow_the_results_and_say_so(open_page, query_photo):
    page = open_page()
    upload(page, query_photo)
    wait_for_status(page, "8 results")
    choose(page, "colour", "Blue")
    status = wait_for_status(page, "colour = Blue")
    captions = [item.inner_text() for item in results(page).all()]
    assert captions and all("Blue" in caption for caption in captions), captions
    assert "products (colour = Blue)" in status
    choose(page, "gender", "Men")
    choose(page, "article_type", "Handbags")
    status = wait_for_status(page, "No product matches")
    assert "gender = Men and article type = Handbags and colour = Blue" in status
    assert results(page).count() == 0


def test_clicking_a_result_shows_more_like_it(open_page, query_photo):
    page = open_page()
    upload(page, query_photo)
    results(page).nth(7).wait_for(timeout=WAIT)
    clicked_name = name_of(results(page).nth(2))
    results(page).nth(2).click()
    status = wait_for_status(page, "More like")
    assert clicked_name in status
    assert clicked_name in page.locator("#query-product").inner_text()  # shown as the current query
    page.wait_for_function("document.querySelectorAll('#results .thumbnail-item').length === 8", timeout=WAIT)
    assert clicked_name not in [name_of(item) for item in results(page).all()]


def test_a_shared_link_opens_that_product_and_its_neighbours(open_page, catalog_rows):
    row = catalog_rows[14]
    page = open_page(f"?item={row['id']}")
    status = wait_for_status(page, "More like")
    assert row["productDisplayName"] in status
    results(page).nth(7).wait_for(timeout=WAIT)
    assert row["productDisplayName"] in page.locator("#query-product").inner_text()


def test_an_example_runs_a_search_in_one_click(open_page):
    page = open_page()
    examples = page.locator("#examples .thumbnail-item")
    examples.first.wait_for(timeout=WAIT)
    page.wait_for_timeout(500)  # the gallery renders its items at once
    assert examples.count() == 6  # one per article type of the catalog
    examples.nth(1).click()
    wait_for_status(page, "More like")
    results(page).nth(7).wait_for(timeout=WAIT)


def test_cropping_the_photo_searches_the_crop(open_page, catalog_rows, tmp_path):
    """A 'street photo' holding two products; cropped to the left one, the search finds the left one."""
    left, right = catalog_rows[30], catalog_rows[23]  # a red cap beside a blue watch
    scene = Image.new("RGB", (240, 160), "white")
    scene.paste(left["image"], (0, 0))
    scene.paste(right["image"], (120, 0))
    scene.save(tmp_path / "scene.jpg", quality=95)
    page = open_page()
    upload(page, tmp_path / "scene.jpg")
    wait_for_status(page, "8 results")
    before = results(page).first.inner_text()

    drag_a_frame(page, 0.02, 0.02, 0.48, 0.98)  # the left half: the cap
    page.wait_for_function("first => document.querySelector('#results .thumbnail-item')?.innerText !== first",
                           arg=before, timeout=WAIT)
    assert left["productDisplayName"] in results(page).first.inner_text()


def test_the_page_works_on_a_phone(open_page, query_photo):
    page = open_page(width=390, height=844)
    upload(page, query_photo)
    results(page).nth(7).wait_for(timeout=WAIT)
    wait_for_status(page, "8 results")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen


def test_no_photo_from_the_page_is_kept(open_page, app, tmp_path):
    """Upload, then crop: after every event the page sends has been answered, and a few seconds later, nothing is in
    Gradio's folder, and nothing logged."""
    photo = tmp_path / "selfie-3f9a2c.png"  # a name nothing else in the log holds
    Image.effect_noise((320, 240), 60).convert("RGB").save(photo)
    page = open_page()
    wait_for_quiet = quiet_waiter(page)
    upload(page, photo)
    wait_for_status(page, "8 results")
    drag_a_frame(page, 0.1, 0.1, 0.6, 0.9)
    wait_for_status(page, "8 results")
    wait_for_quiet()
    assert files_in(app.temp_dir) == []
    page.wait_for_timeout(5000)
    wait_for_quiet()
    assert files_in(app.temp_dir) == []
    assert "selfie-3f9a2c" not in app.output()
    choose(page, "colour", "Red")  # later searches use the photo's vector, not the deleted photo
    wait_for_status(page, "colour = Red")


def test_a_pasted_photo_is_searched_and_not_kept(browser, app, catalog_rows, tmp_path):
    """Copy a photo, click the picker's Paste: the product is found, and nothing is left in Gradio's folder."""
    import base64
    import io as bytes_io

    product = catalog_rows[12]
    png = bytes_io.BytesIO()
    product["image"].save(png, format="PNG")
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        page.goto(app.url)
        page.locator("#photo .picker").wait_for(timeout=WAIT)
        wait_for_quiet = quiet_waiter(page)
        page.evaluate("""async data => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            await navigator.clipboard.write([new ClipboardItem({'image/png': new Blob([bytes], {type: 'image/png'})})]);
        }""", base64.b64encode(png.getvalue()).decode())
        page.locator("#photo button.paste").click()
        wait_for_status(page, "8 results")
        assert name_of(results(page).first) == product["productDisplayName"]
        wait_for_quiet()
        page.wait_for_timeout(3000)
        wait_for_quiet()
        assert files_in(app.temp_dir) == []
    finally:
        context.close()


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []
