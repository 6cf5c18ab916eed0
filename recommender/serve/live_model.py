"""The live camera's copy of the model, in a process of its own at the lowest CPU priority (SCHED_IDLE on Linux,
nice 19 elsewhere). The kernel then runs a live frame's forward only on CPU time that nothing else wants: a photo
search, which a person waits for, takes the cores the moment it needs them, whenever its photo arrives. In the app's
own process a live forward would share TensorFlow's threads with the photo's, at the same priority.

The app starts it when someone opens the Live tab (loading takes seconds) and talks to it over pipes: a frame's
bytes in, a vector or an error message out, one frame at a time. No pickle crosses: the child is our own module, not
the app re-imported, and nothing from an index is unpickled. Before it answers anything it checks that its model is
the app's (the embedder's identity: weights and their hash, seed, size, precision). It exits when the app does (its
stdin closes).

    python -m recommender.serve.live_model SETTINGS_JSON IDENTITY_JSON   # what LiveModel starts
"""

from __future__ import annotations

import json
import os
import sys


def _lowest_priority() -> None:
    """For this process and every thread it starts from now on: they inherit it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        if hasattr(os, "nice"):
            os.nice(19)


if __name__ == "__main__":  # first, before numpy starts its BLAS threads and anything can print
    _lowest_priority()
    ANSWERS = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the libraries print (Keras's download progress) goes to stderr, not into the answers

import dataclasses  # noqa: E402
import logging  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from recommender.config import Settings  # noqa: E402
from recommender.embedder import DIMS  # noqa: E402
from recommender.images import ImageError  # noqa: E402

__all__ = ["LiveModel", "LiveModelFailed"]

READY, VECTOR, IMAGE_ERROR, MODEL_ERROR, FAILED = b"R", b"V", b"E", b"M", b"F"  # the child's answers: a tag, then a
LENGTH = struct.Struct("<I")  # length-prefixed body
MAX_ANSWER = 64 * 1024  # bytes of an answer other than a vector: a longer one means the stream is not ours
ANSWER_SECONDS = 60.0  # a frame not answered by then (the child hung, or starved for that long): the child is killed
LOAD_SECONDS = 300.0  # not ready by then: hung (a stuck read, a deadlock), killed; the next frame starts another. A
# load takes seconds on 2 cores (TensorFlow's import, ResNet50's build, the weights from Keras's cache), but at the
# lowest priority it gets only the CPU that photo searches leave: minutes of starving must not restart it in a loop
EXIT_SECONDS = 10.0  # close(): a child that has not exited by then, its stdin closed (loading, or hung), is killed
REAP_SECONDS = 5.0  # a killed child is gone within milliseconds; one stuck in the kernel is left to a later poll()
LOG = logging.getLogger(__name__)


class LiveModelFailed(RuntimeError):
    """The live model cannot be loaded (the message says why; it is for the server's log, not for visitors)."""


@dataclasses.dataclass(eq=False)
class _Child:
    """One live model process and what is known of it."""
    process: subprocess.Popen
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    failure: str | None = None  # why it could not load its model: final, no new process is started


class LiveModel:
    """Embeds live frames in the child process: `embed_image` as Embedder's, or None while the model loads."""

    def __init__(self, settings: Settings, identity: dict):
        # a relative weights path must name the app's file whatever the child's working directory
        weights = settings.weights if settings.weights in ("imagenet", "random") else str(Path(settings.weights)
                                                                                             .resolve())
        self.settings, self.identity = dataclasses.replace(settings, weights=weights), identity
        self._child: _Child | None = None
        self._lock = threading.Lock()  # one frame at a time on the pipes, and one child at a time

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child else None

    @property
    def loaded(self) -> bool:
        """Whether a process is running with its model loaded."""
        child = self._child
        return bool(child and child.ready.is_set() and child.process.poll() is None)

    def start(self) -> None:
        """Start a process and load the model in it, unless one is running or has failed; returns at once."""
        with self._lock:
            self._running_child()

    def _running_child(self) -> _Child:
        """The child, started if there is none or it ended (with self._lock held)."""
        child = self._child
        if child is not None and (child.failure or child.process.poll() is None):
            return child
        repo = str(Path(__file__).resolve().parents[1])
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
                           CUDA_VISIBLE_DEVICES="")  # never a GPU: the app's model may be on it
        process = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                   env=environment)
        self._child = child = _Child(process)
        threading.Thread(target=self._await_ready, args=(child,), daemon=True).start()
        return child

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "recommender.serve.live_model", json.dumps(dataclasses.asdict(self.settings)),
                json.dumps(self.identity)]

    def _await_ready(self, child: _Child) -> None:
        """The child's first answer, within LOAD_SECONDS; then, once it is ready, its end, to reap it whenever it
        comes (killed by us or by the OOM killer): a thread per child, blocked in waitpid."""
        try:
            tag, body = _read_answer(child.process.stdout, deadline=time.monotonic() + LOAD_SECONDS)
        except _ProtocolError as error:
            tag, body = b"", str(error).encode()
        except (OSError, ValueError):  # close() closed its stdout meanwhile
            tag, body = b"", b"closed"
        if tag == READY:
            child.ready.set()
            child.process.wait()  # poll() and wait(timeout) elsewhere still work meanwhile (they return the end)
            return
        if tag == FAILED:
            child.failure = body.decode(errors="replace")
            LOG.error("Live search is off: %s", child.failure)
        elif body == b"no answer in time":  # hung while loading: the next frame starts a new one
            LOG.warning("The live model's process was not ready within %g s (LOAD_SECONDS): killed.", LOAD_SECONDS)
        elif body != b"closed":  # killed while loading (memory?), or an answer that is not ours: the same
            LOG.warning("The live model's process ended while loading (%s).", body.decode(errors="replace") or
                        f"exit code {child.process.poll()}")
        _end(child.process)

    def embed_image(self, frame: bytes | np.ndarray) -> np.ndarray | None:
        """(2048,) float32 for an encoded image (or an RGB array), or None while the model is loading (a process is
        started if none is running: at the first call, or after one ended or hung). Raises images.ImageError for a
        frame that is not an image, and LiveModelFailed if the model cannot be loaded."""
        data = frame if isinstance(frame, bytes) else _png(frame)
        with self._lock:
            child = self._running_child()
            if child.failure:
                raise LiveModelFailed(child.failure)
            if not child.ready.is_set():
                return None
            try:
                child.process.stdin.write(LENGTH.pack(len(data)) + data)
                tag, body = _read_answer(child.process.stdout, deadline=time.monotonic() + ANSWER_SECONDS)
            except (OSError, _ProtocolError) as error:
                LOG.warning("The live model's process ended or broke its answers (%s); a new one starts with the "
                            "next frame.", error)
                _end(child.process)
                return None
        if tag == VECTOR:
            return np.frombuffer(body, np.float32).copy()
        if tag == IMAGE_ERROR:
            raise ImageError(**json.loads(body))
        LOG.warning("The live model could not embed a frame: %s", body.decode(errors="replace"))  # MODEL_ERROR
        return None

    def close(self) -> None:
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return
        child.process.stdin.close()  # the child's read ends: it exits
        try:
            child.process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            _end(child.process)
        child.process.stdout.close()


