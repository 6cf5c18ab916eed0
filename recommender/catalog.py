"""Read a product catalog (Hub dataset id, local parquet files or an image folder) as a stream of products."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator

__all__ = ["CatalogUnavailable", "Catalog", "Product", "METADATA_FIELDS", "load_catalog"]

# The Hub dataset's metadata columns, in its own names; every catalog is read into this shape.
METADATA_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour",
                   "season", "year", "usage", "productDisplayName")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class CatalogUnavailable(RuntimeError):
    """The catalog could not be opened; the message says what failed and what to do."""


@dataclass
class Product:
    id: str
    metadata: dict  # METADATA_FIELDS -> value or None
    image_bytes: bytes | None  # encoded image, as parquet files hold it
    image_path: str | None  # or a file on disk, as image folders hold it

    @property
    def image(self):
        return self.image_bytes if self.image_bytes is not None else self.image_path


@dataclass
class Catalog:
    rows: Iterator[Product]
    total: int | None  # for the progress bar; None when the source does not say
    source: dict = field(default_factory=dict)  # recorded in the manifest


def load_catalog(dataset: str, split: str = "train", limit: int | None = None,
                 revision: str | None = None) -> Catalog:
    """Open `dataset`: a folder of images, parquet file(s) (path or glob) in the Hub schema, or a Hub id."""
    import datasets  # imported here so that the app starts without it when an index is present

    datasets.logging.set_verbosity_error()
    path = Path(dataset).expanduser()
    if path.is_dir() and not _parquet_files(path):
        stream, total, source = _image_folder(datasets, path)
    elif path.exists() or glob.has_magic(dataset) or dataset.endswith(".parquet"):
        stream, total, source = _parquet(datasets, path, dataset)
    else:
        stream, total, source = _hub(datasets, dataset, split, revision)
    source["split"] = split if source["kind"] == "hub" else None
    source["limit"] = limit
    if limit is not None:
        stream = islice(stream, limit)
        total = limit if total is None else min(total, limit)
    return Catalog(rows=stream, total=total, source=source)


def _parquet_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.parquet"))


def _parquet(datasets, path: Path, pattern: str):
    import pyarrow.parquet as pq

    files = _parquet_files(path) if path.is_dir() else sorted(glob.glob(os.path.expanduser(pattern)))
    if not files:
        raise CatalogUnavailable(f"No parquet file matches {pattern}.")
    try:
        columns = set(pq.read_schema(files[0]).names)
        total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception as error:
        raise CatalogUnavailable(f"{files[0]} is not a readable parquet file ({error}).") from None
    if "image" not in columns:
        raise CatalogUnavailable(f"{files[0]} has no 'image' column; expected the columns of "
                                 f"ashraq/fashion-product-images-small: id, {', '.join(METADATA_FIELDS)}, image.")
    stream = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    return _products(datasets, stream), total, {"kind": "parquet", "id": pattern, "files": len(files)}


def _image_folder(datasets, folder: Path):
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise CatalogUnavailable(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    stream = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", streaming=True)
    styles = _read_styles(folder)
    return (_products(datasets, stream, folder=folder, styles=styles), len(files),
            {"kind": "folder", "id": str(folder), "styles_csv": bool(styles)})


def _read_styles(folder: Path) -> dict[str, dict]:
    """The metadata of the classic Kaggle layout (images/<id>.jpg beside styles.csv), by id; {} without one."""
    import csv

    path = next((p for p in (folder / "styles.csv", folder.parent / "styles.csv") if p.is_file()), None)
    if path is None:
        return {}
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        rows = csv.reader(file)
        header = next(rows, [])
        styles = {}
        for row in rows:
            if len(row) > len(header):  # unquoted commas in the last column, the product name
                row = row[:len(header) - 1] + [",".join(row[len(header) - 1:])]
            record = dict(zip(header, row))
            if record.get("id"):
                styles[record["id"]] = {name: record.get(name) or None for name in METADATA_FIELDS}
    return styles


def _hub(datasets, repo_id: str, split: str, revision: str | None):
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_OFFLINE

    sha = revision
    if not HF_HUB_OFFLINE:  # asking the Hub first fails in a second offline, where load_dataset retries for long
        try:
            info = HfApi().dataset_info(repo_id, revision=revision)
        except Exception as error:
            raise CatalogUnavailable(
                f"Could not reach the Hugging Face dataset '{repo_id}' ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}).\nFix: check the id and the network, or pass a local "
                "copy: --dataset path/to/file.parquet (same columns) or --dataset path/to/images/, or set "
                "INDEX_REPO to download a prebuilt index instead."
            ) from None
        sha = info.sha
    try:
        stream = datasets.load_dataset(repo_id, split=split, revision=sha, streaming=True)
    except Exception as error:
        raise CatalogUnavailable(f"Could not open split '{split}' of '{repo_id}': {error}") from None
    splits = stream.info.splits or {}
    total = splits[split].num_examples if split in splits else None  # from the dataset card, when it says
    return _products(datasets, stream), total, {"kind": "hub", "id": repo_id, "revision": sha}


def _products(datasets, stream, folder: Path | None = None, styles: dict | None = None) -> Iterator[Product]:
    """Rows with the image left encoded: decoding is the build's job, in worker threads, where a bad image
    is counted and skipped instead of stopping the stream."""
    stream = stream.cast_column("image", datasets.Image(decode=False))
    labels = stream.features.get("label") if stream.features and folder else None
    for row in stream:
        image = row["image"] or {}
        metadata = {name: row.get(name) for name in METADATA_FIELDS}
        if folder is not None:
            relative = Path(image["path"]).relative_to(folder) if image.get("path") else None
            product_id = str(relative.with_suffix("").as_posix()) if relative else None
            if styles and relative and relative.stem in styles:
                product_id, metadata = relative.stem, styles[relative.stem]
            else:
                if labels is not None and row.get("label") is not None:
                    metadata["articleType"] = labels.int2str(row["label"])  # the sub-folder's name
                metadata["productDisplayName"] = relative.stem if relative else None
        else:
            product_id = row.get("id")
        yield Product(
            id=str(product_id) if product_id is not None else None,
            metadata=metadata,
            image_bytes=image.get("bytes"),
            image_path=image.get("path"),
        )
