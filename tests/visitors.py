"""Visitors as the app sees them from outside: each from a loopback address of its own, with photos it has never
seen, through Gradio's HTTP routes (tests/test_fair_clients.py, scripts/bench_fair.py)."""

from __future__ import annotations

import io
import itertools
import threading
import time

import httpx
import numpy as np
import numpy.random  # noqa: F401 - now: numpy imports it lazily, and 48 threads doing so at once recurse
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


def search_flood(url: str, address: str, connections: int, stop, counts: dict, seeds) -> list:
    """Threads (not started) that each send a new photo's search from `address` in a loop until `stop` is set,
    counting "served" and "refused" in `counts`; `seeds` an iterator of photo seeds, shared."""
    lock = threading.Lock()

    def work():
        with client(address) as http:
            while not stop.is_set():
                with lock:
                    seed = next(seeds)
                status, text = rest_recommend(http, url, new_photo(seed))
                with lock:
                    key = "served" if status == 200 and "event: complete" in text else "refused"
                    counts[key] = counts.get(key, 0) + 1

    return [threading.Thread(target=work, daemon=True) for _ in range(connections)]


def upload_flood(url: str, address: str, connections: int, uploads: int, per_request: int, counts: dict) -> list:
    """Threads (not started) that send `uploads` tiny files from `address`, `per_request` a request, counting the
    answers' statuses in `counts`, each request's milliseconds in counts["ms"] (a refused one's also in
    counts["refused_ms"]), and the first three refusals' texts in counts["messages"]."""
    lock, sent = threading.Lock(), [0]
    for key in ("ms", "refused_ms", "messages"):
        counts.setdefault(key, [])

    def work():
        with client(address) as http:
            while True:
                with lock:
                    if sent[0] >= uploads:
                        return
                    first = sent[0]
                    sent[0] += per_request
                files = [("files", (f"{first + n}.jpg", f"tiny {first + n}".encode(), "image/jpeg"))
                         for n in range(per_request)]
                started = time.perf_counter()
                answer = http.post(f"{url}/gradio_api/upload", files=files)
                milliseconds = (time.perf_counter() - started) * 1000
                with lock:
                    counts["ms"].append(milliseconds)
                    counts[answer.status_code] = counts.get(answer.status_code, 0) + 1
                    if answer.status_code != 200:
                        counts["refused_ms"].append(milliseconds)
                        if len(counts["messages"]) < 3:
                            counts["messages"].append(answer.text)

    return [threading.Thread(target=work, daemon=True) for _ in range(connections)]


if __name__ == "__main__":
    # A flooding client in a process of its own, as another machine's would be (scripts/bench_fair.py): it does not
    # share the measuring client's interpreter. It floods until its standard input closes (search) or every upload
    # is sent (uploads), then prints what it counted as one JSON line.
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("search", "uploads"))
    parser.add_argument("url")
    parser.add_argument("--address", default="127.0.0.2")
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--uploads", type=int, default=60_000)
    parser.add_argument("--per-request", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=8 * 10**9)
    args = parser.parse_args()
    stop, counts = threading.Event(), {}
    if args.kind == "search":
        workers = search_flood(args.url, args.address, args.connections, stop, counts, itertools.count(args.first_seed))
    else:
        workers = upload_flood(args.url, args.address, args.connections, args.uploads, args.per_request, counts)
    for worker in workers:
        worker.start()
    print("flooding", flush=True)  # the parent measures from here
    if args.kind == "search":
        sys.stdin.read()
        stop.set()
    for worker in workers:
        worker.join(timeout=600)
    print(json.dumps({str(key): value for key, value in counts.items()}), flush=True)
