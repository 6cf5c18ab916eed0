"""A catalog full of broken and odd rows: each is indexed correctly or skipped, counted and named."""

import io
import json

import pytest
from PIL import Image

from conftest import IMAGE_SIZE, run_build
from recommender.serve.search import Recommender
from synthetic_catalog import product_image, write_parquet


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def row(product_id, image, name="Plain name", **metadata):
    return {"id": product_id, "gender": "Women", "masterCategory": "Apparel", "subCategory": "Topwear",
            "articleType": "Tshirts", "baseColour": "Blue", "season": "Fall", "year": 2015.0, "usage": "Casual",
            "productDisplayName": name, "image": image, **metadata}


@pytest.fixture(scope="module")
def bad_build(tmp_path_factory):
    good = product_image("Tshirts", "Blue", "solid")
    jpeg = encoded(good, "JPEG", quality=90)
    frames = [product_image("Caps", "Red", "solid"), product_image("Caps", "Green", "solid")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    tiff = io.BytesIO()
    frames[1].save(tiff, format="TIFF", save_all=True, append_images=frames[:1])
    palette = product_image("Watches", "Blue", "striped").convert("P")
    palette.info["transparency"] = 0
    rows = [
        row(1, jpeg, "Normal ÄÖÜ 日本語 name"),  # non-ASCII names are kept as they are
        row(2, jpeg[: len(jpeg) // 2], "truncated"),
        row(3, b"", "zero bytes"),
        row(4, b"GIF89a this is not really a gif", "corrupt"),
        row(5, encoded(Image.new("RGB", (1, 1), (0, 0, 200)), "PNG"), "one pixel"),
        row(6, encoded(Image.new("1", (10_000, 10_000)), "PNG"), "100 megapixels"),
        row(7, gif.getvalue(), "animated"),
        row(8, tiff.getvalue(), "multi-page"),
        row(9, encoded(product_image("Trousers", "Red", "solid").convert("I;16"), "PNG"), "16-bit grey"),
        row(10, encoded(product_image("Handbags", "Green", "striped").convert("CMYK"), "JPEG"), "CMYK"),
        row(11, encoded(product_image("Casual Shoes", "Blue", "striped").convert("LA"), "PNG"),
            "grey with alpha"),
        row(12, encoded(palette, "PNG"), "palette with transparency"),
        row(13, jpeg, None, gender=None, articleType=None, baseColour=None, year=None),  # null metadata
        row(1, encoded(frames[0], "JPEG"), "duplicate id"),
        row(None, jpeg, "no id"),
        row(14, None, "no image"),
    ]
    catalog = write_parquet(tmp_path_factory.mktemp("bad") / "bad.parquet", rows, extra_bad_rows=False)
    out = tmp_path_factory.mktemp("bad-index") / "index"
    result = run_build("--dataset", str(catalog), "--weights", "random", "--image-size", str(IMAGE_SIZE),
                       "--out", str(out))
    return result, out


def test_bad_rows_are_skipped_counted_and_named(bad_build):
    result, out = bad_build
    assert result.returncode == 0, result.stderr
    assert "Indexed 9 products" in result.stdout
    for line in ("Skipped 1: truncated or corrupt image (e.g. 2)", "Skipped 1: empty image file (e.g. 3)",
                 "Skipped 1: not an image (e.g. 4)", "Skipped 1: image too large (e.g. 6)",
                 "Skipped 1: duplicate id (e.g. 1)", "Skipped 1: no id (e.g. None)",
                 "Skipped 1: no image (e.g. 14)"):
        assert line in result.stdout, result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 9 and sum(manifest["skipped"].values()) == 7


def test_every_indexed_row_is_its_own_product(bad_build):
    """No row shifted by a skipped one: each row's id, name, thumbnail and vector belong together."""
    import numpy as np

    _, out = bad_build
    recommender = Recommender.load(out)
    names = {item["id"]: item["productDisplayName"] for item in recommender.items}
    assert names == {"1": "Normal ÄÖÜ 日本語 name", "5": "one pixel", "7": "animated", "8": "multi-page",
                     "9": "16-bit grey", "10": "CMYK", "11": "grey with alpha", "12": "palette with transparency",
                     "13": None}
    assert recommender.items[-1]["gender"] is None and recommender.product("13").name == "13"  # no name: its id
    vectors = np.asarray(recommender.index.vectors)
    for row, item in enumerate(recommender.items):
        nearest = int(np.argmax(vectors @ recommender.embedder.embed_image(recommender.files.image(row))))
        same_picture = np.linalg.norm(vectors[nearest] - vectors[row]) < 1e-3  # rows 1 and 13 share a photo
        assert nearest == row or same_picture, (item["id"], recommender.items[nearest]["id"])
