"""The live camera's copy of the model, in a process of its own at the lowest CPU priority (SCHED_IDLE on Linux,
nice 19 elsewhere). The kernel then runs a live frame's forward only on CPU time that nothing else wants: a photo
search, which a person waits for, takes the cores the moment it needs them, whenever its photo arrives. In the app's
own process a live forward would share TensorFlow's threads with the photo's, at the same priority.

The app starts it when someone opens the Live tab (loading takes seconds) and talks to it over pipes: a frame's
bytes in, a vector or an error message out, one frame at a time. No pickle crosses: the child is our own module, not
the app re-imported, and nothing from an index is unpickled. It exits when the app does (its stdin closes).

    python -m recommender.live_model SETTINGS_JSON   # what LiveModel starts
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import struct
import subprocess
import sys
import threading


def _lowest_priority() -> None:
    """For this process and every thread it starts from now on: they inherit it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


if __name__ == "__main__":
    _lowest_priority()  # before numpy starts its BLAS threads, and TensorFlow its own

import numpy as np  # noqa: E402

from .config import Settings  # noqa: E402
from .embedder import DIMS  # noqa: E402
from .images import ImageError  # noqa: E402

__all__ = ["LiveModel", "LiveModelFailed"]

READY, VECTOR, IMAGE_ERROR, FAILED = b"R", b"V", b"E", b"F"  # the child's answers: a tag, then a length-prefixed body
LENGTH = struct.Struct("<I")


class LiveModelFailed(RuntimeError):
    """The live model's process could not load the model (the message says why)."""


class LiveModel:
    """Embeds live frames in the child process: `embed_image` as Embedder's, or None while the model loads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._failure: str | None = None
        self._lock = threading.Lock()  # one frame at a time on the pipes

    def start(self) -> None:
        """Start the process, once, and load the model in it; returns at once."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            self._ready.clear()
            self._failure = None
            self._process = subprocess.Popen(
                [sys.executable, "-m", "recommender.live_model", json.dumps(dataclasses.asdict(self.settings))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(__file__)))
            threading.Thread(target=self._await_ready, args=(self._process,), daemon=True).start()

    def _await_ready(self, process: subprocess.Popen) -> None:
        tag, body = _read(process.stdout)
        if tag == READY:
            self._ready.set()
        else:
            self._failure = body.decode() if tag == FAILED else "the live model's process ended while loading"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def embed_image(self, frame: bytes | np.ndarray) -> np.ndarray | None:
        """(2048,) float32 for an encoded image (or an RGB array), or None while the model is loading (the process
        is started if it is not running: at the first call, or after it ended). Raises images.ImageError for a frame
        that is not an image, and LiveModelFailed if the model cannot be loaded."""
        if self._failure:
            raise LiveModelFailed(self._failure)
        if self._process is None or self._process.poll() is not None:
            self.start()
        if not self._ready.is_set():
            return None
        data = frame if isinstance(frame, bytes) else _png(frame)
        with self._lock:
            process = self._process
            try:
                process.stdin.write(LENGTH.pack(len(data)) + data)
                process.stdin.flush()
                tag, body = _read(process.stdout)
            except OSError:
                tag, body = b"", b""
        if tag == VECTOR:
            return np.frombuffer(body, np.float32).copy()
        if tag == IMAGE_ERROR:
            raise ImageError(**json.loads(body))
        logging.getLogger(__name__).warning("The live model's process ended; a new one starts with the next frame.")
        self._ready.clear()
        process.kill()
        return None

    def close(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.stdin.close()  # the child's read ends: it exits
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
            self._process = None
            self._ready.clear()


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _read(stream) -> tuple[bytes, bytes]:
    """One message: (tag, body), or (b"", b"") at the end of the stream."""
    header = stream.read(1 + LENGTH.size)
    if len(header) < 1 + LENGTH.size:
        return b"", b""
    (length,) = LENGTH.unpack(header[1:])
    return header[:1], stream.read(length)


def _write(stream, tag: bytes, body: bytes) -> None:
    stream.write(tag + LENGTH.pack(len(body)) + body)
    stream.flush()


def serve(settings: Settings, requests, answers) -> None:
    """The child's loop: a frame's length and bytes in, its vector (or the error) out, until the input ends."""
    from .embedder import Embedder

    try:
        embedder = Embedder(settings)
    except Exception as error:  # WeightsUnavailable with what to do, or anything else that stops the model
        return _write(answers, FAILED, f"the live model could not be loaded: {error}".encode())
    _write(answers, READY, b"")
    while True:
        header = requests.read(LENGTH.size)
        if len(header) < LENGTH.size:
            return  # the app closed the pipe: it ended or closed the live model
        frame = requests.read(LENGTH.unpack(header)[0])
        try:
            vector = embedder.embed_image(frame)
        except ImageError as error:
            _write(answers, IMAGE_ERROR, json.dumps({"message": str(error), "reason": error.reason}).encode())
            continue
        _write(answers, VECTOR, np.asarray(vector, np.float32).reshape(DIMS).tobytes())


if __name__ == "__main__":
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the libraries print (Keras's download progress) goes to stderr, not into the answers
    sys.stdout = sys.stderr
    serve(Settings(**json.loads(sys.argv[1])), sys.stdin.buffer, answers)
