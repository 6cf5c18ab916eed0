"""Speed, scale and quality, measured side by side on this machine; prints and writes docs/benchmarks.md.

    python scripts/bench.py            # the full run (about 8 minutes on 2 cores)
    python scripts/bench.py --quick    # fewer images, queries and vectors (under 5 minutes on 2 cores)

Model weights are `random`: the same architecture, shapes and cost as `imagenet`, which this machine cannot
download. Catalog images are synthetic (tests/synthetic_catalog.py), and the 44k and 250k vectors of the index
measurements come from its `resnet_like_features` generator (docs/benchmarks.md describes it).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLAS_DEFAULT = os.environ.get("OPENBLAS_NUM_THREADS")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as app.py does: numpy's BLAS threads slow the model down

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and the synthetic catalog the tests use

from app_process import RunningApp  # noqa: E402
from synthetic_catalog import many_products, resnet_like_features, write_parquet  # noqa: E402

from recommender.build import build_index, write_index  # noqa: E402
from recommender.catalog import load_catalog  # noqa: E402
from recommender.config import Settings  # noqa: E402
from recommender.index import IndexFiles, VectorIndex, read_manifest  # noqa: E402
from recommender.search import Recommender  # noqa: E402

FULL = {"images": 512, "naive": 96, "queries": 100, "catalog": 44_000, "scales": (44_000, 250_000),
        "per_user": 25}
QUICK = {"images": 256, "naive": 32, "queries": 50, "catalog": 44_000, "scales": (44_000, 250_000), "per_user": 8}
LEGACY = {"coarse_dims": 2048, "search_k": 50_000}  # the index before PCA: Annoy over all 2048 dimensions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, queries and vectors")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--serve-floor", metavar="IMAGES", help=argparse.SUPPRESS)  # the anchor app, internal
    parser.add_argument("--scale", type=int, help=argparse.SUPPRESS)  # one index-scale measurement, internal
    args = parser.parse_args()
    if args.serve_floor:
        return serve_floor(Path(args.serve_floor))
    size = QUICK if args.quick else FULL
    report = Report("python scripts/bench.py" + (" --quick" if args.quick else ""), size)
    if args.scale:
        bench_scale(args.scale, size["queries"], args.quick, report)
        return print(json.dumps({"sections": report.sections, "targets": report.targets}))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = bench_embedding(work, size, report)
        catalog = bench_footprint(work, small, size, report)
        # every query is a photo the app has not seen: it reuses the vector of a photo sent again
        queries = fresh_photos(work / "queries", size["queries"] + 2 + 21 * (size["per_user"] + 1))
        bench_search_object(catalog, queries[:size["queries"]], report)
        bench_served(work, catalog, small, queries, size, report)
    for count in size["scales"]:
        # in a process with numpy's default BLAS threads: brute force, the baseline, is faster with them
        env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
        env.update({"OPENBLAS_NUM_THREADS": BLAS_DEFAULT} if BLAS_DEFAULT else {})
        child = subprocess.run([sys.executable, __file__, "--scale", str(count), *(["--quick"] * args.quick)],
                               env=env, check=True, capture_output=True, text=True)
        measured = json.loads(child.stdout.splitlines()[-1])
        for section, rows in measured["sections"].items():
            for row in rows:
                report.add(section, *row)
        report.targets += [tuple(target) for target in measured["targets"]]
    text = report.markdown()
    print(text)
    Path(args.out).write_text(text)


class Report:
    """Sections of figures, and the issue's targets with what was measured against them."""

    def __init__(self, command: str, size: dict):
        self.command, self.size, self.sections, self.targets = command, size, {}, []
        self.started = time.perf_counter()
        self.pipeline = self.forward_ms = None  # the float32 build rate and single forward, for later sections

    def add(self, section: str, measure: str, figure: str) -> None:
        self.sections.setdefault(section, []).append((measure, figure))
        print(f"{section} | {measure} | {figure}", flush=True)

    def target(self, name: str, measured: str, target: str, met: bool) -> None:
        self.targets.append((name, measured, target, "met" if met else "**not met**"))

    def markdown(self) -> str:
        lines = ["# Benchmarks", "", f"`{self.command}` on {machine()}, {time.strftime('%Y-%m-%d')}, "
                 f"{(time.perf_counter() - self.started) / 60:.1f} minutes. ResNet50 at 224x224 with random weights "
                 "(the same cost as ImageNet's). Rerun the command to reproduce; timings vary by 10-20% from run to "
                 "run on a shared machine, so each comparison is made within one run.", "",
                 "## Targets", "", "| target | measured | wanted | |", "| --- | --- | --- | --- |",
                 *[f"| {' | '.join(row)} |" for row in self.targets], ""]
        for section, rows in self.sections.items():
            lines += [f"## {section}", "", "| measure | figure |", "| --- | --- |",
                      *[f"| {measure} | {figure} |" for measure, figure in rows], ""]
        return "\n".join(lines + [GENERATOR_NOTE, ""])


