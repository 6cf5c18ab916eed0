"""Live frames share the live model (recommender/serve/live.py, its turns by live_turns.py, LIVE_MODEL_SHARE): after a
live frame's forward none starts for as long again, none starts while a photo is embedded, the viewers take turns,
and a frame waits for its turn at most LiveTurns.max_wait; here through the Live tab's handlers, in
test_live_turns.py through LiveTurns alone. The live model itself (its own process, lowest priority) is tested in
test_live_model.py."""

import base64
import threading
import time

import numpy as np
import gradio as gr
import pytest
from gradio.data_classes import Base64ImageData

import recommender.serve.live as live_module
from fake_camera import jpeg
from recommender.images import to_rgb
from recommender.serve.gradio_patches import live_camera
from recommender.serve.live import LIVE_THUMBNAIL, LiveMatch, LiveSearch, LiveState
from recommender.serve.live_turns import LiveTurns
from recommender.serve.outputs import PageOutputs
from recommender.serve.page import Page
from recommender.serve.photos import QueryPhotos

@pytest.fixture(scope="module")
def recommender(stand_in_recommender):
    """The live model is a SlowModel here (test_live_model.py tests the real one): the index is conftest's stand-in
    one, built by the real build pipeline with a numpy function for the model."""
    return stand_in_recommender


FORWARD_SECONDS = 0.4  # the fake model's forward: long enough that "at once" is well inside it and its pause


class SlowModel:
    """Stands in for the embedder's live path (embed_image): counts forwards and how many ran at the same time."""

    def __init__(self, vector):
        self.vector, self.running, self.most_at_once, self.calls = vector, 0, 0, 0
        self.forwards = []  # (frame, started, ended), time.monotonic()
        self.lock = threading.Lock()

    def embed_image(self, frame):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        started = time.monotonic()
        time.sleep(FORWARD_SECONDS)
        with self.lock:
            self.running -= 1
            self.forwards.append((frame, started, time.monotonic()))
        return self.vector  # a catalog product's: the real model's first call would take seconds more, unpredictably


@pytest.fixture
def waiting_at_most(recommender):
    """waiting_at_most(seconds): the Live tab's handlers (LiveSearch) of a Page, whose frames wait at most `seconds`
    for their turn at a SlowModel (the live model's process: test_live_model.py), which is `.model`."""
    def live_search(max_wait: float) -> LiveSearch:
        page = Page(recommender, QueryPhotos(lambda data: np.zeros(2048, np.float32)), LiveTurns(max_wait=max_wait))
        model = SlowModel(np.array(recommender.index.vectors[0]))
        live = LiveSearch(page, model=model)
        live.model = model
        return live
    return live_search


@pytest.fixture
def live(waiting_at_most):
    """The Live tab's handlers, whose frames are dropped at once when the model is not free, so that each test sees
    the decision when it sends a frame; the tests of the wait and of the turns wait longer (waiting_at_most)."""
    return waiting_at_most(0.0)


@pytest.fixture
def decoded(monkeypatch) -> list[dict]:
    """The options of each decoding of a frame by the page (to_rgb)."""
    calls = []
    monkeypatch.setattr(live_module, "to_rgb", lambda source, **options: calls.append(options) or to_rgb(source,
                                                                                                           **options))
    return calls


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # no two alike


def searched(outputs) -> bool:
    """Whether live_frame embedded the frame: it then writes a LiveMatch, whose change shows the results."""
    return isinstance(outputs.match, LiveMatch)


def test_a_live_forward_is_followed_by_a_pause_as_long(live):
    viewer = LiveState()
    assert searched(live.live_frame(frame(1), viewer))
    assert not searched(live.live_frame(frame(2), viewer))  # at once: in the pause
    assert viewer.deferred == 1 and viewer.searched == 1
    time.sleep(FORWARD_SECONDS * 1.2)
    assert searched(live.live_frame(frame(3), viewer))
    assert live.model.calls == 2


