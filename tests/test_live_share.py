"""Live frames share the model (recommender/page.py, LIVE_MODEL_SHARE): after a live frame's forward none starts for
as long again, none starts while a photo is searched, and one viewer's frame never waits behind another's."""

import threading
import time

import numpy as np
import pytest

from recommender.page import LiveState, Page
from recommender.photos import QueryPhotos

FORWARD_SECONDS = 0.4  # the fake model's forward: long enough that "at once" is well inside it and its pause


class SlowModel:
    """Stands in for the embedder's live path (embed_image): counts forwards and how many ran at the same time."""

    def __init__(self, vector):
        self.vector, self.running, self.most_at_once, self.calls = vector, 0, 0, 0
        self.lock = threading.Lock()

    def embed_image(self, frame):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(FORWARD_SECONDS)
        with self.lock:
            self.running -= 1
        return self.vector  # a catalog product's: the real model's first call would take seconds more, unpredictably


@pytest.fixture
def page(recommender, monkeypatch):
    page = Page(recommender, QueryPhotos(lambda data: np.zeros(2048, np.float32)))
    model = SlowModel(np.array(recommender.index.vectors[0]))
    monkeypatch.setattr(page.recommender, "embedder", model)
    page.model = model
    return page


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # no two alike


def searched(outputs) -> bool:
    return isinstance(outputs[2], str) and outputs[2].startswith("Live:")


def test_a_live_forward_is_followed_by_a_pause_as_long(page):
    viewer = LiveState()
    assert searched(page.live_frame(frame(1), 3, "All", "All", "All", viewer))
    assert not searched(page.live_frame(frame(2), 3, "All", "All", "All", viewer))  # at once: in the pause
    assert viewer.deferred == 1 and viewer.searched == 1
    time.sleep(FORWARD_SECONDS * 1.2)
    assert searched(page.live_frame(frame(3), 3, "All", "All", "All", viewer))
    assert page.model.calls == 2


def test_frames_of_several_viewers_never_run_at_once_and_do_not_queue(page):
    viewers = [LiveState() for _ in range(4)]
    answers = {}

    def send(number):
        started = time.monotonic()
        answers[number] = (searched(page.live_frame(frame(10 + number), 3, "All", "All", "All", viewers[number])),
                           time.monotonic() - started)

    threads = [threading.Thread(target=send, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert page.model.most_at_once == 1 and sum(done for done, _ in answers.values()) == 1
    assert all(seconds < FORWARD_SECONDS / 2 for done, seconds in answers.values() if not done)  # none waited


def test_no_live_forward_starts_while_a_photo_is_searched(page):
    viewer = LiveState()
    with page._photo_turn():
        assert not searched(page.live_frame(frame(20), 3, "All", "All", "All", viewer))
    assert viewer.deferred == 1 and page.model.calls == 0
    assert searched(page.live_frame(frame(21), 3, "All", "All", "All", viewer))
