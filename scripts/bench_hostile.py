"""Memory per request (issue 21): files of a few MB that a careless decoder would turn into gigabytes, and a URL that
would send 2 GB slowly, each sent once to the app over the catalog index, an ordinary photo after each. Part of
scripts/bench.py; tests/test_hostile_photos.py checks the same on the tests' small index.

The figure is the peak resident memory of the app and its children during the request, above their level before the
first hostile request (so memory a request keeps counts against every later one).
"""

from __future__ import annotations

from pathlib import Path

import bench_helpers  # noqa: F401  first: one BLAS thread, as in the app
import httpx

from app_process import RunningApp  # noqa: E402
from hostile_photos import SLOW_URL, SLOW_URL_PAUSE, hostile_photos, send  # noqa: E402
from photo_proxy import PhotoProxy  # noqa: E402

SECTION = "Hostile photos: memory per request"
MEMORY_LIMIT_MB = 300
SECONDS_LIMIT = 2


def bench_hostile(bench) -> None:
    ordinary = Path(bench.photos.take(1)[0]).read_bytes()
    proxy = PhotoProxy()
    proxy.endless[SLOW_URL] = SLOW_URL_PAUSE
    env = {"INDEX_DIR": str(bench.catalog), "GRADIO_TEMP_DIR": str(bench.work / "hostile-gradio"), **proxy.app_env()}
    worst_mb, slowest_ms, next_failed = 0.0, 0.0, []
    try:
        with RunningApp(env, bench.work / "hostile-app.log") as app, httpx.Client(timeout=120) as http:
            app.wait_until_ready()
            send(http, app.url, ordinary)  # warm: the model's first call allocates
            start = app.tree_resident_bytes()
            for name, photo in [*hostile_photos().items(), ("a URL sending 2 GB slowly", SLOW_URL)]:
                app.reset_peak()
                milliseconds, told = send(http, app.url, photo)
                grown = (app.tree_resident_bytes("VmHWM") - start) / 1e6
                _, next_told = send(http, app.url, ordinary)
                size = f"{len(photo) / 1e6:.2f} MB" if isinstance(photo, bytes) else "a URL"
                bench.report.add(SECTION, f"{name} ({size}), then an ordinary photo",
                                 f"peak {grown:+.0f} MB, {milliseconds:.0f} ms: {told[:90]}; next: {next_told}")
                worst_mb, slowest_ms = max(worst_mb, grown), max(slowest_ms, milliseconds)
                next_failed += [] if next_told == "8 results" else [name]
    finally:
        proxy.close()
    bench.report.target("a hostile request's peak memory, app and children", f"{worst_mb:+.0f} MB",
                        f"<= {MEMORY_LIMIT_MB} MB", worst_mb <= MEMORY_LIMIT_MB, gate=True)
    bench.report.target("the visitor after each hostile request answered", ", ".join(next_failed) or "all",
                        "all", not next_failed, gate=True)
    bench.report.target("a hostile request's answer", f"{slowest_ms / 1000:.1f} s at most", f"<= {SECONDS_LIMIT} s",
                        slowest_ms <= SECONDS_LIMIT * 1000)
