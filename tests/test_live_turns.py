"""The live model's turns (recommender/serve/live_turns.py) alone, with their clock and limits given: a pause after
each forward as long as the share says, one frame at a time, none while a photo is embedded, the waiting frame whose
viewer's turn is oldest first, a wait that ends at max_wait. The same through the Live tab's handlers, with a model
that takes its time: test_live_share.py."""

import threading
import time

import pytest

from recommender.serve.live_turns import LiveTurns


class Clock:
    """A clock that moves only when told: the pause after a forward, checked without waiting for it."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_after_a_forward_no_turn_is_given_for_as_long_again_at_share_one_half(clock):
    turns = LiveTurns(max_wait=0.0, share=0.5, clock=clock)
    assert turns.take(last_turn=0.0)
    turns.give_back(forward_seconds=2.0)
    clock.now += 1.999
    assert not turns.take(last_turn=0.0)
    clock.now += 0.001
    assert turns.take(last_turn=0.0)


def test_a_share_of_one_quarter_pauses_three_times_the_forward(clock):
    turns = LiveTurns(max_wait=0.0, share=0.25, clock=clock)
    assert turns.take(last_turn=0.0)
    turns.give_back(forward_seconds=1.0)
    clock.now += 2.9
    assert not turns.take(last_turn=0.0)
    clock.now += 0.1
    assert turns.take(last_turn=0.0)


def test_a_turn_without_a_forward_passes_the_model_on_at_once(clock):
    turns = LiveTurns(max_wait=0.0, clock=clock)
    assert turns.take(last_turn=0.0)
    turns.give_back()  # an unchanged or undecodable frame, or the model loading
    assert turns.take(last_turn=0.0)


def test_one_frame_holds_the_model_at_a_time(clock):
    turns = LiveTurns(max_wait=0.0, clock=clock)
    assert not turns.taken
    assert turns.take(last_turn=0.0)
    assert turns.taken and not turns.take(last_turn=0.0)
    turns.give_back()
    assert not turns.taken


def test_no_turn_is_given_while_a_photo_is_embedded(clock):
    turns = LiveTurns(max_wait=0.0, clock=clock)
    with turns.photo():
        with turns.photo():  # two photos at once
            assert not turns.take(last_turn=0.0)
        assert not turns.take(last_turn=0.0)
    assert turns.take(last_turn=0.0)


def test_a_frame_waits_at_most_max_wait():
    turns = LiveTurns(max_wait=0.2)
    with turns.photo():
        started = time.monotonic()
        assert not turns.take(last_turn=0.0)
        waited = time.monotonic() - started
    assert 0.2 <= waited < 0.35 and turns.waiting == 0 and not turns.taken


def test_a_waiting_frame_takes_the_model_as_soon_as_the_photo_is_embedded():
    turns = LiveTurns(max_wait=2.0)
    photo_started, photo_ended = threading.Event(), []

    def embed_a_photo():
        with turns.photo():
            photo_started.set()
            time.sleep(0.2)
            photo_ended.append(time.monotonic())

    photo = threading.Thread(target=embed_a_photo)
    photo.start()
    photo_started.wait()
    assert turns.take(last_turn=0.0)
    took = time.monotonic()
    photo.join()
    assert 0 <= took - photo_ended[0] < 0.1


def test_a_frame_that_meets_the_pause_waits_for_its_end_only():
    turns = LiveTurns(max_wait=2.0, share=0.5)
    assert turns.take(last_turn=0.0)
    turns.give_back(forward_seconds=0.3)
    given = time.monotonic()
    assert turns.take(last_turn=0.0)
    assert 0.3 * 0.95 <= time.monotonic() - given < 0.3 + 0.1


def took_turns(turns: LiveTurns, last_turns: list[float]) -> list[float]:
    """Frames whose viewers had their last turns at `last_turns` wait, each in its own thread, while a photo is
    embedded; each holds the model briefly once its turn comes. The last turns in the order the turns came."""
    order, lock = [], threading.Lock()

    def frame(last_turn):
        assert turns.take(last_turn)
        with lock:
            order.append(last_turn)
        time.sleep(0.02)
        turns.give_back()

    threads = [threading.Thread(target=frame, args=(last_turn,)) for last_turn in last_turns]
    with turns.photo():
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while turns.waiting < len(threads) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert turns.waiting == len(threads)
    for thread in threads:
        thread.join()
    return order


def test_the_free_model_goes_to_the_waiting_frame_whose_viewer_had_its_turn_longest_ago():
    """Not to the frame that came first: otherwise the forwards that fit between photos go to random viewers, and
    one of four can get none for many seconds."""
    assert took_turns(LiveTurns(max_wait=5.0), [30.0, 10.0, 40.0, 20.0]) == [10.0, 20.0, 30.0, 40.0]


def test_a_new_viewer_goes_first():
    assert took_turns(LiveTurns(max_wait=5.0), [10.0, 0.0]) == [0.0, 10.0]


def test_two_frames_of_one_viewer_are_both_answered():
    """Stop, then Record again at once: two frames with the same last turn wait together."""
    assert took_turns(LiveTurns(max_wait=5.0), [10.0, 10.0]) == [10.0, 10.0]
