"""Random bytes and mutated real images on the query path: a result or an ImageError, never a crash, quickly and
within bounded memory."""

import io
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import resident_peak
from recommender.images import ImageError
from synthetic_catalog import product_image


def seeds() -> list[bytes]:
    image = product_image("Watches", "Red", "striped")
    formats = {"PNG": {}, "JPEG": {"quality": 90}, "GIF": {}, "WEBP": {"quality": 80}, "TIFF": {}, "BMP": {}}
    out = []
    for fmt, options in formats.items():
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        out.append(buffer.getvalue())
    return out


SEEDS = seeds()


@st.composite
def mutated_images(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 20))):  # overwrite, insert or cut a few bytes, headers included
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif len(data) > 2:
            del data[position:position + draw(st.integers(1, 64))]
    return bytes(data)


def query_within_limits(recommender, data: bytes) -> None:
    started = time.perf_counter()
    with resident_peak() as memory:
        try:
            results = recommender.recommend(data, k=3)
            assert len(results) == 3
        except ImageError as error:
            assert str(error) and error.reason
    assert memory.bytes < 400e6  # resident memory one query adds at its peak: decoding, model and search
    assert time.perf_counter() - started < 2.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_random_bytes(recommender, data):
    query_within_limits(recommender, data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated_images())
def test_mutated_real_images(recommender, data):
    query_within_limits(recommender, data)


def test_a_long_thin_photo_stays_within_limits(recommender):
    """A 12000x100 PNG of a few kB: padded to a square first, it would become 144 MP (576 MB, seconds of work)."""
    buffer = io.BytesIO()
    Image.new("RGB", (12000, 100), "navy").save(buffer, format="PNG")
    query_within_limits(recommender, buffer.getvalue())


@pytest.mark.parametrize("k", [0, -5, 51, 10**9])
def test_k_out_of_range_is_clamped(many_recommender, k):  # 120 distinct images
    assert len(many_recommender.recommend(SEEDS[0], k=k)) == min(max(k, 1), 50)
