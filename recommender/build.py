"""Build an index: catalog -> decode and resize (worker threads) -> embed (batches) -> write, then swap in."""

from __future__ import annotations

import errno
import io
import json
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .catalog import METADATA_FIELDS, Catalog, Product
from .checkpoint import Checkpoint
from .config import Settings
from .embedder import Embedder, probe_image
from .images import ImageError, fit_square, to_rgb
from .index import FORMAT_VERSION, IndexFiles, VectorIndex, swap_into_place

__all__ = ["BuildFailed", "BuildSummary", "build_index", "write_index"]

THUMBNAIL_SIDE = 256  # gallery thumbnails: enough for a phone screen, small enough to ship 44k of them
WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}  # the disk, not the data
BATCHES_AHEAD = 2  # prepared batches waiting for the model: keeps it busy without holding the catalog in memory


class BuildFailed(RuntimeError):
    """The build could not produce an index; the previous index, if any, is untouched."""


@dataclass
class BuildSummary:
    out: Path
    indexed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skipped_ids: dict = field(default_factory=dict)  # reason -> first few product ids, to look them up
    seconds: float = 0.0  # the whole build, model loading and index writing included
    embed_seconds: float = 0.0  # reading, decoding and embedding the catalog (this run's part of it)
    images_per_second: float = 0.0  # catalog rows read, decoded and embedded per second by this run
    size_bytes: int = 0


    def __str__(self) -> str:
        lines = [f"Indexed {self.indexed} products in {self.seconds:.1f} s (embedding at "
                 f"{self.images_per_second:.1f} images/s) into {self.out} ({self.size_bytes / 1e6:.1f} MB)."]
        lines += [f"Skipped {count}: {reason} (e.g. {', '.join(map(str, self.skipped_ids[reason]))})"
                  for reason, count in self.skipped.most_common()]
        return "\n".join(lines)


@dataclass
class _Prepared:
    product: Product
    pixels: np.ndarray | None = None  # (size, size, 3) uint8 for the model
    thumbnail: bytes | None = None  # JPEG for the gallery
    problem: str | None = None  # why it is skipped


def build_index(catalog: Catalog, settings: Settings, out: Path, batch_size: int = 32,
                embedder: Embedder | None = None, progress: bool = True) -> BuildSummary:
    """Embed every product of `catalog` and write a complete index to `out`, replacing any index there only
    once the new one is whole. Unreadable images and rows without an id are skipped and counted.

    Each embedded batch is saved in a staging folder beside `out`; if the build is killed or fails, running it
    again with the same catalog and settings resumes from there."""
    started = time.perf_counter()
    embedder = embedder or Embedder(settings)
    out = Path(out)
    files = IndexFiles(out.with_name(f".{out.name}.building"))
    # parts saved by a build before cells were kept have none: "cells" makes such a build start over
    checkpoint = Checkpoint(files.root, {"dataset": catalog.source, "embedder": embedder.identity,
                                         "batch_size": batch_size, "format": FORMAT_VERSION, "cells": True})
    summary = BuildSummary(out=out)
    try:
        files.images.mkdir(parents=True, exist_ok=True)
        saved = checkpoint.resume()
        if saved.consumed:
            print(f"Resuming: {saved.consumed} catalog rows were embedded or skipped before.", flush=True)
        embedder.embed(probe_image(embedder.size)[None])  # traces the model (1 s) before images/s is timed
        embedding_started = time.perf_counter()
        embedded_now = _embed_catalog(catalog, embedder, files, checkpoint, saved, batch_size, summary, progress)
        summary.embed_seconds = time.perf_counter() - embedding_started
        summary.images_per_second = embedded_now / summary.embed_seconds if summary.embed_seconds else 0.0
        summary.skipped, summary.skipped_ids = Checkpoint.skip_counts(saved)
        items = saved.items
        summary.indexed = len(items)
        if not items:
            raise BuildFailed(f"No product of {catalog.source.get('id')} could be indexed: "
                              f"{dict(summary.skipped) or 'the catalog is empty'}.")
        print(f"Building the Annoy index ({settings.trees} trees over {len(items)} vectors)...", flush=True)
        write_index(files, np.concatenate(saved.vectors), items, embedder, settings, catalog.source,
                    dict(summary.skipped), cells=np.concatenate(saved.cells))
        checkpoint.remove()
        summary.size_bytes = sum(p.stat().st_size for p in files.root.rglob("*") if p.is_file())
        out.parent.mkdir(parents=True, exist_ok=True)
        swap_into_place(files.root, out)
    except OSError as error:
        # numpy's array.tofile reports a short write (a full disk) as an OSError without errno
        short_write = error.errno is None and "requested and" in str(error)
        if error.errno not in WRITE_ERRORS and not short_write:
            raise
        reason = "the disk is full: " + str(error) if short_write else f"{error.strerror}: {error.filename}"
        raise BuildFailed(f"Could not write the index beside {out} ({reason}).\n"
                          f"Free some space or choose another --out. The index at {out} is unchanged; the same "
                          "command resumes from what was already embedded.") from None
    summary.seconds = time.perf_counter() - started
    return summary


