"""The live model (recommender/serve/live_model.py): the index's embedder in a process of its own, at the lowest CPU
priority, whose vectors are the app's."""

import io
import logging
import os
import struct
import sys
import textwrap
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from recommender.images import ImageError
import recommender.serve.live_model as live_model_module
from recommender.serve.live_model import LiveModel, LiveModelFailed
from recommender.serve.live import LiveSearch, LiveState
from recommender.serve.page import Page
from recommender.config import Settings
from recommender.serve.photos import QueryPhotos

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


@pytest.fixture(scope="module")
def live_model(recommender):
    model = LiveModel(recommender.embedder.settings, recommender.embedder.identity)  # one process: each loads TF
    yield model
    model.close()


class ChildThatAnswers(LiveModel):
    """A live model whose child is a few lines of Python: ready at once, then answers every frame with `answer`
    (bytes), or never."""

    def __init__(self, answer: bytes | None):
        super().__init__(Settings(weights="random"), {})
        self.answer = answer

    def _command(self):
        code = f"""
            import os, struct, sys, time
            out = sys.stdout.buffer
            out.write(b"R" + struct.pack("<I", 0)); out.flush()
            while True:
                size = struct.unpack("<I", sys.stdin.buffer.read(4))[0]
                sys.stdin.buffer.read(size)
                if {self.answer!r} is None:
                    time.sleep(3600)
                out.write({self.answer!r}); out.flush()
        """
        return [sys.executable, "-c", textwrap.dedent(code)]


class ChildThatLoads(LiveModel):
    """A live model whose child runs `loading` (Python lines) where the real one loads its model, then answers
    like ChildThatAnswers(answer)."""

    def __init__(self, loading: str, answer: bytes = b"M" + struct.pack("<I", 0)):
        super().__init__(Settings(weights="random"), {})
        self.loading, self.answer = loading, answer

    def _command(self):
        code = f"""
            import os, signal, struct, sys, time
            out = sys.stdout.buffer
            {self.loading}
            out.write(b"R" + struct.pack("<I", 0)); out.flush()
            while True:
                size = struct.unpack("<I", sys.stdin.buffer.read(4))[0]
                sys.stdin.buffer.read(size)
                out.write({self.answer!r}); out.flush()
        """
        return [sys.executable, "-c", textwrap.dedent(code)]