GENERATOR_NOTE = """## The synthetic vectors

`resnet_like_features` (tests/synthetic_catalog.py) draws vectors shaped like ResNet50's global-max-pooled
features: 50 cluster centres and a per-point spread of half their scale, both with a power-law decaying scale per
dimension (1 / i^0.7, so a few directions carry most of the variance, as in real CNN features), dimensions
shuffled, then ReLU (non-negative, many zeros) and L2 normalisation. The first 256 principal components hold about
98% of their variance. Queries are fresh draws from the same distribution, not catalog rows."""


def machine() -> str:
    cpu = platform.processor()
    flags = set()
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    bf16 = ", ".join(flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags) or "no bf16 instructions"
    return f"{cpu} ({bf16}), {os.cpu_count()} cores, Python {platform.python_version()}"


def fresh_photos(folder: Path, count: int) -> list[str]:
    """`count` product photos unlike the catalog's (another seed), as JPEG files."""
    folder.mkdir()
    paths = []
    for number, row in enumerate(many_products(count, seed=7)):
        paths.append(str(folder / f"{number}.jpg"))
        row["image"].save(paths[-1], quality=90)
    return paths


def percentiles(samples_ms) -> tuple[float, float]:
    return statistics.median(samples_ms), float(np.percentile(samples_ms, 95))


def p50_p95(samples_ms) -> str:
    return "p50 {:.1f} ms, p95 {:.1f} ms".format(*percentiles(samples_ms))


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, (time.perf_counter() - started) * 1000


# 1. Embedding throughput, and bf16 against float32 -------------------------------------------------------------

def bench_embedding(work: Path, size: dict, report: Report) -> Path:
    """Build an index of `images` synthetic products in float32 and bf16; returns the float32 index."""
    section = "Embedding throughput"
    rows = many_products(size["images"])
    parquet = write_parquet(work / "catalog.parquet", rows, extra_bad_rows=False)
    speeds = {}
    for precision in ("float32", "bf16"):
        settings = Settings(weights="random", precision=precision)
        summary = build_index(load_catalog(str(parquet)), settings, work / precision, progress=False)
        recommender = Recommender.load(work / precision)
        pixels = np.stack([recommender.embedder.prepare(row["image"]) for row in rows])
        model_only = model_throughput(recommender.embedder, pixels)
        forward = [timed(recommender.embedder.embed, pixels[i:i + 1])[1] for i in range(30)]
        speeds[precision] = (summary.images_per_second, model_only, recommender)
        report.add(section, f"{precision}: build pipeline (decode, resize, embed, thumbnails, checkpoints)",
                   f"{summary.images_per_second:.1f} images/s")
        report.add(section, f"{precision}: model alone on the same images, ready as tensors, batch 32",
                   f"{model_only:.1f} images/s")
        report.add(section, f"{precision}: single-image forward (a query)", p50_p95(forward))
        report.forward_ms = report.forward_ms or percentiles(forward)[0]  # float32's: the latency anchor
        report.add(section, f"{precision}: whole build of {len(rows)} images (model load, index, writing)",
                   f"{summary.seconds:.1f} s")
    naive = naive_throughput(rows[:size["naive"]], work / "naive")
    report.add(section, f"naive loop: load_img + model.predict per image ({size['naive']} of the images)",
               f"{naive:.1f} images/s")
    pipeline, model_only = speeds["float32"][0], speeds["float32"][1]
    report.pipeline = pipeline
    report.target("build pipeline vs model alone (float32)", f"{pipeline / model_only:.0%}", ">= 90%",
                  pipeline >= 0.9 * model_only)
    report.target("build pipeline vs naive loop (float32)", f"{pipeline / naive:.1f}x", ">= 3.5x",
                  pipeline >= 3.5 * naive)
    report.target("bf16 pipeline vs naive loop", f"{speeds['bf16'][0] / naive:.1f}x", ">= 3.5x",
                  speeds["bf16"][0] >= 3.5 * naive)
    agreement = top10_agreement(work / "float32", work / "bf16")
    speedup = speeds["bf16"][0] / pipeline
    report.add(section, "bf16 / float32 pipeline throughput", f"{speedup:.2f}x")
    report.add(section, "bf16 / float32 model-only throughput", f"{speeds['bf16'][1] / model_only:.2f}x")
    report.add(section, "top-10 agreement of bf16 and float32 neighbours (same images)", f"{agreement:.3f}")
    report.target("bf16 speed-up (an option if >= 1.25x with >= 0.95 agreement)",
                  f"{speedup:.2f}x, agreement {agreement:.3f}", ">= 1.25x, >= 0.95", speedup >= 1.25 and
                  agreement >= 0.95)
    return work / "float32"


