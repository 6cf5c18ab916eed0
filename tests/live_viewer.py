"""A live camera viewer without a browser: for the benchmark's live load (scripts/bench_live.py), and for tests that
follow a long stream. The camera path as a person takes it is tested in Chromium (test_camera.py)."""

from __future__ import annotations

import base64
import json
import math
import itertools
import threading
import time
import uuid

from app import LIVE_EVERY


_ADDRESSES = itertools.count()


class ScriptedViewer(threading.Thread):
    """Gradio's protocol as the page's script speaks it (its requests, seen in Chromium's network log): the camera's
    JPEG frames as data URLs at the page's pace (a tick every LIVE_EVERY; a frame at a tick only once the last one
    was answered, as Gradio's webcam does), and, when an answer changes the live match State, a request for the
    results, as the page's change event makes. `answers` holds the results shown. Its own work is a few HTTP
    requests a frame: beside the app, what is measured is the app's."""

    def __init__(self, url: str, frames: list[bytes]):
        super().__init__(daemon=True)
        import httpx

        self.frames = ["data:image/jpeg;base64," + base64.b64encode(frame).decode() for frame in frames]
        # a visitor of its own where the app trusts a proxy hop (one live stream per address); else the socket's
        self.http = httpx.Client(base_url=url + "/gradio_api", timeout=120,
                                 headers={"X-Forwarded-For": f"198.51.100.{next(_ADDRESSES) % 250 + 1}"})
        config = httpx.get(url + "/config", timeout=60).json()
        values = {component["id"]: component.get("props", {}).get("value") for component in config["components"]}
        by_name = {dependency.get("api_name"): dependency for dependency in config["dependencies"]}
        self.stream, self.results = by_name["live_frame"], by_name["live_results"]
        self.camera = self.stream["targets"][0][0]
        self.match = self.results["targets"][0][0]  # the State whose change asks for the results
        self.results_inputs = [values.get(component) for component in self.results["inputs"]]  # States: None
        self.session = uuid.uuid4().hex
        self.answers = []  # (time.monotonic(), PAGE_OUTPUTS' values) of each results answer
        self.failure, self.done = None, threading.Event()

    @property
    def updates(self) -> int:
        return len(self.answers)

    def frame_data(self, number: int) -> list:
        return [{"url": self.frames[number % len(self.frames)]} if component == self.camera else None
                for component in self.stream["inputs"]]

    def run(self) -> None:
        try:
            self.watch()
        except Exception as error:  # noqa: BLE001 (reported by whoever waits for updates)
            self.failure = repr(error)

    def watch(self) -> None:
        joined = self.post("/queue/join", {"data": self.frame_data(0), "fn_index": self.stream["id"],
                                           "session_hash": self.session, "event_data": None,
                                           "trigger_id": self.camera})
        stream_id, sent, started = joined["event_id"], 1, time.monotonic()
        with self.http.stream("GET", "/queue/data", params={"session_hash": self.session}) as messages:
            for line in messages.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "unexpected_error":
                    raise RuntimeError(f"the app: {message.get('message')}")
                if message.get("msg") == "process_completed":
                    if not message.get("success"):
                        raise RuntimeError(f"an answer failed: {message.get('output')}")
                    if message.get("event_id") == stream_id:
                        raise RuntimeError("the app ended the stream")
                    outputs = message["output"]["data"]
                    if outputs[0] and outputs[0].get("value"):  # results were shown
                        self.answers.append((time.monotonic(), outputs))
                if message.get("event_id") != stream_id or message.get("msg") != "process_streaming":
                    continue
                if self.match in message["output"].get("changed_state_ids", []):
                    self.post("/queue/join", {"data": self.results_inputs, "fn_index": self.results["id"],
                                              "session_hash": self.session, "event_data": None,
                                              "trigger_id": self.match})
                if self.done.is_set():
                    self.post(f"/stream/{stream_id}/close", {})
                    return
                ticks = (time.monotonic() - started) / LIVE_EVERY
                time.sleep((math.floor(ticks) + 1 - ticks) * LIVE_EVERY)  # the next tick of the page's timer
                self.post(f"/stream/{stream_id}", {"data": self.frame_data(sent), "fn_index": self.stream["id"],
                                                   "session_hash": self.session, "event_data": None})
                sent += 1
        if not self.done.is_set():
            raise RuntimeError("the app closed the event stream")

    def post(self, path: str, body: dict) -> dict:
        response = self.http.post(path, json=body)
        response.raise_for_status()  # a refused join (queue full), an event gone
        return response.json()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)
        self.http.close()
