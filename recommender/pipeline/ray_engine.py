"""The Ray engine: parquet row groups -> Ray Data actors (read, decode, embed) -> embedded rows, in catalog order.

Only `scripts/build_index.py --engine ray` imports this module; it imports ray itself, lazily, so the app and the
default build never do. What is kept, reused, written and checkpointed is recommender.pipeline.build's, as for every
engine (recommender.pipeline.engines.Engine).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from recommender.columns import CatalogUnavailable, Columns
from recommender.config import Settings
from recommender.pipeline.catalog import Catalog
from recommender.pipeline.engines import EmbeddedRow, Known, _prepared_batches
from recommender.pipeline.parquet import ParquetLayout, Piece, pieces, read_products

__all__ = ["RayEngine"]

BATCHES_PER_TASK = 32  # a task reads its row groups once for up to 32 batches; a killed worker redoes at most that
TASKS_PER_WORKER = 4  # at least this many tasks per worker, so that every worker has work and stragglers even out


@dataclass
class RayEngine:
    """An Engine that embeds a parquet catalog's rows on a Ray cluster: `ray.init()` connects to RAY_ADDRESS when it
    is set (a cluster, or `ray://` for Ray Client) and starts a local Ray otherwise. Each worker is a Ray Data actor
    with its own copy of the model, `worker_cpus` CPUs and as many TensorFlow threads; `workers` defaults to as many
    as the cluster's CPUs allow. Pass it as build_index's `engine`."""
    workers: int | None = None
    worker_cpus: float = 1.0
    steady_images_per_second: float = 0.0  # of the last run, from its first results back (a model loaded) to its last
    label: str = "Embedding on Ray"

    def rows(self, catalog: Catalog, embedder, start: int, batch_size: int,
             known: Known | None = None) -> Iterator[EmbeddedRow]:
        """engines.Engine.rows, in tasks of whole batches of `batch_size` rows. `known` is not called: the previous
        index it reads is on the driver's disk, which workers may not see, so every row is embedded."""
        layout = self.check(catalog)
        total = min(sum(group.rows for group in layout.groups), catalog.total or 0)
        if start >= total:
            return
        import ray  # only here: the app and the default build never import it

        started_ray = not ray.is_initialized()
        if started_ray:
            # the package travels with the job, so that a cluster's workers can import it; RAY_ADDRESS is honoured
            ray.init(runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1])]}, log_to_driver=True)
        try:
            yield from self._rows(ray, layout, start, total, embedder.settings, batch_size, catalog.columns)
        finally:
            if started_ray:
                ray.shutdown()

    @staticmethod
    def check(catalog: Catalog) -> ParquetLayout:
        """The catalog's row groups; raises CatalogUnavailable, with the way out, for a catalog this engine cannot
        split among workers."""
        if catalog.parquet is None:
            raise CatalogUnavailable(
                "--engine ray reads parquet catalogs (a file, a folder or a glob, at a path every Ray node can "
                "read). For a Hub dataset, download its parquet files first (`hf download <id> --repo-type dataset "
                "--local-dir data/`, then --dataset data/); for an image folder, use the in-process build.")
        return catalog.parquet

    def _rows(self, ray, layout: ParquetLayout, start: int, total: int, settings: Settings, batch_size: int,
              columns: Columns) -> Iterator[EmbeddedRow]:
        import ray.data

        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.worker_cpus))
        batches = -(-(total - start) // batch_size)
        per_task = batch_size * max(1, min(BATCHES_PER_TASK, -(-batches // (workers * TASKS_PER_WORKER))))
        tasks = [{"start": first, "pieces": json.dumps(pieces(layout.groups, first, min(first + per_task, total)))}
                 for first in range(start, total, per_task)]  # where each task reads, not what
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the build's own bar counts rows kept in order
        context.print_on_execution_start = False
        embedded = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
            _EmbedRows, fn_constructor_args=(settings, batch_size, columns, str(layout.folder)), batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=self.worker_cpus)
        # Ray Data's actors default to max_restarts=-1, max_task_retries=-1: a worker that dies is started again and
        # its task runs again (tests/test_ray_build.py kills one)

        waiting = {}  # row number -> its row, until every row before it has been yielded
        due, arrived, first, last_at = start, 0, None, None  # first: (time, rows) of the first results back
        for block in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            arrived, last_at = arrived + len(block["row"]), time.perf_counter()
            first = first or (last_at, arrived)
            for i, number in enumerate(block["row"]):
                if number >= due:  # a retried task may send rows again
                    waiting[int(number)] = _embedded_row({name: column[i] for name, column in block.items()})
            while due in waiting:
                yield waiting.pop(due)
                due += 1
        if due < total:
            raise RuntimeError(f"Ray returned rows up to {due} of {total}; run the build again to resume.")
        seconds = last_at - first[0]
        self.steady_images_per_second = (arrived - first[1]) / seconds if seconds > 0 else 0.0


def _embedded_row(result: dict) -> EmbeddedRow:
    """A worker's row (numpy columns, "" for none: a null column would come back as floats) as an EmbeddedRow."""
    item = json.loads(result["item"])
    problem = result["problem"] or None
    return EmbeddedRow(int(result["row"]), item["id"], item["metadata"],
                       digest=bytes.fromhex(result["digest"]) if result["digest"] else None, problem=problem,
                       vector=None if problem else result["vector"], cells=None if problem else result["cells"],
                       thumbnail=None if problem else result["thumbnail"])


class _EmbedRows:
    """A Ray Data worker: the model loaded once; each call reads one task's rows from parquet, decodes them in
    threads while the model embeds the batch before (the in-process engine's own code), and yields one batch at a
    time: row numbers, ids and metadata, skip reasons, vectors, cells, thumbnails and image hashes."""

    def __init__(self, settings: Settings, batch_size: int, columns: Columns, folder: str):
        import ray

        threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)  # the worker's CPUs, not the machine's
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from recommender.embedder import Embedder

        self.embedder, self.batch_size, self.columns = Embedder(settings), batch_size, columns
        self.folder = Path(folder)  # image paths in the table are relative to it
        self.decoders = ThreadPoolExecutor(max_workers=min(4, threads + 1))

    def __call__(self, task: dict):
        start, slices = int(task["start"][0]), [Piece(*piece) for piece in json.loads(task["pieces"][0])]
        products = read_products(slices, self.columns, self.folder)
        for offset, batch in enumerate(_prepared_batches(products, self.embedder.size, self.decoders,
                                                         self.batch_size)):
            yield self._embed(start + offset * self.batch_size, [prepared.embedded for prepared in batch],
                              [prepared.pixels for prepared in batch])

    def _embed(self, first_row: int, rows: list[EmbeddedRow], pixels: list) -> dict:
        good = [i for i, row in enumerate(rows) if row.problem is None]
        vectors = np.zeros((len(rows), 2048), np.float32)
        cells = np.zeros((len(rows), 2048), np.uint8)
        if good:
            padded = np.zeros((self.batch_size, self.embedder.size, self.embedder.size, 3), np.uint8)
            padded[:len(good)] = [pixels[i] for i in good]  # padded: every call has the same shape
            embedded, pooled_from = self.embedder.embed_with_cells(padded)
            vectors[good], cells[good] = embedded[:len(good)], pooled_from[:len(good)]
        return {
            "row": np.arange(first_row, first_row + len(rows), dtype=np.int64),
            "item": np.array([json.dumps({"id": row.id, "metadata": row.metadata}) for row in rows], dtype=object),
            "problem": np.array([row.problem or "" for row in rows], dtype=object),
            "vector": vectors,
            "cells": cells,
            "thumbnail": np.array([row.thumbnail or b"" for row in rows], dtype=object),
            "digest": np.array([row.digest.hex() if row.digest else "" for row in rows], dtype=object),  # sha256
        }
