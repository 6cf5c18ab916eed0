"""Build an index: catalog -> engine (decode, resize, embed: engines) -> keep or skip, thumbnails, checkpoint (here,
for every engine) -> write, then swap in. An image whose bytes the index already at the destination holds (same
model) is not embedded again: its vector is reused."""

from __future__ import annotations

import errno
import json
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from recommender.columns import Columns
from recommender.config import Settings
from recommender.embedder import Embedder, probe_image
from recommender.index import (FORMAT_VERSION, IndexFiles, IndexUnusable, VectorIndex, load_cells, read_manifest,
                               swap_into_place)
from recommender.pipeline.catalog import Catalog
from recommender.pipeline.checkpoint import Checkpoint
from recommender.pipeline.engines import THUMBNAIL_SIDE, EmbeddedRow, Engine, InProcessEngine

__all__ = ["BuildFailed", "BuildSummary", "build_index", "write_index"]

WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}  # the disk, not the data


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
    index_seconds: float = 0.0  # writing the index: PCA, Annoy, items, checksums
    embedded: int = 0  # images this run put through the model
    reused: int = 0  # images whose vector, cells and thumbnail this run took from the index it replaces

    def __str__(self) -> str:
        lines = [f"Indexed {self.indexed} products in {self.seconds:.1f} s (embedding at "
                 f"{self.images_per_second:.1f} images/s) into {self.out} ({self.size_bytes / 1e6:.1f} MB)."]
        if self.reused:
            lines.append(f"Embedded {self.embedded} images; reused {self.reused} unchanged ones from the index "
                         "it replaces.")
        lines += [f"Skipped {count}: {reason} (e.g. {', '.join(map(str, self.skipped_ids[reason]))})"
                  for reason, count in self.skipped.most_common()]
        return "\n".join(lines)


@dataclass
class _Previous:
    """The index a build replaces, made by the same embedder: vectors it need not compute again."""
    files: IndexFiles
    rows: dict  # sha256 of an image's bytes -> its first row
    vectors: np.ndarray  # (n, dims) float32, memory-mapped
    cells: np.ndarray  # (n, dims) uint8, memory-mapped


@dataclass
class _Reused:
    """What a row whose image bytes the previous index holds takes from there instead of being embedded."""
    row: int  # its row in the previous index: its vector and cells
    thumbnail: bytes  # the same bytes give the same thumbnail


