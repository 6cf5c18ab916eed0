"""The live model (recommender/live_model.py): the index's embedder in a process of its own, at the lowest CPU
priority, whose vectors are the app's."""

import io
import os
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from recommender.images import ImageError
from recommender.live_model import LiveModel, LiveModelFailed
from recommender.page import LiveState, Page
from recommender.photos import QueryPhotos

LOADING_SECONDS = 120  # a loaded 2-core machine takes a few seconds to start TensorFlow and build ResNet50


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def loaded(model: LiveModel, frame: bytes) -> np.ndarray:
    """The frame's vector once the model has loaded (None until then)."""
    deadline = time.monotonic() + LOADING_SECONDS
    while (vector := model.embed_image(frame)) is None:
        assert time.monotonic() < deadline, "the live model did not load"
        time.sleep(0.1)
    return vector


@pytest.fixture
def live_model(recommender):
    model = LiveModel(recommender.embedder.settings)
    yield model
    model.close()


def test_its_vectors_are_the_apps_and_every_thread_of_it_runs_at_the_lowest_priority(live_model, recommender):
    frame = jpeg(1)
    assert live_model.embed_image(frame) is None  # loading: the caller drops the frame rather than wait
    vector = loaded(live_model, frame)
    np.testing.assert_allclose(vector, recommender.embedder.embed_image(frame), atol=1e-5)
    assert live_model.embed_image(jpeg(2)).shape == (2048,)
    threads = list(Path(f"/proc/{live_model.pid}/task").iterdir())
    assert len(threads) > 2  # TensorFlow's threads too
    assert {os.sched_getscheduler(int(thread.name)) for thread in threads} == {os.SCHED_IDLE}


def test_a_frame_that_is_no_image_is_refused_and_the_model_keeps_serving(live_model):
    loaded(live_model, jpeg(3))
    with pytest.raises(ImageError) as refused:
        live_model.embed_image(b"<html>not a photo</html>")
    assert refused.value.reason and str(refused.value)
    assert live_model.embed_image(jpeg(4)).shape == (2048,)


def test_a_process_that_died_is_replaced(live_model):
    first = loaded(live_model, jpeg(5))
    pid = live_model.pid
    os.kill(pid, 9)
    time.sleep(0.5)
    assert live_model.embed_image(jpeg(5)) is None  # a new process, loading
    assert live_model.pid != pid
    np.testing.assert_allclose(loaded(live_model, jpeg(5)), first, atol=1e-6)


def test_close_ends_the_process(live_model):
    loaded(live_model, jpeg(6))
    pid = live_model.pid
    live_model.close()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_weights_that_cannot_be_loaded_stop_live_search_with_the_reason(recommender, tmp_path):
    from dataclasses import replace

    missing = tmp_path / "weights.h5"
    model = LiveModel(replace(recommender.embedder.settings, weights=str(missing)))
    page = Page(recommender, QueryPhotos(lambda data: np.zeros(2048, np.float32)))
    page._live_embedder = lambda: model
    try:
        with pytest.raises(LiveModelFailed, match="No weights file"):
            loaded(model, jpeg(7))
        with pytest.raises(gr.Error, match="Live search is not available: .*No weights file"):
            page.live_frame(jpeg(8), LiveState())
    finally:
        model.close()