def model_throughput(embedder, pixels: np.ndarray, batch: int = 32) -> float:
    embedder.embed(pixels[:batch])  # traced and warm
    started = time.perf_counter()
    for start in range(0, len(pixels), batch):
        embedder.embed(pixels[start:start + batch])
    return len(pixels) / (time.perf_counter() - started)


def naive_throughput(rows: list[dict], folder: Path) -> float:
    """The classic ResNet50 recommender's loop: Keras's stock ResNet50 (batch normalisation not folded), one file,
    one `model.predict`, at a time."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, include_top=False, pooling="max", input_shape=(224, 224, 3))
    folder.mkdir()
    paths = []
    for row in rows:
        paths.append(folder / f"{row['id']}.jpg")
        row["image"].save(paths[-1], quality=90)
    def embed(path):
        image = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)))
        features = model.predict(keras.applications.resnet50.preprocess_input(image[None]), verbose=0)[0]
        return features / np.linalg.norm(features)
    embed(paths[0])  # warm
    started = time.perf_counter()
    for path in paths:
        embed(path)
    return len(paths) / (time.perf_counter() - started)


def top10_agreement(first: Path, second: Path) -> float:
    """Mean share of each product's 10 nearest products (exact, itself left out) that both indexes agree on."""
    neighbours = []
    for root in (first, second):
        vectors = np.load(IndexFiles(root).vectors)
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        neighbours.append(np.argsort(-similarity, axis=1, kind="stable")[:, :10])
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*neighbours)]))


# 4. Build and footprint at the catalog's size -------------------------------------------------------------------

def bench_footprint(work: Path, small: Path, size: dict, report: Report) -> Path:
    """An index of `catalog` products: synthetic vectors, the small index's items and thumbnails repeated."""
    section = "Build and footprint"
    count = size["catalog"]
    recommender = Recommender.load(small)
    files = IndexFiles(work / "catalog")
    files.images.mkdir(parents=True)
    items = []
    for row in range(count):
        source = row % len(recommender.items)
        items.append({**recommender.items[source], "id": str(row)})
        os.link(recommender.files.image(source), files.image(row))  # the same JPEG bytes, no copy
    started = time.perf_counter()
    write_index(files, resnet_like_features(count, seed=2), items, recommender.embedder, Settings(weights="random"),
                {"kind": "benchmark"}, {})
    seconds = time.perf_counter() - started
    report.add(section, f"index writing for {count:,} products (PCA, Annoy, items, checksums)", f"{seconds:.1f} s")
    report.add(section, f"embedding {count:,} images at the float32 pipeline's rate (computed, not run)",
               f"{count / report.pipeline / 60:.0f} min")
    for path in (*files.checked, files.manifest):
        report.add(section, f"on disk: {path.name}", f"{path.stat().st_size / 1e6:.1f} MB")
    images = read_manifest(files.root)["files"]["images"]
    report.add(section, f"on disk: images/ ({images['count']:,} thumbnails of the synthetic catalog)",
               f"{images['bytes'] / 1e6:.1f} MB")
    return files.root


# 2. Query latency: the search object, stage by stage ------------------------------------------------------------

