"""Why this match (recommender/serve/explain.py): a similarity split exactly over the cells of each photo, each cell mapped
to the right part of the photo, served by /explain and on the page, from the cells an index stores or, without
them, from the product's thumbnail."""

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_process import ROOT, RunningApp
from conftest import run_build
from recommender.serve.explain import Explainer, cell_boxes, contributions, query_embedder
from recommender.images import fit_square, to_rgb
from recommender.index import IndexUnusable
from recommender.serve.search import Recommender

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT = 60_000  # ms; the first query of a fresh app traces the model


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def index_224(catalog_parquet, tmp_path_factory) -> Path:
    """The synthetic catalog at the model's real input size, 224 px: a 7x7 grid (conftest's 64 px index has 2x2)."""
    out = tmp_path_factory.mktemp("explain") / "index"
    result = run_build("--dataset", str(catalog_parquet), "--weights", "random", "--out", str(out),
                       "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def searcher(index_224) -> Recommender:
    return Recommender.load(index_224)


@pytest.fixture(scope="module")
def app_224(index_224, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain-app")
    with RunningApp({"INDEX_DIR": str(index_224), "GRADIO_TEMP_DIR": str(folder / "gradio")},
                    folder / "app.log") as running:
        running.temp_dir = folder / "gradio"
        yield running.wait_until_ready()


@pytest.fixture(scope="module")
def client_224(app_224):
    from gradio_client import Client

    return Client(app_224.url, verbose=False)


# The split: exact, on real model outputs and on a feature map made by hand.

def test_cells_sum_to_the_similarity_of_every_result(searcher, catalog_rows):
    explainer = Explainer(searcher)
    query = query_embedder(searcher.embedder)(jpeg(catalog_rows[30]["image"]))
    results = searcher.nearest(query.vector, 8)
    assert explainer.grid == 7 and len(results) == 8
    for result in results:
        explanation = explainer.explain(query, result.id)[0]
        for cells in (explanation.query_cells, explanation.product_cells):
            assert cells.shape == (7, 7) and cells.min() >= 0  # ReLU features: no cell counts against the match
            assert cells.sum() == pytest.approx(result.similarity, abs=1e-5)
            assert cells.sum() == pytest.approx(explanation.similarity, abs=1e-9)


@pytest.mark.fast
def test_contributions_go_to_the_cells_of_their_channels():
    query, product = np.array([0.6, 0.8, 0, 0]), np.array([0.8, 0, 0.6, 0])
    cells = np.array([3, 0, 0, 1], np.uint8)  # channel 0 peaked in cell (1, 1), channel 1 in (0, 0), ...
    assert contributions(query, product, cells, grid=2).tolist() == [[0, 0], [0, pytest.approx(0.48)]]


@pytest.mark.fast
def test_pooling_keeps_each_channels_maximum_and_the_cell_it_is_in():
    import tensorflow as tf

    from recommender.embedder import max_pool_with_cells

    features = np.zeros((2, 3, 3, 3), np.float32)  # (images, rows, columns, channels)
    features[0, 2, 1, 0] = 5.0  # image 0, channel 0: bottom row, middle column wins
    features[0, 0, 2, 1], features[0, 1, 0, 1] = 1.0, 2.0  # channel 1: the larger, (1, 0)
    features[1, :, :, 0] = 0.5  # image 1, channel 0: a tie everywhere goes to the first cell
    features[1, 1, 1, 2] = 3.0
    vectors, cells = (value.numpy() for value in max_pool_with_cells(tf, tf.constant(features)))
    assert vectors.tolist() == [[5.0, 2.0, 0.0], [0.5, 0.0, 3.0]]
    assert cells.dtype == np.uint8 and cells.tolist() == [[2 * 3 + 1, 1 * 3 + 0, 0], [0, 0, 1 * 3 + 1]]


def test_the_embedder_pools_as_keras_global_max_pooling_does(searcher):
    import keras

    pixels = searcher.embedder.prepare(Image.effect_noise((90, 50), 80).convert("RGB"))[None]
    vectors, cells = searcher.embedder.embed_with_cells(pixels)
    feature_map = searcher.embedder.model(keras.applications.resnet50.preprocess_input(pixels.astype(np.float32)))
    pooled = keras.layers.GlobalMaxPooling2D()(feature_map).numpy()[0]
    np.testing.assert_allclose(vectors[0], pooled / np.linalg.norm(pooled), atol=1e-6)
    flat = np.asarray(feature_map)[0].reshape(49, -1)
    np.testing.assert_allclose(flat[cells[0], np.arange(flat.shape[1])], flat.max(axis=0), atol=1e-5)


# The cells on the photo: the grid covers the padded square, so cells are clipped to the photo.

@pytest.mark.parametrize("size, grid, cell, box", [
    ((60, 120), 4, (0, 1), (0, 0, 30, 30)),  # portrait: 30 px of white on each side
    ((60, 120), 4, (3, 2), (30, 90, 60, 120)),
    ((60, 120), 4, (2, 0), (0, 60, 0, 90)),  # the left column is all padding: no area
    ((60, 120), 4, (1, 3), (60, 30, 60, 60)),
    ((200, 100), 4, (1, 3), (150, 0, 200, 50)),  # landscape: 50 px above and below
    ((200, 100), 4, (0, 2), (100, 0, 150, 0)),  # the top row is all padding
    ((120, 160), 7, (0, 0), (0, 0, 3, 23)),  # the catalog's 120x160: 20 px each side, cells of 160/7 px
    ((120, 160), 7, (6, 6), (117, 137, 120, 160)),
    ((120, 160), 7, (3, 3), (49, 69, 71, 91)),
])
@pytest.mark.fast
def test_a_cell_maps_to_its_box_on_the_photo(size, grid, cell, box):
    assert tuple(cell_boxes(size, grid)[cell]) == box


@pytest.mark.fast
@pytest.mark.parametrize("size", [(120, 160), (300, 170), (97, 97)])
def test_a_box_is_where_fit_square_puts_the_cell(size):
    """Paint one cell's box on a photo: fit to the model's 224 px square, the paint fills that cell of the 7x7 grid
    (32 px a side), or, for a cell partly in the padding, the part of it the photo covers."""
    width, height = size
    scale = 224 / max(size)
    photo_left, photo_top = (max(size) - width) // 2 * scale, (max(size) - height) // 2 * scale
    boxes = cell_boxes(size, 7)
    for row, column in [(3, 3), (2, 5), (5, 1), (0, 6)]:
        left, top, right, bottom = boxes[row, column]
        if right == left or bottom == top:
            continue
        photo = Image.new("RGB", size, "white")
        photo.paste((255, 0, 0), (int(left), int(top), int(right), int(bottom)))
        ys, xs = np.nonzero(fit_square(photo, 224)[..., 1] < 128)  # red: little green
        expected = (max(32 * column, photo_left), max(32 * row, photo_top),
                    min(32 * (column + 1), photo_left + width * scale), min(32 * (row + 1), photo_top + height * scale))
        assert np.allclose((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), expected, atol=1.5), (row, column)


def test_a_photo_is_explained_in_its_own_orientation(searcher, catalog_rows):
    """A phone photo stored sideways with an EXIF rotation: the query side's size and boxes are the upright photo's."""
    upright = catalog_rows[30]["image"]  # 120x160
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    sideways = jpeg(upright.rotate(90, expand=True), exif=exif)
    query = query_embedder(searcher.embedder)(sideways)
    assert query.size == (120, 160) and Image.open(io.BytesIO(query.picture)).size == (168, 224)  # as the model saw it
    explanation = Explainer(searcher).explain(query, str(catalog_rows[30]["id"]))[0]
    assert explanation.query_boxes[-1, -1].tolist() == [117, 137, 120, 160]


# The index: cells stored at build time; an index without them still serves.

def test_the_build_stores_each_products_cells(searcher, catalog_rows):
    assert searcher.cells.shape == (len(searcher.items), 2048) and searcher.cells.dtype == np.uint8
    assert json.loads((searcher.files.manifest).read_text())["files"]["cells.npy"]["bytes"] == \
        searcher.cells.nbytes + 128  # 2,048 bytes a product, and the .npy header
    row = searcher.row_of(str(catalog_rows[12]["id"]))
    stored_photo = jpeg(catalog_rows[12]["image"])  # the bytes the catalog holds
    _, cells = searcher.embedder.embed_with_cells(searcher.embedder.prepare(stored_photo)[None])
    assert (cells[0] == searcher.cells[row]).mean() > 0.99  # another batch changes float round-off, rare near-ties


def without_cells(index: Path, to: Path) -> Path:
    """A copy of `index` as built before cells were stored: no cells.npy, none in the manifest."""
    shutil.copytree(index, to)
    (to / "cells.npy").unlink()
    manifest = json.loads((to / "manifest.json").read_text())
    del manifest["files"]["cells.npy"]
    (to / "manifest.json").write_text(json.dumps(manifest))
    return to


def test_an_index_without_cells_serves_and_explains_from_the_thumbnail(index_224, searcher, catalog_rows, tmp_path):
    old = Recommender.load(without_cells(index_224, tmp_path / "old"))
    assert old.cells is None
    query = query_embedder(old.embedder)(jpeg(catalog_rows[30]["image"]))
    results = old.nearest(query.vector, 5)
    assert [r.id for r in results] == [r.id for r in searcher.nearest(query.vector, 5)]
    for result in results:
        explanation = Explainer(old).explain(query, result.id)[0]
        assert explanation.product_cells.sum() == pytest.approx(result.similarity, abs=1e-5)
    # the thumbnail, re-encoded, puts nearly every channel's maximum where the catalog photo did
    row = searcher.row_of(results[1].id)
    assert (Explainer(old).product(results[1].id).cells == searcher.cells[row]).mean() > 0.9


def test_cells_the_manifest_records_must_be_there_and_intact(index_224, tmp_path):
    missing = shutil.copytree(index_224, tmp_path / "missing")
    (missing / "cells.npy").unlink()
    with pytest.raises(IndexUnusable, match="incomplete: cells.npy missing"):
        Recommender.load(missing)
    altered = shutil.copytree(index_224, tmp_path / "altered")
    cells = np.load(altered / "cells.npy")
    cells[0, 0] ^= 1
    np.save(altered / "cells.npy", cells)
    with pytest.raises(IndexUnusable, match="cells.npy does not match its checksum"):
        Recommender.load(altered)


# /explain through gradio_client.

def data_url_image(value: dict) -> Image.Image:
    header, data = value["url"].split(",", 1)
    assert header == "data:image/jpeg;base64"  # sent in the answer: the query photo's overlay is never a file
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_explain_a_photos_result_through_the_api(client_224, app_224, catalog_rows, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "cap.jpg"
    photo.write_bytes(jpeg(catalog_rows[30]["image"]))
    _, results = client_224.predict(image=handle_file(str(photo)), k=5, api_name="/recommend")
    for result in results[:3]:  # the photo's vector is known now: no model call for the query side
        query_overlay, product_overlay, explanation = client_224.predict(
            image=handle_file(str(photo)), product_id=result["id"], api_name="/explain")
        assert explanation["grid"] == 7 and explanation["product_id"] == result["id"]
        for side in ("query_cells", "product_cells"):
            cells = np.array(explanation[side])
            assert cells.shape == (7, 7)
            assert cells.sum() == pytest.approx(result["similarity"], abs=1e-5)
        assert explanation["similarity"] == pytest.approx(result["similarity"], abs=1e-5)
        assert 1 <= len(explanation["query_regions"]) <= 3
        boxes, best = cell_boxes((120, 160), 7), explanation["query_regions"][0]  # the photo is 120x160
        on_photo = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        assert best["contribution"] == np.array(explanation["query_cells"])[on_photo].max()
        assert best["box"] == boxes[tuple(best["cell"])].tolist()
        assert data_url_image(query_overlay).size == (240, 320) == data_url_image(product_overlay).size
    assert [path for path in app_224.temp_dir.rglob("*") if path.is_file()] == []


def test_explain_a_catalog_products_result_through_the_api(client_224, catalog_rows):
    query_id = str(catalog_rows[14]["id"])
    _, results = client_224.predict(id=query_id, k=3, api_name="/similar")
    _, _, explanation = client_224.predict(id=query_id, product_id=results[0]["id"], api_name="/explain")
    for side in ("query_cells", "product_cells"):
        assert np.array(explanation[side]).sum() == pytest.approx(results[0]["similarity"], abs=1e-5)


@pytest.mark.parametrize("arguments, message", [
    ({"product_id": "10001"}, "No query was given"),
    ({"id": "10002", "product_id": "no-such-id"}, "No product with id 'no-such-id'"),
    ({"id": "no-such-id", "product_id": "10001"}, "No product with id 'no-such-id'"),
])
def test_explain_refuses_what_it_cannot_explain_with_a_message(client_224, arguments, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client_224.predict(**arguments, api_name="/explain")


# The page.

@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_the_page_explains_a_result_and_clicking_still_shows_more_like_it(app_224, catalog_rows, tmp_path):
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "cap.jpg"
    photo.write_bytes(jpeg(catalog_rows[30]["image"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1300})
        page.goto(app_224.url)
        page.locator("#photo .picker").wait_for(timeout=WAIT)
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        results = page.locator("#results .thumbnail-item")
        results.nth(7).wait_for(timeout=WAIT)
        page.wait_for_function("(document.querySelector('#status')?.innerText || '').startsWith('8 results')",
                               timeout=WAIT)  # not the progress timer Gradio shows meanwhile
        status = page.locator("#status").inner_text()

        page.locator("#why input[type=checkbox]").check()
        explained = results.nth(1).locator("img").get_attribute("alt").split("\n")[0]
        results.nth(1).click()
        page.wait_for_function("name => (document.querySelector('#why-text')?.innerText || '').includes(name)",
                               arg=explained, timeout=WAIT)
        assert "% similar" in page.locator("#why-text").inner_text()
        for side in ("#why-query", "#why-product"):
            page.locator(f"{side} img").first.wait_for(timeout=WAIT)
            assert page.locator(f"{side} img").first.get_attribute("src").startswith("data:image/jpeg;base64,")
        assert page.locator("#status").inner_text() == status  # the click explained; it searched nothing
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ROOT / "docs" / "screenshot-explain.png"))

        page.locator("#why input[type=checkbox]").uncheck()
        clicked = results.nth(2).locator("img").get_attribute("alt").split("\n")[0]
        results.nth(2).click()  # more like this, as before
        page.wait_for_function("name => (document.querySelector('#status')?.innerText || '').includes('More like')",
                               arg=clicked, timeout=WAIT)
        assert clicked in page.locator("#status").inner_text()

        page.locator("#why input[type=checkbox]").check()  # a catalog product's result is explained too
        results.nth(7).wait_for(timeout=WAIT)
        explained = results.first.locator("img").get_attribute("alt").split("\n")[0]
        results.first.click()
        page.wait_for_function("name => (document.querySelector('#why-text')?.innerText || '').includes(name)",
                               arg=explained, timeout=WAIT)
        browser.close()
    assert [path for path in app_224.temp_dir.rglob("*") if path.is_file()] == []


def test_no_copy_of_a_query_photo_outlives_its_request(searcher, catalog_rows):
    """The app's shared vector cache keeps a photo's vector and cells, which the request's copy of the photo (for
    the overlay) is not part of; /explain and the page draw on the photo they are sent."""
    from app import query_photos

    photos, data = query_photos(searcher), jpeg(catalog_rows[30]["image"])
    photos.store.put("uploads/f00d/cap.jpg", data)
    photo = photos.open("uploads/f00d/cap.jpg")
    view = photos.embedding(photo)
    assert Image.open(io.BytesIO(view.picture)).size == (168, 224)  # this request's copy
    cached = photos.cache.get(photo.key)
    assert cached.picture is None
    assert np.array_equal(cached.vector, view.vector) and np.array_equal(cached.cells, view.cells)
    assert cached.size == view.size == (120, 160)
