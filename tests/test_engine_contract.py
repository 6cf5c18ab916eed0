"""The engine contract: whatever an engine yields, the build's pipeline alone keeps or skips rows, writes thumbnails
and checkpoints, and resumes the engine where the checkpoint ends; rows out of catalog order are refused. A
stand-in engine of hand-made rows stands for the model; the parquet reader's slices are checked by hand."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import IMAGE_SIZE
from recommender.config import Settings
from recommender.pipeline.build import build_index
from recommender.pipeline.catalog import Catalog
from recommender.pipeline.engines import EmbeddedRow, InProcessEngine
from recommender.pipeline.parquet import Piece, RowGroup, pieces

SETTINGS = Settings(weights="random", image_size=IMAGE_SIZE)
DIMS = 2048


class Killed(Exception):
    """Stands for a build killed while the engine embeds."""


class StandIn:
    """An engine that yields `rows` (from the start it is asked for), and is killed before row `killed_at`."""
    label = "Stand-in"

    def __init__(self, rows: list[EmbeddedRow], killed_at: int | None = None):
        self.all_rows, self.killed_at, self.starts = rows, killed_at, []

    def rows(self, catalog, embedder, start, batch_size, known=None):
        self.starts.append(start)
        for row in self.all_rows[start:]:
            if row.number == self.killed_at:
                raise Killed
            yield row


def embedded(number: int, product_id, problem=None) -> EmbeddedRow:
    """A row as an engine yields it: a unit vector of its own, and its number as the thumbnail's bytes."""
    if problem:
        return EmbeddedRow(number, product_id, {"productDisplayName": f"row {number}"}, problem=problem)
    vector = np.zeros(DIMS, np.float32)
    vector[number] = 1.0
    return EmbeddedRow(number, product_id, {"productDisplayName": f"row {number}"}, digest=bytes([number]) * 32,
                       vector=vector, cells=np.full(DIMS, number, np.uint8), thumbnail=f"jpeg {number}".encode())


# a, b, a again, no id, c unreadable, then c readable: the first row of an id that can be indexed keeps it
ROWS = [embedded(0, "a"), embedded(1, "b"), embedded(2, "a"), embedded(3, None, problem="no id"),
        embedded(4, "c", problem="not an image"), embedded(5, "c"), embedded(6, "d")]


def stand_in_catalog() -> Catalog:
    return Catalog(rows=iter(()), total=len(ROWS), source={"kind": "stand-in", "id": "hand-made rows"})


@pytest.fixture(scope="module")
def embedder():
    from recommender.embedder import Embedder

    return Embedder(SETTINGS)  # for the probe the index keeps; the rows' vectors are the stand-in's


def test_the_pipeline_keeps_skips_and_writes_what_the_engine_yields(embedder, tmp_path):
    summary = build_index(stand_in_catalog(), SETTINGS, tmp_path / "index", batch_size=2, embedder=embedder,
                          progress=False, engine=StandIn(ROWS))
    out = tmp_path / "index"
    assert pq.read_table(out / "items.parquet").column("id").to_pylist() == ["a", "b", "c", "d"]
    assert [(out / "images" / f"{row:07d}.jpg").read_bytes() for row in range(4)] == [
        b"jpeg 0", b"jpeg 1", b"jpeg 5", b"jpeg 6"]
    assert np.argmax(np.load(out / "vectors.npy"), axis=1).tolist() == [0, 1, 5, 6]
    assert np.load(out / "cells.npy")[:, 0].tolist() == [0, 1, 5, 6]
    assert np.load(out / "hashes.npy")[:, 0].tolist() == [0, 1, 5, 6]
    assert dict(summary.skipped) == {"duplicate id": 1, "no id": 1, "not an image": 1}
    assert summary.skipped_ids["duplicate id"] == ["a"] and (summary.indexed, summary.embedded) == (4, 4)


def test_a_killed_build_asks_the_engine_for_the_rows_after_its_checkpoint(embedder, tmp_path):
    killed = StandIn(ROWS, killed_at=5)
    with pytest.raises(Killed):
        build_index(stand_in_catalog(), SETTINGS, tmp_path / "index", batch_size=2, embedder=embedder,
                    progress=False, engine=killed)
    assert not (tmp_path / "index").exists()
    engine = StandIn(ROWS)
    build_index(stand_in_catalog(), SETTINGS, tmp_path / "index", batch_size=2, embedder=embedder, progress=False,
                engine=engine)
    assert (killed.starts, engine.starts) == ([0], [4])  # batches 0-1 and 2-3 were saved; row 4 on is asked again
    assert pq.read_table(tmp_path / "index" / "items.parquet").column("id").to_pylist() == ["a", "b", "c", "d"]


def test_rows_out_of_catalog_order_are_refused(embedder, tmp_path):
    shuffled = [ROWS[1], ROWS[0], *ROWS[2:]]
    with pytest.raises(RuntimeError, match="catalog order"):
        build_index(stand_in_catalog(), SETTINGS, tmp_path / "index", batch_size=2, embedder=embedder,
                    progress=False, engine=StandIn(shuffled))
    assert not (tmp_path / "index").exists()


def test_the_in_process_engine_yields_catalog_rows_from_start_in_order(embedder, many_catalog):
    from recommender.pipeline.catalog import load_catalog

    catalog = load_catalog(str(many_catalog), limit=11)
    rows = list(InProcessEngine().rows(catalog, embedder, 3, 4))
    assert [row.number for row in rows] == list(range(3, 11))
    assert [row.id for row in rows] == [str(number) for number in range(3, 11)]
    assert all(row.vector.shape == (DIMS,) and row.thumbnail[:2] == b"\xff\xd8" for row in rows)


def test_pieces_cover_exactly_the_rows_asked_for():
    groups = [RowGroup("a", 0, 7), RowGroup("a", 1, 7), RowGroup("b", 0, 3)]  # rows 0-6, 7-13, 14-16
    assert pieces(groups, 5, 9) == [Piece("a", 0, 5, 7), Piece("a", 1, 0, 2)]
    assert pieces(groups, 13, None) == [Piece("a", 1, 6, 7), Piece("b", 0, 0, 3)]
    assert pieces(groups, 7, 14) == [Piece("a", 1, 0, 7)]
    assert pieces(groups, 17, 20) == []
