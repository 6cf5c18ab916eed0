"""recommender/pipeline/ray_engine.py without Ray: which catalogs it can split among workers (test_ray_build.py builds
on a local Ray)."""

import pytest

from recommender.columns import CatalogUnavailable
from recommender.pipeline.catalog import load_catalog
from recommender.pipeline.ray_engine import RayEngine

pytestmark = pytest.mark.fast  # python -m pytest -m fast


def test_a_parquet_catalog_can_be_split(catalog_parquet):
    RayEngine.check(load_catalog(str(catalog_parquet)))


def test_an_image_folder_is_refused_with_the_way_out(catalog_folder):
    with pytest.raises(CatalogUnavailable, match="--engine ray reads parquet catalogs") as refusal:
        RayEngine.check(load_catalog(str(catalog_folder)))
    assert "for an image folder, use the in-process build" in str(refusal.value)
