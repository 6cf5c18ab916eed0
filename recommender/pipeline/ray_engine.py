"""The build's embedding on Ray: parquet row groups -> Ray Data actors (read, decode, embed) -> checkpoint by row.

Only `scripts/build_index.py --engine ray` imports this module; it imports ray itself, lazily, so the app and the
default build never do. Everything before and after embedding is recommender.pipeline.build's own code.
"""

from __future__ import annotations

import glob
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from recommender.pipeline.build import _prepared_batches
from recommender.pipeline.catalog import Catalog, Product, _parquet_files, _product
from recommender.columns import CatalogUnavailable, Columns
from recommender.config import Settings

__all__ = ["RayEngine"]

BATCHES_PER_TASK = 32  # a task reads its row groups once for up to 32 batches; a killed worker redoes at most that
TASKS_PER_WORKER = 4  # at least this many tasks per worker, so that every worker has work and stragglers even out


@dataclass
class RayEngine:
    """Embeds a parquet catalog's rows after those a checkpoint holds on a Ray cluster: `ray.init()` connects to
    RAY_ADDRESS when it is set (a cluster, or `ray://` for Ray Client) and starts a local Ray otherwise. Each
    worker is a Ray Data actor with its own copy of the model, `worker_cpus` CPUs and as many TensorFlow threads;
    `workers` defaults to as many as the cluster's CPUs allow. Call it as build_index's `engine`."""
    workers: int | None = None
    worker_cpus: float = 1.0
    steady_images_per_second: float = 0.0  # of the last call, from its first results back (a model loaded) to its last

    def __call__(self, catalog: Catalog, embedder, files, checkpoint, saved, batch_size: int, summary,
                 progress: bool, previous=None) -> int:
        """The same contract as recommender.pipeline.build._embed_catalog: saves each batch of `batch_size` catalog rows to
        `checkpoint` in row order, as the in-process build does, and returns the rows read now. Every row is
        embedded: the vectors of the `previous` index are on the driver's disk, which workers may not see."""
        parts = _row_groups(catalog)
        total = min(sum(rows for _, _, rows in parts), catalog.total or 0)
        if saved.consumed >= total:
            return 0
        import ray  # only here: the app and the default build never import it

        started_ray = not ray.is_initialized()
        if started_ray:
            # the package travels with the job, so that a cluster's workers can import it; RAY_ADDRESS is honoured
            ray.init(runtime_env={"py_modules": [str(Path(__file__).parent)]}, log_to_driver=True)
        try:
            return self._embed(ray, parts, total, embedder, files, checkpoint, saved, batch_size, summary, progress,
                               catalog.columns)
        finally:
            if started_ray:
                ray.shutdown()

    @staticmethod
    def check(catalog: Catalog) -> None:
        """Raises CatalogUnavailable, with the way out, for a catalog this engine cannot split among workers."""
        _row_groups(catalog)

    def _embed(self, ray, parts, total, embedder, files, checkpoint, saved, batch_size, summary, progress,
               columns) -> int:
        import ray.data

        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.worker_cpus))
        batches = -(-(total - saved.consumed) // batch_size)
        per_task = batch_size * max(1, min(BATCHES_PER_TASK, -(-batches // (workers * TASKS_PER_WORKER))))
        tasks = [{"start": start, "pieces": json.dumps(_pieces(parts, start, min(start + per_task, total)))}
                 for start in range(saved.consumed, total, per_task)]  # where each task reads, not what
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the build's own bar below counts rows saved in order
        context.print_on_execution_start = False
        embedded = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
            _EmbedRows, fn_constructor_args=(embedder.settings, batch_size, columns), batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=self.worker_cpus)
        # Ray Data's actors default to max_restarts=-1, max_task_retries=-1: a worker that dies is started again and
        # its task runs again (tests/test_ray_build.py kills one)

        seen_ids = {item["id"] for item in saved.items}
        waiting = {}  # row number -> its result, until every row of its batch is back
        bar = tqdm(total=total, initial=saved.consumed, unit="img", desc="Embedding on Ray", disable=not progress,
                   smoothing=0.1)
        read_now, arrived, first = 0, 0, None  # first: (time, rows) of the first results back
        with bar:
            for block in embedded.iter_batches(batch_size=None, batch_format="numpy"):
                arrived, last_at = arrived + len(block["row"]), time.perf_counter()
                first = first or (last_at, arrived)
                for i, row in enumerate(block["row"]):
                    if row >= saved.consumed:  # a retried task may send rows again
                        waiting[int(row)] = {name: column[i] for name, column in block.items()}
                while saved.consumed < total:
                    rows = range(saved.consumed, min(saved.consumed + batch_size, total))
                    if not all(row in waiting for row in rows):
                        break
                    summary.embedded += _save_batch([waiting.pop(row) for row in rows], seen_ids, files, checkpoint,
                                                    saved)
                    read_now += len(rows)
                    bar.update(len(rows))
                    if saved.skipped:
                        bar.set_postfix(skipped=len(saved.skipped))
        if saved.consumed < total:
            raise RuntimeError(f"Ray returned rows up to {saved.consumed} of {total}; run the build again to resume.")
        seconds = last_at - first[0]
        self.steady_images_per_second = (arrived - first[1]) / seconds if seconds > 0 else 0.0
        return read_now


def _save_batch(rows: list[dict], seen_ids: set, files, checkpoint, saved) -> int:
    """One batch of catalog rows, in row order, kept or skipped as recommender.pipeline.build._embed_catalog does; returns
    how many it kept."""
    accepted, skipped = [], []
    for row in rows:
        item = json.loads(row["item"])
        problem, product_id = row["problem"] or None, item["id"]
        if problem is None and product_id in seen_ids:
            problem = "duplicate id"  # only the driver sees every row before this one
        if problem:
            skipped.append((problem, product_id))
            continue
        seen_ids.add(product_id)
        accepted.append((row, item))
    vectors = np.stack([row["vector"] for row, _ in accepted]) if accepted else None
    cells = np.stack([row["cells"] for row, _ in accepted]) if accepted else None
    for number, (row, _) in enumerate(accepted, start=len(saved.items)):
        files.image(number).write_bytes(row["thumbnail"])
    checkpoint.save(saved, vectors, cells, [item for _, item in accepted], skipped, len(rows),
                    hashes=[row["digest"] or None for row, _ in accepted])
    return len(accepted)


def _row_groups(catalog: Catalog) -> list[tuple[str, int, int]]:
    """(file, row group, rows) of the catalog, in the order the in-process build reads its rows."""
    import pyarrow.parquet as pq

    if catalog.source.get("kind") != "parquet":
        raise CatalogUnavailable(
            "--engine ray reads parquet catalogs (a file, a folder or a glob, at a path every Ray node can read). "
            "For a Hub dataset, download its parquet files first (`hf download <id> --repo-type dataset "
            "--local-dir data/`, then --dataset data/); for an image folder, use the in-process build.")
    pattern = catalog.source["id"]
    path = Path(pattern).expanduser()
    # the same file list, in the same order, as recommender.pipeline.catalog._parquet
    names = _parquet_files(path) if path.is_dir() else sorted(glob.glob(os.path.expanduser(pattern)))
    parts = []
    for name in names:
        metadata = pq.ParquetFile(name).metadata
        parts += [(name, group, metadata.row_group(group).num_rows) for group in range(metadata.num_row_groups)]
    return parts


def _pieces(parts, start: int, stop: int) -> list[tuple[str, int, int, int]]:
    """(file, row group, first, end) slices that hold catalog rows start..stop-1."""
    pieces, first_row = [], 0
    for name, group, rows in parts:
        low, high = max(start, first_row), min(stop, first_row + rows)
        if low < high:
            pieces.append((name, group, low - first_row, high - first_row))
        first_row += rows
    return pieces


class _EmbedRows:
    """A Ray Data worker: the model loaded once; each call reads one task's rows from parquet, decodes them in
    threads while the model embeds the batch before (recommender.pipeline.build's own code), and yields one batch at a time:
    row numbers, ids, items, skip reasons, vectors, cells and thumbnails."""

    def __init__(self, settings: Settings, batch_size: int, columns: Columns):
        import ray

        threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)  # the worker's CPUs, not the machine's
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from recommender.embedder import Embedder

        self.embedder, self.batch_size, self.columns = Embedder(settings), batch_size, columns
        self.decoders = ThreadPoolExecutor(max_workers=min(4, threads + 1))

    def __call__(self, task: dict):
        start, pieces = int(task["start"][0]), json.loads(task["pieces"][0])
        products = _read_products(pieces, self.columns)
        for offset, batch in enumerate(_prepared_batches(products, self.embedder.size, self.decoders,
                                                         self.batch_size)):
            yield self._embed(start + offset * self.batch_size, batch)

    def _embed(self, first_row: int, batch) -> dict:
        good = [i for i, prepared in enumerate(batch) if prepared.problem is None]
        vectors = np.zeros((len(batch), 2048), np.float32)
        cells = np.zeros((len(batch), 2048), np.uint8)
        if good:
            pixels = np.zeros((self.batch_size, self.embedder.size, self.embedder.size, 3), np.uint8)
            pixels[:len(good)] = [batch[i].pixels for i in good]  # padded: every call has the same shape
            embedded, pooled_from = self.embedder.embed_with_cells(pixels)
            vectors[good], cells[good] = embedded[:len(good)], pooled_from[:len(good)]
        return {
            "row": np.arange(first_row, first_row + len(batch), dtype=np.int64),
            "item": np.array([json.dumps({"id": p.product.id, **p.product.metadata}) for p in batch], dtype=object),
            "problem": np.array([p.problem or "" for p in batch], dtype=object),  # "": kept (a null column
            # would come back as floats)
            "vector": vectors,
            "cells": cells,
            "thumbnail": np.array([p.thumbnail or b"" for p in batch], dtype=object),
            "digest": np.array([p.digest.hex() if p.digest else "" for p in batch], dtype=object),  # sha256
        }


def _read_products(pieces, columns: Columns) -> list[Product]:
    """The rows of `pieces` as recommender.pipeline.catalog reads a parquet catalog's (the same function makes them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for name, group, first, end in pieces:
        file = pq.ParquetFile(name)
        wanted = [c for c in (columns.id, *columns.fields, columns.image) if c in file.schema_arrow.names]
        tables.append(file.read_row_group(group, columns=wanted).slice(first, end - first))
    rows = pa.concat_tables(tables, promote_options="default").to_pylist() if tables else []
    return [_product(row, columns, Path(pieces[0][0]).parent) for row in rows]