def build_index(catalog: Catalog, settings: Settings, out: Path, batch_size: int = 32,
                embedder: Embedder | None = None, progress: bool = True, reuse: bool = True,
                engine: Engine | None = None) -> BuildSummary:
    """Embed every product of `catalog` and write a complete index to `out`, replacing any index there only
    once the new one is whole. Unreadable images and rows without an id are skipped and counted. With `reuse`,
    an image whose bytes the index at `out` holds (built by the same embedder) takes its vector, cells and
    thumbnail from there instead of being decoded and embedded: a rebuild after a few rows changed embeds those.
    `engine` embeds the rows (recommender.pipeline.engines.Engine; default: in this process).

    Each embedded batch is saved in a staging folder beside `out`; if the build is killed or fails, running it
    again with the same catalog and settings resumes from there."""
    started = time.perf_counter()
    embedder = embedder or Embedder(settings)
    engine = engine or InProcessEngine()
    out = Path(out)
    files = IndexFiles(out.with_name(f".{out.name}.building"))
    # parts saved by a build before cells were kept have none: "cells" makes such a build start over
    checkpoint = Checkpoint(files.root, {"dataset": catalog.source, "embedder": embedder.identity,
                                         "batch_size": batch_size, "format": FORMAT_VERSION, "cells": True,
                                         "hashes": True})  # parts saved before hashes were kept start over
    summary = BuildSummary(out=out)
    try:
        files.images.mkdir(parents=True, exist_ok=True)
        saved = checkpoint.resume()
        if saved.consumed:
            print(f"Resuming: {saved.consumed} catalog rows were embedded or skipped before.", flush=True)
        embedder.embed(probe_image(embedder.size)[None])  # traces the model (1 s) before images/s is timed
        embedding_started, resumed_at = time.perf_counter(), saved.consumed
        keeper = _Keeper(files, checkpoint, _previous_index(out, embedder) if reuse else None)
        rows = engine.rows(catalog, embedder, saved.consumed, batch_size, keeper.known if keeper.previous else None)
        bar = tqdm(total=catalog.total, initial=saved.consumed, unit="img", desc=engine.label,
                   disable=not progress, smoothing=0.1)
        with closing(rows), bar:  # closing: an engine's threads or Ray stop with the build, even when it fails
            for batch in _batches(rows, batch_size, first=saved.consumed):
                keeper.save(batch)
                bar.update(len(batch))
                if saved.skipped:
                    bar.set_postfix(skipped=len(saved.skipped))
        summary.embedded, summary.reused = keeper.embedded, keeper.reused
        summary.embed_seconds = time.perf_counter() - embedding_started
        read_now = saved.consumed - resumed_at
        summary.images_per_second = read_now / summary.embed_seconds if summary.embed_seconds else 0.0
        summary.skipped, summary.skipped_ids = checkpoint.skip_counts()
        items = saved.items
        summary.indexed = len(items)
        if not items:
            raise BuildFailed(f"No product of {catalog.source.get('id')} could be indexed: "
                              f"{dict(summary.skipped) or 'the catalog is empty'}.")
        print(f"Building the Annoy index ({settings.trees} trees over {len(items)} vectors)...", flush=True)
        writing_started = time.perf_counter()
        write_index(files, np.concatenate(saved.vectors), items, embedder, settings, catalog.source,
                    dict(summary.skipped), cells=np.concatenate(saved.cells), hashes=_digests(saved.hashes))
        summary.index_seconds = time.perf_counter() - writing_started
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


def _batches(rows: Iterator[EmbeddedRow], batch_size: int, first: int) -> Iterator[list[EmbeddedRow]]:
    """The engine's rows in checkpoint batches of `batch_size`, from catalog row `first` on, checked to be in order:
    a row out of place would give one product another's vector."""
    while batch := list(islice(rows, batch_size)):
        if [row.number for row in batch] != list(range(first, first + len(batch))):
            raise RuntimeError(f"The engine returned rows {[row.number for row in batch]} where rows {first} to "
                               f"{first + len(batch) - 1} were due: engines yield rows in catalog order.")
        first += len(batch)
        yield batch


class _Keeper:
    """The pipeline after the engine: keeps or skips each row, in catalog order, takes a reused row's vector from the
    previous index, writes the kept rows' thumbnails and saves each batch to the checkpoint."""

    def __init__(self, files: IndexFiles, checkpoint: Checkpoint, previous: _Previous | None):
        self.files, self.checkpoint, self.previous = files, checkpoint, previous
        self.seen_ids = {item["id"] for item in checkpoint.progress.items}  # a duplicate id is skipped
        self.embedded = self.reused = 0  # kept rows this run embedded / took from the previous index

    def known(self, digest: bytes) -> _Reused | None:
        """The engine's look-up (engines.Known), run where it would decode: reading the old thumbnail there costs
        what decoding it would."""
        row = self.previous.rows.get(digest)
        if row is None:
            return None
        try:
            return _Reused(row, self.previous.files.image(row).read_bytes())
        except OSError:
            return None  # gone from the previous index since it was opened: decode and embed it again

    def save(self, batch: list[EmbeddedRow]) -> None:
        kept, skipped = [], []
        for row in batch:
            problem = row.problem
            if problem is None and row.id in self.seen_ids:
                problem = "duplicate id"  # the first row with an id that could be indexed keeps it
            if problem:
                skipped.append((problem, row.id))
                continue
            self.seen_ids.add(row.id)
            kept.append(row)
        for number, row in enumerate(kept, start=len(self.checkpoint.progress.items)):
            self.files.image(number).write_bytes(row.known.thumbnail if row.known else row.thumbnail)
        vectors = cells = None
        if kept:  # (n, dims) float32 and uint8, in row order
            vectors = np.stack([self.previous.vectors[row.known.row] if row.known else row.vector for row in kept])
            cells = np.stack([self.previous.cells[row.known.row] if row.known else row.cells for row in kept])
        self.checkpoint.save(rows_read=len(batch), items=[{"id": row.id, **row.metadata} for row in kept],
                             vectors=vectors, cells=cells, skipped=skipped,
                             hashes=[row.digest.hex() if row.digest else None for row in kept])
        reused = sum(row.known is not None for row in kept)
        self.reused, self.embedded = self.reused + reused, self.embedded + len(kept) - reused


