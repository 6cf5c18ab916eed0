"""The Live tab's handlers: a camera frame in, embedded by the live model when its viewer's turn comes
(live_turns.py) and the picture changed since the viewer's last searched frame; its results shown by the page's
search (page.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import gradio as gr
import numpy as np

from recommender.images import ImageError, to_rgb
from recommender.serve.live_model import LiveModel, LiveModelFailed
from recommender.serve.outputs import LiveOutputs, PageOutputs
from recommender.serve.page import Page, with_current_index
from recommender.serve.search import Recommender

__all__ = ["LIVE_FORGET_SECONDS", "LIVE_MIN_CHANGE", "LIVE_THUMBNAIL", "LastFrames", "LiveMatch", "LiveSearch",
           "LiveState"]

LIVE_THUMBNAIL = 16  # a live frame is compared with the last searched one at 16x16 grey levels
LIVE_FORGET_SECONDS = 10.0  # a live viewer's last searched frame (its 16x16 thumbnail) is forgotten this long after
# the viewer's last frame
LIVE_MIN_CHANGE = 6.0  # mean grey-level difference (0-255) below which a frame is "the same picture": not searched


@dataclass
class LiveState:
    """One live viewer's memory in Gradio's session state: counts and times, no picture (see LastFrames)."""
    last_turn: float = 0.0  # LiveTurns.clock() when it last had the live model, for the turns; 0: never, it goes first
    key: str = ""  # the viewer's key in LiveSearch.last_frames
    searched: int = 0
    skipped: int = 0  # unchanged since the last searched frame
    deferred: int = 0  # not searched: waited LiveTurns.max_wait in vain (other viewers' turns, photos), or model loading


@dataclass(eq=False)  # compared by identity: Gradio sees a new LiveMatch as a changed State, and fires its change
class LiveMatch:
    """A live frame's vector, from live_frame to live_results (through a State's change event)."""
    vector: np.ndarray
    started: float  # time.perf_counter() when its frame arrived


class LastFrames:
    """Each live viewer's last searched frame, as the 16x16 grey levels a new frame is compared with, by its key:
    forgotten LIVE_FORGET_SECONDS after the viewer's last frame. In Gradio's session state (a LiveState field) it
    would stay for as long as the session does, hours after the camera was turned off: a picture of whoever was in
    front of it."""

    def __init__(self, forget_after: float = LIVE_FORGET_SECONDS):
        self._frames: OrderedDict[str, tuple[np.ndarray | None, float]] = OrderedDict()  # oldest frame first
        self._forget_after = forget_after
        self._lock = threading.Lock()
        threading.Thread(target=self._forget_forever, daemon=True, name="forget-live-frames").start()

    def seen(self, viewer: str) -> np.ndarray | None:
        """A frame of `viewer` arrived: the thumbnail of its last searched frame, if it is still remembered."""
        with self._lock:
            self._forget_old()
            thumbnail, _ = self._frames.pop(viewer, (None, 0.0))
            self._frames[viewer] = (thumbnail, time.monotonic())
            return thumbnail

    def searched(self, viewer: str, thumbnail: np.ndarray) -> None:
        with self._lock:
            self._frames.pop(viewer, None)
            self._frames[viewer] = (thumbnail, time.monotonic())

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def _forget_old(self) -> None:
        deadline = time.monotonic() - self._forget_after
        while self._frames and next(iter(self._frames.values()))[1] < deadline:
            self._frames.popitem(last=False)

    def _forget_forever(self) -> None:  # also when no frame comes: the last viewer's picture goes too
        while True:
            time.sleep(self._forget_after / 4)
            with self._lock:
                self._forget_old()


class LiveSearch:
    """The Live tab's events, beside `page`'s: its index holder, and its live model's turns (page.turns), which
    photos hold back."""

    def __init__(self, page: Page, model: LiveModel | None = None):
        self.page, self.indexes, self.turns = page, page.indexes, page.turns
        self._model = model  # None: made, and started, when someone opens the Live tab
        self._model_lock = threading.Lock()
        self.last_frames = LastFrames()

    @with_current_index
    def live_opened(self, index: Recommender) -> None:
        """The Live tab was opened: start loading the live model (seconds), before the camera is on."""
        self._live_model(index).start()

    @with_current_index
    def live_frame(self, index: Recommender, frame: bytes | np.ndarray | None, live: LiveState | None) -> LiveOutputs:
        """A frame of the live camera (JPEG bytes from live_camera, decoded in memory only as far as needed, never
        written): embedded once the live model is free for it (it waits at most turns.max_wait) if the picture
        changed since the last searched frame.
        Writes only States: the viewer's LiveState, and a LiveMatch when a frame was embedded, whose change event
        (live_results) shows its results. A page output written with gr.skip() costs Gradio more time than an
        unsearched frame itself (it rebuilds the component's config), and with several viewers most frames are not
        searched."""
        live = live or LiveState()
        live.key = live.key or uuid.uuid4().hex  # here, not as a default: Gradio copies a State's value per session
        if frame is None:
            return LiveOutputs(live, gr.skip())
        if not self.turns.take(live.last_turn):  # waits before any decoding: a frame dropped is never decoded
            live.deferred += 1
            return LiveOutputs(live, gr.skip())
        forward_seconds = None  # until a forward gave a vector: then the model pauses (LiveTurns.give_back)
        try:
            # an undecodable or unchanged frame takes its turn too (it holds the model for a small decode only)
            live.last_turn = self.turns.clock()
            thumbnail, last = _thumbnail(frame), self.last_frames.seen(live.key)
            if last is not None and np.abs(thumbnail - last).mean() < LIVE_MIN_CHANGE:
                live.skipped += 1  # its results are up to date
                return LiveOutputs(live, gr.skip())
            started, began = time.perf_counter(), self.turns.clock()
            try:
                vector = self._live_model(index).embed_image(frame)
            except LiveModelFailed:  # why is in the server's log (live_model.py), not for visitors
                raise gr.Error("Live search is not available on this server; photo search still works.") from None
            live.last_turn = self.turns.clock()
            if vector is not None:
                forward_seconds = live.last_turn - began
        except ImageError:
            return LiveOutputs(live, gr.skip())
        finally:
            self.turns.give_back(forward_seconds)
        if vector is None:  # the live model is loading
            live.deferred += 1
            return LiveOutputs(live, gr.skip())
        self.last_frames.searched(live.key, thumbnail)
        live.searched += 1
        return LiveOutputs(live, LiveMatch(vector, started))

    @with_current_index
    def live_results(self, index: Recommender, match: LiveMatch | None, live: LiveState | None, k,
                     *filters) -> PageOutputs:
        """The results of a live frame that live_frame embedded."""
        if match is None:
            return PageOutputs.skip()
        live = live or LiveState()
        outputs = self.page.show(index, match.vector, k, filters, started=match.started)
        return outputs._replace(status=f"Live: {outputs.status} (frame {live.searched}; not searched: "
                                       f"{live.skipped} unchanged, {live.deferred} while the model was busy)")

    def _live_model(self, index: Recommender) -> LiveModel:
        """The live model, made at the first call. The same for every index: a refresh keeps the embedder (an index
        built by another one is refused, recommender/serve/refresh.py)."""
        with self._model_lock:
            if self._model is None:
                self._model = LiveModel(index.embedder.settings, index.embedder.identity)
            return self._model


def _thumbnail(frame) -> np.ndarray:
    """(LIVE_THUMBNAIL, LIVE_THUMBNAIL) float32 grey levels of a frame; a JPEG is decoded at 1/8 scale for it."""
    image = to_rgb(frame, draft_side=LIVE_THUMBNAIL).convert("L").resize((LIVE_THUMBNAIL, LIVE_THUMBNAIL))
    return np.asarray(image, dtype=np.float32)
