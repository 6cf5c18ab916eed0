"""The three catalog sources read into the same products; an unreachable Hub fails fast and says what to do."""

import time

import pytest

from recommender.columns import METADATA_FIELDS, CatalogUnavailable
from recommender.pipeline.catalog import load_catalog

pytestmark = pytest.mark.fast  # python -m pytest -m fast


def test_parquet_in_hub_schema(catalog_parquet, catalog_rows):
    catalog = load_catalog(str(catalog_parquet))
    products = list(catalog.rows)
    assert catalog.total == len(catalog_rows) + 2  # with a corrupt row and a duplicate image
    assert [p.id for p in products[:2]] == [str(catalog_rows[0]["id"]), str(catalog_rows[1]["id"])]
    first = products[0]
    assert set(first.metadata) == set(METADATA_FIELDS)
    assert first.metadata["articleType"] == catalog_rows[0]["articleType"]
    assert first.image_bytes[:2] == b"\xff\xd8"  # still encoded: decoding happens in the build's workers


def test_limit_stops_early(catalog_parquet):
    catalog = load_catalog(str(catalog_parquet), limit=5)
    assert catalog.total == 5 and len(list(catalog.rows)) == 5


def test_image_folder_takes_article_type_from_sub_folder(catalog_folder, catalog_rows):
    catalog = load_catalog(str(catalog_folder))
    products = {p.id: p for p in catalog.rows}
    assert catalog.total == len(catalog_rows) + 1
    row = catalog_rows[-1]
    product = products[f"{row['articleType']}/{row['id']}"]
    assert product.metadata["articleType"] == row["articleType"]
    assert product.image_path.endswith(f"{row['id']}.jpg")


def test_missing_local_files_are_named(tmp_path):
    with pytest.raises(CatalogUnavailable, match="No parquet file"):
        load_catalog(str(tmp_path / "nothing-*.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogUnavailable, match="holds no images"):
        load_catalog(str(tmp_path / "empty"))


def test_unreachable_hub_dataset_fails_fast_with_the_way_out(offline):
    offline.requests.clear()
    started = time.monotonic()
    with pytest.raises(CatalogUnavailable) as error:
        load_catalog("ashraq/fashion-product-images-small")
    message = str(error.value)
    assert "ashraq/fashion-product-images-small" in message
    assert "--dataset path/to/file.parquet" in message and "INDEX_REPO" in message
    assert time.monotonic() - started < 30
    assert "CONNECT huggingface.co:443" in offline.requests  # the Hub was asked, and refused by the tests' proxy


def test_kaggle_layout_reads_styles_csv(tmp_path, catalog_rows):
    """images/<id>.jpg beside styles.csv, whose product names hold unquoted commas."""
    (tmp_path / "images").mkdir()
    for row in catalog_rows[:3]:
        row["image"].save(tmp_path / "images" / f"{row['id']}.jpg")
    lines = ["id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"]
    lines += [f"{row['id']},Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check, Men Navy Shirt"
              for row in catalog_rows[:2]]  # the third image has no row: it keeps what the folder tells
    (tmp_path / "styles.csv").write_text("\n".join(lines) + "\n")
    products = {p.id: p for p in load_catalog(str(tmp_path / "images")).rows}
    first = products[str(catalog_rows[0]["id"])]
    assert first.metadata["productDisplayName"] == "Turtle Check, Men Navy Shirt"
    assert first.metadata["baseColour"] == "Navy Blue" and first.metadata["year"] == "2011"
    assert products[str(catalog_rows[2]["id"])].metadata["productDisplayName"] == str(catalog_rows[2]["id"])
