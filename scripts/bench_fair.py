"""Fair to every visitor (issue 21): another address's searches while one address floods, against the same searches
idle, in one run. Part of scripts/bench.py (the served app); clients bind loopback addresses of their own
(tests/visitors.py), as distinct visitors reach the app.

- 48 concurrent searches of new photos in a loop from 127.0.0.2 (Gradio's REST call); 127.0.0.3 searches one at a
  time: p95 <= 2x its idle p95, every search answered.
- 60,000 tiny uploads from 127.0.0.2, 50 a request on 16 connections; 127.0.0.3's p95 <= 1.5x idle, the app's
  memory grows < 100 MB, and an upload request costs the same at the start and at the end.
"""

from __future__ import annotations

import threading
import time

from bench_helpers import p50_p95, percentiles  # first: one BLAS thread, as in the app

from visitors import client, new_photo, rest_recommend  # noqa: E402

SEARCHES = 20  # the measured visitor's searches, idle and under each flood
FLOOD = 48
UPLOADS, PER_REQUEST, CONNECTIONS = 60_000, 50, 16
SECTION = "Fair to every visitor"


def bench_fairness(bench, app, _client) -> None:
    seeds = iter(range(7 * 10**9, 8 * 10**9))

    def searches(count: int) -> list[float]:
        milliseconds = []
        with client("127.0.0.3") as http:
            for _ in range(count):
                started = time.perf_counter()
                status, text = rest_recommend(http, app.url, new_photo(next(seeds)))
                if status != 200 or "event: complete" not in text:
                    raise RuntimeError(f"the measured visitor was refused or failed: {status} {text[:300]}")
                milliseconds.append((time.perf_counter() - started) * 1000)
        return milliseconds

    searches(3)  # warm
    idle = percentiles(searches(SEARCHES))
    bench.report.add(SECTION, f"another address's searches of new photos, one at a time, idle ({SEARCHES})",
                     p50_p95(idle))
    flooded, refused, served = _while(lambda: searches(SEARCHES), _search_flood(app.url, seeds))
    ratio = flooded[1] / idle[1]
    bench.report.add(SECTION, f"the same while 127.0.0.2 sends {FLOOD} concurrent searches in a loop "
                     f"({served} served, {refused} refused 'too many requests')",
                     f"{p50_p95(flooded)}: p95 {ratio:.2f}x idle")
    bench.report.target("another visitor's p95 while one address floods /recommend", f"{ratio:.2f}x idle", "<= 2x",
                        ratio <= 2)

    before = app.resident_bytes()
    costs = []
    uploaded, refused_uploads = _while(lambda: percentiles(searches(SEARCHES)), _upload_flood(app.url, costs))[0:2]
    grown = (app.resident_bytes() - before) / 1e6
    ratio = uploaded[1] / idle[1]
    first, last = (percentiles(part)[0] for part in (costs[:100], costs[-100:]))
    bench.report.add(SECTION, f"the same while 127.0.0.2 sends {UPLOADS:,} tiny uploads ({PER_REQUEST} a request, "
                     f"{CONNECTIONS} connections; {refused_uploads} requests refused 'too many photos')",
                     f"{p50_p95(uploaded)}: p95 {ratio:.2f}x idle; app memory {grown:+.0f} MB; an upload request "
                     f"p50 {first:.1f} ms in its first 100, {last:.1f} ms in its last 100")
    bench.report.target("another visitor's p95 while one address floods uploads", f"{ratio:.2f}x idle", "<= 1.5x",
                        ratio <= 1.5)
    bench.report.target("app memory growth under 60,000 uploads from one address", f"{grown:+.0f} MB", "< 100 MB",
                        grown < 100, gate=True)


def _while(measure, flood):
    """measure() while the flood's threads run; (its result, *what the flood counted)."""
    stop, counts, workers = threading.Event(), {}, flood
    threads = [threading.Thread(target=work, args=(stop, counts), daemon=True) for work in workers]
    for thread in threads:
        thread.start()
    time.sleep(2)  # the flood takes what it may first
    try:
        result = measure()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
    return result, counts.get("refused", 0), counts.get("served", 0)


def _search_flood(url: str, seeds):
    lock = threading.Lock()

    def work(stop, counts):
        with client("127.0.0.2") as http:
            while not stop.is_set():
                with lock:
                    seed = next(seeds)
                status, text = rest_recommend(http, url, new_photo(seed))
                with lock:
                    key = "served" if status == 200 and "event: complete" in text else "refused"
                    counts[key] = counts.get(key, 0) + 1

    return [work] * FLOOD


def _upload_flood(url: str, costs: list):
    lock, sent = threading.Lock(), [0]

    def work(stop, counts):
        with client("127.0.0.2") as http:
            while True:  # all 60,000, however long the measured searches take
                with lock:
                    if sent[0] >= UPLOADS:
                        return
                    first = sent[0]
                    sent[0] += PER_REQUEST
                files = [("files", (f"{first + n}.jpg", f"tiny {first + n}".encode(), "image/jpeg"))
                         for n in range(PER_REQUEST)]
                started = time.perf_counter()
                answer = http.post(f"{url}/gradio_api/upload", files=files)
                with lock:
                    costs.append((time.perf_counter() - started) * 1000)
                    if answer.status_code == 429:
                        counts["refused"] = counts.get("refused", 0) + 1

    return [work] * CONNECTIONS
