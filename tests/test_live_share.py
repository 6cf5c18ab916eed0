"""Live frames share the model (recommender/page.py, LIVE_MODEL_SHARE): after a live frame's forward none starts for
as long again, none starts while a photo is searched or about to be (its upload arrived, PHOTO_LEAD) unless live
viewers have waited LIVE_MAX_WAIT, and one viewer's frame never waits behind another's."""

import base64
import io
import threading
import time

import numpy as np
import pytest
from gradio.data_classes import Base64ImageData
from PIL import Image

import recommender.page as page_module
from recommender.images import to_rgb
from recommender.page import LiveState, Page, live_camera
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


def test_a_photo_upload_goes_first_but_live_viewers_are_not_starved(page, monkeypatch):
    """From a photo's upload, live frames wait (its search is about to start), but not longer than LIVE_MAX_WAIT since
    the last live forward: photos sent without pause would otherwise stop every live viewer."""
    monkeypatch.setattr(page_module, "LIVE_MAX_WAIT", FORWARD_SECONDS * 4)
    viewer = LiveState()
    page.photos.arriving()  # before any live forward: the last one "ended" long ago, so live may go
    assert searched(page.live_frame(frame(30), 3, "All", "All", "All", viewer))
    time.sleep(FORWARD_SECONDS * 1.2)  # past the forward's pause
    page.photos.arriving()
    assert not searched(page.live_frame(frame(31), 3, "All", "All", "All", viewer))  # the photo goes first
    time.sleep(FORWARD_SECONDS * 3)  # LIVE_MAX_WAIT since the last live forward ended, within PHOTO_LEAD
    page.photos.arriving()
    assert searched(page.live_frame(frame(32), 3, "All", "All", "All", viewer))  # live is not starved
    assert viewer.deferred == 1 and page.model.calls == 2



def jpeg_frame(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame(seed)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_frame_the_model_has_no_time_for_is_never_decoded(page, monkeypatch):
    """Frames reach the handler as the browser's JPEG bytes (live_camera); one dropped because the model is busy
    costs no decoding, and one searched is decoded small for the unchanged-picture check, then for the model."""
    decoded = []
    monkeypatch.setattr(page_module, "to_rgb", lambda source, **options: decoded.append(options) or to_rgb(source,
                                                                                                              **options))
    viewer = LiveState()
    with page._photo_turn():
        assert not searched(page.live_frame(jpeg_frame(40), 3, "All", "All", "All", viewer))
    assert decoded == [] and viewer.deferred == 1
    assert searched(page.live_frame(jpeg_frame(41), 3, "All", "All", "All", viewer))
    assert decoded == [{"draft_side": page_module.LIVE_THUMBNAIL}]


def test_the_live_camera_hands_over_the_frames_bytes_undecoded():
    camera = live_camera(sources=["webcam"], streaming=True, type="numpy")
    data = jpeg_frame(50)
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    assert camera.preprocess(Base64ImageData(url=url)) == data
    assert camera.preprocess(None) is None
