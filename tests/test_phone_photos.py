"""The photos people take, through the page as they send them: a phone's 12 and 48 MP JPEGs, portraits stored
sideways with EXIF, a 4000x3000 PNG screenshot, WebP, HEIC; and every way a photo can fail, said to the visitor."""

from pathlib import Path

import pytest
from PIL import Image

import phone_photos
from browser_page import browser, open_page  # noqa: F401 (fixtures)
from browser_page import CHROMIUM, WAIT, drag_a_frame, name_of, picker_says, results, upload, wait_for_status
from conftest import ROOT
from page_traffic import SENT_BYTES, sent_bytes
from quiet import quiet_waiter

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium: apt-get install -y chromium")
PRODUCT = 30  # a red cap: its photo, taken with a phone, must find it first


def shown_ids(page) -> list[str]:
    """The ids of the results on show, best first (from their share links)."""
    return [link.get_attribute("href").removeprefix("?item=") for link in page.locator("#links a").all()]


def photo_size(page) -> list[int]:
    """(width, height) of the photo the picker shows and crops from."""
    return page.evaluate("(c => [c.width, c.height])(document.querySelector('#photo canvas.photo'))")


@pytest.fixture
def product(catalog_rows):
    return catalog_rows[PRODUCT]


def test_a_12_megapixel_phone_photo_is_scaled_sent_once_and_found(open_page, app, client, product, tmp_path):
    """A 4032x3024 JPEG of a few MB: the page sends under half its size in one upload, finds the product, and its
    results are the results of the full photo sent through the API (the model sees 224 px either way)."""
    photo = tmp_path / "IMG_0001.jpg"
    photo.write_bytes(phone_photos.phone_jpeg(product["image"]))
    assert photo.stat().st_size > 3_000_000
    page = open_page(init_script=SENT_BYTES)
    uploads = []
    page.on("request", lambda request: uploads.append(request) if request.url.endswith("/gradio_api/upload") else 0)
    wait_for_quiet = quiet_waiter(page)
    before = sent_bytes(page)
    upload(page, photo)
    wait_for_status(page, "8 results")
    wait_for_quiet()
    sent = sent_bytes(page) - before
    assert sent <= 0.5 * photo.stat().st_size, f"sent {sent:,} bytes for a {photo.stat().st_size:,}-byte photo"
    assert len(uploads) == 1  # once, not once per layer
    assert name_of(results(page).first) == product["productDisplayName"]
    assert photo_size(page) == [2048, 1536]  # kept for crops at 2,048 px; sent at 1,024
    assert [path for path in app.temp_dir.rglob("*") if path.is_file()] == []  # nothing of it on disk

    from gradio_client import handle_file

    _, full = client.predict(handle_file(str(photo)), 8, api_name="/recommend")
    page_ids, full_ids = shown_ids(page), [result["id"] for result in full]
    assert page_ids[:3] == full_ids[:3] and len(set(page_ids) & set(full_ids)) >= 7, (page_ids, full_ids)


