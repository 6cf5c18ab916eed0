"""Who may run the live model next: live frames take turns, oldest turn first, give way to photos, and leave the
model idle after each forward for a share of its time (LiveTurns)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["LIVE_MAX_WAIT", "LIVE_MODEL_SHARE", "LiveTurns"]

LIVE_MODEL_SHARE = 0.5  # of the live model's time, at most, for the live frames of all viewers together: after a
# live frame's forward, none starts for as long again. The live model runs at the lowest CPU priority (live_model.py),
# so photos get the cores first without this; it bounds what live viewers take of the CPU, however many they are,
# for whatever else runs on the machine. No live forward starts while a photo is embedded either: at the lowest
# priority it would still share the caches and memory bandwidth with the photo's.
LIVE_MAX_WAIT = 1.0  # seconds a live frame waits for the live model and its viewer's turn, then is dropped (stale).
# The page's camera sends its next frame only once this one is answered: a frame that waits, rather than one dropped
# at once, spares the viewer's browser and this server the frames that would meet a busy model, and tells who is
# waiting for a turn (LiveTurns.take)


class LiveTurns:
    """The live model's turns, shared by every live viewer and every photo search of the app:

        with turns.photo():                 # around a photo's embedding: no live forward starts meanwhile
            ...
        if turns.take(viewer_last_turn):    # waits at most max_wait; False: the frame is dropped
            try:
                ...                         # the frame's forward, if any
            finally:
                turns.give_back(forward_seconds)   # None when no forward ran

    `clock` gives the times (seconds, like time.monotonic, which is the default) of the turns, of the pause after a
    forward and of the wait's deadline; the wait itself sleeps in real seconds between its looks at the clock."""

    def __init__(self, max_wait: float = LIVE_MAX_WAIT, share: float = LIVE_MODEL_SHARE,
                 clock: Callable[[], float] = time.monotonic):
        self.max_wait, self.share, self.clock = max_wait, share, clock
        self._changed = threading.Condition()  # notified when the model or the turn may have come free
        # the fields below change only with _changed held
        self._taken = False  # a live frame holds the model
        self._resumes = 0.0  # clock() from which a live forward may start: the pause after the last one
        self._waiting: dict[object, float] = {}  # a ticket per frame waiting now -> its viewer's last turn
        self._photos = 0  # photos being embedded now

    @property
    def taken(self) -> bool:
        """Whether a live frame holds the model now."""
        with self._changed:
            return self._taken

    @property
    def waiting(self) -> int:
        """How many live frames wait for a turn now."""
        with self._changed:
            return len(self._waiting)

    @contextmanager
    def photo(self) -> Iterator[None]:
        """Around a photo's embedding (and its search: a live forward started meanwhile would share the CPU with
        it): no live forward starts; the frames waiting are woken after it."""
        with self._changed:
            self._photos += 1
        try:
            yield
        finally:
            with self._changed:
                self._photos -= 1
                self._changed.notify_all()

    def take(self, last_turn: float) -> bool:
        """Wait, at most max_wait, until the model is free and, of the frames waiting, this one's viewer had its last
        turn (`last_turn`, a clock() time; 0.0 for a new viewer, who goes first) longest ago; then hold the model for
        this frame until give_back. Whether the turn came. Without the order, the forwards that fit between photos
        go to whichever frame happens to come first, and one viewer of four can get none for many seconds."""
        # a ticket per frame, not per viewer: one viewer may have two frames waiting (Record clicked again at once)
        ticket = object()
        with self._changed:
            deadline = self.clock() + self.max_wait
            self._waiting[ticket] = last_turn
            try:
                while True:
                    first = min(self._waiting, key=self._waiting.__getitem__)
                    if first is ticket and self._free():
                        self._taken = True
                        return True
                    now = self.clock()
                    if now >= deadline:
                        return False
                    # woken when a forward, a turn or a photo ends; the pause's end is waited for
                    pause = self._resumes - now
                    self._changed.wait(min(deadline - now, pause if pause > 0 else self.max_wait))
            finally:  # whoever is first next is woken when the model frees (or waits for the pause's end)
                del self._waiting[ticket]

    def give_back(self, forward_seconds: float | None = None) -> None:
        """The frame that took the model is done with it. If it ran a forward of `forward_seconds`, none starts for
        forward_seconds * (1 - share) / share after it (as long again at share 0.5); a frame that ran none (unchanged,
        undecodable, or the model loading) passes the turn on at once."""
        with self._changed:
            if forward_seconds is not None:
                self._resumes = self.clock() + forward_seconds * (1 - self.share) / self.share
            self._taken = False
            self._changed.notify_all()

    def _free(self) -> bool:
        """No photo being embedded, the last live forward's pause over, no other live frame holding the model."""
        return not (self._photos or self.clock() < self._resumes or self._taken)
