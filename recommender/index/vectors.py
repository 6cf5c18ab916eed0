"""The vectors' search: Annoy over PCA-reduced vectors for candidates, the exact stored vectors for re-ranking, and
exact filtered search by lower bounds on the principal coordinates."""

from __future__ import annotations

import os

import numpy as np

from recommender.index.files import IndexFiles, IndexUnusable

__all__ = ["Projection", "SAME_IMAGE", "VectorIndex"]

SAME_IMAGE = 1e-3  # vectors closer than this are one picture (a copy or a re-encoding): shown once
PCA_SAMPLE = 50_000  # rows the principal axes are fitted on: more changes them little and costs seconds
BOUND_DIMS = 64  # principal coordinates a filtered search scans: 256 MB at 1M rows, 43 ms a scan on one core
FIRST_POOL = 256  # rows a filtered search ranks exactly first; ~300 were needed over half of 250k synthetic rows
SCAN_ROWS = 4096  # rows ranked exactly beyond which loose bounds give way to one pass over all vectors
PASS_ROWS = 1024  # rows a pass over all vectors reads at once: an 8 MB buffer, which stays in the CPU's cache
ROW_READ_COST = 10  # a row read on its own (a pread each) costs about as much as 10 rows of a sequential pass
# (an estimate from one ad hoc timing at 1M rows, not a bench.py row; the choice only moves cost, never results)
CHUNK = 65_536  # rows projected at once: a (CHUNK, 2048) float32 temporary is 512 MB



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
        if len(centred) < centred.shape[1]:  # fewer rows than dims (a test's or a BUILD_LIMIT's index): the SVD of
            # the (n, dims) rows costs milliseconds where the (dims, dims) eigh below takes seconds
            axes = np.linalg.svd(centred.astype(np.float64), full_matrices=False)[2][:coarse_dims]  # descending
        else:
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


def _project(projection: Projection, vectors: np.ndarray, dims: int) -> np.ndarray:
    """(n, dims) float32: the rows' first `dims` principal coordinates, CHUNK rows at a time (vectors may be a
    memory-mapped 8 GB file)."""
    axes = projection.axes[:dims]
    out = np.empty((len(vectors), len(axes)), np.float32)
    for start in range(0, len(vectors), CHUNK):
        out[start:start + CHUNK] = (vectors[start:start + CHUNK] - projection.mean) @ axes.T
    return out
