"""The one search object the app, the API and the scripts share: an image in, the most similar products out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recommender.columns import Columns
from recommender.config import Settings
from recommender.embedder import Embedder, probe_image
from recommender.index import SAME_IMAGE, IndexFiles, IndexUnusable, VectorIndex, load_cells, read_manifest

__all__ = ["MAX_K", "Recommender", "Result", "UnknownProduct"]

MAX_K = 50  # a gallery of more than 50 is not browsed; larger k only costs time
ANY = "All"  # a filter set to this (or left empty) does not filter


class UnknownProduct(ValueError):
    """A product id or filter value that the index does not hold; the message says what it does hold."""
PROBE_MIN_COSINE = 0.999  # float32 round-off across CPUs stays far above this; another model falls far below


@dataclass
class Result:
    id: str
    name: str
    distance: float  # exact euclidean distance between unit vectors, in [0, 2]
    similarity: float  # cosine similarity, 1 - distance^2 / 2
    image_path: str  # the product's thumbnail inside the index folder
    metadata: dict  # every column of the catalog but the id and the image, under its own name
    link: str | None = None  # the product's page in the shop, when the catalog maps one
    price: str | None = None

    def to_dict(self) -> dict:
        own = {k: v for k, v in asdict(self).items() if k not in ("metadata", "image_path")
               and (v is not None or k not in ("link", "price"))}
        return {**own, **self.metadata}


class Recommender:
    """Loads an index and the embedder it was built with, and answers `recommend(image, k)`."""

    def __init__(self, index: VectorIndex, items: "Items", files: IndexFiles, manifest: dict,
                 embedder: Embedder, cells: np.ndarray | None = None):
        self.index, self.items, self.files, self.manifest, self.embedder = index, items, files, manifest, embedder
        self.cells = cells  # (n, dims) uint8 or None: where each vector's maxima were (recommender.serve.explain)
        self.candidates = manifest["index"]["candidates"]
        self.search_k = manifest["index"]["search_k"]
        # one dict of ids (about 130 MB and 0.5 s at 1M products), the rest of the metadata stays columnar
        self.row_of_id = dict(zip(items.column("id"), range(len(items))))
        self.columns = Columns.from_manifest(manifest["dataset"].get("columns"))
        # the API parameter of each filter -> {"column", "parameter", "label"}, in the catalog's order
        self.filters = {f["parameter"]: f for f in self.columns.filter_parameters()}
        self._rows_by_value = {name: _rows_by_value(items.table, f["column"]) for name, f in self.filters.items()}

    def filter_choices(self, name: str) -> list[str]:
        """The values of filter `name` (an API parameter, e.g. "article_type"), the most frequent first."""
        return list(self._rows_by_value[name])

    def matching_rows(self, filters: dict | None) -> np.ndarray | None:
        """Rows whose metadata equals every filter that is set; None when no filter is set (all rows)."""
        chosen = {name: value for name, value in (filters or {}).items() if value not in (None, "", ANY)}
        rows = None
        for name, value in chosen.items():
            if name not in self.filters:
                raise UnknownProduct(f"Unknown filter '{name}'; filters are {', '.join(self.filters) or 'none'}.")
            if value not in self._rows_by_value[name]:
                known = self.filter_choices(name)
                raise UnknownProduct(f"No product has {name} '{value}'; choose one of: {', '.join(known[:30])}"
                                     + (" ..." if len(known) > 30 else "") + f" (or '{ANY}').")
            matching = self._rows_by_value[name][value]
            rows = matching if rows is None else np.intersect1d(rows, matching, assume_unique=True)
        return rows

    def examples(self, count: int = 8) -> list[Result]:
        """Queries to try without a photo: one product of each of the `count` most common values of the filter with
        the most values (the article type in the default schema), or, without filters, products spread evenly."""
        if self._rows_by_value:
            varied = max(self._rows_by_value.values(), key=len)
            return [self._result(int(rows[0]), 0.0) for rows in list(varied.values())[:count]]
        return [self._result(int(row), 0.0) for row in np.linspace(0, len(self.items) - 1, min(count, len(self.items)),
                                                                   dtype=int)]

    def example_label(self, result: "Result") -> str:
        """What an example is shown as: its value of the filter the examples vary."""
        if self._rows_by_value:
            parameter = max(self._rows_by_value, key=lambda name: len(self._rows_by_value[name]))
            return result.metadata.get(self.filters[parameter]["column"]) or result.name
        return result.name

    @classmethod
    def load(cls, index_dir: str | Path, weights: str | None = None, embedder: Embedder | None = None):
        """Open the index in `index_dir` with the embedder recorded in its manifest.

        `weights`, when given, is what the caller expects ("imagenet", "random" or a file): an index built
        with other weights is refused, as is one whose model does not reproduce the recorded probe vector.
        """
        files = IndexFiles(Path(index_dir))
        manifest = read_manifest(files.root)
        recorded = manifest["embedder"]
        if weights is not None:
            _check_weights(weights, recorded, files.root)
        elif recorded["weights"] == "file" and embedder is None:
            raise IndexUnusable(f"The index at {files.root} was built with a local weights file (sha256 "
                                f"{recorded['weights_sha256']}); start the app with WEIGHTS=<that file>.")
        if embedder is None:
            embedder = Embedder(Settings(weights=weights or recorded["weights"], seed=recorded["seed"] or 0,
                                         image_size=recorded["image_size"], precision=recorded["precision"]))
        differences = {key: (value, embedder.identity.get(key)) for key, value in recorded.items()
                       if embedder.identity.get(key) != value}
        if differences:
            raise IndexUnusable(f"The index at {files.root} was built with other embedding settings than this "
                                f"app uses: {_describe(differences)}. Rebuild the index with these settings or "
                                "start the app with the index's.")
        _check_probe(embedder, files)
        index = VectorIndex.load(files, dims=recorded["dims"], count=manifest["count"],
                                 coarse_dims=manifest["index"]["coarse_dims"])
        return cls(index, _read_items(files, manifest["count"]), files, manifest, embedder, load_cells(files, manifest))

    @property
    def uses_random_weights(self) -> bool:
        return self.manifest["embedder"]["weights"] == "random"

    def recommend(self, image, k: int = 8, filters: dict | None = None) -> list[Result]:
        """The `k` catalog products most similar to `image` (any input images.to_rgb takes), best first,
        among those matching `filters` ({parameter: value}, e.g. {"article_type": "Tshirts"}).
        Raises images.ImageError for an input that is not a usable image, UnknownProduct for a bad filter."""
        rows = self.matching_rows(filters)  # checked first: a bad filter costs no model call
        query = self.embedder.embed_image(image)
        return self.nearest(query, k, rows)

    def similar(self, product_id: str, k: int = 8, filters: dict | None = None) -> list[Result]:
        """"More like this": the `k` products nearest to catalog product `product_id`, from its stored vector,
        never the product itself (nor copies of its image)."""
        row = self.row_of(product_id)
        return self.nearest(self.index.rows([row])[0], k, self.matching_rows(filters), skip_query=True)

    def refine(self, query: np.ndarray | None, like=(), unlike=(), k: int = 8, filters: dict | None = None,
               query_product: str | None = None) -> list[Result]:
        """Steering by example: the `k` products nearest to `query` (a photo's vector, or None for the marks alone)
        moved toward the stored vectors of the `like` products and away from those of `unlike` (product ids;
        recommender.serve.feedback), among `filters`, exactly within them. An unliked product is never returned,
        nor `query_product` (a catalog product used as the query: its stored vector is the query) or a copy of it.
        Raises UnknownProduct for an id the catalog does not hold, feedback.NothingToRefine when nothing says
        what to look for."""
        from recommender.serve.feedback import refined_query

        rows = self.matching_rows(filters)  # a bad filter or id is refused before anything is searched
        liked, unliked = ([self.row_of(i) for i in ids] for ids in (like, unlike))
        skipped, excluded = None, set(unliked)
        if query_product is not None:  # its stored vector is the query; it is not returned (it is not unliked)
            row = self.row_of(query_product)
            query = skipped = self.index.rows([row])[0]
            excluded.add(row)
        vector = refined_query(query, self.index.rows(liked), self.index.rows(unliked))
        k = int(min(max(int(k), 1), MAX_K))
        if rows is not None and len(rows) == 0:
            return []
        found, distances = self.index.search(vector, k + len(excluded), self.candidates, self.search_k, rows=rows)
        keep = np.array([row not in excluded for row in found.tolist()], dtype=bool)
        if skipped is not None and keep.any():  # the query product's copies: the same picture under other ids
            keep &= np.linalg.norm(self.index.rows(found) - skipped, axis=1) >= SAME_IMAGE
        return [self._result(int(row), float(distance)) for row, distance in zip(found[keep][:k], distances[keep][:k])]

    def product(self, product_id: str) -> Result:
        """The catalog product `product_id`, as a result at distance 0."""
        return self._result(self.row_of(product_id), 0.0)

    def row_of(self, product_id) -> int:
        if str(product_id) not in self.row_of_id:
            raise UnknownProduct(f"No product with id '{product_id}' in this catalog.")
        return self.row_of_id[str(product_id)]

    def nearest(self, query: np.ndarray, k: int, rows: np.ndarray | None = None,
                skip_query: bool = False) -> list[Result]:
        """The `k` products nearest to an embedding `query` (dims,), among `rows` (None: all)."""
        k = int(min(max(int(k), 1), MAX_K))
        if rows is not None and len(rows) == 0:
            return []
        rows, distances = self.index.search(query, k, self.candidates, self.search_k, rows=rows,
                                            skip_query=skip_query)
        return [self._result(int(row), float(distance)) for row, distance in zip(rows, distances)]

    def _result(self, row: int, distance: float) -> Result:
        item = self.items[row]
        columns = self.columns
        metadata = {name: item.get(name) for name in columns.fields}
        return Result(id=item["id"], name=(columns.name and item.get(columns.name)) or item["id"], distance=distance,
                      similarity=1.0 - distance * distance / 2.0, image_path=str(self.files.image(row)),
                      metadata=metadata, link=columns.link and item.get(columns.link),
                      price=columns.price and item.get(columns.price))


class Items:
    """The catalog's rows, columnar as items.parquet holds them (Arrow): at 1M products a few tens of MB read in a
    fraction of a second, where a dict per row took 1.2 GB and 2 s. `items[row]` is one row as a dict."""

    def __init__(self, table):
        self.table = table
        self._columns = {name: table.column(name) for name in table.column_names}

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, row: int) -> dict:
        return {name: column[row].as_py() for name, column in self._columns.items()}

    def column(self, name: str) -> list:
        return self._columns[name].to_pylist()


def _rows_by_value(table, field: str) -> dict[str, np.ndarray]:
    """value -> the rows holding it (ascending), the most frequent value first; products without one are
    found only when no filter is set on that field."""
    import pyarrow.compute as pc

    encoded = table.column(field).combine_chunks().dictionary_encode()
    codes = pc.fill_null(encoded.indices, -1).to_numpy()  # (n,) a code per row, -1 for no value
    order = np.argsort(codes, kind="stable")  # rows grouped by code, ascending within each
    counts = np.bincount(codes + 1, minlength=len(encoded.dictionary) + 1)
    groups = np.split(order, np.cumsum(counts)[:-1])[1:]  # the first group: rows without a value
    rows = dict(zip(encoded.dictionary.to_pylist(), groups))
    return {value: rows[value].astype(np.int64) for value in sorted(rows, key=lambda value: (-len(rows[value]), value))
            if len(rows[value])}


def _read_items(files: IndexFiles, count: int) -> Items:
    import pyarrow.parquet as pq

    items = Items(pq.read_table(files.items))
    if len(items) != count:
        raise IndexUnusable(f"{files.items} lists {len(items)} products, the manifest says {count}: "
                            "the index is damaged; rebuild or re-download it.")
    return items


def _check_weights(weights: str, recorded: dict, root: Path) -> None:
    expected = "file" if weights not in ("imagenet", "random") else weights
    if expected != recorded["weights"]:
        raise IndexUnusable(f"The index at {root} was built with weights={recorded['weights']}, but this app is "
                            f"set to use weights={weights}. Rebuild the index with --weights {weights}, or "
                            f"start the app with WEIGHTS={recorded['weights']}.")


def _check_probe(embedder: Embedder, files: IndexFiles) -> None:
    recorded = np.load(files.probe, allow_pickle=False)
    fresh = embedder.embed(probe_image(embedder.size)[None])[0]
    cosine = float(np.dot(recorded, fresh)) if recorded.shape == fresh.shape else 0.0
    if cosine < PROBE_MIN_COSINE:
        raise IndexUnusable(f"The model loaded here does not reproduce the index's recorded vectors (probe cosine "
                            f"{cosine:.4f} < {PROBE_MIN_COSINE}): the weights or library versions differ from "
                            f"those of the build ({files.manifest}). Rebuild the index here.")


def _describe(differences: dict) -> str:
    return "; ".join(f"{key} is {index!r} in the index but {app!r} here" for key, (index, app) in differences.items())