def _embed_catalog(catalog, embedder, files, checkpoint, saved, batch_size, summary, progress) -> int:
    """Embed the catalog rows after those `saved` holds, saving each batch; returns the rows read now."""
    seen_ids = {item["id"] for item in saved.items}
    rows = islice(catalog.rows, saved.consumed, None)
    bar = tqdm(total=catalog.total, initial=saved.consumed, unit="img", desc="Embedding", disable=not progress,
               smoothing=0.1)
    read_now = 0
    with bar, ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as workers:
        for batch in _prepared_batches(rows, embedder.size, workers, batch_size):
            accepted, skipped = [], []
            for prepared in batch:
                product_id = prepared.product.id
                if prepared.problem is None and product_id in seen_ids:
                    prepared.problem = "duplicate id"
                if prepared.problem:
                    skipped.append((prepared.problem, product_id))
                    continue
                seen_ids.add(product_id)
                accepted.append(prepared)
            vectors, cells = (embedder.embed_with_cells(np.stack([p.pixels for p in accepted])) if accepted
                              else (None, None))
            for row, prepared in enumerate(accepted, start=len(saved.items)):
                files.image(row).write_bytes(prepared.thumbnail)
            checkpoint.save(saved, vectors, cells, [{"id": p.product.id, **p.product.metadata} for p in accepted],
                            skipped, len(batch))
            read_now += len(batch)
            bar.update(len(batch))
            if saved.skipped:
                bar.set_postfix(skipped=len(saved.skipped))
    return read_now


def write_index(files: IndexFiles, vectors: np.ndarray, items: list[dict], embedder: Embedder, settings: Settings,
                source: dict, skipped: dict, cells: np.ndarray | None = None) -> VectorIndex:
    """Write everything but the thumbnails (images/<row>.jpg, already there) of an index of `vectors` and their
    `items`, the manifest last. Without `cells` (vectors that no model pooled) the index has no cells.npy:
    explanations then embed a product's thumbnail when asked."""
    index = VectorIndex.build(vectors, settings.trees, settings.coarse_dims, settings.seed)
    index.save(files)
    if cells is not None:
        np.save(files.cells, cells, allow_pickle=False)
    _write_items(files, items)
    np.save(files.probe, embedder.embed(probe_image(embedder.size)[None])[0], allow_pickle=False)
    _remove_extra_images(files, len(items))
    manifest = _manifest(source, settings, embedder, skipped, index)
    files.manifest.write_text(json.dumps({**manifest, "files": files.fingerprint()}, indent=2))
    return index


def _remove_extra_images(files: IndexFiles, count: int) -> None:
    """Thumbnails written by a batch that a kill cut short, beyond the rows the index holds."""
    for path in files.images.glob("*.jpg"):
        if int(path.stem) >= count:
            path.unlink()


def _prepared_batches(products, size: int, workers: ThreadPoolExecutor, batch_size: int):
    """Batches of decoded, resized products, decoded in `workers` while the model embeds earlier batches."""
    products = iter(products)
    pending = deque()
    while chunk := list(islice(products, batch_size)):
        pending.append([workers.submit(_prepare, product, size) for product in chunk])
        if len(pending) > BATCHES_AHEAD:
            yield [future.result() for future in pending.popleft()]
    while pending:
        yield [future.result() for future in pending.popleft()]


def _prepare(product: Product, size: int) -> _Prepared:
    if product.id is None or product.id == "":
        return _Prepared(product, problem="no id")
    try:
        image = to_rgb(product.image)
    except ImageError as error:
        return _Prepared(product, problem=error.reason)
    pixels = fit_square(image, size)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return _Prepared(product, pixels=pixels, thumbnail=buffer.getvalue())


def _write_items(files: IndexFiles, items: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Every field as text (or null): catalogs disagree on types (year as int or str), the gallery shows text.
    columns = {name: [_as_text(item.get(name)) for item in items] for name in ("id", *METADATA_FIELDS)}
    pq.write_table(pa.table(columns, schema=pa.schema([(name, pa.string()) for name in columns])), files.items)


def _as_text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a year stored as 2012.0 because its column has gaps
    return str(value)


def _manifest(source: dict, settings: Settings, embedder: Embedder, skipped: dict, index: VectorIndex) -> dict:
    from importlib.metadata import version

    return {
        "format_version": FORMAT_VERSION,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "count": len(index),
        "embedder": embedder.identity,
        "index": {"library": "annoy", "metric": "euclidean", "trees": settings.trees, "seed": settings.seed,
                  "coarse_dims": len(index.projection.axes), "candidates": settings.candidates,
                  "search_k": settings.search_k, "rerank": "exact euclidean distance on vectors.npy"},
        "dataset": source,
        "skipped": skipped,
        "thumbnails": {"format": "jpeg", "max_side": THUMBNAIL_SIDE},
        "versions": {name: version(name) for name in ("tensorflow-cpu", "keras", "annoy", "numpy")},
    }
