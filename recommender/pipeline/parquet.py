"""Parquet catalogs by row group: which files, in which order, how many rows each row group holds, and the products
of any run of rows. The in-process build reads every row through it; each Ray worker reads its own rows."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, NamedTuple

from recommender.columns import Columns
from recommender.pipeline.catalog import Product, _product

__all__ = ["ParquetLayout", "Piece", "RowGroup", "parquet_files", "pieces", "read_products", "row_groups"]


class RowGroup(NamedTuple):
    file: str
    group: int  # its number in the file
    rows: int


class ParquetLayout(NamedTuple):
    """Where a parquet catalog's rows are: the in-process build reads them in order, Ray splits them among workers."""
    groups: list[RowGroup]  # in catalog order
    folder: Path  # image paths in the table are relative to its folder (its first file's)


class Piece(NamedTuple):
    """Rows first..end-1 of one row group: a slice of the catalog a reader can read without the rest of the file."""
    file: str
    group: int
    first: int
    end: int


def parquet_files(pattern: str) -> list[str]:
    """A folder's parquet files (its sub-folders' too), or the files a path or glob names, sorted: the catalog's
    rows are theirs in this order."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*.parquet"))
    return sorted(glob.glob(os.path.expanduser(pattern)))


def row_groups(files: list[str]) -> list[RowGroup]:
    """Every row group of `files`, in catalog order, from the files' footers alone (no row is read)."""
    import pyarrow.parquet as pq

    groups = []
    for name in files:
        metadata = pq.ParquetFile(name).metadata
        groups += [RowGroup(name, group, metadata.row_group(group).num_rows) for group in range(metadata.num_row_groups)]
    return groups


def pieces(groups: list[RowGroup], start: int, stop: int | None = None) -> list[Piece]:
    """The slices of `groups` that hold catalog rows start..stop-1 (to the end without `stop`)."""
    found, first_row = [], 0
    for name, group, rows in groups:
        low, high = max(start, first_row), first_row + rows if stop is None else min(stop, first_row + rows)
        if low < high:
            found.append(Piece(name, group, low - first_row, high - first_row))
        first_row += rows
    return found


def read_products(slices: list[Piece], columns: Columns, folder: Path) -> Iterator[Product]:
    """The products of `slices`, in order, one row group in memory at a time; only the columns `columns` names are
    read, and image paths are made absolute from `folder` (ParquetLayout.folder)."""
    import pyarrow.parquet as pq

    for name, group, first, end in slices:
        file = pq.ParquetFile(name)
        wanted = [c for c in (columns.id, *columns.fields, columns.image) if c in file.schema_arrow.names]
        for row in file.read_row_group(group, columns=wanted).slice(first, end - first).to_pylist():
            yield _product(row, columns, folder)