def test_a_crop_of_a_phone_photo_searches_that_part(open_page, catalog_rows, tmp_path):
    """A 12 MP photo of two products side by side: a frame dragged around the right one, on the photo the page
    shows (scaled in the browser), searches that one. The frame selects the same region of the full photo."""
    left, right = catalog_rows[30], catalog_rows[23]  # a red cap beside a watch
    width, height = phone_photos.PHONE
    scene = Image.new("RGB", (width, height), "white")
    for product, offset in ((left, 0), (right, width // 2)):
        scene.paste(phone_photos.scene(product["image"], (width // 2, height)), (offset, 0))
    photo = tmp_path / "two.jpg"
    photo.write_bytes(phone_photos.encoded(phone_photos.noisy(scene), "JPEG", quality=92))
    page = open_page()
    upload(page, photo)
    wait_for_status(page, "8 results")
    drag_a_frame(page, 0.52, 0.02, 0.98, 0.98)  # the right half
    page.wait_for_function("name => (document.querySelector('#results .thumbnail-item img')?.alt || '')"
                           ".startsWith(name)", arg=right["productDisplayName"], timeout=WAIT)
    drag_a_frame(page, 0.02, 0.02, 0.48, 0.98)  # and the left half
    page.wait_for_function("name => (document.querySelector('#results .thumbnail-item img')?.alt || '')"
                           ".startsWith(name)", arg=left["productDisplayName"], timeout=WAIT)


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_portrait_stored_sideways_is_searched_upright(open_page, product, tmp_path, orientation):
    """Phones store a portrait as a landscape picture with an EXIF orientation tag: the page turns it upright."""
    photo = tmp_path / f"portrait-{orientation}.jpg"
    photo.write_bytes(phone_photos.phone_jpeg(product["image"], size=(3024, 4032), orientation=orientation))
    assert Image.open(photo).size == (4032, 3024)  # stored sideways
    page = open_page()
    upload(page, photo)
    wait_for_status(page, "8 results")
    assert photo_size(page) == [1536, 2048]  # upright
    assert name_of(results(page).first) == product["productDisplayName"]


@pytest.mark.parametrize("kind", ["48 MP JPEG", "4000x3000 PNG screenshot", "WebP"])
def test_other_photos_people_send_work_too(open_page, product, tmp_path, kind):
    data, name = {
        "48 MP JPEG": lambda: (phone_photos.phone_jpeg(product["image"], size=phone_photos.PHONE_48MP), "big.jpg"),
        "4000x3000 PNG screenshot": lambda: (phone_photos.screenshot_png(product["image"]), "Screenshot.png"),
        "WebP": lambda: (phone_photos.encoded(phone_photos.noisy(phone_photos.scene(product["image"], (2000, 1500))),
                                              "WEBP", quality=85), "photo.webp"),
    }[kind]()
    photo = tmp_path / name
    photo.write_bytes(data)
    page = open_page(init_script=SENT_BYTES)
    upload(page, photo)
    wait_for_status(page, "8 results")
    assert name_of(results(page).first) == product["productDisplayName"]
    assert sent_bytes(page) < 1_000_000


def test_a_heic_photo_is_read_by_the_server(open_page, app, client, product, tmp_path):
    """Chromium cannot draw HEIC (the iPhone's format): the picker sends the file as it is, the server decodes it,
    and the picker says why there is no preview to crop. The API takes it too."""
    photo = tmp_path / "IMG_0002.HEIC"
    photo.write_bytes(phone_photos.heic(product["image"]))
    page = open_page()
    upload(page, photo)
    wait_for_status(page, "8 results")
    assert name_of(results(page).first) == product["productDisplayName"]
    assert "cannot show this photo" in picker_says(page, "searched whole")
    assert "IMG_0002" not in app.output()
    from gradio_client import handle_file

    _, found = client.predict(handle_file(str(photo)), 8, api_name="/recommend")
    assert found[0]["name"] == product["productDisplayName"]


# Every refusal is said where the visitor looks: under the photo, or in the status line above the results.

def test_a_file_that_is_not_an_image_is_refused_in_the_status_line(open_page, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(b"%PDF-1.7 this is a document, not a photo" * 100)
    page = open_page()
    upload(page, fake)
    status = wait_for_status(page, "not searched")
    assert "not an image we can read" in status
    assert results(page).count() == 0


def test_a_file_over_the_limit_is_refused_before_it_is_read(open_page, tmp_path):
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as out:  # sparse: 120 MB that cost no disk
        out.truncate(120 * 2**20)
    page = open_page(init_script=SENT_BYTES)
    upload(page, huge)
    message = picker_says(page, "photos up to 100 MB work")
    assert "120 MB" in message
    assert sent_bytes(page) < 10_000  # nothing of it was sent


def test_an_undrawable_file_too_large_to_send_is_refused_in_the_browser(open_page, tmp_path):
    raw = tmp_path / "scan.tiff"
    raw.write_bytes(b"II*\x00" + b"\x00" * (25 * 2**20))  # Chromium draws no TIFF; 25 MB is over the upload limit
    page = open_page(init_script=SENT_BYTES)
    upload(page, raw)
    assert "too large to send" in picker_says(page, "Send a JPEG, PNG or WebP photo")
    assert sent_bytes(page) < 10_000


def test_a_network_failure_is_said_under_the_photo(open_page, product, tmp_path):
    photo = tmp_path / "cap.jpg"
    photo.write_bytes(phone_photos.phone_jpeg(product["image"], size=(1600, 1200)))
    page = open_page()
    page.context.set_offline(True)
    upload(page, photo)
    assert "offline" in picker_says(page, "The photo was not sent")
    page.context.set_offline(False)  # back online, Gradio reloads the page once it reaches the server again
    page.reload()
    page.locator("#photo .picker").wait_for(timeout=WAIT)
    upload(page, photo)  # and the same photo works
    wait_for_status(page, "8 results")


def test_a_server_error_is_said_under_the_photo(open_page, product, tmp_path):
    photo = tmp_path / "cap.jpg"
    photo.write_bytes(phone_photos.phone_jpeg(product["image"], size=(1600, 1200)))
    page = open_page()
    page.route("**/gradio_api/upload*", lambda route: route.fulfill(status=500, body="Internal Server Error"))
    upload(page, photo)
    picker_says(page, "The photo was not sent")
    assert results(page).count() == 0


def test_a_refused_photo_empties_the_results_and_says_why(open_page, product, tmp_path):
    """After a good photo, a bad one: the old results do not stay under the new photo, and the status says why."""
    good, bad = tmp_path / "cap.jpg", tmp_path / "broken.jpg"
    good.write_bytes(phone_photos.phone_jpeg(product["image"], size=(1600, 1200)))
    bad.write_bytes(b"this is a note, not a photo " * 50)  # the browser cannot draw it, nor can the server
    page = open_page()
    upload(page, good)
    wait_for_status(page, "8 results")
    upload(page, bad)
    assert "not an image we can read" in wait_for_status(page, "not searched")
    assert results(page).count() == 0


# A phone's screen.

def test_on_a_phone_the_results_come_into_view_in_whole_rows(open_page, product, tmp_path):
    photo = tmp_path / "IMG_0003.jpg"
    photo.write_bytes(phone_photos.phone_jpeg(product["image"]))
    page = open_page(width=412, height=915)
    upload(page, photo)
    wait_for_status(page, "8 results")
    results(page).nth(7).wait_for(timeout=WAIT)
    page.wait_for_timeout(1500)  # the smooth scroll
    status = page.locator("#status").bounding_box()
    assert -2 <= status["y"] < 200, status  # the results' status line is at the top of the screen
    first = results(page).first.bounding_box()
    assert first["y"] >= status["y"] and first["y"] + first["height"] <= 915  # the first row whole, in view
    scrolls = page.evaluate("""[...document.querySelectorAll('#results *')].filter(e =>
        e.scrollHeight > e.clientHeight + 2 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY)).length""")
    assert scrolls == 0  # the gallery does not scroll inside itself
    assert page.evaluate("document.documentElement.scrollWidth") <= 412
    page.screenshot(path=str(ROOT / "docs" / "screenshot-phone.png"))  # the README's
