"""Filters, "more like this" and duplicate images, on an index built by the real build pipeline (stand-in model)."""

import io
from itertools import product

import numpy as np
import pytest

from recommender.serve.search import ANY, UnknownProduct
from synthetic_catalog import DUPLICATE_ID, DUPLICATE_OF

pytestmark = pytest.mark.fast  # python -m pytest -m fast


@pytest.fixture(scope="module")
def recommender(stand_in_recommender):
    """Filters, "more like this" and copies are the subject here, not the model: conftest's stand-in index, built
    by the real build pipeline with a numpy function for the model."""
    return stand_in_recommender


def jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def exact_top_k(recommender, query, k, rows, skip=()):
    """Brute force over `rows` with the stored vectors; copies of one image count once, as in the product: the copy
    with the lowest row stands for them all, in its own place (round-off must not pick the copy shown)."""
    distances = np.linalg.norm(np.asarray(recommender.index.vectors)[rows] - query, axis=1)
    kept = {}  # place in distance order -> the row shown there
    for place, row in enumerate(np.asarray(rows)[np.lexsort((rows, distances))]):
        vector = recommender.index.vectors[row]
        if any(np.linalg.norm(recommender.index.vectors[s] - vector) < 1e-3 for s in skip):
            continue
        twin = next((p for p, s in kept.items() if np.linalg.norm(recommender.index.vectors[s] - vector) < 1e-3), None)
        if twin is not None:
            if row < kept[twin]:
                del kept[twin]
                kept[place] = int(row)
            continue
        kept[place] = int(row)
    return [recommender.items[kept[place]]["id"] for place in sorted(kept)[:k]]


def rows_where(recommender, **wanted):
    fields = {"gender": "gender", "article_type": "articleType", "colour": "baseColour"}
    return np.array([row for row, item in enumerate(recommender.items)
                     if all(item[fields[name]] == value for name, value in wanted.items())], dtype=np.int64)


@pytest.mark.parametrize("filters", [{"colour": "Blue"}, {"gender": "Women"}, {"article_type": "Watches"},
                                     {"gender": "Men", "colour": "Red"},
                                     {"gender": "Women", "article_type": "Caps", "colour": "Green"}])
def test_filtered_search_is_exact_top_k_of_the_subset(recommender, catalog_rows, filters):
    image = jpeg(catalog_rows[20]["image"])
    query = recommender.embedder.embed_image(image)
    subset = rows_where(recommender, **filters)
    for k in (1, 5, len(subset), len(subset) + 5):
        results = recommender.recommend(image, k, filters)
        assert [r.id for r in results] == exact_top_k(recommender, query, k, subset)
        assert len(results) == min(k, len(exact_top_k(recommender, query, len(subset), subset)))


def test_every_filter_value_and_all_mean_what_they_say(recommender, catalog_rows):
    image = jpeg(catalog_rows[0]["image"])
    for colour in recommender.filter_choices("colour"):
        results = recommender.recommend(image, 50, {"colour": colour, "gender": ANY, "article_type": ""})
        assert results and {r.metadata["baseColour"] for r in results} == {colour}
    assert len(recommender.recommend(image, 50, {"colour": ANY})) == len(catalog_rows)  # copies shown once


def test_empty_combination_returns_nothing_and_unknown_values_are_refused(recommender, catalog_rows):
    image = jpeg(catalog_rows[0]["image"])
    combinations = product(recommender.filter_choices("gender"), recommender.filter_choices("article_type"),
                           recommender.filter_choices("colour"))
    empty = next(c for c in combinations
                 if not len(rows_where(recommender, gender=c[0], article_type=c[1], colour=c[2])))
    assert recommender.recommend(image, 8, dict(zip(("gender", "article_type", "colour"), empty))) == []
    with pytest.raises(UnknownProduct, match="No product has colour 'Mauve'; choose one of: .*Blue"):
        recommender.recommend(image, 8, {"colour": "Mauve"})
    with pytest.raises(UnknownProduct, match="Unknown filter 'size'"):
        recommender.recommend(image, 8, {"size": "XL"})


def test_more_like_this_uses_the_stored_vector_and_never_returns_the_product(recommender, catalog_rows):
    for row in (0, 17, 30):
        product_id = str(catalog_rows[row]["id"])
        vector = recommender.index.vectors[recommender.row_of(product_id)]
        results = recommender.similar(product_id, k=8)
        assert product_id not in [r.id for r in results] and len(results) == 8
        assert [r.id for r in results] == exact_top_k(recommender, vector, 8, np.arange(len(recommender.items)),
                                                      skip=[recommender.row_of(product_id)])
        filtered = recommender.similar(product_id, k=4, filters={"colour": "Green"})
        assert {r.metadata["baseColour"] for r in filtered} == {"Green"} and product_id not in [r.id for r in filtered]
    with pytest.raises(UnknownProduct, match="No product with id 'nope'"):
        recommender.similar("nope")


def test_the_same_image_is_never_shown_twice(recommender, catalog_rows):
    original, copy = str(catalog_rows[DUPLICATE_OF]["id"]), str(DUPLICATE_ID)
    ids = [r.id for r in recommender.recommend(jpeg(catalog_rows[DUPLICATE_OF]["image"]), k=10)]
    assert ids[0] == original and copy not in ids  # the copy has the same vector: shown once, lowest row first
    assert not {original, copy} & {r.id for r in recommender.similar(original, k=10)}
    assert not {original, copy} & {r.id for r in recommender.similar(copy, k=10)}


def test_examples_are_products_of_different_types(recommender):
    examples = recommender.examples(count=6)
    assert len({e.metadata["articleType"] for e in examples}) == 6
    assert all(recommender.product(e.id).image_path == e.image_path for e in examples)
