"""Visitors as the app sees them from outside: each from a loopback address of its own, with photos it has never
seen, through Gradio's HTTP routes (tests/test_fair_clients.py, scripts/bench_fair.py)."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image


def client(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.x.y.z is this machine)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=120)


def new_photo(seed: int) -> bytes:
    """A photo the app has never seen (no cached vector): every request runs the model."""
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def uploaded(http: httpx.Client, url: str, data: bytes) -> dict:
    answer = http.post(f"{url}/gradio_api/upload", files=[("files", ("photo.jpg", data, "image/jpeg"))])
    answer.raise_for_status()
    return {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}


def rest_recommend(http: httpx.Client, url: str, data: bytes) -> tuple[int, str]:
    """The photo uploaded, then Gradio's two-step REST call: (the status, the refusal or the event's stream)."""
    sent = http.post(f"{url}/gradio_api/upload", files=[("files", ("photo.jpg", data, "image/jpeg"))])
    if sent.status_code != 200:  # the upload refused (too many from this address): said as the call's refusal
        return sent.status_code, sent.text
    image = {"path": sent.json()[0], "meta": {"_type": "gradio.FileData"}}
    posted = http.post(f"{url}/gradio_api/call/recommend", json={"data": [image, 8, "All", "All", "All"]})
    if posted.status_code != 200:
        return posted.status_code, posted.text
    return 200, http.get(f"{url}/gradio_api/call/recommend/{posted.json()['event_id']}").text