def reaped(pid: int, seconds: float = 10.0) -> bool:
    """Whether process `pid` is gone, not even a zombie (/proc keeps a zombie's entry until its parent waits), within
    `seconds`. Asks nothing of the LiveModel: its poll() would reap the child itself."""
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def state(pid: int) -> str:
    """The process's state letter in /proc (R, S, Z...), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


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


def test_close_ends_the_process(recommender):
    model = LiveModel(recommender.embedder.settings, recommender.embedder.identity)
    loaded(model, jpeg(6))
    pid = model.pid
    model.close()
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.fast
@pytest.mark.parametrize("answer", [b"hello, not an answer\n", b"V" + (10**9).to_bytes(4, "little"),
                                    b"V" + (8192).to_bytes(4, "little") + b"short", None])
def test_an_answer_that_is_not_ours_or_none_costs_the_child_not_the_app(answer, monkeypatch):
    """Garbage, a length no answer has, a truncated vector, or no answer at all: the frame is dropped within
    ANSWER_SECONDS, the child killed, and the next frame starts a new one (never a read that blocks for good)."""
    monkeypatch.setattr(live_model_module, "ANSWER_SECONDS", 2.0)
    model = ChildThatAnswers(answer)
    try:
        model.start()
        deadline = time.monotonic() + LOADING_SECONDS
        while not model.loaded:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid, started = model.pid, time.monotonic()
        assert model.embed_image(jpeg(9)) is None
        assert time.monotonic() - started < 10
        assert state(pid) == "gone", "the child killed on its answer was not reaped"  # killed and waited for
        assert model.embed_image(jpeg(9)) is None and model.pid != pid  # a new child, loading
    finally:
        model.close()


def test_weights_that_cannot_be_loaded_stop_live_search_with_the_reason_in_the_log(recommender, tmp_path, caplog):
    from dataclasses import replace

    missing = tmp_path / "weights.h5"
    model = LiveModel(replace(recommender.embedder.settings, weights=str(missing)), recommender.embedder.identity)
    live = LiveSearch(Page(recommender, QueryPhotos(lambda data: np.zeros(2048, np.float32))), model=model)
    try:
        with caplog.at_level(logging.ERROR, logger="recommender.serve.live_model"):
            with pytest.raises(LiveModelFailed, match="No weights file"):
                loaded(model, jpeg(7))
        assert "No weights file" in caplog.text  # the reason is for the server's log ...
        with pytest.raises(gr.Error, match="Live search is not available on this server") as shown:
            live.live_frame(jpeg(8), LiveState())
        assert "weights" not in str(shown.value)  # ... not for visitors
        assert not live.turns.taken  # the next frame may try again
    finally:
        model.close()


def test_a_model_other_than_the_apps_is_refused(recommender):
    identity = dict(recommender.embedder.identity, seed=recommender.embedder.identity["seed"] + 1)
    model = LiveModel(recommender.embedder.settings, identity)
    try:
        with pytest.raises(LiveModelFailed, match="differs from the app's in seed"):
            loaded(model, jpeg(10))
    finally:
        model.close()


@pytest.mark.fast
def test_a_child_that_never_gets_ready_is_killed_at_the_loading_deadline_and_reaped(monkeypatch, caplog):
    """A load that hangs (a stuck download, a deadlock in a library) must not keep live search off for good: at
    LOAD_SECONDS the child is killed and waited for, and the next frame starts a new one."""
    monkeypatch.setattr(live_model_module, "LOAD_SECONDS", 1.0)
    model = ChildThatLoads("time.sleep(3600)")
    try:
        with caplog.at_level(logging.WARNING, logger="recommender.serve.live_model"):
            model.start()
            pid = model.pid
            assert reaped(pid), f"the child still runs (state {state(pid)}) after its loading deadline"
        assert "not ready within 1 s" in caplog.text  # why, in the server's log
        assert model.embed_image(jpeg(11)) is None and model.pid != pid  # a new child, loading
    finally:
        model.close()


@pytest.mark.fast
@pytest.mark.parametrize("loading", ["sys.exit(3)",  # a crash (killed for memory, a library's abort)
                                     "out.write(b'F' + struct.pack('<I', 4) + b'why!'); out.flush(); sys.exit(0)"])
def test_a_child_that_fails_while_loading_is_reaped(loading, caplog):
    model = ChildThatLoads(loading)
    try:
        model.start()
        pid = model.pid
        assert reaped(pid), f"the child that failed to load is left as state {state(pid)}"
        if "why!" in loading:  # it said why: final, for the server's log
            with pytest.raises(LiveModelFailed, match="why!"):
                model.embed_image(jpeg(12))
        else:  # it ended without a word: the next frame tries again
            assert model.embed_image(jpeg(12)) is None and model.pid != pid
    finally:
        model.close()


@pytest.mark.fast
def test_a_child_that_dies_after_loading_is_reaped_without_waiting_for_a_frame():
    """Killed by the OOM killer, say, while nobody sends frames: no zombie is left until the next one."""
    model = ChildThatLoads("")
    try:
        model.start()
        deadline = time.monotonic() + LOADING_SECONDS
        while not model.loaded:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = model.pid
        os.kill(pid, 9)
        assert reaped(pid), f"the dead child is left as state {state(pid)}"
    finally:
        model.close()


@pytest.mark.fast
@pytest.mark.parametrize("loading", ["", "time.sleep(3600)"])  # loaded: it exits when asked; loading: it is killed
def test_close_reaps_the_child_loaded_or_not(loading, monkeypatch):
    """close() asks the child to exit (its stdin ends), waits EXIT_SECONDS, then kills it; either way it waits for
    it. A child still loading does not read its stdin: it is the one killed."""
    monkeypatch.setattr(live_model_module, "EXIT_SECONDS", 1.0)
    monkeypatch.setattr(live_model_module, "LOAD_SECONDS", 60.0)
    model = ChildThatLoads(loading)
    model.start()
    pid = model.pid
    time.sleep(0.3)
    model.close()
    assert state(pid) == "gone", "close() left the child behind"
    assert model.pid is None
