"""The build's embedding on Ray against the in-process pipeline, on the same catalog in the same run: images/s with
1 and 2 workers and the equality of the two indexes. Part of scripts/bench.py (skipped without ray), or alone:

    python scripts/bench_ray.py --images 256    # prints the figures and the target
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench_helpers import Report

SECTION = "Embedding on Ray"


def bench_ray(bench) -> None:
    """Build an index of `images` synthetic products in-process, then on a local Ray with 1 and 2 workers."""
    try:
        import ray
    except ImportError:
        bench.report.add(SECTION, "skipped", "ray is not installed (pip install -r requirements-ray.txt)")
        return
    import numpy as np

    from bench_model import top10_agreement
    from recommender.pipeline.build import build_index
    from recommender.pipeline.catalog import load_catalog
    from recommender.config import Settings
    from recommender.pipeline.ray_engine import RayEngine
    from synthetic_catalog import many_products, write_parquet

    report, cpus = bench.report, os.cpu_count() or 1
    rows = bench.size["ray"]
    parquet = write_parquet(bench.work / "ray-catalog.parquet", many_products(rows), extra_bad_rows=False)
    settings = Settings(weights="random")

    def build(name, engine=None):
        return build_index(load_catalog(str(parquet)), settings, bench.work / name, progress=False, engine=engine)

    runs = [build("ray-reference").images_per_second]  # again after Ray's runs: the mean of both is compared
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1] / "recommender")]})
    steady = {}
    try:
        for workers in sorted({1, cpus}):
            engine = RayEngine(workers=workers, worker_cpus=cpus / workers)
            summary = build(f"ray-{workers}", engine)
            steady[workers] = (engine.steady_images_per_second, summary.images_per_second)
            vectors = [np.load(bench.work / name / "vectors.npy") for name in (f"ray-{workers}", "ray-reference")]
            report.add(SECTION, f"Ray, {workers} worker(s): largest vector difference from in-process, top-10 "
                       "agreement", f"{np.abs(vectors[0] - vectors[1]).max():.1e}, "
                       f"{top10_agreement(bench.work / f'ray-{workers}', bench.work / 'ray-reference'):.3f}")
    finally:
        ray.shutdown()
    runs.append(build("ray-reference-again").images_per_second)
    in_process = sum(runs) / len(runs)
    report.add(SECTION, f"in-process build pipeline, {rows} images at 224 px, batch 32, before and after Ray's runs",
               f"{runs[0]:.1f} and {runs[1]:.1f} images/s")
    for workers, (rate, whole) in steady.items():
        report.add(SECTION, f"Ray, {workers} worker(s) of {cpus / workers:g} CPU: from the first results back "
                   "(a model loaded) / whole embedding stage (Ray start, model loads)",
                   f"{rate:.1f} / {whole:.1f} images/s ({rate / in_process:.0%} / {whole / in_process:.0%} of "
                   "in-process's mean)")
    best = max(steady, key=lambda workers: steady[workers][0])
    report.target(f"Ray (from the first results, best: {best} worker(s)) vs in-process images/s on {cpus} cores",
                  f"{steady[best][0] / in_process:.0%}", ">= 85%", steady[best][0] >= 0.85 * in_process)


def main() -> None:
    import tempfile
    from types import SimpleNamespace

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="synthetic products in the catalog")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        bench_ray(SimpleNamespace(report=Report("python scripts/bench_ray.py"), size={"ray": args.images},
                                  work=Path(work)))


if __name__ == "__main__":
    main()
