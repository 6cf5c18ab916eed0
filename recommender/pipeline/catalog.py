"""Read a product catalog (Hub dataset id, parquet, a CSV or JSON Lines table, or an image folder) as a stream of
products, with `Columns` saying which of the table's columns holds the id, the image, the name, the link, the price
and the filters."""

from __future__ import annotations

import csv
import glob
import json
import re
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from recommender.columns import METADATA_FIELDS, CatalogUnavailable, Columns

if TYPE_CHECKING:
    from recommender.pipeline.parquet import ParquetLayout

__all__ = ["Catalog", "Product", "load_catalog"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
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
    source: dict = field(default_factory=dict)  # recorded in the manifest; source["columns"]: the mapping
    columns: Columns = field(default_factory=lambda: Columns.from_manifest(None))
    parquet: ParquetLayout | None = None  # a parquet catalog's row groups: what --engine ray splits among workers


def load_catalog(dataset: str, split: str = "train", limit: int | None = None,
                 revision: str | None = None, columns: Columns | None = None) -> Catalog:
    """Open `dataset`: a folder of images, a CSV or JSON Lines table, parquet file(s) (path or glob), or a Hub id;
    a table's columns as `columns` says (default: the Hub dataset's schema), checked before any image is read."""
    import datasets  # imported here so that the app starts without it when an index is present

    datasets.logging.set_verbosity_error()
    columns = columns or Columns()
    from recommender.pipeline.parquet import parquet_files  # parquet imports this module: imported once it is

    path = Path(dataset).expanduser()
    layout = None
    if path.is_dir() and not parquet_files(dataset):
        if not columns.is_default:
            raise CatalogUnavailable(f"{path} is a folder of images: the column flags (--id-column, ...) name the "
                                     "columns of a table. Give a CSV, JSON Lines or parquet file that lists the "
                                     "images, or leave the flags out.")
        stream, total, source = _image_folder(datasets, path)
        columns = Columns.from_manifest(None)
    elif path.suffix.lower() in TABLE_SUFFIXES and path.is_file():
        stream, total, source, columns = _table(path, TABLE_SUFFIXES[path.suffix.lower()], columns)
    elif path.exists() or glob.has_magic(dataset) or dataset.endswith(".parquet"):
        stream, total, source, columns, layout = _parquet(dataset, columns)
    else:
        stream, total, source, columns = _hub(datasets, dataset, split, revision, columns)
    source["split"] = split if source["kind"] == "hub" else None
    source["limit"] = limit
    source["columns"] = columns.to_manifest()  # a build with another mapping is another build (no resume)
    if limit is not None:
        stream = islice(stream, limit)
        total = limit if total is None else min(total, limit)
    return Catalog(rows=stream, total=total, source=source, columns=columns, parquet=layout)


def _parquet(pattern: str, columns: Columns):
    """Parquet file(s), read by row group (recommender.pipeline.parquet: the same reader as Ray's workers')."""
    import pyarrow.parquet as pq

    from recommender.pipeline.parquet import ParquetLayout, parquet_files, pieces, read_products, row_groups

    files = parquet_files(pattern)
    if not files:
        raise CatalogUnavailable(f"No parquet file matches {pattern}.")
    try:
        available = pq.read_schema(files[0]).names
        groups = row_groups(files)
    except Exception as error:
        raise CatalogUnavailable(f"{files[0]} is not a readable parquet file ({error}).") from None
    columns = columns.resolve(available, files[0])
    layout = ParquetLayout(groups, Path(files[0]).parent)  # image paths in a parquet table: relative to its folder
    stream = read_products(pieces(groups, 0), columns, layout.folder)
    return (stream, sum(group.rows for group in groups), {"kind": "parquet", "id": pattern, "files": len(files)},
            columns, layout)


def _table(path: Path, kind: str, columns: Columns):
    """A CSV (delimiter detected: , ; tab or |) or JSON Lines table whose image column holds file paths, relative to
    the table's folder or absolute. Read once through before any image is, to check its columns and rows and count
    them; every value is kept as text."""
    try:
        available, total = _csv_columns(path) if kind == "csv" else _jsonl_columns(path)
    except UnicodeDecodeError:
        raise CatalogUnavailable(f"{path} is not UTF-8 text (line {_first_undecodable_line(path)}): save it as "
                                 "UTF-8 (\"CSV UTF-8\" in a spreadsheet).") from None
    columns = columns.resolve(available, str(path))
    rows = _csv_rows(path) if kind == "csv" else _jsonl_rows(path)
    first_image = next((row.get(columns.image) for row in rows if row.get(columns.image)), None)
    if isinstance(first_image, str) and re.match(r"[a-z]+://", first_image, re.I):
        raise CatalogUnavailable(f"The image column '{columns.image}' of {path} holds addresses ({first_image[:80]}): "
                                 "the build reads image files. Download the images first and give their paths, "
                                 "relative to the table's folder or absolute.")
    stream = (_product(row, columns, path.parent) for row in (_csv_rows(path) if kind == "csv" else _jsonl_rows(path)))
    return stream, total, {"kind": kind, "id": str(path)}, columns


def _first_undecodable_line(path: Path) -> int:
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _csv_dialect(file) -> dict:
    sample = file.read(64 * 1024)
    file.seek(0)
    try:
        return {"delimiter": csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter}
    except csv.Error:  # one column, or too regular to tell: a comma
        return {"delimiter": ","}


def _csv_columns(path: Path) -> tuple[list[str], int]:
    with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: spreadsheets write a byte-order mark
        reader = csv.reader(file, **_csv_dialect(file))
        header = next(reader, None)
        if not header or not any(header):
            raise CatalogUnavailable(f"{path} is empty: its first line must name the columns.")
        total = 0
        for total, row in enumerate(reader, 1):
            if row and len(row) != len(header):
                raise CatalogUnavailable(f"{path}, line {reader.line_num}: {len(row)} fields where the header has "
                                         f"{len(header)}. Quote values that hold the delimiter.")
    return [name.strip() for name in header], total


def _csv_rows(path: Path) -> Iterator[dict]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file, **_csv_dialect(file))
        header = [name.strip() for name in next(reader)]
        for row in reader:
            if row:
                yield {name: value if value.strip() else None for name, value in zip(header, row)}


