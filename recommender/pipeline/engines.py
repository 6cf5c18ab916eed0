"""Embedding engines: catalog rows in -> embedded rows out, in catalog order. The contract (Engine, EmbeddedRow), the
in-process engine, and the image preparation every engine shares (hash, decode, resize, thumbnail)."""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from recommender.embedder import Embedder
from recommender.images import ImageError, fit_square, to_rgb
from recommender.pipeline.catalog import Catalog, Product

__all__ = ["EmbeddedRow", "Engine", "InProcessEngine", "Known"]

THUMBNAIL_SIDE = 256  # gallery thumbnails: enough for a phone screen, small enough to ship 44k of them
BATCHES_AHEAD = 2  # prepared batches waiting for the model: keeps it busy without holding the catalog in memory

# The pipeline's look-up of an image it need not embed: sha256 of its bytes -> what the pipeline takes instead (the
# previous index's row and thumbnail), or None to embed it. Engines call it where they would decode, and pass its
# answer on untouched.
Known = Callable[[bytes], object]


@dataclass
class EmbeddedRow:
    """One catalog row as an engine hands it to the pipeline: exactly one of `problem`, `known` or `vector` is set."""
    number: int  # its row in the catalog, from 0
    id: str | None
    metadata: dict  # METADATA_FIELDS (or the catalog's columns) -> value or None
    digest: bytes | None = None  # sha256 of its image's encoded bytes; None if there are none to read
    problem: str | None = None  # why it cannot be indexed: no id, no image, an image that does not decode
    known: object = None  # the pipeline's Known answer: neither decoded nor embedded
    vector: np.ndarray | None = None  # (dims,) float32, L2-normalised
    cells: np.ndarray | None = None  # (dims,) uint8: the feature-map cell each pooled maximum came from
    thumbnail: bytes | None = None  # JPEG, at most THUMBNAIL_SIDE a side


class Engine(Protocol):
    """Where catalog rows are decoded and embedded: in this process (InProcessEngine), or on Ray workers
    (recommender.pipeline.ray_engine.RayEngine). An engine only embeds; recommender.pipeline.build keeps or skips
    each row (a duplicate id is only known from every row before it), reuses vectors, writes thumbnails and saves
    checkpoints. Why so narrow: what the index holds is then decided once, in catalog order, whatever embeds, and
    the checkpoint is the same whichever engine filled it."""

    label: str  # names the embedding stage on the progress bar

    def rows(self, catalog: Catalog, embedder: Embedder, start: int, batch_size: int,
             known: Known | None = None) -> Iterator[EmbeddedRow]:
        """Every row of `catalog` from row `start` on, in catalog order, each embedded by (a copy of) `embedder` or
        carrying its problem, in model calls of at most `batch_size` rows. A row whose image `known` answers for is
        neither decoded nor embedded; an engine whose workers cannot call `known` embeds every row."""
        ...


@dataclass
class InProcessEngine:
    """Decodes and resizes in up to 4 threads while the model embeds the batch before, in this process."""
    label: str = "Embedding"

    def rows(self, catalog: Catalog, embedder: Embedder, start: int, batch_size: int,
             known: Known | None = None) -> Iterator[EmbeddedRow]:
        number = start
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as workers:
            batches = _prepared_batches(islice(catalog.rows, start, None), embedder.size, workers, batch_size, known)
            for batch in batches:
                fresh = [row for row in batch if row.pixels is not None]
                if fresh:  # one model call per batch, for its rows that need one
                    vectors, cells = embedder.embed_with_cells(np.stack([row.pixels for row in fresh]))
                    for row, vector, cell in zip(fresh, vectors, cells):
                        row.embedded.vector, row.embedded.cells = vector, cell
                for row in batch:
                    row.embedded.number, number = number, number + 1
                    yield row.embedded


@dataclass
class _Prepared:
    """A row ready for the model: its EmbeddedRow but for the vector, and the pixels that give it."""
    embedded: EmbeddedRow
    pixels: np.ndarray | None = None  # (size, size, 3) uint8; None: nothing to embed (a problem, or known)


def _prepared_batches(products: Iterator[Product], size: int, workers: ThreadPoolExecutor, batch_size: int,
                     known: Known | None = None) -> Iterator[list[_Prepared]]:
    """Batches of `batch_size` products hashed, decoded and resized in `workers` while the caller embeds earlier
    batches. Row numbers are left to the caller (-1)."""
    products = iter(products)
    pending = deque()
    while chunk := list(islice(products, batch_size)):
        pending.append([workers.submit(_prepare, product, size, known) for product in chunk])
        if len(pending) > BATCHES_AHEAD:
            yield [future.result() for future in pending.popleft()]
    while pending:
        yield [future.result() for future in pending.popleft()]


def _prepare(product: Product, size: int, known: Known | None) -> _Prepared:
    row = EmbeddedRow(-1, product.id, product.metadata)
    if product.id is None or product.id == "":
        row.problem = "no id"
        return _Prepared(row)
    row.digest = _content_digest(product)
    if known is not None and row.digest is not None:
        row.known = known(row.digest)  # the same bytes give the same vector and thumbnail: no decoding, no model
        if row.known is not None:
            return _Prepared(row)
    try:
        image = to_rgb(product.image)
    except ImageError as error:
        row.problem = error.reason
        return _Prepared(row)
    pixels = fit_square(image, size)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    row.thumbnail = buffer.getvalue()
    return _Prepared(row, pixels)


def _content_digest(product: Product) -> bytes | None:
    """sha256 of the image's encoded bytes (what an embedding is remembered by); None if there are none to read."""
    if product.image_bytes is not None:
        return hashlib.sha256(product.image_bytes).digest()
    try:
        return hashlib.sha256(Path(product.image_path).read_bytes()).digest() if product.image_path else None
    except OSError:
        return None  # to_rgb says what is wrong with the file
