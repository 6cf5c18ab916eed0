"""A million products on one Space (CPU basic: 2 vCPU, 16 GB): serving targets at 44k, 250k and 1M products, measured
on indexes of synthetic vectors and items: vectors drawn around the model's own vectors of 300 product photos
(photo_like_chunks). Part of scripts/bench.py (--scale, every size); one size's own rows:

    python scripts/bench_scale.py 1000000 --work /tmp/scale   # builds /tmp/scale/1000000 once, then reuses it

The index is written as a build writes it (vectors, Annoy over 256 principal components, coarse coordinates, items,
probe, manifest with checksums, then swapped in as a generation), but from generated vectors: embedding 1M images
would take 12 hours here. Queries unlike the catalog (another generator's) measure the loose-bounds worst case.
Thumbnails are 100 placeholder JPEGs, hard-linked (the file system allows ~65k links to one file). Each size's app
is started as a user starts it, on a warm page cache (dropping it would slow the other jobs on this machine), and
measured from outside: cold start to the first answer, resident memory after filtered and unfiltered queries.
Latency, recall and exactness are measured in the search object, with one BLAS thread as in the app. Then every
size's app runs at once and the same photos go to each in turn: the sizes compared through the app.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_helpers import Photos, Report, p50_p95, percentiles, timed  # first: one BLAS thread, as in the app

import numpy as np  # noqa: E402

from app_process import RunningApp  # noqa: E402
from recommender.columns import METADATA_FIELDS  # noqa: E402
from recommender.config import Settings  # noqa: E402
from recommender.index import FORMAT_VERSION, IndexFiles, VectorIndex, read_manifest, swap_into_place  # noqa: E402
from recommender.serve.search import Recommender  # noqa: E402

SIZES = (44_000, 250_000, 1_000_000)  # the catalog today, a large shop, the million
QUERIES = 100  # fresh draws of the generator, not catalog rows
TYPES = 100  # article types, one row in 100 each: a filter on one keeps 1%
CHUNK = 50_000  # rows generated at once: 400 MB of float32
BASE_PHOTOS = 300  # product photos the catalog's vectors are drawn around


def resnet_like_chunks(count: int, dims: int = 2048, clusters: int = 50, seed: int = 1):
    """tests/synthetic_catalog.resnet_like_features, drawn CHUNK rows at a time: one set of cluster centres, a
    power-law spectrum, ReLU, unit length. Here only queries unlike the catalog (the loose-bounds case)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, dims + 1) ** 0.7).astype(np.float32)
    centres = rng.standard_normal((clusters, dims), dtype=np.float32) * scale
    permutation = rng.permutation(dims)
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        points = centres[rng.integers(0, clusters, size)] + 0.5 * rng.standard_normal((size, dims),
                                                                                      dtype=np.float32) * scale
        points = np.maximum(points[:, permutation], 0)
        yield points / np.linalg.norm(points, axis=1, keepdims=True)


