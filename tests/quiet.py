"""Wait until a page has sent everything it will send: the check for "nothing left on disk" comes after that."""

import time

QUIET_SECONDS = 3  # no request in flight, and none started, for this long: every event the page sent is answered


def quiet_waiter(page):
    """Start watching `page`'s requests; returns wait_for_quiet(timeout), which returns once no request is in flight
    and none has started for QUIET_SECONDS (the image editor's late uploads included)."""
    in_flight, last_start = set(), [time.monotonic()]

    def started(request):
        if "/queue/data" not in request.url and "/heartbeat/" not in request.url:  # long-lived event streams
            in_flight.add(request)
            last_start[0] = time.monotonic()

    def ended(request):
        in_flight.discard(request)

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)

    def wait_for_quiet(timeout: float = 60):
        deadline = time.monotonic() + timeout
        while in_flight or time.monotonic() - last_start[0] < QUIET_SECONDS:
            assert time.monotonic() < deadline, f"still busy: {[request.url for request in in_flight]}"
            page.wait_for_timeout(250)  # lets playwright deliver the request events

    return wait_for_quiet
