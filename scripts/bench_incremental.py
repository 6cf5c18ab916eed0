"""Incremental rebuilds: a synthetic catalog built in full, rebuilt with nothing changed and after 1% of its rows
changed, in one run (224 px, random weights, batches of 32, a model load per build as a CLI run has); below 44k
products, the stages that grow with the catalog are timed again at 44k, to extrapolate. Part of scripts/bench.py, at
2,000 products; at the Hub dataset's size, measured rather than extrapolated (about 25 minutes on 2 cores):

    python scripts/bench_incremental.py 44000 --out docs/benchmarks-incremental.md
"""

from __future__ import annotations

import numpy as np
from bench_helpers import timed

from recommender.pipeline.build import _previous_index, build_index, write_index
from recommender.pipeline.catalog import load_catalog
from recommender.config import Settings
from recommender.embedder import DIMS, Embedder
from recommender.index import IndexFiles
from synthetic_catalog import many_products, resnet_like_features, write_parquet

SECTION = "Incremental rebuild"
CHANGED = 0.01  # share of the catalog's rows changed between builds
FULL_CATALOG = 44_000  # the Hub dataset's size, which the extrapolation is for


def changed_catalog(rows: list[dict], share: float, seed: int) -> tuple[list[dict], dict]:
    """`rows` with `share` of them changed, spread over the catalog: half get a new image, a quarter are removed and
    as many new products are inserted; (the new rows, how many of each)."""
    rng = np.random.default_rng(seed)
    count = max(4, round(len(rows) * share))
    picked = rng.choice(len(rows), count * 3 // 4, replace=False)
    replaced, removed = set(picked[:count // 2].tolist()), set(picked[count // 2:].tolist())
    fresh = iter(many_products(count, seed=seed))
    new_rows = []
    for number, row in enumerate(rows):
        if number in removed:
            continue
        new_rows.append(dict(row, image=next(fresh)["image"]) if number in replaced else row)
    added = count - len(replaced) - len(removed)
    for position, row in zip(sorted(rng.choice(len(new_rows), added, replace=False))[::-1], fresh):
        new_rows.insert(int(position), dict(row, id=len(rows) + position))
    return new_rows, {"replaced": len(replaced), "removed": len(removed), "added": added}


def bench_incremental(bench) -> None:
    report, count, settings = bench.report, bench.size["incremental"], Settings(weights="random")
    rows = many_products(count, seed=11)
    new_rows, changes = changed_catalog(rows, CHANGED, seed=12)
    old = write_parquet(bench.work / "incremental-old.parquet", rows, extra_bad_rows=False)
    new = write_parquet(bench.work / "incremental-new.parquet", new_rows, extra_bad_rows=False)
    out = bench.work / "incremental"

    def build(catalog):
        return build_index(load_catalog(str(catalog)), settings, out, progress=False)

    full, unchanged, rebuilt = build(old), build(old), build(new)
    assert (unchanged.embedded, rebuilt.embedded) == (0, changes["replaced"] + changes["added"])
    reuse_ms = unchanged.embed_seconds / count * 1000  # hash, thumbnail copy, checkpoint: per row, nothing embedded
    fresh_ms = (rebuilt.embed_seconds * 1000 - rebuilt.reused * reuse_ms) / rebuilt.embedded
    setup = full.seconds - full.embed_seconds - full.index_seconds  # model load and trace, swap
    what = ", ".join(f"{number} {kind}" for kind, number in changes.items())
    report.add(SECTION, f"full build of {count:,} synthetic products (model load included)", f"{full.seconds:.1f} s")
    report.add(SECTION, f"rebuild, nothing changed: {unchanged.reused:,} reused, 0 embedded",
               f"{unchanged.seconds:.1f} s")
    report.add(SECTION, f"rebuild after {sum(changes.values())} rows changed ({what}): {rebuilt.embedded} embedded, "
               f"{rebuilt.reused:,} reused", f"{rebuilt.seconds:.1f} s")
    report.add(SECTION, f"rebuild / full build at {count:,} products, measured", f"{rebuilt.seconds / full.seconds:.1%}")
    report.add(SECTION, "per row: reused (hash, thumbnail copy) / embedded in a full build / embedded among reused "
               "rows (model calls of 1-2 images)",
               f"{reuse_ms:.2f} / {1000 / full.images_per_second:.1f} / {fresh_ms:.1f} ms")
    report.add(SECTION, "fixed per build: model load and trace; index writing at this size",
               f"{setup:.1f} s; {full.index_seconds:.1f} s")
    if count >= FULL_CATALOG:
        return report.target(f"rebuild after {CHANGED:.0%} of a {count:,} catalog changed vs full build (measured)",
                             f"{rebuilt.seconds / full.seconds:.1%}", "<= 5%", rebuilt.seconds <= 0.05 * full.seconds)

    # the stages that grow with the catalog, at 44k: writing the index, and reading the previous one to reuse it
    embedder = Embedder(settings)
    files = IndexFiles(bench.work / "incremental-44k")
    files.images.mkdir(parents=True)
    rng = np.random.default_rng(5)
    write_seconds = timed(write_index, files, resnet_like_features(FULL_CATALOG, seed=4),
                          [{"id": str(row)} for row in range(FULL_CATALOG)], embedder, settings, {"kind": "bench"}, {},
                          rng.integers(0, 49, (FULL_CATALOG, DIMS), np.uint8),
                          rng.integers(0, 256, (FULL_CATALOG, 32), np.uint8))[1] / 1000
    previous_seconds = timed(_previous_index, files.root, embedder)[1] / 1000
    report.add(SECTION, f"at {FULL_CATALOG:,}: index writing (PCA, Annoy, items, checksums); reading and verifying "
               "the previous index for reuse", f"{write_seconds:.1f} s; {previous_seconds:.1f} s")
    changed = round(FULL_CATALOG * CHANGED)  # all of them embedded: removals cost nothing, so this errs high
    full_44k = setup + FULL_CATALOG / full.images_per_second + write_seconds
    rebuilt_44k = (setup + previous_seconds + (FULL_CATALOG - changed) * reuse_ms / 1000 + changed * fresh_ms / 1000
                   + write_seconds)
    report.add(SECTION, f"at {FULL_CATALOG:,}, extrapolated from the figures above: full build; rebuild after "
               f"{CHANGED:.0%} changed ({changed} embedded)", f"{full_44k / 60:.1f} min; {rebuilt_44k:.0f} s")
    report.target(f"rebuild after {CHANGED:.0%} of a {FULL_CATALOG:,} catalog changed vs full build (extrapolated "
                  f"from {count:,})", f"{rebuilt_44k / full_44k:.1%}", "<= 5%", rebuilt_44k <= 0.05 * full_44k)


if __name__ == "__main__":
    import argparse
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from bench_helpers import Report, machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", type=int, help="products in the synthetic catalog")
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    report = Report(f"python scripts/bench_incremental.py {args.count}")
    with tempfile.TemporaryDirectory() as work:
        bench_incremental(SimpleNamespace(report=report, size={"incremental": args.count}, work=Path(work)))
    text = report.markdown(machine())
    print(text)
    if args.out:
        Path(args.out).write_text(text)
