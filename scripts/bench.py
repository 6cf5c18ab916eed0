"""Measure build throughput and query latency on this machine, and write docs/benchmarks.md.

    python scripts/bench.py            # 1024 catalog images, 100 queries
    python scripts/bench.py --quick    # 256 images, 50 queries: about two minutes on 2 cores

Weights are `random` (same architecture, shapes and speed as `imagenet`, which this may not download).
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and the synthetic catalog the tests use

from app_process import RunningApp  # noqa: E402
from recommender.build import build_index  # noqa: E402
from recommender.catalog import load_catalog  # noqa: E402
from recommender.config import Settings  # noqa: E402
from recommender.search import Recommender  # noqa: E402
from recommender.index import VectorIndex  # noqa: E402
from synthetic_catalog import many_products, resnet_like_features, write_parquet  # noqa: E402


def percentiles(samples_ms: list[float]) -> str:
    return f"p50 {statistics.median(samples_ms):.1f} ms, p95 {np.percentile(samples_ms, 95):.1f} ms"


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, (time.perf_counter() - started) * 1000


def bench_build(work: Path, images: int, batch_size: int) -> tuple[Path, list[str]]:
    parquet = write_parquet(work / "catalog.parquet", many_products(images), extra_bad_rows=False)
    settings = Settings(weights="random")
    summary = build_index(load_catalog(str(parquet)), settings, work / "index", batch_size=batch_size)
    recommender = Recommender.load(work / "index")
    batch = np.random.default_rng(0).integers(0, 255, (batch_size, 224, 224, 3), dtype=np.uint8)
    recommender.embedder.embed(batch)
    started = time.perf_counter()
    for _ in range(max(1, 128 // batch_size)):
        recommender.embedder.embed(batch)
    model_only = max(1, 128 // batch_size) * batch_size / (time.perf_counter() - started)
    return work / "index", [
        f"| build: decode + resize + embed (pipeline) | {summary.images_per_second:.1f} images/s |",
        f"| build: model alone on ready tensors, batch {batch_size} | {model_only:.1f} images/s |",
        f"| build: whole command for {images} images (model load, Annoy, writing) | {summary.seconds:.1f} s |",
    ]


def bench_queries(index: Path, queries: int) -> list[str]:
    recommender = Recommender.load(index)
    paths = sorted((index / "images").glob("*.jpg"))[:queries]
    stages = {"image preparation": [], "model": [], "ANN + re-rank": [], "result assembly": [], "total": []}
    recommender.recommend(paths[0], 8)  # warm-up: the first call traces the model
    for path in paths:
        pixels, prepare_ms = timed(recommender.embedder.prepare, path)
        vector, model_ms = timed(lambda: recommender.embedder.embed(pixels[None])[0])
        (rows, distances), search_ms = timed(recommender.index.search, vector, 8, recommender.candidates,
                                             recommender.search_k)
        _, assemble_ms = timed(lambda: [recommender._result(int(r), float(d)) for r, d in zip(rows, distances)])
        for name, value in zip(stages, (prepare_ms, model_ms, search_ms, assemble_ms,
                                        prepare_ms + model_ms + search_ms + assemble_ms)):
            stages[name].append(value)
    return [f"| query, search object: {name} | {percentiles(values)} |" for name, values in stages.items()]


def bench_api(index: Path, queries: int, work: Path) -> list[str]:
    from gradio_client import Client, handle_file

    app = RunningApp({"INDEX_DIR": str(index)}, work / "app.log").wait_until_ready()
    try:
        client = Client(app.url, verbose=False, download_files=False)
        paths = sorted((index / "images").glob("*.jpg"))[:queries]
        client.predict(image=handle_file(str(paths[0])), k=8, api_name="/recommend")
        samples = [timed(lambda p=p: client.predict(image=handle_file(str(p)), k=8, api_name="/recommend"))[1]
                   for p in paths]
    finally:
        app.stop()
    return [f"| query, end to end through gradio_client (k=8) | {percentiles(samples)} |"]


def bench_catalog_scale(products: int = 44_000, queries: int = 100) -> list[str]:
    """Search alone at the full catalog's size, on synthetic ResNet-like vectors (tests/synthetic_catalog.py)."""
    settings = Settings()
    vectors = resnet_like_features(products + queries, seed=1)
    base, probes = vectors[:products], vectors[products:]
    index = VectorIndex.build(base, settings.trees)
    rows = [f"| search alone at {products:,} vectors, no filter (Annoy + exact re-rank, recall@10 "
            f"{_recall(index, base, probes, settings):.3f}) | "
            f"{percentiles([timed(index.search, q, 8, settings.candidates, settings.search_k)[1] for q in probes])} |"]
    for share in (0.5, 0.1, 0.01):
        subset = np.sort(np.random.default_rng(0).choice(products, int(products * share), replace=False))
        samples = [timed(lambda q=q: index.search(q, 8, settings.candidates, settings.search_k, rows=subset))[1]
                   for q in probes]
        rows.append(f"| search alone at {products:,} vectors, exact over a filter's {share:.0%} | "
                    f"{percentiles(samples)} |")
    return rows


def _recall(index, base, probes, settings) -> float:
    found = 0
    for query in probes:
        exact = np.argsort(np.linalg.norm(base - query, axis=1))[:10]
        found += len(set(index.search(query, 10, settings.candidates, settings.search_k)[0]) & set(exact))
    return found / (10 * len(probes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and queries")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    images, queries = (256, 50) if args.quick else (1024, 100)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index, rows = bench_build(work, images, args.batch_size)
        rows += bench_queries(index, queries)
        rows += bench_api(index, queries, work)
    rows += bench_catalog_scale()
    command = "python scripts/bench.py" + (" --quick" if args.quick else "")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    report = "\n".join([
        "# Benchmarks", "",
        f"`{command}` on {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}. Images 224x224, ResNet50 with random weights (same cost as ImageNet's), "
        f"{images} synthetic catalog images, {queries} queries.", "",
        "| measure | figure |", "| --- | --- |", *rows, ""])
    print(report)
    Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
