"""/explain ("Why this match?"): its latency when the query's vector is known, through gradio_client next to the same
photo's /recommend, and in the search process; what the stored cells add to an index. Part of scripts/bench.py
(bench_explain goes inside served(...))."""

from __future__ import annotations

from bench_helpers import ask, p50_p95, percentiles, timed

from recommender.serve.explain import Explainer, query_embedder, query_picture
from recommender.index import IndexFiles, read_manifest
from recommender.serve.search import Recommender

TARGET_MS = 30  # the issue's: an explanation costs no model call when the query's vector and cells are known
MAX_GROWTH = 3 * 1024  # bytes a product: cells.npy may add at most 3 KB


def bench_explain(bench, app, client) -> None:
    from gradio_client import handle_file

    section, report = "Why this match? (/explain)", bench.report
    queries = bench.size["queries"] // 2
    recommend_ms, explain_ms = [], []
    for path in bench.photos.take(queries + 1):
        (_, results), _ = ask(client, "/recommend", path)  # the photo's vector and cells are known from here on
        recommend_ms.append(ask(client, "/recommend", path)[1])  # the anchor: the same photo again, no model call
        explain_ms.append(timed(lambda: client.predict(image=handle_file(path), product_id=results[1]["id"],
                                                       api_name="/explain"))[1])
    recommend_ms, explain_ms = recommend_ms[1:], explain_ms[1:]  # the first: the endpoint's one-off costs
    served_cells = "cells.npy" in read_manifest(bench.catalog)["files"]
    where = "stored cells" if served_cells else "no cells.npy in this index: the product's thumbnail embedded"
    report.add(section, "anchor: /recommend through gradio_client, a photo whose vector is known",
               p50_p95(recommend_ms))
    report.add(section, f"/explain through gradio_client, that photo and its second result ({where})",
               p50_p95(explain_ms))

    # In the search process: the explanation's own work (split, boxes, the two overlays), the query side known.
    small = Recommender.load(bench.small)  # built by the real build: it has cells.npy
    data = open(bench.photos.take(1)[0], "rb").read()
    cached = query_embedder(small.embedder)(data).without_picture()  # what the vector cache holds of the photo
    products = [result.id for result in small.nearest(cached.vector, 20)]
    explainer = Explainer(small)

    def explain_known(product):  # /explain's work for a photo whose vector is cached: the overlay is drawn on a
        return explainer.explain(cached.with_picture(query_picture(data)), product)  # copy from the request's bytes

    explain_known(products[0])  # warm
    stored_ms = [timed(explain_known, product)[1] for product in products * 3]
    small.cells = None  # as an index built before cells were stored: the product side is a forward of its thumbnail
    on_demand_ms = [timed(explain_known, product)[1] for product in products]
    report.add(section, "explanation in the search process, stored cells (the photo's copy from the request's "
               "bytes, split, boxes, two 320 px overlays)", p50_p95(stored_ms))
    report.add(section, "explanation in the search process, no cells.npy (a forward of the product's thumbnail)",
               p50_p95(on_demand_ms))
    p50 = percentiles(stored_ms)[0]
    report.target("explanation p50, query vector known, stored cells", f"{p50:.1f} ms", f"<= {TARGET_MS} ms",
                  p50 <= TARGET_MS)

    files = IndexFiles(bench.small)
    growth = files.cells.stat().st_size / len(small.items)
    total = sum(path.stat().st_size for path in files.root.rglob("*") if path.is_file()) / len(small.items)
    report.add(section, "index growth per product: cells.npy, (n, 2048) uint8",
               f"{growth:,.0f} bytes ({growth / total:.0%} of the index's {total / 1024:,.1f} KB a product)")
    report.target("index growth per product for explanations", f"{growth:,.0f} bytes", f"<= {MAX_GROWTH:,} bytes",
                  growth <= MAX_GROWTH, gate=True)
