"""The index's size, speed and recall: an index at the catalog's size, a query's stages in the search object,
filtered searches, and recall against brute force at 44k and 250k vectors. Part of scripts/bench.py.

    python scripts/bench_index.py 250000 100 [--quick]   # one scale and 100 queries, as bench.py runs it
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from bench_helpers import BLAS_DEFAULT, Report, p50_p95, percentiles, timed

from recommender.pipeline.build import write_index
from recommender.config import Settings
from recommender.embedder import DIMS
from recommender.index import IndexFiles, VectorIndex, read_manifest
from recommender.serve.search import Recommender
from synthetic_catalog import resnet_like_features

LEGACY = {"coarse_dims": 2048, "search_k": 50_000}  # the index before PCA: Annoy over all 2048 dimensions


def bench_footprint(bench) -> None:
    """An index of `catalog` products: synthetic vectors, the small index's items and thumbnails repeated."""
    section, report, count = "Build and footprint", bench.report, bench.size["catalog"]
    small = Recommender.load(bench.small)
    files = IndexFiles(bench.work / "catalog")
    files.images.mkdir(parents=True)
    items = []
    for row in range(count):
        source = row % len(small.items)
        items.append({**small.items[source], "id": str(row)})
        os.link(small.files.image(source), files.image(row))  # the same JPEG bytes, no copy
    # cells as the build stores them (one grid cell per channel), so /explain is measured on the stored-cells path
    cells = np.random.default_rng(3).integers(0, small.embedder.grid ** 2, (count, DIMS), np.uint8)
    _, milliseconds = timed(write_index, files, resnet_like_features(count, seed=2), items, small.embedder,
                            Settings(weights="random"), {"kind": "benchmark"}, {}, cells)
    bench.catalog = files.root
    report.add(section, f"index writing for {count:,} products (PCA, Annoy, items, checksums)",
               f"{milliseconds / 1000:.1f} s")
    report.add(section, f"embedding {count:,} images at the float32 pipeline's rate (computed, not run)",
               f"{count / bench.pipeline / 60:.0f} min")
    for path in (*files.checked, files.manifest):
        report.add(section, f"on disk: {path.name}", f"{path.stat().st_size / 1e6:.1f} MB")
    images = read_manifest(files.root)["files"]["images"]
    report.add(section, f"on disk: images/ ({images['count']:,} thumbnails of the synthetic catalog)",
               f"{images['bytes'] / 1e6:.1f} MB")


def bench_search_object(bench) -> None:
    """A query's stages, timed one by one in the search object over the catalog index."""
    searcher, report = bench.searcher, bench.report
    stages = {"image preparation": [], "model": [], "ANN + re-rank": [], "result assembly": [], "total": []}
    paths = bench.photos.take(bench.size["queries"] + 1)
    searcher.recommend(paths[0], 8)  # warm
    for path in paths[1:]:
        pixels, prepare_ms = timed(searcher.embedder.prepare, path)
        vector, model_ms = timed(lambda: searcher.embedder.embed(pixels[None])[0])
        rows, search_ms = timed(searcher.index.search, vector, 8, searcher.candidates, searcher.search_k)
        _, assemble_ms = timed(lambda: [searcher._result(int(r), float(d)) for r, d in zip(*rows)])
        for name, value in zip(stages, (prepare_ms, model_ms, search_ms, assemble_ms,
                                        prepare_ms + model_ms + search_ms + assemble_ms)):
            stages[name].append(value)
    for name, values in stages.items():
        report.add("Query latency", f"search object, {len(searcher.items):,} products: {name}", p50_p95(values))
    search_p50 = percentiles(stages["ANN + re-rank"])[0]
    report.target(f"ANN + re-rank p50 at {len(searcher.items):,} products", f"{search_p50:.1f} ms", "<= 5 ms",
                  search_p50 <= 5)


