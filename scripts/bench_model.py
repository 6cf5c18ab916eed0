"""The model's speed: the build pipeline against the model alone and the classic per-image loops, bf16 against
float32, folded batch normalisation against Keras's stock model. Part of scripts/bench.py."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from bench_helpers import p50_p95, percentiles, timed

from recommender.pipeline.build import build_index
from recommender.pipeline.catalog import load_catalog
from recommender.config import Settings
from recommender.index import IndexFiles
from recommender.serve.search import Recommender
from synthetic_catalog import many_products, write_parquet

SECTION = "Embedding throughput"


def bench_embedding(bench) -> None:
    """Build an index of `images` synthetic products in float32 and bf16: pipeline, model alone, one forward."""
    report = bench.report
    bench.rows = many_products(bench.size["images"])
    parquet = write_parquet(bench.work / "catalog.parquet", bench.rows, extra_bad_rows=False)
    speeds = {}
    for precision in ("float32", "bf16"):
        summary = build_index(load_catalog(str(parquet)), Settings(weights="random", precision=precision),
                              bench.work / precision, progress=False)
        embedder = Recommender.load(bench.work / precision).embedder
        pixels = np.stack([embedder.prepare(row["image"]) for row in bench.rows])
        model_only = batch_throughput(embedder.embed, pixels)
        forward = [timed(embedder.embed, pixels[i:i + 1])[1] for i in range(30)]
        speeds[precision] = (summary.images_per_second, model_only)
        report.add(SECTION, f"{precision}: build pipeline (decode, resize, embed, thumbnails, checkpoints)",
                   f"{summary.images_per_second:.1f} images/s")
        report.add(SECTION, f"{precision}: model alone on the same images, ready as tensors, batch 32",
                   f"{model_only:.1f} images/s")
        report.add(SECTION, f"{precision}: single-image forward (a query)", p50_p95(forward))
        report.add(SECTION, f"{precision}: whole build of {len(bench.rows)} images (model load, index, writing)",
                   f"{summary.seconds:.1f} s")
        if precision == "float32":  # the latency anchor and the rate later sections compare with
            bench.pixels, bench.small, bench.forward_ms = pixels, bench.work / precision, percentiles(forward)[0]
    (pipeline, model_only), bf16 = speeds["float32"], speeds["bf16"]
    bench.pipeline, bench.bf16_pipeline = pipeline, bf16[0]
    report.target("build pipeline vs model alone (float32)", f"{pipeline / model_only:.0%}", ">= 90%",
                  pipeline >= 0.9 * model_only, gate=True)
    agreement = top10_agreement(bench.work / "float32", bench.work / "bf16")
    report.add(SECTION, "bf16 / float32 pipeline throughput", f"{bf16[0] / pipeline:.2f}x")
    report.add(SECTION, "bf16 / float32 model-only throughput", f"{bf16[1] / model_only:.2f}x")
    report.add(SECTION, "top-10 agreement of bf16 and float32 neighbours (same images)", f"{agreement:.3f}")
    report.target("bf16 speed-up (an option if >= 1.25x with >= 0.95 agreement)",
                  f"{bf16[0] / pipeline:.2f}x, agreement {agreement:.3f}", ">= 1.25x, >= 0.95",
                  bf16[0] >= 1.25 * pipeline and agreement >= 0.95)


def batch_throughput(embed, pixels: np.ndarray, batch: int = 32) -> float:
    """Images/s of `embed` over `pixels` in batches, once traced and warm."""
    embed(pixels[:batch])
    started = time.perf_counter()
    for start in range(0, len(pixels), batch):
        embed(pixels[start:start + batch])
    return len(pixels) / (time.perf_counter() - started)


def top10_agreement(first: Path, second: Path) -> float:
    """Mean share of each product's 10 nearest products (exact, itself left out) that both indexes agree on."""
    neighbours = []
    for root in (first, second):
        vectors = np.load(IndexFiles(root).vectors)
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        neighbours.append(np.argsort(-similarity, axis=1, kind="stable")[:, :10])
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*neighbours)]))


