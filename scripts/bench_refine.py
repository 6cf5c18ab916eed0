"""Steering by example through the app (/refine): its latency next to /similar's, the same kind of call with no
model (a catalog product's stored vector searched), which is Gradio's floor for a search; in process, the
refinement's own cost is bench_scale's. Part of scripts/bench.py (bench_refine goes inside served(...)); alone:

    python scripts/bench_refine.py INDEX_DIR
"""

from __future__ import annotations

import sys

from bench_helpers import p50_p95, percentiles, timed

TARGET_MS = 10  # /refine's p50 at most this above /similar's (issue 24)
SECTION = "Steering by example (/refine)"


def bench_refine(bench, app, client) -> None:
    queries = max(10, bench.size["queries"] // 2)
    ids = list(bench.searcher.row_of_id)[:queries + 1]
    similar_ms, refine_ms = [], []
    for product in ids:
        shown, elapsed = timed(lambda: client.predict(id=product, k=10, api_name="/similar")[1])
        similar_ms.append(elapsed)
        shown = [result["id"] for result in shown]
        refine_ms.append(timed(lambda: client.predict(id=product, like=shown[:3], unlike=shown[3:8], k=10,
                                                      api_name="/refine"))[1])
    similar_ms, refine_ms = similar_ms[1:], refine_ms[1:]  # the first: each endpoint's one-off costs
    gap = percentiles(refine_ms)[0] - percentiles(similar_ms)[0]
    bench.report.add(SECTION, "anchor: /similar through gradio_client (a product's stored vector, no model)",
                     p50_p95(similar_ms))
    bench.report.add(SECTION, "/refine through gradio_client: that product, 3 of its results liked and 5 unliked",
                     f"{p50_p95(refine_ms)}: p50 {gap:+.1f} ms against /similar")
    bench.report.target("/refine's p50 against /similar's, through the app", f"{gap:+.1f} ms",
                        f"<= +{TARGET_MS} ms", gap <= TARGET_MS)


if __name__ == "__main__":
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from gradio_client import Client

    from app_process import RunningApp
    from bench_helpers import Report, machine
    from recommender.serve.search import Recommender

    report = Report(f"python scripts/bench_refine.py {sys.argv[1]}")
    with tempfile.TemporaryDirectory() as tmp, RunningApp(
            {"INDEX_DIR": sys.argv[1], "GRADIO_TEMP_DIR": f"{tmp}/gradio"}, Path(tmp) / "app.log") as app:
        app.wait_until_ready(timeout=600)
        bench = SimpleNamespace(report=report, size={"queries": 50}, searcher=Recommender.load(sys.argv[1]))
        bench_refine(bench, app, Client(app.url, verbose=False))
    print(report.markdown(machine()))