@pytest.mark.fast
def test_frames_of_several_viewers_never_run_at_once(live):
    """With no wait allowed (the fixture), of four frames sent at once one is searched and the others are answered
    at once; the tests below let frames wait."""
    viewers = [LiveState() for _ in range(4)]
    answers = {}

    def send(number):
        started = time.monotonic()
        answers[number] = (searched(live.live_frame(frame(10 + number), viewers[number])),
                           time.monotonic() - started)

    threads = [threading.Thread(target=send, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert live.model.most_at_once == 1 and sum(done for done, _ in answers.values()) == 1
    assert all(seconds < FORWARD_SECONDS / 2 for done, seconds in answers.values() if not done)  # none waited


def test_a_frame_that_meets_a_busy_model_waits_for_the_end_of_its_pause(waiting_at_most):
    """Gradio's webcam sends a viewer's next frame only once the last one is answered: a frame that waits for the
    model, rather than being dropped at once, spares the browser and the server the frames that would be dropped."""
    live = waiting_at_most(4 * FORWARD_SECONDS)
    first, second = LiveState(), LiveState()
    assert searched(live.live_frame(frame(90), first))
    sent = time.monotonic()
    assert searched(live.live_frame(frame(91), second))  # in the first's pause: it waits, then is searched
    (_, first_started, first_ended), (_, second_started, _) = live.model.forwards
    pause = first_ended - first_started  # as long as the forward, as measured
    assert pause * 0.95 <= second_started - first_ended <= pause + 0.15  # the pause, no more
    assert second_started - sent >= FORWARD_SECONDS * 0.9 and second.deferred == 0 and live.model.most_at_once == 1


@pytest.mark.fast
def test_a_frame_waits_at_most_live_max_wait_and_is_then_dropped_undecoded(waiting_at_most, decoded):
    live = waiting_at_most(0.3)
    viewer = LiveState()
    with live.turns.photo():  # a photo embedded all the while
        sent = time.monotonic()
        assert not searched(live.live_frame(jpeg_frame(92), viewer))
        waited = time.monotonic() - sent
    assert 0.3 <= waited < 0.5 and viewer.deferred == 1 and decoded == [] and live.model.calls == 0


@pytest.mark.fast
def test_a_frame_waiting_for_a_photo_is_searched_once_the_photo_is_embedded(waiting_at_most):
    live = waiting_at_most(2.0)
    photo_started, photo_done = threading.Event(), []

    def embed_a_photo():
        with live.turns.photo():
            photo_started.set()
            time.sleep(0.3)
            photo_done.append(time.monotonic())

    photo = threading.Thread(target=embed_a_photo)
    photo.start()
    photo_started.wait()
    assert searched(live.live_frame(frame(93), LiveState()))
    photo.join()
    (_, started, _), = live.model.forwards
    assert 0 <= started - photo_done[0] < 0.15


@pytest.mark.fast
def test_no_live_forward_starts_while_a_photo_is_searched(live):
    viewer = LiveState()
    with live.turns.photo():
        assert not searched(live.live_frame(frame(20), viewer))
    assert viewer.deferred == 1 and live.model.calls == 0
    assert searched(live.live_frame(frame(21), viewer))


def waiting_while_a_photo_is_embedded(live, sends: list, photo_seconds: float = 0.3) -> float:
    """Send `sends` ((frame, LiveState) pairs) one after another, 50 ms apart, each from its own thread, while a photo
    is embedded; returns when every one was answered, with the time.monotonic() at which the photo ended."""
    answers = []
    threads = [threading.Thread(target=lambda picture=picture, viewer=viewer: answers.append(
        live.live_frame(picture, viewer))) for picture, viewer in sends]
    with live.turns.photo():
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        time.sleep(max(photo_seconds - 0.05 * len(threads), 0))
        photo_ended = time.monotonic()
    for thread in threads:
        thread.join()
    assert len(answers) == len(sends)
    return photo_ended


def forward_order(live, frames) -> list[int]:
    """Which of `frames` the model embedded, in the order their forwards started."""
    return [number for _, number in sorted((started, number) for number, picture in enumerate(frames)
                                           for shown, started, _ in live.model.forwards
                                           if np.array_equal(shown, picture))]


def test_the_free_model_goes_to_the_waiting_viewer_whose_last_turn_is_oldest(waiting_at_most):
    """Not to the frame that came first: otherwise the forwards that fit between photos go to random viewers, and one
    of four can get none for many seconds."""
    live = waiting_at_most(10 * FORWARD_SECONDS)
    first, second, third = LiveState(), LiveState(), LiveState()
    for number, viewer in enumerate((first, second, third)):  # each has had a turn: the first longest ago
        assert searched(live.live_frame(frame(60 + number), viewer))
    frames = [frame(70 + number) for number in range(3)]
    waiting_while_a_photo_is_embedded(live, [(frames[2], third), (frames[1], second), (frames[0], first)])
    assert forward_order(live, frames) == [0, 1, 2] and live.model.most_at_once == 1
    assert [viewer.searched for viewer in (first, second, third)] == [2, 2, 2]


def test_a_new_viewer_goes_first(waiting_at_most):
    live = waiting_at_most(10 * FORWARD_SECONDS)
    regular, new = LiveState(), LiveState()
    assert searched(live.live_frame(frame(75), regular))
    frames = [frame(76), frame(77)]
    waiting_while_a_photo_is_embedded(live, [(frames[0], regular), (frames[1], new)])
    assert forward_order(live, frames) == [1, 0]


def test_an_unchanged_picture_passes_the_turn_on_at_once(waiting_at_most):
    live = waiting_at_most(10 * FORWARD_SECONDS)
    still, moving = LiveState(), LiveState()
    assert searched(live.live_frame(frame(80), still))
    assert searched(live.live_frame(frame(81), moving))
    photo_ended = waiting_while_a_photo_is_embedded(live, [(frame(82), moving), (frame(80), still)],
                                                    photo_seconds=2 * FORWARD_SECONDS)  # the last pause is over
    assert still.skipped == 1 and still.searched == 1 and moving.searched == 2  # the still one's turn came first
    (_, started, _), = [forward for forward in live.model.forwards if np.array_equal(forward[0], frame(82))]
    assert started - photo_ended < 0.15  # no pause after a frame that was not searched


def test_two_frames_of_one_viewer_waiting_at_once_are_both_answered(waiting_at_most):
    """Stop, then Record again at once: the old stream's frame may still wait when the new one's first comes, with
    the same LiveState."""
    live = waiting_at_most(10 * FORWARD_SECONDS)
    viewer = LiveState()
    frames = [frame(85), frame(86)]
    waiting_while_a_photo_is_embedded(live, [(frames[0], viewer), (frames[1], viewer)])
    assert forward_order(live, frames) == [0, 1] and viewer.searched == 2


@pytest.mark.fast
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
    assert len(shows.outputs) == len(PageOutputs._fields) and not all(isinstance(output, gr.State) for output in shows.outputs)


@pytest.mark.fast
def test_live_results_show_the_embedded_frames_neighbours(live, recommender):
    viewer = LiveState(searched=4, skipped=2, deferred=7)
    outputs = live.live_results(LiveMatch(np.array(recommender.index.vectors[5]), time.perf_counter()), viewer,
                                3, "All", "All", "All")
    assert outputs.shown_ids[0] == next(id for id, row in recommender.row_of_id.items() if row == 5)  # itself, first
    assert outputs.status.startswith("Live: 3 results")
    assert "(frame 4; not searched: 2 unchanged, 7 while" in outputs.status
    # the vector is kept: a changed filter searches it again
    assert outputs.query is not None and outputs.product_id is None
    # a live frame's results are not steered: no marks, and the steering bar offers no toggles (steering.py)
    assert not outputs.marks and outputs.steer["mode"] == "live" and len(outputs.steer["ids"]) == 3


def jpeg_frame(seed: int) -> bytes:
    return jpeg(frame(seed))


@pytest.mark.fast
def test_a_frame_the_model_has_no_time_for_is_never_decoded(live, decoded):
    """Frames reach the handler as the browser's JPEG bytes (live_camera); one dropped because the model is busy
    costs no decoding, and one searched is decoded small for the unchanged-picture check, then for the model."""
    viewer = LiveState()
    with live.turns.photo():
        assert not searched(live.live_frame(jpeg_frame(40), viewer))
    assert decoded == [] and viewer.deferred == 1
    assert searched(live.live_frame(jpeg_frame(41), viewer))
    assert decoded == [{"draft_side": LIVE_THUMBNAIL}]


@pytest.mark.fast
def test_the_live_camera_hands_over_the_frames_bytes_undecoded():
    camera = live_camera(sources=["webcam"], streaming=True, type="numpy")
    data = jpeg_frame(50)
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    assert camera.preprocess(Base64ImageData(url=url)) == data
    assert camera.preprocess(None) is None
