"""An index's files: where each lives, its manifest, and the checks that a folder holds a complete, unaltered index
before it is used."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "IndexFiles", "IndexUnusable", "load_cells", "read_manifest", "sha256"]

# 2: the manifest records each file's size and checksum; 3: Annoy over PCA-reduced vectors. cells.npy came later
# and is optional (an index without it serves, explanations embed the product's thumbnail), so still 3.
FORMAT_VERSION = 3
MANIFEST = "manifest.json"


class IndexUnusable(RuntimeError):
    """The index is missing, damaged or was built with other settings; the message says what to do."""


@dataclass(frozen=True)
class IndexFiles:
    """Where each part of an index lives; every reader and writer goes through these names."""
    root: Path

    manifest = property(lambda self: self.root / MANIFEST)
    vectors = property(lambda self: self.root / "vectors.npy")  # (n, dims) float32, L2-normalised
    annoy = property(lambda self: self.root / "annoy.ann")  # euclidean Annoy index over the reduced rows
    pca_mean = property(lambda self: self.root / "pca_mean.npy")  # (dims,) float32: subtracted before projecting
    pca_axes = property(lambda self: self.root / "pca_axes.npy")  # (coarse_dims, dims) float32 principal axes
    items = property(lambda self: self.root / "items.parquet")  # one row of metadata per vector row
    probe = property(lambda self: self.root / "probe.npy")  # (dims,) embedding of embedder.probe_image
    images = property(lambda self: self.root / "images")  # images/<row>.jpg, the gallery's thumbnails
    # (n, dims) uint8, optional: per channel, the cell (row * grid + column) of the grid over the padded square
    # image that its pooled value came from; recommender.explain splits a similarity over the cells with it
    cells = property(lambda self: self.root / "cells.npy")
    # (n, BOUND_DIMS) float32, optional: each row's first principal coordinates; their distances are lower bounds
    # of the true ones, which makes a filtered search exact without multiplying every stored vector
    coarse = property(lambda self: self.root / "coarse.npy")
    # (n, 32) uint8, optional: sha256 of each row's catalog image bytes; a rebuild reuses the vector, cells and
    # thumbnail of an image whose bytes it has already embedded (recommender.build)
    hashes = property(lambda self: self.root / "hashes.npy")

    def image(self, row: int) -> Path:
        return self.images / f"{row:07d}.jpg"

    @property
    def checked(self) -> tuple[Path, ...]:
        """The files every index has, whose size and sha256 the manifest records and a load verifies."""
        return self.vectors, self.annoy, self.pca_mean, self.pca_axes, self.items, self.probe

    @property
    def optional(self) -> tuple[Path, ...]:
        """Files an index may lack; the manifest records those it has, and a load verifies them."""
        return self.cells, self.hashes, self.coarse

    def fingerprint(self) -> dict:
        """What the manifest records of the files: size and sha256 of each, count and bytes of the images."""
        images = list(self.images.glob("*.jpg"))
        present = [*self.checked, *(path for path in self.optional if path.exists())]
        return {**{path.name: {"bytes": path.stat().st_size, "sha256": sha256(path)} for path in present},
                "images": {"count": len(images), "bytes": sum(path.stat().st_size for path in images)}}


def load_cells(files: IndexFiles, manifest: dict) -> np.ndarray | None:
    """cells.npy, memory-mapped: (count, dims) uint8; None for an index built without it (whose manifest, checked
    by read_manifest, does not record it)."""
    if files.cells.name not in manifest["files"]:
        return None
    count, dims = manifest["count"], manifest["embedder"]["dims"]
    cells = np.load(files.cells, mmap_mode="r", allow_pickle=False)
    if cells.shape != (count, dims) or cells.dtype != np.uint8:
        raise IndexUnusable(f"{files.cells} holds {cells.shape} {cells.dtype} values, but the manifest says "
                            f"{(count, dims)} uint8: the index is damaged; rebuild or re-download it.")
    return cells


def read_manifest(root: Path) -> dict:
    files = IndexFiles(Path(root))
    if not files.manifest.is_file():
        raise IndexUnusable(f"No index at {files.root} ({MANIFEST} is missing). Build one with "
                          f"`python scripts/build_index.py --out {files.root}` or set INDEX_REPO.")
    try:
        manifest = json.loads(files.manifest.read_text())
    except (OSError, ValueError) as error:
        raise IndexUnusable(f"{files.manifest} is not readable JSON ({error}): rebuild or re-download the index.") \
            from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexUnusable(f"The index at {files.root} has format version {manifest.get('format_version')}; this "
                          f"code reads version {FORMAT_VERSION}. Rebuild it with scripts/build_index.py.")
    recorded = manifest.get("files") or {}
    expected = [*files.checked, *(path for path in files.optional if path.name in recorded), files.images]
    missing = [p.name for p in expected if not p.exists()]
    if missing:
        raise IndexUnusable(f"The index at {files.root} is incomplete: {', '.join(missing)} missing. "
                            "Rebuild or re-download it.")
    if not _verified_before(files):
        _verify(files, recorded)
        _record_verified(files)
    return manifest


def _verify(files: IndexFiles, recorded: dict) -> None:
    """Compare every file with the manifest before anything is loaded: a truncated or altered file would
    otherwise crash Annoy or return wrong neighbours."""
    fix = "the index is damaged: rebuild or re-download it."
    for path in (*files.checked, *(path for path in files.optional if path.name in recorded)):
        expected = recorded.get(path.name) or {}
        if path.stat().st_size != expected.get("bytes"):
            raise IndexUnusable(f"{path} has {path.stat().st_size} bytes, the manifest says {expected.get('bytes')}: "
                                + fix)
        if sha256(path) != expected.get("sha256"):
            raise IndexUnusable(f"{path} does not match its checksum in the manifest: " + fix)
    images = list(files.images.glob("*.jpg"))
    expected = recorded.get("images") or {}
    if (len(images), sum(p.stat().st_size for p in images)) != (expected.get("count"), expected.get("bytes")):
        raise IndexUnusable(f"{files.images} holds {len(images)} images, not the {expected.get('count')} the "
                            "manifest records (or they were altered): " + fix)


def _identities(files: IndexFiles) -> dict:
    """What changes when a file is written, replaced or its folder's entries change: inode, size, modification and
    change times (the change time cannot be set back from user space)."""
    paths = [path for path in (*files.checked, *files.optional, files.manifest, files.images) if path.exists()]
    return {path.name: [(stat := path.stat()).st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
            for path in paths}


def _stamp(files: IndexFiles) -> Path | None:
    """Where a generation's verification is recorded (beside it: not an index file); None outside generations."""
    root = files.root.resolve()
    return root.with_name(root.name + ".verified.json") if root.parent.name.endswith(".generations") else None


def _verified_before(files: IndexFiles) -> bool:
    """Whether every file is the very one a full verification (or the build) saw: then its checksums need not be
    computed again, which takes 5 s per 8 GB from the page cache and far more from a cold disk."""
    stamp = _stamp(files)
    try:
        return stamp is not None and json.loads(stamp.read_text()) == json.loads(json.dumps(_identities(files)))
    except (OSError, ValueError):
        return False


def _record_verified(files: IndexFiles) -> None:
    stamp = _stamp(files)
    if stamp is not None:
        try:
            stamp.write_text(json.dumps(_identities(files)))
        except OSError:  # a read-only folder: every load verifies in full
            pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