def _previous_index(out: Path, embedder: Embedder) -> _Previous | None:
    """The index at `out` if its vectors can stand for this embedder's (same identity, content hashes kept)."""
    # `out` may be a link to the generation served; another swap may move it meanwhile: keep to this generation
    files = IndexFiles(Path(out).resolve())
    try:
        manifest = read_manifest(files.root)  # verified: a damaged index lends nothing
    except IndexUnusable:
        return None
    same_model = json.dumps(manifest["embedder"], sort_keys=True) == json.dumps(embedder.identity, sort_keys=True)
    if not same_model or files.hashes.name not in manifest["files"] or files.cells.name not in manifest["files"]:
        print(f"The index at {out} was built by another model or without content hashes: every image is "
              "embedded.", flush=True)
        return None
    rows = {}
    for row, digest in enumerate(np.load(files.hashes, allow_pickle=False)):
        rows.setdefault(digest.tobytes(), row)  # copies of one image: the first row stands for them
    print(f"Reusing the vectors of unchanged images from the index at {out} ({len(rows)} distinct images).",
          flush=True)
    return _Previous(files, rows, np.load(files.vectors, mmap_mode="r", allow_pickle=False),
                     load_cells(files, manifest))


def _digests(hashes: list) -> np.ndarray | None:
    """(n, 32) uint8 from hex digests; None if any row lacks one (then the index keeps none)."""
    if any(digest is None for digest in hashes):
        return None
    return np.frombuffer(b"".join(bytes.fromhex(digest) for digest in hashes), np.uint8).reshape(-1, 32)


def write_index(files: IndexFiles, vectors: np.ndarray, items: list[dict], embedder: Embedder, settings: Settings,
                source: dict, skipped: dict, cells: np.ndarray | None = None,
                hashes: np.ndarray | None = None) -> VectorIndex:
    """Write everything but the thumbnails (images/<row>.jpg, already there) of an index of `vectors` and their
    `items`, the manifest last. Without `cells` (vectors that no model pooled) the index has no cells.npy:
    explanations then embed a product's thumbnail when asked. Without `hashes` ((n, 32) uint8, the sha256 of each
    row's image bytes) a later build cannot reuse its vectors."""
    index = VectorIndex.build(vectors, settings.trees, settings.coarse_dims, settings.seed)
    index.save(files)
    if cells is not None:
        np.save(files.cells, cells, allow_pickle=False)
    if hashes is not None:
        np.save(files.hashes, hashes, allow_pickle=False)
    else:
        files.hashes.unlink(missing_ok=True)  # one left by an earlier attempt would not match these rows
    _write_items(files, items, Columns.from_manifest(source.get("columns")).fields)
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


def _write_items(files: IndexFiles, items: list[dict], fields) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Every field as text (or null): catalogs disagree on types (year as int or str), the gallery shows text.
    columns = {name: [_as_text(item.get(name)) for item in items] for name in ("id", *fields)}
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