def bench_search_object(catalog: Path, paths: list[str], report: Report) -> None:
    section = "Query latency"
    recommender = Recommender.load(catalog)
    stages = {"image preparation": [], "model": [], "ANN + re-rank": [], "result assembly": [], "total": []}
    recommender.recommend(paths[0], 8)  # warm
    for path in paths:
        pixels, prepare_ms = timed(recommender.embedder.prepare, path)
        vector, model_ms = timed(lambda: recommender.embedder.embed(pixels[None])[0])
        rows, search_ms = timed(lambda: recommender.index.search(vector, 8, recommender.candidates,
                                                                 recommender.search_k))
        _, assemble_ms = timed(lambda: [recommender._result(int(r), float(d)) for r, d in zip(*rows)])
        for name, value in zip(stages, (prepare_ms, model_ms, search_ms, assemble_ms,
                                        prepare_ms + model_ms + search_ms + assemble_ms)):
            stages[name].append(value)
    for name, values in stages.items():
        report.add(section, f"search object, {len(recommender.items):,} products: {name}", p50_p95(values))
    search_p50 = percentiles(stages["ANN + re-rank"])[0]
    report.target(f"ANN + re-rank p50 at {len(recommender.items):,} products", f"{search_p50:.1f} ms", "<= 5 ms",
                  search_p50 <= 5)


# 2, 4 and 5. The running app: cold start, memory, latency through gradio_client, concurrency ----------------------

def bench_served(work: Path, catalog: Path, small: Path, photos: list[str], size: dict, report: Report) -> None:
    from gradio_client import Client

    warm, queries, photos = photos[0], photos[1:size["queries"] + 1], photos[size["queries"] + 1:]
    started = time.perf_counter()
    app = RunningApp({"INDEX_DIR": str(catalog), "GRADIO_TEMP_DIR": str(work / "gradio")}, work / "app.log")
    try:
        app.wait_until_ready()
        client = Client(app.url, verbose=False, download_files=False)
        ask(client, "/recommend", warm)
        cold_start = time.perf_counter() - started
        report.add("Build and footprint", f"cold start: process start to first answered query, "
                   f"{size['catalog']:,} products", f"{cold_start:.1f} s")
        report.target("cold start with the index present", f"{cold_start:.1f} s", "<= 15 s", cold_start <= 15)
        report.add("Build and footprint", "app resident memory after its first query",
                   f"{app.resident_bytes() / 1e6:.0f} MB")
        app_ms = [ask(client, "/recommend", path) for path in queries]
        bench_concurrency(app, photos, size["per_user"], report)
        report.add("Build and footprint", "app resident memory after every benchmark query",
                   f"{app.resident_bytes() / 1e6:.0f} MB")
    finally:
        app.stop()
    floor = RunningApp({}, work / "floor.log",
                       [sys.executable, __file__, "--serve-floor", str(IndexFiles(small).images)])
    try:
        floor.wait_until_ready()
        client = Client(floor.url, verbose=False, download_files=False)
        ask(client, "/gallery", warm)
        floor_ms = [ask(client, "/gallery", path) for path in queries]
    finally:
        floor.stop()
    section = "Query latency"
    report.add(section, "anchor: float32 single-image forward (above)", f"p50 {report.forward_ms:.1f} ms")
    report.add(section, "anchor: trivial Gradio endpoint, image in, 8-image gallery out (gradio_client)",
               p50_p95(floor_ms))
    report.add(section, f"end to end through gradio_client, k=8, {size['catalog']:,} products", p50_p95(app_ms))
    budget = percentiles(floor_ms)[0] + report.forward_ms + 20
    report.target("end-to-end p50 (floor + forward + 20 ms)", f"{percentiles(app_ms)[0]:.0f} ms",
                  f"<= {budget:.0f} ms", percentiles(app_ms)[0] <= budget)


def ask(client, api_name: str, path: str) -> float:
    from gradio_client import handle_file

    extra = {"k": 8} if api_name == "/recommend" else {}
    return timed(lambda: client.predict(image=handle_file(path), api_name=api_name, **extra))[1]