def bench_filtered_search(bench) -> None:
    """A filtered search is exact over the matching rows (`Recommender.nearest` with rows), so its cost grows with
    the share of products the filter keeps. One BLAS thread, as in the app."""
    searcher = bench.searcher
    count = len(searcher.items)
    subsets = {"half of the products (every other row)": np.arange(0, count, 2),
               "1% of the products (random rows)":
                   np.sort(np.random.default_rng(0).choice(count, count // 100, replace=False))}
    queries = resnet_like_features(bench.size["queries"], seed=3)  # fresh draws like the catalog's vectors
    for name, rows in subsets.items():
        searcher.nearest(queries[0], 8, rows)  # warm: the vectors' pages
        milliseconds = [timed(searcher.nearest, query, 8, rows)[1] for query in queries]
        bench.report.add("Query latency", f"search object, {count:,} products, a filter keeping {name}: exact "
                         "search and result assembly", p50_p95(milliseconds))
        # the reference: one pass over every stored vector (what a query unlike the catalog, with loose bounds, falls
        # back to); these synthetic queries have loose bounds at 44k, so the search above should cost about this
        milliseconds = [timed(searcher.index._scan_rows, query, 8, rows, False)[1] for query in queries]
        bench.report.add("Query latency", f"search object, {count:,} products, a filter keeping {name}: one pass "
                         "over all stored vectors alone (the exact search's fallback)", p50_p95(milliseconds))


def bench_scales(bench) -> None:
    """Recall and speed at each of `scales` vectors, each in a child process with numpy's default BLAS threads:
    brute force, the baseline, is faster with them."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": BLAS_DEFAULT or str(os.cpu_count())}
    for count in bench.size["scales"]:
        command = [sys.executable, __file__, str(count), str(bench.size["queries"]), *(["--quick"] * bench.quick)]
        child = subprocess.run(command, env=env, capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{child.stderr[-3000:]}")
        bench.report.merge(json.loads(child.stdout.splitlines()[-1]))


def bench_scale(count: int, queries: int, quick: bool, report: Report) -> None:
    """Annoy over PCA-reduced vectors + exact re-ranking against brute force; without `quick`, also Annoy over
    all 2048 dimensions, the index before PCA."""
    section = "Index: recall and speed"
    vectors = resnet_like_features(count + queries, seed=1)
    base, probes = vectors[:count], vectors[count:]
    del vectors
    exact, brute_ms = [], []
    for probe in probes:
        top, milliseconds = timed(brute_force, base, probe, 10)
        exact.append(set(top.tolist()))
        brute_ms.append(milliseconds)
    report.add(section, f"{count:,} vectors: numpy brute force (exact)", p50_p95(brute_ms))
    defaults = Settings()
    variants = {f"Annoy over PCA-{defaults.coarse_dims} + exact re-rank (default)":
                (defaults.coarse_dims, defaults.search_k)}
    if not quick:  # the 2048-dim Annoy takes 20 s at 44k, minutes and 2 GB at 250k
        variants["Annoy over all 2048 dims + exact re-rank (before)"] = (LEGACY["coarse_dims"], LEGACY["search_k"])
    for name, (coarse_dims, search_k) in variants.items():
        index, build_ms = timed(VectorIndex.build, base, defaults.trees, coarse_dims)
        with tempfile.TemporaryDirectory() as tmp:
            index.annoy.save(f"{tmp}/annoy.ann")
            megabytes = os.path.getsize(f"{tmp}/annoy.ann") / 1e6
        found, search_ms = 0, []
        for probe, truth in zip(probes, exact):
            (rows, _), milliseconds = timed(index.search, probe, 10, defaults.candidates, search_k)
            found += len(truth & set(rows.tolist()))
            search_ms.append(milliseconds)
        recall = found / (10 * len(probes))
        speedup = percentiles(brute_ms)[0] / percentiles(search_ms)[0]
        report.add(section, f"{count:,} vectors: {name}, search_k {search_k:,}",
                   f"recall@10 {recall:.3f}, {p50_p95(search_ms)} ({speedup:.0f}x brute force), "
                   f"Annoy file {megabytes:.0f} MB, built in {build_ms / 1000:.0f} s")
        if coarse_dims == defaults.coarse_dims:
            report.add(section, f"{count:,} vectors: variance held by the first {coarse_dims} principal components",
                       f"{variance_held(index.projection, base):.1%}")
            wanted = 0.99 if count < 100_000 else 0.97
            report.target(f"recall@10 at {count:,} vectors", f"{recall:.3f}", f">= {wanted}", recall >= wanted,
                          gate=True)
            if count >= 250_000:
                report.target(f"speed-up over brute force at {count:,}", f"{speedup:.0f}x", ">= 5x", speedup >= 5)
        del index  # before the next variant's: the 2048-dim Annoy at 250k takes 2 GB


def brute_force(base: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    similarity = base @ query  # unit vectors: the largest dot products are the smallest distances
    top = np.argpartition(-similarity, k)[:k]
    return top[np.argsort(-similarity[top])]


def variance_held(projection, vectors: np.ndarray, sample: int = 50_000) -> float:
    """Share of the vectors' variance along the projection's (orthonormal) axes, over the first `sample` rows (the
    generator's rows are independent draws)."""
    rows = vectors[:sample]
    return float((projection(rows) ** 2).sum() / ((rows - projection.mean) ** 2).sum())


if __name__ == "__main__":
    report = Report("")
    bench_scale(int(sys.argv[1]), int(sys.argv[2]), "--quick" in sys.argv, report)
    print(json.dumps(report.as_dict()))  # the last line: bench_scales reads it