def _end(process: subprocess.Popen) -> None:
    """Kill the child and reap it (no zombie), waiting at most REAP_SECONDS: callers may hold the frames' lock."""
    process.kill()  # nothing if it was already reaped
    try:
        process.wait(timeout=REAP_SECONDS)
    except subprocess.TimeoutExpired:
        LOG.warning("The live model's process %d did not end within %g s of its kill; the next poll() reaps it.",
                    process.pid, REAP_SECONDS)


class _ProtocolError(Exception):
    pass


def _read_answer(stream, deadline: float | None) -> tuple[bytes, bytes]:
    """One answer of the child, checked: (tag, body). Raises _ProtocolError at the end of the stream, after the
    deadline, or for anything that is not an answer."""
    header = _read_exactly(stream, 1 + LENGTH.size, deadline)
    tag, (length,) = header[:1], LENGTH.unpack(header[1:])
    if tag not in (READY, VECTOR, IMAGE_ERROR, MODEL_ERROR, FAILED):
        raise _ProtocolError(f"unknown answer {header!r}")
    if (tag == VECTOR and length != DIMS * 4) or (tag != VECTOR and length > MAX_ANSWER):
        raise _ProtocolError(f"answer {tag!r} of {length} bytes")
    return tag, _read_exactly(stream, length, deadline)


def _read_exactly(stream, count: int, deadline: float | None) -> bytes:
    data = b""
    while len(data) < count:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
                raise _ProtocolError("no answer in time")
        chunk = stream.read(count - len(data))
        if not chunk:
            raise _ProtocolError("the process ended")
        data += chunk
    return data


def _png(frame: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(stream, tag: bytes, body: bytes) -> None:
    stream.write(tag + LENGTH.pack(len(body)) + body)
    stream.flush()


def serve(settings: Settings, identity: dict, requests, answers) -> None:
    """The child's loop: a frame's length and bytes in, its vector (or the error) out, until the input ends."""
    from recommender.embedder import Embedder

    try:
        embedder = Embedder(settings)
        differences = sorted(key for key, value in identity.items() if embedder.identity.get(key) != value)
        if differences:
            raise LiveModelFailed(f"its model differs from the app's in {', '.join(differences)} (was the weights "
                                  f"file replaced since the app started?)")
    except Exception as error:  # WeightsUnavailable with what to do, or anything else that stops the model
        return _write(answers, FAILED, f"the live model could not be loaded: {error}"[:MAX_ANSWER].encode())
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
        except Exception as error:  # the next frame may do: a reload costs seconds of CPU and the memory again
            _write(answers, MODEL_ERROR, f"{type(error).__name__}: {error}"[:MAX_ANSWER].encode())
        else:
            _write(answers, VECTOR, np.asarray(vector, np.float32).reshape(DIMS).tobytes())


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the app, which closes our stdin: no traceback here
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not leave a core file holding frames
    except (ImportError, ValueError, OSError):
        pass
    try:
        serve(Settings(**json.loads(sys.argv[1])), json.loads(sys.argv[2]), sys.stdin.buffer, ANSWERS)
    except BrokenPipeError:
        pass  # the app ended while we answered