def stock_resnet(keras, trained_like: bool = False):
    """Keras's own ResNet50 as the embedder makes it (seed 0), batch normalisation not folded. `trained_like`
    gives its normalisations the non-trivial statistics of trained weights (a random initialisation leaves them
    at gamma 1, beta 0, mean 0, variance 1, which folding barely changes)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, include_top=False, pooling="max", input_shape=(224, 224, 3))
    rng = np.random.default_rng(3)
    for layer in model.layers if trained_like else []:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape), rng.normal(0, 0.1, shape),
                               rng.uniform(0.5, 2.0, shape)])
    return model


def compiled(model):
    """`model` in a tf.function as the embedder runs it: (n, 224, 224, 3) uint8 -> (n, 2048) unit vectors."""
    import keras
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.uint8)])
    def embed(batch):
        pixels = keras.applications.resnet50.preprocess_input(tf.cast(batch, tf.float32))
        return tf.math.l2_normalize(model(pixels, training=False), axis=1)

    return lambda batch: embed(batch).numpy()


def bench_naive_loops(bench) -> None:
    """The classic ResNet50 recommender's loop (one file, one `model.predict`) against the same loop calling the
    model in a tf.function: how much of the pipeline's lead is predict()'s per-call overhead, how much batching."""
    import keras

    report = bench.report
    model, folder = stock_resnet(keras), bench.work / "naive"
    embed = compiled(model)
    folder.mkdir()
    paths = []
    for row in bench.rows[:bench.size["naive"]]:
        paths.append(folder / f"{row['id']}.jpg")
        row["image"].save(paths[-1], quality=90)

    def load(path):
        return keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)), dtype="uint8")

    def with_predict(path):
        pixels = keras.applications.resnet50.preprocess_input(load(path).astype("float32")[None])
        features = model.predict(pixels, verbose=0)[0]
        return features / np.linalg.norm(features)

    loops = {"predict": with_predict, "tf.function": lambda path: embed(load(path)[None])[0]}
    seconds = dict.fromkeys(loops, 0.0)
    for loop in loops.values():
        loop(paths[0])  # warm
    for path in paths:  # interleaved: both loops see the same moments of a noisy machine
        for name, loop in loops.items():
            seconds[name] += timed(loop, path)[1] / 1000
    naive, single = (len(paths) / seconds[name] for name in loops)
    report.add(SECTION, f"naive loop: load_img + model.predict per image, stock Keras ResNet50 ({len(paths)} of "
               "the images)", f"{naive:.1f} images/s")
    report.add(SECTION, "single-image loop: load_img + the same model in a tf.function per image",
               f"{single:.1f} images/s")
    report.add(SECTION, "float32 pipeline vs naive loop, split: tf.function instead of predict() x batching, "
               "folded batch normalisation and threaded decoding",
               f"{bench.pipeline / naive:.1f}x = {single / naive:.2f}x x {bench.pipeline / single:.2f}x")
    report.target("build pipeline vs naive loop (float32)", f"{bench.pipeline / naive:.1f}x", ">= 3.5x",
                  bench.pipeline >= 3.5 * naive)
    report.target("bf16 pipeline vs naive loop", f"{bench.bf16_pipeline / naive:.1f}x", ">= 3.5x",
                  bench.bf16_pipeline >= 3.5 * naive)


def bench_batch_norm_fold(bench) -> None:
    """Folded batch normalisation (what the embedder runs) against Keras's stock model with the same weights."""
    import keras

    from recommender.embedder import fold_batch_norm

    report = bench.report
    stock = compiled(stock_resnet(keras, trained_like=True))
    folded = compiled(fold_batch_norm(keras, stock_resnet(keras, trained_like=True)))
    pixels = bench.pixels[:bench.size["fold"]]
    difference = max(np.abs(stock(pixels[i:i + 32]) - folded(pixels[i:i + 32])).max()
                     for i in range(0, len(pixels), 32))
    single, batch = {stock: [], folded: []}, {stock: 0.0, folded: 0.0}
    for i in range(30):  # interleaved, as above
        for model in single:
            single[model].append(timed(model, pixels[i:i + 1])[1])
    for model in batch:
        model(pixels[:32])  # warm at this batch size
    for i in range(0, len(pixels), 32):
        for model in batch:
            batch[model] += timed(model, pixels[i:i + 32])[1]
    report.add(SECTION, "batch normalisation folded vs stock: largest difference of a vector component (unit "
               f"vectors, {len(pixels)} images, trained-like statistics)", f"{difference:.1e}")
    report.add(SECTION, "batch normalisation folded vs stock: single-image forward, p50",
               f"{percentiles(single[folded])[0]:.1f} vs {percentiles(single[stock])[0]:.1f} ms "
               f"({percentiles(single[stock])[0] / percentiles(single[folded])[0] - 1:+.0%} speed)")
    report.add(SECTION, "batch normalisation folded vs stock: batches of 32",
               f"{len(pixels) / batch[folded] * 1000:.1f} vs {len(pixels) / batch[stock] * 1000:.1f} images/s "
               f"({batch[stock] / batch[folded] - 1:+.0%} speed)")
    report.target("folded batch normalisation gives the stock model's vectors", f"{difference:.1e}", "<= 1e-4",
                  difference <= 1e-4, gate=True)