def photo_like_chunks(photos: np.ndarray, count: int, seed: int = 1):
    """Catalog vectors drawn CHUNK rows at a time (1M rows are 8.2 GB) around the app's own model's vectors of
    `photos` (BASE_PHOTOS product photos): one photo's offset from their mean, plus a random share of the offset
    between two others, plus noise of the photos' own spread on a power-law spectrum, unit length. The photos a
    visitor sends then resemble the catalog as they do with a real catalog and its model; vectors of one
    generator and photos of another (this bench before) made every filtered photo a loose-bounds pass over all
    vectors, a case that the 'unlike the catalog' rows keep measuring."""
    rng = np.random.default_rng(seed)
    mean = photos.mean(axis=0)
    offsets = photos - mean
    spread = np.sqrt((offsets ** 2).sum(axis=1).mean())
    scale = (1.0 / np.arange(1, photos.shape[1] + 1) ** 0.7).astype(np.float32)
    scale = spread * scale[rng.permutation(len(scale))] / np.linalg.norm(scale)
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        first, second, third = (rng.integers(0, len(photos), size) for _ in range(3))
        points = mean + offsets[first] + 0.5 * rng.standard_normal((size, 1), dtype=np.float32) * (
            offsets[second] - offsets[third])
        points += rng.standard_normal(points.shape, dtype=np.float32) * scale
        yield (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def embedded_photos(work: Path, embedder) -> np.ndarray:
    """(BASE_PHOTOS, dims): the model's vectors of product photos of the synthetic catalog's kind (none of them
    sent through the app later: bench_helpers.Photos draws other seeds)."""
    import io

    from synthetic_catalog import many_products

    vectors = []
    for row in many_products(BASE_PHOTOS, seed=0):
        encoded = io.BytesIO()
        row["image"].save(encoded, "JPEG", quality=90)
        vectors.append(embedder.embed_image(encoded.getvalue()))
    return np.stack(vectors)


def write_scale_index(count: int, work: Path, report: Report, section: str) -> Path:
    """The index of `count` synthetic products at work/index (kept: later runs reuse it), and the queries beside."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recommender.embedder import Embedder, probe_image
    from synthetic_catalog import ARTICLE_TYPES, COLOURS, product_image

    target = work / "index"
    if all(path.exists() for path in (target / "manifest.json", work / "queries.npy", work / "unlike.npy")):
        return target
    started = time.perf_counter()
    files = IndexFiles(work / ".index.building")
    files.images.mkdir(parents=True, exist_ok=True)
    settings = Settings(weights="random")
    embedder = Embedder(settings)
    vectors = np.lib.format.open_memmap(files.vectors, mode="w+", dtype=np.float32, shape=(count, 2048))
    chunks = photo_like_chunks(embedded_photos(work, embedder), count + QUERIES)
    np.save(work / "unlike.npy", next(resnet_like_chunks(QUERIES)))
    written = 0
    for chunk in chunks:
        take = min(len(chunk), count - written)
        vectors[written:written + take] = chunk[:take]
        written += take
        if take < len(chunk):
            np.save(work / "queries.npy", np.concatenate([chunk[take:], *chunks])[:QUERIES])
    vectors.flush()
    index = VectorIndex.build(vectors, settings.trees, settings.coarse_dims)
    index.save(files)
    rows = np.arange(count)
    colours = list(COLOURS)
    columns = {"id": rows.astype(str), "gender": np.where(rows % 2 == 0, "Men", "Women"),
               "articleType": np.char.add("Type ", (rows % TYPES).astype(str)),
               "baseColour": np.asarray(colours)[rows % len(colours)],
               "productDisplayName": np.char.add("Product ", rows.astype(str))}
    table = pa.table({name: pa.array(columns[name]) if name in columns else pa.nulls(count, pa.string())
                      for name in ("id", *METADATA_FIELDS)})
    pq.write_table(table, files.items)
    placeholders = work / "placeholders"
    placeholders.mkdir(exist_ok=True)
    for number in range(TYPES):
        article_type = list(ARTICLE_TYPES)[number % len(ARTICLE_TYPES)]
        product_image(article_type, colours[number % len(colours)], "solid").save(placeholders / f"{number}.jpg")
    for row in range(count):
        os.link(placeholders / f"{row % TYPES}.jpg", files.image(row))
    np.save(files.probe, embedder.embed(probe_image(embedder.size)[None])[0], allow_pickle=False)
    manifest = {"format_version": FORMAT_VERSION, "built_at": "synthetic", "count": count,
                "embedder": embedder.identity,
                "index": {"library": "annoy", "metric": "euclidean", "trees": settings.trees, "seed": settings.seed,
                          "coarse_dims": len(index.projection.axes), "candidates": settings.candidates,
                          "search_k": settings.search_k},
                "dataset": {"kind": "synthetic", "count": count}, "skipped": {}}
    files.manifest.write_text(json.dumps({**manifest, "files": files.fingerprint()}, indent=2))
    swap_into_place(files.root, target)
    report.add(section, f"{count:,} products: writing the synthetic index once (vectors, PCA, Annoy, coarse, items, "
               f"{count:,} hard links, checksums)", f"{(time.perf_counter() - started) / 60:.1f} min")
    return target


def bench_million(bench) -> None:
    """bench.py --scale: each size in a child process (its memory given back before the next), reusing the indexes
    in bench.size["scale_work"]; then a photo through the app at every size, side by side."""
    work = bench.size["scale_work"]
    photos = Photos(work / "photos").take(SIDE_BY_SIDE * len(KINDS) + WARM)  # the same photos at every size
    searched = {}
    for count in SIZES:
        command = [sys.executable, __file__, str(count), "--work", str(work), "--photos", str(work / "photos")]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{child.stderr[-3000:]}")
        answer = json.loads(child.stdout.splitlines()[-1])
        bench.report.merge(answer)
        searched[count] = answer["search_ms"]
    through_app = side_by_side({count: work / str(count) / "index" for count in SIZES}, photos, bench.report)
    for count in SIZES:
        for kind in KINDS:
            search, app = percentiles(searched[count][kind]), percentiles(through_app[count][kind])
            bench.report.add(SECTION, f"{count:,} products: {kind}, where a photo's time through the app goes: the "
                             "search alone for the same photos, in process; the rest (model, Gradio, client)",
                             f"search p50 {search[0]:.1f} ms, p95 {search[1]:.1f} ms; the rest p50 "
                             f"{app[0] - search[0]:.0f} ms")
    compare_sizes({count: {kind: percentiles(ms) for kind, ms in kinds.items()}
                   for count, kinds in through_app.items()}, bench.report)


def side_by_side(indexes: dict, photos: list[str], report: Report) -> dict:
    """{count: {kind: milliseconds}} of `photos` (after the first WARM) through gradio_client, every size's app
    running at once and each photo sent to every app in turn (the first app rotating): sizes measured one after
    another differed by more than the 20 ms to be compared (a busy machine's minutes apart), and 10 photos a kind
    gave a p95 of one photo."""
    from contextlib import ExitStack

    from gradio_client import Client, handle_file

    elapsed = {count: {kind: [] for kind in KINDS} for count in indexes}
    with ExitStack() as stack:
        clients = {}
        for count, target in indexes.items():
            app = stack.enter_context(RunningApp({"INDEX_DIR": str(target), "GRADIO_TEMP_DIR": str(
                target.parent / "gradio")}, target.parent / "app-side-by-side.log"))
            app.wait_until_ready(timeout=600)
            clients[count] = Client(app.url, verbose=False, download_files=str(target.parent / "downloads"))
        for count, client in clients.items():
            for photo in photos[:WARM]:  # the first calls trace the model and fill caches
                client.predict(image=handle_file(photo), k=8, api_name="/recommend")
        order = list(clients)
        for number, photo in enumerate(photos[WARM:]):
            kind = list(KINDS)[number % len(KINDS)]
            first = number % len(order)
            for count in order[first:] + order[:first]:
                elapsed[count][kind].append(timed(lambda: clients[count].predict(
                    image=handle_file(photo), k=8, api_name="/recommend", **KINDS[kind]))[1])
    for count, kinds in elapsed.items():
        for kind, milliseconds in kinds.items():
            report.add(SECTION, f"{count:,} products: a photo through gradio_client, {kind}, the {len(milliseconds)} "
                       f"photos sent to every size's app in turn (the model and the results' {8} thumbnails' "
                       "downloads included)", p50_p95(milliseconds))
    return elapsed


def compare_sizes(through_app: dict, report: Report) -> None:
    """The app at the largest size against the smallest, and filtered against unfiltered, from this run."""
    smallest, largest = min(through_app), max(through_app)
    gap = through_app[largest]["no filter"][0] - through_app[smallest]["no filter"][0]
    report.target(f"a photo through the app at {largest:,} vs {smallest:,} products, p50", f"{gap:+.0f} ms",
                  "<= +20 ms", gap <= 20)
    unfiltered_p95 = through_app[largest]["no filter"][1]
    for kind in ("50%", "1%"):
        p95 = through_app[largest][kind][1]
        report.target(f"a photo through the app at {largest:,}, filtered to {kind}, p95 vs unfiltered",
                      f"{p95 / unfiltered_p95:.2f}x ({p95:.0f} vs {unfiltered_p95:.0f} ms)", "<= 2x",
                      p95 <= 2 * unfiltered_p95)


def bench_scale_size(count: int, work: Path, photos: list[str], report: Report) -> dict:
    """This size's rows, in this process and its own app; {kind: milliseconds} of the search alone for `photos`
    (after the first WARM), which bench_million sends through every size's app side by side."""
    work.mkdir(parents=True, exist_ok=True)
    target = write_scale_index(count, work, report, SECTION)
    files = IndexFiles(target.resolve())
    sizes = {path.name: path.stat().st_size for path in (*files.checked, files.coarse)}
    report.add(SECTION, f"{count:,} products: on disk", ", ".join(f"{name} {size / 1e6:,.0f} MB"
                                                                   for name, size in sizes.items()))
    bench_app(count, target, photos, report)
    searcher = bench_search(count, target, np.load(work / "queries.npy"), report, SECTION)
    return bench_photo_search(count, searcher, photos[WARM:], report)


SECTION = "A million products"
KINDS = {"no filter": {}, "50%": {"gender": "Men"}, "1%": {"article_type": "Type 3"}}
SIDE_BY_SIDE = 30  # photos of each kind through every size's app: a p95 of more than one photo
WARM = 2  # photos sent first to each app, not measured
MEMORY_QUERIES = 10  # photos of each kind through a size's own app before its memory is read


def bench_app(count: int, target: Path, photos: list[str], report: Report) -> None:
    """Cold start to the first answer, and resident memory after filtered and unfiltered queries, from outside."""
    from gradio_client import Client, handle_file

    log = target.parent / "app.log"
    started = time.perf_counter()
    with RunningApp({"INDEX_DIR": str(target), "GRADIO_TEMP_DIR": str(target.parent / "gradio")}, log) as app:
        app.wait_until_ready(timeout=600)
        client = Client(app.url, verbose=False)
        client.predict(image=handle_file(photos[0]), k=8, api_name="/recommend")
        cold = time.perf_counter() - started
        queried = photos[1:1 + MEMORY_QUERIES * len(KINDS)]
        for number, photo in enumerate(queried):
            client.predict(image=handle_file(photo), k=8, api_name="/recommend", **list(KINDS.values())[number % 3])
        resident = app.resident_bytes()
        peak = _status_bytes(app.process.pid, "VmHWM")
    report.add(SECTION, f"{count:,} products: cold start, process start to the first answered query (page cache "
               "warm)", f"{cold:.1f} s")
    report.add(SECTION, f"{count:,} products: app resident memory after {1 + len(queried)} queries, a third of "
               "them filtered to 50% and a third to 1% (peak)", f"{resident / 2**30:.2f} GiB ({peak / 2**30:.2f} GiB)")
    report.target(f"cold start at {count:,} products", f"{cold:.1f} s", "<= 30 s", cold <= 30)
    report.target(f"app resident memory at {count:,} products", f"{resident / 2**30:.2f} GiB", "<= 6 GB",
                  resident <= 6e9, gate=True)


def bench_photo_search(count: int, searcher: Recommender, photos: list[str], report: Report) -> dict:
    """The search alone for the photos that go through the app (the model apart), in this process, by kind as
    side_by_side sends them, and how many fell back to a pass over every stored vector (loose bounds: a photo
    unlike the catalog's vectors); {kind: milliseconds}."""
    index = searcher.index
    passes = []
    scan = index._scan_rows

    def counted_scan(*args):  # the loose-bounds fallback (recommender/index/)
        passes.append(1)
        return scan(*args)

    index._scan_rows = counted_scan
    searched = {}
    try:
        for number, kind in enumerate(KINDS):
            mine = photos[number::len(KINDS)]
            rows = searcher.matching_rows(KINDS[kind])
            vectors = [searcher.embedder.embed_image(Path(photo).read_bytes()) for photo in mine]
            passes.clear()
            searched[kind] = [timed(searcher.nearest, vector, 8, rows)[1] for vector in vectors]
            report.add(SECTION, f"{count:,} products: {kind}, the search alone for the photos sent through the app, "
                       f"in process ({len(passes)}/{len(vectors)} with more than 4,096 rows within reach, ranked by "
                       "dot products first: loose bounds)",
                       p50_p95(searched[kind]))
    finally:
        index._scan_rows = scan
    return searched


def bench_search(count: int, target: Path, queries: np.ndarray, report: Report, section: str) -> Recommender:
    """Start-up parts, unfiltered recall and latency, filtered latency and exactness, in this process; the
    search object."""
    stamp = target.resolve().with_name(target.resolve().name + ".verified.json")
    saved = stamp.read_text()
    stamp.unlink()  # as after a copy: every file hashed
    _, full_ms = timed(read_manifest, target)
    stamp.write_text(saved)
    _, stamped_ms = timed(read_manifest, target)
    report.add(section, f"{count:,} products: index checks at start, files as verified before / copied (every "
               "checksum)", f"{stamped_ms / 1000:.2f} s / {full_ms / 1000:.1f} s")
    searcher, load_ms = timed(Recommender.load, target.resolve())
    report.add(section, f"{count:,} products: Recommender.load in the bench process (model, probe, items, filters, "
               "coarse coordinates)", f"{load_ms / 1000:.1f} s")
    index = searcher.index
    exact = brute_force(index.vectors, queries, np.arange(count), 10)
    found, milliseconds = 0, []
    for query, truth in zip(queries, exact):
        (rows, _), elapsed = timed(index.search, query, 10, searcher.candidates, searcher.search_k)
        found += len(set(rows.tolist()) & set(truth.tolist()))
        milliseconds.append(elapsed)
    recall, p50 = found / (10 * len(queries)), percentiles(milliseconds)[0]
    report.add(section, f"{count:,} products: unfiltered search (Annoy + exact re-rank), recall@10 "
               f"{recall:.3f}", p50_p95(milliseconds))
    report.target(f"unfiltered p50 at {count:,}", f"{p50:.1f} ms", "<= 10 ms", p50 <= 10)
    report.target(f"unfiltered recall@10 at {count:,}", f"{recall:.3f}", ">= 0.97", recall >= 0.97, gate=True)
    bench_refine(count, searcher, queries, report, section)
    for name, filters, wanted in (("50%", {"gender": "Men"}, 100), ("1%", {"article_type": "Type 7"}, 10)):
        rows = searcher.matching_rows(filters)
        same, milliseconds = filtered_against_brute_force(searcher, queries, rows)
        p50 = percentiles(milliseconds)[0]
        report.add(section, f"{count:,} products: filtered to {name} ({len(rows):,} rows), exact search and result "
                   f"assembly; the same top 10 as brute force for {same}/{len(queries)} queries",
                   p50_p95(milliseconds))
        report.target(f"filtered p50 over {name} at {count:,}", f"{p50:.1f} ms", f"<= {wanted} ms", p50 <= wanted)
        report.target(f"filtered results exact over {name} at {count:,}", f"{same}/{len(queries)} the same top 10",
                      "all", same == len(queries), gate=True)
    rows = searcher.matching_rows({"gender": "Men"})
    unlike = np.load(target.parent / "unlike.npy")
    same, milliseconds = filtered_against_brute_force(searcher, unlike, rows)
    report.add(section, f"{count:,} products: filtered to 50%, queries unlike the catalog (another generator's "
               "vectors: loose bounds, a pass over every stored vector), exact search and result assembly; the same "
               f"top 10 as brute force for {same}/{len(unlike)}", p50_p95(milliseconds))
    report.target(f"filtered results exact for queries unlike the catalog at {count:,}",
                  f"{same}/{len(unlike)} the same top 10", "all", same == len(unlike), gate=True)
    return searcher


REFINE_WANTED = {44_000: 10, 1_000_000: 30}  # ms, p50 of a refinement in process (issue 24)


def bench_refine(count: int, searcher: Recommender, queries: np.ndarray, report: Report, section: str) -> None:
    """Steering by example as a visitor does it: the query's top 10 shown, 3 of them liked and 5 unliked, then the
    refined search (Recommender.refine: the marked rows read, Rocchio, the ANN search, the unliked left out)."""
    milliseconds = []
    for query in queries:
        shown = [result.id for result in searcher.nearest(query, 10)]
        milliseconds.append(timed(lambda: searcher.refine(query, like=shown[:3], unlike=shown[3:8], k=8))[1])
    p50 = percentiles(milliseconds)[0]
    report.add(section, f"{count:,} products: a refinement (3 liked, 5 unliked of the query's top 10), in process",
               p50_p95(milliseconds))
    if count in REFINE_WANTED:
        report.target(f"refinement p50 at {count:,}", f"{p50:.1f} ms", f"<= {REFINE_WANTED[count]} ms",
                      p50 <= REFINE_WANTED[count])


def filtered_against_brute_force(searcher: Recommender, queries: np.ndarray, rows: np.ndarray) -> tuple[int, list]:
    """(how many queries got brute force's top 10 over `rows`, each search's milliseconds)."""
    truth = brute_force(searcher.index.vectors, queries, rows, 10)
    same, milliseconds = 0, []
    for query, expected in zip(queries, truth):
        results, elapsed = timed(searcher.nearest, query, 10, rows)
        same += {searcher.row_of(result.id) for result in results} == set(expected.tolist())
        milliseconds.append(elapsed)
    return same, milliseconds


def brute_force(vectors: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(queries, k) the exact nearest rows among `rows`, nearest first, by chunks of the (mapped) vectors."""
    best = np.full((len(queries), k), -np.inf, np.float32), np.zeros((len(queries), k), np.int64)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        similarity = queries @ np.asarray(vectors[chunk]).T  # unit vectors: larger dot product, smaller distance
        merged = np.concatenate([best[0], similarity], axis=1)
        ids = np.concatenate([best[1], np.broadcast_to(chunk, similarity.shape)], axis=1)
        top = np.argsort(-merged, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(merged, top, axis=1), np.take_along_axis(ids, top, axis=1)
    return best[1]


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", type=int)
    parser.add_argument("--work", default="/tmp/bench-scale", help="where the index is built once and reused")
    parser.add_argument("--photos", default=None, help="a folder of JPEG photos to query with (default: made in "
                        "--work), the same at every size")
    args = parser.parse_args()
    report = Report("")
    folder = Path(args.photos or Path(args.work) / "photos")
    wanted = SIDE_BY_SIDE * len(KINDS) + WARM
    photos = sorted(map(str, folder.glob("*.jpg")), key=lambda path: int(Path(path).stem))[:wanted]
    photos = photos or Photos(folder).take(wanted)
    searched = bench_scale_size(args.count, Path(args.work) / str(args.count), photos, report)
    print(json.dumps({**report.as_dict(), "search_ms": searched}))  # the last line: bench.py --scale reads it
    sys.exit(0)
