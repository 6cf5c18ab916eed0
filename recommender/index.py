"""The index on disk: Annoy over PCA-reduced vectors for candidates, the exact vectors for re-ranking, items and
images for the gallery; its generations, so that a new index replaces a served one without pulling files from
under it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "IndexUnusable", "VectorIndex", "IndexFiles", "adopt", "hold", "load_cells",
           "read_manifest", "remove_unheld", "swap_into_place"]

# 2: the manifest records each file's size and checksum; 3: Annoy over PCA-reduced vectors. cells.npy came later
# and is optional (an index without it serves, explanations embed the product's thumbnail), so still 3.
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
SAME_IMAGE = 1e-3  # vectors closer than this are one picture (a copy or a re-encoding): shown once
PCA_SAMPLE = 50_000  # rows the principal axes are fitted on: more changes them little and costs seconds
BOUND_DIMS = 64  # principal coordinates a filtered search scans: 256 MB at 1M rows, 43 ms a scan on one core
FIRST_POOL = 256  # rows a filtered search ranks exactly first; ~300 were needed over half of 250k synthetic rows
SCAN_ROWS = 4096  # rows ranked exactly beyond which loose bounds give way to one pass over all vectors
PASS_ROWS = 1024  # rows a pass over all vectors reads at once: an 8 MB buffer, which stays in the CPU's cache
ROW_READ_COST = 10  # a row read on its own (a pread each) costs about as much as 10 rows of a sequential pass
# (an estimate from one ad hoc timing at 1M rows, not a bench.py row; the choice only moves cost, never results)
CHUNK = 65_536  # rows projected at once: a (CHUNK, 2048) float32 temporary is 512 MB


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


class Projection:
    """Principal component analysis: vectors (n, dims) -> their coordinates (n, coarse_dims) on the axes of
    largest variance, where euclidean distances are nearly those of the full vectors at a fraction of the cost."""

    def __init__(self, mean: np.ndarray, axes: np.ndarray):
        self.mean, self.axes = mean, axes

    @classmethod
    def fit(cls, vectors: np.ndarray, coarse_dims: int, seed: int = 0) -> "Projection":
        sample = vectors
        if len(vectors) > PCA_SAMPLE:
            sample = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), PCA_SAMPLE, replace=False))]
        mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)  # float32: no 800 MB float64 copy
        centred = sample - mean
        _, eigenvectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))  # ascending eigenvalues
        axes = eigenvectors[:, ::-1][:, :coarse_dims].T
        return cls(mean, np.ascontiguousarray(axes, dtype=np.float32))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors - self.mean) @ self.axes.T


class VectorIndex:
    """Nearest neighbours by exact euclidean distance among candidates that Annoy proposes from PCA-reduced
    vectors (docs/index.md says why)."""

    def __init__(self, vectors: np.ndarray, annoy_index, projection: Projection, coarse: np.ndarray | None = None):
        self.vectors = vectors  # (n, dims) float32; may be memory-mapped
        self.annoy = annoy_index
        self.projection = projection
        # (n, BOUND_DIMS) float32: the rows' first principal coordinates (computed here for an index without them)
        self.coarse = _project(projection, vectors, BOUND_DIMS) if coarse is None else coarse
        self.coarse_norms = np.einsum("ij,ij->i", self.coarse, self.coarse)  # (n,) their squared lengths
        self._file = open(vectors.filename, "rb") if getattr(vectors, "filename", None) else None  # see rows()

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), dims) float32: copies of stored rows. A mapped vectors.npy is read with pread, not through
        the map: every page touched through a map stays in the app's resident memory (with the kernel's
        fault-around, 64 KB per row read), and after enough queries all 8 GB of a 1M index would."""
        if self._file is None:
            return np.asarray(self.vectors[rows])
        out = np.empty((len(rows), self.vectors.shape[1]), np.float32)
        size, start, descriptor = out.shape[1] * 4, self.vectors.offset, self._file.fileno()
        for position, row in enumerate(rows):
            os.preadv(descriptor, [out[position]], start + int(row) * size)
        return out

    @classmethod
    def build(cls, vectors: np.ndarray, trees: int, coarse_dims: int, seed: int = 0) -> "VectorIndex":
        from annoy import AnnoyIndex

        if not isinstance(vectors, np.memmap):  # a mapped vectors.npy is left where it is (scripts/bench_scale.py)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # n vectors span at most n dimensions: more axes would only take disk space
        projection = Projection.fit(vectors, min(coarse_dims, *vectors.shape), seed)
        annoy_index = AnnoyIndex(len(projection.axes), "euclidean")
        annoy_index.set_seed(seed)  # the same vectors give the same trees, so rebuilt indexes are identical
        reduced = _project(projection, vectors, len(projection.axes))
        for row, point in enumerate(reduced):
            annoy_index.add_item(row, point)
        annoy_index.build(trees, n_jobs=-1)
        return cls(vectors, annoy_index, projection, np.ascontiguousarray(reduced[:, :BOUND_DIMS]))

    def save(self, files: IndexFiles) -> None:
        mapped = getattr(self.vectors, "filename", None)  # vectors.npy itself, memory-mapped: already written
        if not (mapped and files.vectors.exists() and os.path.samefile(mapped, files.vectors)):
            np.save(files.vectors, self.vectors, allow_pickle=False)
        np.save(files.pca_mean, self.projection.mean, allow_pickle=False)
        np.save(files.pca_axes, self.projection.axes, allow_pickle=False)
        np.save(files.coarse, self.coarse, allow_pickle=False)
        self.annoy.save(str(files.annoy))

    @classmethod
    def load(cls, files: IndexFiles, dims: int, count: int, coarse_dims: int) -> "VectorIndex":
        from annoy import AnnoyIndex

        # never unpickle an index file; each array's shape must be what the manifest says
        arrays = {path: np.load(path, mmap_mode="r", allow_pickle=False) for path in (files.vectors, files.pca_mean,
                                                                                      files.pca_axes)}
        shapes = {files.vectors: (count, dims), files.pca_mean: (dims,), files.pca_axes: (coarse_dims, dims)}
        for path, array in arrays.items():
            if array.shape != shapes[path] or array.dtype != np.float32:
                raise IndexUnusable(f"{path} holds {array.shape} {array.dtype} values, but the manifest says "
                                    f"{shapes[path]} float32: the index is damaged; rebuild or re-download it.")
        annoy_index = AnnoyIndex(coarse_dims, "euclidean")
        try:
            annoy_index.load(str(files.annoy))  # memory-mapped: loading is instant, pages come in on use
        except OSError as error:
            raise IndexUnusable(f"Could not load {files.annoy} ({error}): rebuild or re-download the index.") from None
        if annoy_index.get_n_items() != count:
            raise IndexUnusable(f"{files.annoy} holds {annoy_index.get_n_items()} items, the manifest says {count}: "
                              "the index is damaged; rebuild or re-download it.")
        projection = Projection(np.array(arrays[files.pca_mean]), np.array(arrays[files.pca_axes]))
        coarse = None
        if files.coarse.exists():  # optional: an index built before it existed computes it here
            coarse = np.load(files.coarse, allow_pickle=False)  # in memory: every filtered search scans it
            if coarse.shape != (count, min(BOUND_DIMS, coarse_dims)) or coarse.dtype != np.float32:
                raise IndexUnusable(f"{files.coarse} holds {coarse.shape} {coarse.dtype} values, but the manifest "
                                    f"says {count} rows of float32: the index is damaged; rebuild or re-download it.")
        return cls(arrays[files.vectors], annoy_index, projection, coarse)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: np.ndarray, k: int, candidates: int, search_k: int, rows: np.ndarray | None = None,
               skip_query: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The k rows nearest to `query` (dims,) and their exact euclidean distances, nearest first, no two
        of them the same image (identical vectors).

        Without `rows`, Annoy proposes the max(candidates, 10 k) rows nearest in the PCA-reduced space
        (inspecting `search_k` nodes), and their exact distances on the full stored vectors decide. With `rows`
        (a filter's subset), the search is exact over them (_search_rows), so a filter never loses a match that an
        approximate pool missed. `skip_query` leaves out the query's own vector and its copies ("more like this" of a
        catalog product).
        """
        if rows is not None:
            return self._search_rows(query, k, rows, skip_query)
        pool = min(max(candidates, 10 * k), len(self))
        pool = np.asarray(self.annoy.get_nns_by_vector(self.projection(query), pool, search_k=search_k),
                          dtype=np.int64)
        return self._rank(query, k, pool, skip_query)

    def _search_rows(self, query, k, rows, skip_query):
        """Exact search over `rows` without ranking them all on the full vectors. A distance between the rows'
        first principal coordinates never exceeds the true one (orthonormal axes only shorten), so rank the
        `pool` rows of smallest lower bound exactly; its k-th result is at most that far from the query, so only
        rows whose bound lies within that reach (and its copies') can still enter the answer. Rank those exactly
        too: at most SCAN_ROWS of them at once, or, for more (loose bounds: a query unlike the catalog), by their
        dot products, read row by row for a few and in one pass over all vectors for many (_scan_rows). Growing the
        pool step by step first cost three times the pass (43 vs 12 ms at 44k); sending every row of a large subset
        to the pass, not only those within reach, cost a pass over 8 GB for 25k rows within reach at 1M."""
        reduced = self.projection(query[None])[0][:self.coarse.shape[1]]
        # unit vectors: |a - b|^2 = |a|^2 - 2 a.b + |b|^2. A large subset: one product with every row is cheaper
        # than copying the subset's rows out first.
        dot = (self.coarse @ reduced)[rows] if len(rows) > len(self) // 16 else self.coarse[rows] @ reduced
        bounds = self.coarse_norms[rows] - 2 * dot + reduced @ reduced  # (len(rows),) squared lower bounds
        size = min(len(rows), max(FIRST_POOL, 4 * k + 10))
        if size < len(rows):
            pool = np.argpartition(bounds, size - 1)[:size]  # positions in `rows` of the smallest bounds
            found, found_distances = self._rank(query, k, rows[pool], skip_query)
            # 1e-3: float32 round-off of the bounds, far below the distances that separate results
            reach = found_distances[-1] + SAME_IMAGE + 1e-3 if len(found) == k else np.inf
            within = np.flatnonzero(bounds <= reach * reach)
            if len(within) <= size:  # the pool holds every row within reach (it holds the smallest bounds)
                return found, found_distances
            if len(within) > SCAN_ROWS:  # only they can enter the answer: a pass over all vectors only for many
                return self._scan_rows(query, k, rows[within], skip_query)
            rows = rows[within]
        return self._rank(query, k, rows, skip_query)

    def _rank(self, query, k, rows, skip_query):
        """The k distinct rows of `rows` nearest to `query`, ranked on the full stored vectors."""
        vectors = self.rows(rows)
        distances = np.linalg.norm(vectors - query, axis=1)
        order = np.lexsort((rows, distances))  # by distance; exact ties (copies) by row, so results are stable
        return self._distinct(rows[order], distances[order], vectors[order], k, query if skip_query else None)

    def _scan_rows(self, query, k, rows, skip_query):
        """_search_rows for loose bounds (a query unlike every stored vector): every row of `rows` ranked by its dot
        product, read one by one for a small subset, else by one pass over all stored vectors, PASS_ROWS at a time;
        the best of them ranked exactly. Exact."""
        if len(rows) * ROW_READ_COST < len(self):
            similarity = np.empty(len(rows), np.float32)  # unit vectors: a larger dot product is a smaller distance
            for start in range(0, len(rows), PASS_ROWS):
                similarity[start:start + PASS_ROWS] = self.rows(rows[start:start + PASS_ROWS]) @ query
        else:
            every = np.empty(len(self), np.float32)
            for start, block in self._blocks():
                every[start:start + len(block)] = block @ query
            similarity = every[rows]
        wanted = min(len(rows), 4 * k + 10)  # room for copies that are dropped
        pool = rows[np.argpartition(-similarity, wanted - 1)[:wanted]] if wanted < len(rows) else rows
        return self._rank(query, k, pool, skip_query)

    def _blocks(self):
        """(first row, rows) for all stored vectors, PASS_ROWS at a time. A mapped vectors.npy is read with pread
        into one small buffer: through the map, every page would be faulted in and then count as the app's memory
        (rows()), and unmapping each block after use made the pass slower (docs/scale.md)."""
        if self._file is None:
            for start in range(0, len(self), PASS_ROWS):
                yield start, self.vectors[start:start + PASS_ROWS]
            return
        buffer = np.empty((PASS_ROWS, self.vectors.shape[1]), np.float32)
        row_bytes = buffer.shape[1] * 4
        for start in range(0, len(self), PASS_ROWS):
            block = buffer[:min(PASS_ROWS, len(self) - start)]
            os.preadv(self._file.fileno(), [block], self.vectors.offset + start * row_bytes)
            yield start, block

    def _distinct(self, rows, distances, vectors, k, skip_vector):
        """The first k of `rows` (nearest first) that are not copies of one another. Copies of one image get
        vectors equal only up to float round-off (batch position changes the last bits), so round-off must not
        pick which copy is shown: the one with the lowest row stands for them all."""
        kept, limit = [], np.inf
        for position, row in enumerate(rows):
            if distances[position] >= limit:  # no copy of a kept row lies further than SAME_IMAGE beyond the k-th
                break
            if skip_vector is not None and distances[position] < SAME_IMAGE:
                continue
            if kept:
                gaps = np.linalg.norm(vectors[kept] - vectors[position], axis=1)
                twin = int(np.argmin(gaps))
                if gaps[twin] < SAME_IMAGE:
                    kept[twin] = min(kept[twin], position, key=lambda p: rows[p])
                    continue
            if len(kept) < k:
                kept.append(position)
                limit = distances[position] + SAME_IMAGE if len(kept) == k else limit
        kept.sort()  # positions are in (distance, row) order
        return rows[kept], distances[kept]


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


def swap_into_place(built: Path, target: Path) -> None:
    """Make the complete index in `built` the one at `target`, in one atomic step: `built` becomes a generation
    folder, .<target>.generations/<time>, and `target` a symbolic link to it, replaced by a rename. A process that
    resolved `target` before keeps its generation for as long as it holds it (`hold`); generations no process holds
    are removed. `built` must just have been written or verified (the build, a download): its files' identities
    are recorded, so loading it needs no full checksum."""
    target = Path(target)
    adopt(target)  # an index folder from before generations becomes one first: _link would move it onto `built`
    generations = _generations(target)
    generations.mkdir(parents=True, exist_ok=True)
    generation = _new_generation(generations)
    with _held(generation):  # until the link points at it: a cleanup racing this swap must not take it first
        os.replace(built, generation)
        _record_verified(IndexFiles(generation))
        _link(target, generation)
    remove_unheld(target)


def adopt(target: Path) -> Path:
    """The generation folder `target` serves, turning an index folder from before generations into one (so that a
    later swap cannot move its files under a reader)."""
    target = Path(target)
    generations = _generations(target)
    # a folder to adopt, or none because another process is moving it into a generation now: wait for that one
    if not target.is_symlink() and (target.is_dir() or generations.is_dir()):
        generations.mkdir(parents=True, exist_ok=True)
        with open(generations / ".adopt.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time: two would each link a generation of their own
            if target.is_dir() and not target.is_symlink():  # not adopted by another process meanwhile
                generation = _new_generation(generations)
                with _held(generation):  # _link moves the folder there before it links it: not to be removed
                    _link(target, generation)
    return target.resolve()


def hold(generation: Path):
    """Keep `generation` from removal while the returned lock is open (close it to let go); None if it was removed
    meanwhile. A shared lock: any number of processes may hold one generation."""
    lock = open(generation.with_name(generation.name + ".lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_SH)  # waits while remove_unheld decides about this generation
    if generation.is_dir():
        return lock
    lock.close()
    return None


def remove_unheld(target: Path) -> None:
    """Remove the generations of `target` that are not current and that no process holds."""
    target = Path(target)
    generations = _generations(target)
    if not generations.is_dir():
        return
    for path in generations.iterdir():
        if not path.is_dir():
            continue
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # an app still answers from it, or may show its images, or a swap links it
                continue
            # Which one is current is read now, under the lock, not once before the loop: another process's swap
            # may have linked this one since. No swap can link it from here on: a swap holds its generation
            # (_held) from before the folder exists until the link points at it.
            if path.resolve() == target.resolve():  # both absolute: `target` may be relative, as INDEX_DIR's default
                continue
            shutil.rmtree(path, ignore_errors=True)
            for extra in (".verified.json", ".lock"):
                path.with_name(path.name + extra).unlink(missing_ok=True)


@contextmanager
def _held(generation: Path):
    """A shared lock on `generation`, as `hold` takes, but taken before the folder exists (its name is new)."""
    with open(generation.with_name(generation.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def _generations(target: Path) -> Path:
    return target.with_name(f".{target.name}.generations")


def _new_generation(generations: Path) -> Path:
    return generations / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}"


def _link(target: Path, generation: Path) -> None:
    """Point `target` at `generation`; an index folder in the way (from before generations) becomes `generation`."""
    if target.is_dir() and not target.is_symlink():
        os.replace(target, generation)  # the one moment `target` is missing: once, on the first swap
    link = target.with_name(f".{target.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(generation, target.parent), link)  # relative: the parent folder may move
    os.replace(link, target)


def _project(projection: Projection, vectors: np.ndarray, dims: int) -> np.ndarray:
    """(n, dims) float32: the rows' first `dims` principal coordinates, CHUNK rows at a time (vectors may be a
    memory-mapped 8 GB file)."""
    axes = projection.axes[:dims]
    out = np.empty((len(vectors), len(axes)), np.float32)
    for start in range(0, len(vectors), CHUNK):
        out[start:start + CHUNK] = (vectors[start:start + CHUNK] - projection.mean) @ axes.T
    return out