def bench_concurrency(app: RunningApp, photos: list[str], per_user: int, report: Report) -> None:
    """Users in their own processes (gradio_client's own CPU cost would otherwise share one GIL), each with
    photos of its own: a warm-up, then `per_user` queries."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    single = None
    photos = iter(photos)
    for users in (1, 4, 16):
        barrier, results = context.Barrier(users), context.Queue()
        workers = [context.Process(target=user, args=(app.url, [next(photos) for _ in range(per_user + 1)],
                                                      barrier, results)) for _ in range(users)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join()
        spans = [span for outcome in outcomes for span in outcome["spans"]]
        errors = sum(outcome["errors"] for outcome in outcomes)
        rate = len(spans) / (max(end for _, end in spans) - min(start for start, _ in spans))
        latencies = [(end - start) * 1000 for start, end in spans]
        single = single or rate
        report.add("Under concurrency", f"{users} concurrent gradio_client users x {per_user} queries",
                   f"{rate:.1f} queries/s, p95 {np.percentile(latencies, 95):.0f} ms, {errors} errors")
        if users == 16:
            report.target("16 users' throughput vs 1 user's, no errors", f"{rate / single:.0%}, {errors} errors",
                          ">= 90%, 0 errors", rate >= 0.9 * single and errors == 0)


def user(url: str, paths: list[str], barrier, results) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    client.predict(image=handle_file(paths[0]), k=8, api_name="/recommend")  # warm: connection, session
    barrier.wait()
    spans, errors = [], 0
    for path in paths[1:]:
        started = time.time()
        try:
            client.predict(image=handle_file(path), k=8, api_name="/recommend")
            spans.append((started, time.time()))
        except Exception:  # noqa: BLE001 - counted: any refusal or failure is an error here
            errors += 1
    results.put({"spans": spans, "errors": errors})


def serve_floor(images: Path) -> None:
    """The framework's own floor: an image in, an 8-image gallery of index JPEGs out, no work between."""
    import gradio as gr

    import app  # noqa: F401 - sets app.GRADIO_QUEUE_ANALYTICS: the floor runs Gradio's queue as the app does

    gallery = [(str(path), path.stem) for path in sorted(images.glob("*.jpg"))[:8]]

    def eight_images(image):
        return gallery

    with gr.Blocks() as demo:
        image, output = gr.Image(type="filepath"), gr.Gallery()
        image.change(eight_images, image, output, api_name="gallery")
    demo.queue().launch(allowed_paths=[str(images)])


# 3. Index quality and speed at 44k and 250k vectors --------------------------------------------------------------

def bench_scale(count: int, queries: int, quick: bool, report: Report) -> None:
    section = "Index: recall and speed"
    vectors = resnet_like_features(count + queries, seed=1)
    base, probes = vectors[:count], vectors[count:]
    del vectors
    exact, brute_ms = [], []
    for probe in probes:
        top, milliseconds = timed(lambda: brute_force(base, probe, 10))
        exact.append(set(top.tolist()))
        brute_ms.append(milliseconds)
    report.add(section, f"{count:,} vectors: numpy brute force (exact)", p50_p95(brute_ms))
    defaults = Settings()
    variants = {f"Annoy over PCA-{defaults.coarse_dims} + exact re-rank (default)":
                (defaults.coarse_dims, defaults.search_k)}
    if not quick or count <= 50_000:  # the 2048-dim Annoy takes minutes and 2 GB at 250k
        variants["Annoy over all 2048 dims + exact re-rank (before)"] = (LEGACY["coarse_dims"], LEGACY["search_k"])
    with tempfile.TemporaryDirectory() as tmp:
        for name, (coarse_dims, search_k) in variants.items():
            index, build_ms = timed(VectorIndex.build, base, defaults.trees, coarse_dims)
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
                wanted = 0.99 if count < 100_000 else 0.97
                report.target(f"recall@10 at {count:,} vectors", f"{recall:.3f}", f">= {wanted}", recall >= wanted)
                if count >= 250_000:
                    report.target(f"speed-up over brute force at {count:,}", f"{speedup:.0f}x", ">= 5x",
                                  speedup >= 5)
            del index
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp, exist_ok=True)


def brute_force(base: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    similarity = base @ query  # unit vectors: the largest dot products are the smallest distances
    top = np.argpartition(-similarity, k)[:k]
    return top[np.argsort(-similarity[top])]


if __name__ == "__main__":
    main()
