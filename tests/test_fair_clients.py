"""Fair to every visitor (issue 21): one address cannot hold more of the app than its share, whatever route it takes;
the others keep their place in the queue. Clients are told apart by their own loopback source addresses (127.0.0.2,
127.0.0.3, ...), as distinct visitors reach the app; behind a proxy, by X-Forwarded-For."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from conftest import REFUSAL_SECONDS
from recommender.serve.clients import CLIENT_EVENTS, client_address
from visitors import client, new_photo, rest_recommend, upload_flood, uploaded

FLOOD = 48  # concurrent requests from the flooding address


def queued_recommend(http: httpx.Client, url: str, fn_index: int, data: bytes) -> tuple[int, str]:
    """One search through the queue's own protocol (the page's and gradio_client's): (the highest queue rank it was
    told while waiting, the final message)."""
    session = f"fair{time.time_ns()}"
    joined = http.post(f"{url}/gradio_api/queue/join", json={
        "data": [uploaded(http, url, data), 8, "All", "All", "All"], "fn_index": fn_index, "session_hash": session,
        "event_data": None, "trigger_id": None})
    joined.raise_for_status()
    rank = 0
    with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "estimation":
                rank = max(rank, message.get("rank") or 0)
            if message.get("msg") == "process_completed":
                return rank, json.dumps(message)
    raise AssertionError("the queue's stream ended without an answer")


@pytest.fixture(scope="module")
def fair_app(app):
    """conftest's shared app (an app start is seconds of CPU): its refusals wait REFUSAL_SECONDS."""
    return app


def recommend_fn_index(url: str) -> int:
    config = httpx.get(f"{url}/config").json()
    return next(number for number, dependency in enumerate(config["dependencies"])
                if dependency.get("api_name") == "recommend")


def test_a_flooding_address_is_refused_and_another_keeps_its_place(fair_app):
    """48 concurrent searches of new photos in a loop from 127.0.0.2: it is told "too many requests" (HTTP 503, with
    when to try again), each refusal only after REFUSAL_SECONDS (a flood's loop cannot spin on refusals), and never
    holds more than its share; 127.0.0.3's one-at-a-time searches all succeed and never wait behind more than that
    share."""
    url, fn_index = fair_app.url, recommend_fn_index(fair_app.url)
    stop, outcomes, lock = threading.Event(), {"served": 0, "refused": []}, threading.Lock()

    def flood(worker: int):
        with client("127.0.0.2") as http:
            for number in range(10**6):
                if stop.is_set():
                    return
                started = time.perf_counter()
                status, text = rest_recommend(http, url, new_photo(worker * 10**6 + number))
                with lock:
                    if status == 200 and "event: complete" in text:
                        outcomes["served"] += 1
                    elif status != 200:
                        outcomes["refused"].append((status, text, time.perf_counter() - started))

    workers = [threading.Thread(target=flood, args=(worker,), daemon=True) for worker in range(FLOOD)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(3)  # the flood fills what it may
        ranks = []
        with client("127.0.0.3") as http:
            for number in range(8):
                rank, answer = queued_recommend(http, url, fn_index, new_photo(10**9 + number))
                assert '"success": true' in answer, answer
                ranks.append(rank)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
    assert outcomes["refused"], "the flooding address was never refused"
    status, text, _ = outcomes["refused"][0]
    assert status == 503 and "Too many requests from your address" in text and "try again in" in text, text
    quickest = min(seconds for *_, seconds in outcomes["refused"])
    assert quickest >= 0.9 * REFUSAL_SECONDS, f"a refusal was answered in {quickest * 1000:.0f} ms"
    # Gradio's rank counts the events ahead: at most the flooder's share (and none of the other's own)
    assert max(ranks) <= CLIENT_EVENTS, f"the other visitor waited behind {max(ranks)} events: {ranks}"
    assert outcomes["served"] > 0  # refused beyond its share, not shut out


def test_the_api_cannot_skip_the_queue(fair_app):
    """/gradio_api/run/<api> would run the model outside the queue and every limit in it (api_open=False)."""
    with client("127.0.0.4") as http:
        image = uploaded(http, fair_app.url, new_photo(7))
        answer = http.post(f"{fair_app.url}/gradio_api/run/recommend", json={"data": [image, 8, "All", "All", "All"]})
    assert answer.status_code == 404 and "join the queue" in answer.text


@pytest.mark.parametrize("hops, forwarded, expected", [
    (0, "6.6.6.6", "10.0.0.1"),  # no proxy trusted: the header is the client's own words
    (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the proxy appended the address it saw; the rest is the client's
    (1, "", "10.0.0.1"),
    (2, "203.0.113.9, 10.1.1.1", "203.0.113.9"),
    (2, "203.0.113.9", "203.0.113.9"),  # fewer entries than hops: the farthest one
])
@pytest.mark.fast
def test_client_address_trusts_only_the_proxies_hops(hops, forwarded, expected):
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert client_address(headers, "10.0.0.1", hops) == expected


UPLOAD_FLOOD = 60_000  # tiny uploads from one address
PER_REQUEST, CONNECTIONS = 50, 16


def test_a_flood_of_tiny_uploads_is_refused_and_costs_the_app_nothing(fair_app):
    """60,000 uploads of a few bytes from 127.0.0.2, 50 a request on 16 connections: beyond its share the address is
    refused (429, saying when to try again, after REFUSAL_SECONDS), the app's memory grows by < 100 MB, and
    127.0.0.3's searches all succeed meanwhile."""
    url = fair_app.url
    before = fair_app.resident_bytes()
    statuses = {}
    workers = upload_flood(url, "127.0.0.2", CONNECTIONS, UPLOAD_FLOOD, PER_REQUEST, statuses)
    for worker in workers:
        worker.start()
    answers = []
    with client("127.0.0.3") as http:
        while any(worker.is_alive() for worker in workers) or len(answers) < 3:
            answers.append(rest_recommend(http, url, new_photo(len(answers) + 5 * 10**9)))
    for worker in workers:
        worker.join()
    grown = fair_app.resident_bytes() - before
    assert all(status == 200 and "event: complete" in text for status, text in answers), answers[:3]
    assert statuses.get(429), f"the uploading address was never refused: {statuses.keys()}"
    messages = statuses["messages"]
    assert "Too many photos from your address" in messages[0] and "try again in" in messages[0], messages
    quickest = min(statuses["refused_ms"])
    assert quickest >= 900 * REFUSAL_SECONDS, f"a refusal was answered in {quickest:.0f} ms"
    assert grown < 100e6, f"the app grew by {grown / 1e6:.0f} MB"


@pytest.mark.fast
def test_a_refusal_waits_but_only_so_many_wait_at_once(monkeypatch):
    """slow_refusal holds a refusal REFUSAL_SECONDS, but past REFUSALS_HELD waiting at once answers at once: a flood
    of connections cannot make the app hold unbounded many."""
    from recommender.serve import clients

    monkeypatch.setattr(clients, "REFUSAL_SECONDS", 0.2)
    monkeypatch.setattr(clients, "REFUSALS_HELD", 3)

    async def refusals(count: int) -> list[float]:
        started = time.perf_counter()

        async def refused() -> float:
            await clients.slow_refusal()
            return time.perf_counter() - started

        return await asyncio.gather(*(refused() for _ in range(count)))

    waited = sorted(asyncio.run(refusals(5)))
    assert waited[1] < 0.1 and waited[2] >= 0.19, waited  # two answered at once, three after the wait
    assert clients._refusals_held == 0
