"""Fair to every visitor (issue 21): another address's searches while one address floods, against the same searches
idle, in one run. Part of scripts/bench.py (the served app); clients bind loopback addresses of their own
(tests/visitors.py), as distinct visitors reach the app, and the flooding client runs in a process of its own, as
another machine's would (in the measuring process its 48 threads held the interpreter the measured searches need).

- 48 concurrent searches of new photos in a loop from 127.0.0.2 (Gradio's REST call); 127.0.0.3 searches one at a
  time: p95 <= 2x its idle p95, every search answered.
- 60,000 tiny uploads from 127.0.0.2, 50 a request on 16 connections; 127.0.0.3's p95 <= 1.5x idle, the app's
  memory grows < 100 MB, and an upload request costs the same at the start and at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager

from bench_helpers import ROOT, p50_p95, percentiles  # first: one BLAS thread, as in the app

from recommender.serve.clients import REFUSAL_SECONDS  # noqa: E402
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
    with flooding(app.url, "search", "--connections", str(FLOOD)) as counts:
        flooded = percentiles(searches(SEARCHES))
    ratio = flooded[1] / idle[1]
    bench.report.add(SECTION, f"the same while 127.0.0.2 sends {FLOOD} concurrent searches in a loop, from a "
                     f"process of its own ({counts.get('served', 0)} served, {counts.get('refused', 0)} refused "
                     f"'too many requests', each refusal answered after {REFUSAL_SECONDS:g} s)",
                     f"{p50_p95(flooded)}: p95 {ratio:.2f}x idle")
    bench.report.target("another visitor's p95 while one address floods /recommend", f"{ratio:.2f}x idle", "<= 2x",
                        ratio <= 2)

    uploads = getattr(bench, "size", {}).get("uploads", UPLOADS)  # bench.py --quick: fewer, the same checks
    before = app.resident_bytes()
    with flooding(app.url, "uploads", "--connections", str(CONNECTIONS), "--uploads", str(uploads),
                  "--per-request", str(PER_REQUEST)) as counts:
        uploaded = percentiles(searches(SEARCHES))
    grown = (app.resident_bytes() - before) / 1e6
    ratio = uploaded[1] / idle[1]
    costs = counts["ms"]  # every request's, refused ones included
    first, last = (percentiles(part)[0] for part in (costs[:100], costs[-100:]))
    bench.report.add(SECTION, f"the same while 127.0.0.2 sends {uploads:,} tiny uploads ({PER_REQUEST} a request, "
                     f"{CONNECTIONS} connections; {counts.get('429', 0)} requests refused 'too many photos', each "
                     f"answered after {REFUSAL_SECONDS:g} s)",
                     f"{p50_p95(uploaded)}: p95 {ratio:.2f}x idle; app memory {grown:+.0f} MB; an upload request "
                     f"p50 {first:.1f} ms in its first 100, {last:.1f} ms in its last 100")
    bench.report.target("another visitor's p95 while one address floods uploads", f"{ratio:.2f}x idle", "<= 1.5x",
                        ratio <= 1.5)
    bench.report.target(f"app memory growth under {uploads:,} uploads from one address", f"{grown:+.0f} MB",
                        "< 100 MB", grown < 100, gate=True)


@contextmanager
def flooding(url: str, *arguments: str):
    """A flood from 127.0.0.2 by `python tests/visitors.py`, running while the block measures (after 2 s for it to
    take what it may); the dict it yields is filled with the flood's counts once the flood has ended (a search
    flood when the block ends, an upload flood when every upload is sent)."""
    flood = subprocess.Popen([sys.executable, str(ROOT / "tests" / "visitors.py"), arguments[0], url,
                              "--address", "127.0.0.2", *arguments[1:]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    counts = {}
    try:
        if flood.stdout.readline().strip() != "flooding":
            raise RuntimeError("the flooding client did not start")
        time.sleep(2)
        yield counts
        flood.stdin.close()  # a search flood stops here
        counts.update(json.loads(flood.stdout.readline()))
    finally:
        if flood.poll() is None and not flood.stdin.closed:
            flood.stdin.close()
        try:
            flood.wait(timeout=600)
        except subprocess.TimeoutExpired:
            flood.kill()


if __name__ == "__main__":
    # Alone, on an index of your choice (bench.py runs it on its 44k catalog):
    #     python scripts/bench_fair.py /tmp/bench-scale/44000/index
    import argparse
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from app_process import RunningApp
    from bench_helpers import Report, machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", help="an index folder (scripts/build_index.py's --out)")
    args = parser.parse_args()
    report = Report(f"python scripts/bench_fair.py {args.index}")
    with tempfile.TemporaryDirectory() as tmp, RunningApp(
            {"INDEX_DIR": args.index, "GRADIO_TEMP_DIR": f"{tmp}/gradio"}, Path(tmp) / "app.log") as app:
        app.wait_until_ready(timeout=600)
        bench_fairness(SimpleNamespace(report=report), app, None)
    print(report.markdown(machine()))
    sys.exit(1 if report.missed(gate=True) else 0)
