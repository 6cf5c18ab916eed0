"""The one search object the app, the API and the scripts share: an image in, the most similar products out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .catalog import METADATA_FIELDS
from .config import Settings
from .embedder import Embedder, probe_image
from .index import IndexFiles, IndexUnusable, VectorIndex, read_manifest

__all__ = ["MAX_K", "Recommender", "Result"]

MAX_K = 50  # a gallery of more than 50 is not browsed; larger k only costs time
PROBE_MIN_COSINE = 0.999  # float32 round-off across CPUs stays far above this; another model falls far below


@dataclass
class Result:
    id: str
    name: str
    distance: float  # exact euclidean distance between unit vectors, in [0, 2]
    similarity: float  # cosine similarity, 1 - distance^2 / 2
    image_path: str  # the product's thumbnail inside the index folder
    metadata: dict

    def to_dict(self) -> dict:
        fields = asdict(self)
        return {**{k: v for k, v in fields.items() if k not in ("metadata", "image_path")}, **self.metadata}


class Recommender:
    """Loads an index and the embedder it was built with, and answers `recommend(image, k)`."""

    def __init__(self, index: VectorIndex, items: list[dict], files: IndexFiles, manifest: dict,
                 embedder: Embedder):
        self.index, self.items, self.files, self.manifest, self.embedder = index, items, files, manifest, embedder
        self.candidates = manifest["index"]["candidates"]
        self.search_k = manifest["index"]["search_k"]

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
                                         image_size=recorded["image_size"]))
        differences = {key: (value, embedder.identity.get(key)) for key, value in recorded.items()
                       if embedder.identity.get(key) != value}
        if differences:
            raise IndexUnusable(f"The index at {files.root} was built with other embedding settings than this "
                                f"app uses: {_describe(differences)}. Rebuild the index with these settings or "
                                "start the app with the index's.")
        _check_probe(embedder, files)
        index = VectorIndex.load(files, dims=recorded["dims"], count=manifest["count"],
                                 trees=manifest["index"]["trees"])
        return cls(index, _read_items(files, manifest["count"]), files, manifest, embedder)

    @property
    def uses_random_weights(self) -> bool:
        return self.manifest["embedder"]["weights"] == "random"

    def recommend(self, image, k: int = 8) -> list[Result]:
        """The `k` catalog products most similar to `image` (any input images.to_rgb takes), best first.
        Raises images.ImageError for an input that is not a usable image."""
        k = int(min(max(k, 1), MAX_K, len(self.index)))
        query = self.embedder.embed_image(image)
        return self.nearest(query, k)

    def nearest(self, query: np.ndarray, k: int) -> list[Result]:
        """The `k` products nearest to an embedding `query` (dims,)."""
        rows, distances = self.index.search(query, k, candidates=self.candidates, search_k=self.search_k)
        return [self._result(int(row), float(distance)) for row, distance in zip(rows, distances)]

    def _result(self, row: int, distance: float) -> Result:
        item = self.items[row]
        metadata = {name: item[name] for name in METADATA_FIELDS}
        return Result(id=item["id"], name=item["productDisplayName"] or item["id"], distance=distance,
                      similarity=1.0 - distance * distance / 2.0, image_path=str(self.files.image(row)),
                      metadata=metadata)


def _read_items(files: IndexFiles, count: int) -> list[dict]:
    import pyarrow.parquet as pq

    items = pq.read_table(files.items).to_pylist()
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