def _jsonl_columns(path: Path) -> tuple[list[str], int]:
    names, total = {}, 0
    with path.open(encoding="utf-8-sig") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise CatalogUnavailable(f"{path}, line {number}: not JSON ({error}).") from None
            if not isinstance(row, dict):
                raise CatalogUnavailable(f"{path}, line {number}: a JSON object per line is expected, not "
                                         f"{type(row).__name__}.")
            names.update(dict.fromkeys(row))
            total += 1
    if not total:
        raise CatalogUnavailable(f"{path} holds no rows.")
    return list(names), total


def _jsonl_rows(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8-sig") as file:
        for line in file:
            if line.strip():
                yield {name: json.dumps(value) if isinstance(value, (dict, list)) else value
                       for name, value in json.loads(line).items()}


def _image_folder(datasets, folder: Path):
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise CatalogUnavailable(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    stream = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", streaming=True)
    styles = _read_styles(folder)
    return (_products(datasets, stream, Columns.from_manifest(None), folder=folder, styles=styles), len(files),
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


def _hub(datasets, repo_id: str, split: str, revision: str | None, columns: Columns):
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
    if stream.features:  # from the dataset's card or files: checked before any image is downloaded
        columns = columns.resolve(list(stream.features), f"The dataset '{repo_id}'")
    splits = stream.info.splits or {}
    total = splits[split].num_examples if split in splits else None  # from the dataset card, when it says
    return _products(datasets, stream, columns), total, {"kind": "hub", "id": repo_id, "revision": sha}, columns


def _product(row: dict, columns: Columns, folder: Path | None) -> Product:
    """A table's row as a Product: the id as text, the fields, the image as bytes or a path (made absolute from the
    table's `folder`). The image is left encoded: decoding is the build's job, in worker threads, where a bad image
    is counted and skipped instead of stopping the stream."""
    image = row.get(columns.image)
    if isinstance(image, dict):  # a datasets Image: bytes and/or a path
        data, path = image.get("bytes"), image.get("path")
    else:
        data, path = (image, None) if isinstance(image, (bytes, bytearray)) else (None, image)
    if data is None and isinstance(path, str) and path.strip() and folder is not None:
        path = str(folder / Path(path.strip()).expanduser())  # an absolute path stays as it is
    product_id = row.get(columns.id)
    return Product(id=str(product_id).strip() if product_id is not None else None,
                   metadata={name: row.get(name) for name in columns.fields}, image_bytes=data,
                   image_path=path if isinstance(path, str) and path.strip() else None)


def _products(datasets, stream, columns: Columns, folder: Path | None = None,
              styles: dict | None = None) -> Iterator[Product]:
    """The products of a datasets stream: a Hub dataset's rows, or an image folder's files (`folder`, with its
    styles.csv's metadata)."""
    image_column = "image" if folder is not None else columns.image
    if isinstance((stream.features or {}).get(image_column), datasets.Image):
        stream = stream.cast_column(image_column, datasets.Image(decode=False))
    if folder is None:
        yield from (_product(row, columns, None) for row in stream)
        return
    labels = stream.features.get("label") if stream.features else None
    for row in stream:
        image = row["image"] or {}
        metadata = {name: None for name in METADATA_FIELDS}
        relative = Path(image["path"]).relative_to(folder) if image.get("path") else None
        product_id = str(relative.with_suffix("").as_posix()) if relative else None
        if styles and relative and relative.stem in styles:
            product_id, metadata = relative.stem, styles[relative.stem]
        else:
            if labels is not None and row.get("label") is not None:
                metadata["articleType"] = labels.int2str(row["label"])  # the sub-folder's name
            metadata["productDisplayName"] = relative.stem if relative else None
        yield Product(
            id=str(product_id) if product_id is not None else None,
            metadata=metadata,
            image_bytes=image.get("bytes"),
            image_path=image.get("path"),
        )
