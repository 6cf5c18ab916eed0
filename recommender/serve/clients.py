"""Who a request comes from, and how much of the app one client may hold, so that no visitor can starve the others.

A client is an address, never a session hash (any request may bring a new one). Behind the Hugging Face Spaces proxy
every request arrives from the proxy, which appends the visitor's address to X-Forwarded-For; only the entries that
trusted proxies appended count (a client can write anything before them), so the address is the one `hops` entries
from the end. Off a Space there is no proxy: the socket's address.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter

from recommender.serve.environment import ENV

__all__ = ["CLIENT_EVENTS", "CLIENT_STREAMS", "client_address", "limit_events_per_client", "proxy_hops",
           "serve_clients_in_turn", "slow_refusal"]

CLIENT_EVENTS = ENV.max_events_per_client  # events one address may have waiting or running at once
CLIENT_STREAMS = ENV.max_streams_per_client  # live streams (each holds a slot for minutes)
# A refusal is answered after this many seconds. A flood's loop retries the moment it is refused: answered at once,
# one address's 48 connections had over 500 requests a second refused, each an HTTP request, an upload and a queue
# call, and those took the cores from the other visitors' searches (docs/reliability.md). Waiting costs the app a
# sleeping coroutine, and slows only a client that is already over its share.
REFUSAL_SECONDS = ENV.refusal_seconds
REFUSALS_HELD = 512  # refusals waiting at once (each holds a connection); past it they are answered at once


def proxy_hops() -> int:
    """Proxies in front of the app whose X-Forwarded-For entries are trusted: TRUSTED_PROXY_HOPS, else one on a
    Space (SPACE_ID is set there) and none elsewhere."""
    return ENV.trusted_proxy_hops


def client_address(headers, peer: str | None, hops: int) -> str:
    """The client's address: the `hops`-th X-Forwarded-For entry from the end (the one the outermost trusted proxy
    saw connect), else the socket's peer. `headers` maps lower-case names to values (Starlette's do)."""
    if hops > 0:
        forwarded = [entry.strip() for entry in headers.get("x-forwarded-for", "").split(",") if entry.strip()]
        if forwarded:
            return forwarded[-min(hops, len(forwarded))]
    return peer or "unknown"


def _request_address(request, hops: int) -> str:
    client = getattr(request, "client", None)
    return client_address(request.headers, client.host if client else None, hops)


_refusals_held = 0  # one event loop serves every request: no lock needed


async def slow_refusal() -> None:
    """Wait REFUSAL_SECONDS before a refusal is sent, unless REFUSALS_HELD refusals wait already."""
    global _refusals_held
    if _refusals_held >= REFUSALS_HELD or REFUSAL_SECONDS <= 0:
        return
    _refusals_held += 1
    try:
        await asyncio.sleep(REFUSAL_SECONDS)
    finally:
        _refusals_held -= 1


def limit_events_per_client(queue, hops: int, events: int = CLIENT_EVENTS, streams: int = CLIENT_STREAMS) -> None:
    """Refuse, in Gradio's queue, an event from an address that already has `events` waiting or running (or
    `streams` live streams): with HTTP 503 (Gradio's answer to a full queue), after slow_refusal, and a message saying
    why and when to try again. Every route into the queue (the page, /gradio_api/call, gradio_client, MCP) goes
    through push."""
    push = queue.push

    async def push_if_fair(body, request, username):
        address = _request_address(request, hops)
        held = _held(queue, hops)
        fn = _function(queue, body)
        streaming = fn is not None and fn.connection == "stream"
        if streaming and held[address, "stream"] >= streams:
            await slow_refusal()
            return False, (f"Too many live streams from your address ({held[address, 'stream']} running): stop one, "
                           "or try again when it ends."), "queue_full"
        if not streaming and held[address, "event"] >= events:
            wait = max(1, math.ceil(held[address, "event"] * _average_seconds(queue)))
            await slow_refusal()
            return False, (f"Too many requests from your address ({held[address, 'event']} waiting or running): "
                           f"try again in {wait} s."), "queue_full"
        return await push(body, request, username)

    queue.push = push_if_fair


def serve_clients_in_turn(queue, hops: int, group: str) -> None:
    """In concurrency group `group` (the model's), run at most one event per address at a time, and among the
    waiting events the oldest of an address that runs none. First come, first served would let one address that
    keeps a few requests waiting hold every model slot, and each other visitor would wait behind them; so one
    visitor's second search waits for its first (a worker may stay free meanwhile), and another visitor's search
    takes the next free slot. The other groups (the live stream's) are served as Gradio serves them."""
    get_events = queue.get_events

    def get_events_in_turn():
        events = queue.event_queue_per_concurrency_id.get(group)
        if events is None or not events.queue or (events.concurrency_limit is not None
                                                  and events.current_concurrency >= events.concurrency_limit):
            return get_events()
        running = {_request_address(event.request, hops) for job in queue.active_jobs if job for event in job
                   if event.concurrency_id == group}
        turn = next((event for event in events.queue if _request_address(event.request, hops) not in running), None)
        if turn is None:  # every waiting event's address already runs one: the other groups may go
            return _other_groups(queue, get_events, group)
        events.queue.remove(turn)
        return [turn], False, group

    queue.get_events = get_events_in_turn


def _other_groups(queue, get_events, group: str):
    """Gradio's choice among the groups other than `group`."""
    held = queue.event_queue_per_concurrency_id.pop(group)
    try:
        return get_events()
    finally:
        queue.event_queue_per_concurrency_id[group] = held


def _held(queue, hops: int) -> Counter:
    """(address, "event" or "stream") -> how many of them wait or run. The queue holds at most its max_size events
    and its workers' jobs, so counting them is cheap."""
    held = Counter()
    waiting = [event for events in queue.event_queue_per_concurrency_id.values() for event in events.queue]
    running = [event for job in queue.active_jobs if job for event in job]
    for event in waiting + running:
        held[_request_address(event.request, hops), "stream" if event.streaming else "event"] += 1
    return held


def _function(queue, body):
    from gradio import route_utils

    try:
        return route_utils.get_fn(queue.blocks, None, body)
    except Exception:  # an unknown function: Gradio's own push refuses it with its message
        return None


def _average_seconds(queue) -> float:
    times = [t.avg_time for t in queue.process_time_per_fn.values() if t.count]
    return sum(times) / len(times) if times else 1.0
