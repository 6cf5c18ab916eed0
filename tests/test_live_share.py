"""Live frames share the live model (recommender/page.py, LIVE_MODEL_SHARE): after a live frame's forward none starts
for as long again, none starts while a photo is embedded, the viewers take turns, and one viewer's frame never waits
behind another's. The live model itself (its own process, lowest priority) is tested in test_live_model.py."""

import base64
import io
import threading
import time

import numpy as np
import gradio as gr
import pytest
from gradio.data_classes import Base64ImageData
from PIL import Image

import recommender.page as page_module
from recommender.images import to_rgb
from recommender.page import LiveMatch, LiveState, Page, live_camera
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
    monkeypatch.setattr(page, "_live_embedder", lambda: model)  # the live model's process: test_live_model.py
    page.model = model
    return page


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # no two alike


def searched(outputs) -> bool:
    """Whether live_frame embedded the frame: it then writes a LiveMatch, whose change shows the results."""
    return isinstance(outputs[1], LiveMatch)


def test_a_live_forward_is_followed_by_a_pause_as_long(page):
    viewer = LiveState()
    assert searched(page.live_frame(frame(1), viewer))
    assert not searched(page.live_frame(frame(2), viewer))  # at once: in the pause
    assert viewer.deferred == 1 and viewer.searched == 1
    time.sleep(FORWARD_SECONDS * 1.2)
    assert searched(page.live_frame(frame(3), viewer))
    assert page.model.calls == 2


def test_frames_of_several_viewers_never_run_at_once_and_do_not_queue(page, monkeypatch):
    monkeypatch.setattr(page, "_live_turn", lambda viewer: True)  # every viewer's turn: the model alone decides
    viewers = [LiveState() for _ in range(4)]
    answers = {}

    def send(number):
        started = time.monotonic()
        answers[number] = (searched(page.live_frame(frame(10 + number), viewers[number])),
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
        assert not searched(page.live_frame(frame(20), viewer))
    assert viewer.deferred == 1 and page.model.calls == 0
    assert searched(page.live_frame(frame(21), viewer))


def test_the_free_model_goes_to_the_viewer_who_waited_longest(page):
    """Turns go in order of each viewer's last turn (or arrival), whoever's frame happens to come first: otherwise the
    forwards that fit between photos go to random viewers, and one can get none."""
    first, second, third = LiveState(), LiveState(), LiveState()
    with page._photo_turn():  # the first and second start streaming while a photo is searched
        for viewer in (first, second):
            assert not searched(page.live_frame(frame(60), viewer))
    time.sleep(0.01)
    assert not searched(page.live_frame(frame(61), third))  # the first's turn
    assert not searched(page.live_frame(frame(62), second))  # still the first's
    assert searched(page.live_frame(frame(63), first))
    order = []
    for _ in range(3):  # after each forward's pause, every viewer sends a frame, the last served first
        time.sleep(FORWARD_SECONDS * 1.2)
        for viewer in sorted((first, second, third), key=lambda viewer: -viewer.searched):
            if searched(page.live_frame(frame(64 + len(order)), viewer)):
                order.append(viewer)
    assert order == [second, third, first]


def test_a_viewer_gone_quiet_holds_no_turn(page, monkeypatch):
    monkeypatch.setattr(page_module, "LIVE_QUIET", FORWARD_SECONDS / 2)
    gone, staying = LiveState(), LiveState()
    with page._photo_turn():
        assert not searched(page.live_frame(frame(70), gone))  # its camera then stops
    assert not searched(page.live_frame(frame(71), staying))  # the gone viewer's turn
    time.sleep(FORWARD_SECONDS)
    assert searched(page.live_frame(frame(72), staying))


def test_an_unchanged_picture_passes_the_turn_on(page):
    still, moving = LiveState(), LiveState()
    assert searched(page.live_frame(frame(80), still))
    assert not searched(page.live_frame(frame(81), moving))  # in the pause
    time.sleep(FORWARD_SECONDS * 1.2)
    assert not searched(page.live_frame(frame(82), moving))  # the still viewer's turn
    assert not searched(page.live_frame(frame(80), still)) and still.skipped == 1
    assert searched(page.live_frame(frame(83), moving))


def test_the_live_stream_writes_only_states_and_the_results_follow_its_match(recommender):
    """Most live frames are dropped; for each, Gradio rebuilds the config of every non-State output that the stream
    writes, even with gr.skip() (over half of the server's work per dropped frame, in a py-spy profile). So the
    stream writes States only, and a LiveMatch's change event writes the page (Gradio fires it because a new
    LiveMatch hashes differently: it is compared by identity)."""
    import app

    demo = app.build_demo(recommender)
    stream = next(fn for fn in demo.fns.values() if fn.name == "live_frame")
    assert stream.outputs and all(isinstance(output, gr.State) for output in stream.outputs)
    match = next(output for output in stream.outputs if any(
        (output._id, "change") in fn.targets and fn.name == "live_results" for fn in demo.fns.values()))
    shows = next(fn for fn in demo.fns.values() if (match._id, "change") in fn.targets)
    assert len(shows.outputs) == 8 and not all(isinstance(output, gr.State) for output in shows.outputs)


def test_live_results_show_the_embedded_frames_neighbours(page, recommender):
    live = LiveState(searched=4, skipped=2, deferred=7)
    outputs = page.live_results(LiveMatch(np.array(recommender.index.vectors[5]), time.perf_counter()),
                                3, "All", "All", "All", live)
    assert outputs[4][0] == next(id for id, row in recommender.row_of_id.items() if row == 5)  # itself, first
    assert outputs[2].startswith("Live: 3 results") and "(frame 4; not searched: 2 unchanged, 7 while" in outputs[2]
    assert outputs[6] is not None and outputs[5] is None  # the vector is kept: a changed filter searches it again


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
        assert not searched(page.live_frame(jpeg_frame(40), viewer))
    assert decoded == [] and viewer.deferred == 1
    assert searched(page.live_frame(jpeg_frame(41), viewer))
    assert decoded == [{"draft_side": page_module.LIVE_THUMBNAIL}]


def test_the_live_camera_hands_over_the_frames_bytes_undecoded():
    camera = live_camera(sources=["webcam"], streaming=True, type="numpy")
    data = jpeg_frame(50)
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    assert camera.preprocess(Base64ImageData(url=url)) == data
    assert camera.preprocess(None) is None
