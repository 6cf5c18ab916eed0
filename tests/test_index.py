"""The vector index: exact re-ranking over Annoy candidates from PCA-reduced vectors, and the on-disk format."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from recommender.config import Settings
from recommender.index import (IndexFiles, IndexUnusable, Projection, VectorIndex, adopt, hold, read_manifest,
                               remove_unheld, swap_into_place)
from synthetic_catalog import resnet_like_features


def brute_force(vectors, query, k):
    return np.argsort(np.linalg.norm(vectors - query, axis=1), kind="stable")[:k]


@pytest.mark.fast
def test_hand_checkable_order():
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float32)
    index = VectorIndex.build(vectors, trees=2, coarse_dims=2)
    rows, distances = index.search(np.array([0.8, 0.6, 0], np.float32), k=3, candidates=10, search_k=100)
    assert rows.tolist() == [3, 0, 1]
    assert distances[0] == pytest.approx(np.sqrt(0.2 ** 2 * 2), abs=1e-6)
    assert np.all(np.diff(distances) >= 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_reranked_ann_finds_the_brute_force_neighbours_at_default_settings(seed):
    settings = Settings()
    vectors = resnet_like_features(3200, seed=seed)
    base, queries = vectors[:3000], vectors[3000:]
    index = VectorIndex.build(base, settings.trees, settings.coarse_dims)
    found = 0
    for query in queries:
        rows, distances = index.search(query, 10, settings.candidates, settings.search_k)
        exact = brute_force(base, query, 10)
        found += len(set(rows.tolist()) & set(exact.tolist()))
        np.testing.assert_allclose(distances, np.linalg.norm(base[rows] - query, axis=1), rtol=1e-5)
    assert found / (10 * len(queries)) >= 0.99  # 0.997-0.999 measured; scripts/bench.py measures 44k and 250k


@pytest.mark.fast
def test_k_larger_than_index_returns_everything_once():
    vectors = resnet_like_features(5, dims=16)
    rows, _ = VectorIndex.build(vectors, trees=2, coarse_dims=2).search(vectors[0], 10, 100, 1000)
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.fast
@pytest.mark.parametrize("filtered", [False, True])
def test_copies_of_one_image_are_shown_once_as_the_lowest_row_whatever_the_round_off(filtered):
    """Rows 3 and 17 are one image, their vectors apart by round-off only; whichever the query is nearer to,
    row 3 stands for both, also when the copy lies just beyond the k-th result."""
    vectors = resnet_like_features(40, dims=32, seed=4)
    vectors[17] = vectors[3] + np.float32(1e-6)
    index = VectorIndex.build(vectors, trees=2, coarse_dims=8)
    rows = np.arange(40) if filtered else None
    for query in (vectors[17], vectors[3], vectors[17] + np.float32(1e-6)):
        for k in (1, 5, 40):
            found, _ = index.search(query, k, 100, 1000, rows=rows)
            assert found[0] == 3 and 17 not in found.tolist() and len(found) == min(k, 39)
    far = brute_force(vectors, vectors[0], 40).tolist()  # a query for which the copies come late
    k = min(far.index(3), far.index(17)) + 1
    found, _ = index.search(vectors[0], k, 100, 1000, rows=rows)
    assert found[-1] == 3 and 17 not in found.tolist()


@pytest.mark.fast
def test_save_and_load_round_trip(tmp_path):
    vectors = resnet_like_features(200, dims=64)
    files = IndexFiles(tmp_path)
    VectorIndex.build(vectors, trees=4, coarse_dims=16).save(files)
    loaded = VectorIndex.load(files, dims=64, count=200, coarse_dims=16)
    rows, distances = loaded.search(vectors[7], 3, 50, 5000)
    assert rows[0] == 7 and distances[0] == pytest.approx(0, abs=1e-6)


@pytest.mark.fast
def test_vectors_that_do_not_match_the_manifest_are_refused(tmp_path):
    files = IndexFiles(tmp_path)
    VectorIndex.build(resnet_like_features(50, dims=32), trees=2, coarse_dims=8).save(files)
    with pytest.raises(IndexUnusable, match="vectors.npy"):
        VectorIndex.load(files, dims=32, count=60, coarse_dims=8)


@pytest.mark.fast
def test_missing_or_foreign_manifest_is_refused(tmp_path):
    with pytest.raises(IndexUnusable, match="No index"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(IndexUnusable, match="format version 99"):
        read_manifest(tmp_path)


@pytest.mark.fast
def test_projection_keeps_the_largest_variance_and_never_lengthens_distances():
    vectors = resnet_like_features(2000, dims=64, seed=3)
    projection = Projection.fit(vectors, 16)
    reduced = projection(vectors)
    assert reduced.shape == (2000, 16)
    np.testing.assert_allclose(projection.axes @ projection.axes.T, np.eye(16), atol=1e-5)  # orthonormal axes
    variances = reduced.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6)  # the first axes carry the most variance
    assert variances.sum() > 0.5 * (vectors - vectors.mean(axis=0)).var(axis=0).sum()
    full = np.linalg.norm(vectors[:100, None] - vectors[None, :100], axis=2)
    coarse = np.linalg.norm(reduced[:100, None] - reduced[None, :100], axis=2)
    assert np.all(coarse <= full + 1e-5)  # a projection onto orthonormal axes can only shorten distances
    np.testing.assert_array_equal(Projection.fit(vectors, 16).axes, projection.axes)  # rebuilds are identical


@pytest.mark.fast
def test_fewer_vectors_than_dimensions_span_the_same_axes_as_the_covariance_gives():
    """Under `dims` rows, Projection.fit takes the axes from an SVD of the rows, not the covariance's eigh: the same
    axes (up to sign), as orthonormal, ordered by variance, and as repeatable."""
    vectors = resnet_like_features(40, dims=256, seed=5)
    projection = Projection.fit(vectors, 16)
    centred = vectors - vectors.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    expected = eigenvectors[:, ::-1][:, :16].T
    np.testing.assert_allclose(np.abs(np.sum(projection.axes * expected, axis=1)), 1, atol=1e-4)  # same axes
    np.testing.assert_allclose(projection.axes @ projection.axes.T, np.eye(16), atol=1e-5)
    assert np.all(np.diff(projection(vectors).var(axis=0)) <= 1e-6)
    np.testing.assert_array_equal(Projection.fit(vectors, 16).axes, projection.axes)
    assert Projection.fit(vectors, 40).axes.shape == (40, 256)  # as many axes as rows: a full orthonormal set
    np.testing.assert_allclose(Projection.fit(vectors, 40).axes @ Projection.fit(vectors, 40).axes.T, np.eye(40),
                               atol=1e-5)


@pytest.mark.fast
def test_a_swap_keeps_a_held_generation_until_it_is_let_go(tmp_path):
    target = tmp_path / "index"
    for number in range(2):
        (tmp_path / "built").mkdir()
        (tmp_path / "built" / "manifest.json").write_text(str(number))
        swap_into_place(tmp_path / "built", target)
        if number == 0:
            first = target.resolve()
            lock = hold(first)  # an app answering from the first index
    assert (target / "manifest.json").read_text() == "1" and target.resolve() != first
    assert (first / "manifest.json").read_text() == "0"  # still there for the app
    lock.close()
    remove_unheld(target)
    assert not first.exists() and [p for p in target.with_name(".index.generations").iterdir() if p.is_dir()] == [
        target.resolve()]


@pytest.mark.fast
def test_a_relative_index_path_keeps_its_current_generation(tmp_path, monkeypatch):
    """INDEX_DIR's default is the relative "index": a swap's cleanup must know its current generation then too."""
    monkeypatch.chdir(tmp_path)
    for number in range(2):
        Path("built").mkdir()
        Path("built", "manifest.json").write_text(str(number))
        swap_into_place(Path("built"), Path("index"))
    assert Path("index", "manifest.json").read_text() == "1"
    remove_unheld(Path("index"))
    assert Path("index", "manifest.json").read_text() == "1"
    assert [p.name for p in Path(".index.generations").iterdir() if p.is_dir()] == [Path("index").resolve().name]


@pytest.mark.fast
def test_an_index_folder_from_before_generations_is_adopted_in_place(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "manifest.json").write_text("{}")
    generation = adopt(tmp_path / "index")
    assert (tmp_path / "index").is_symlink() and (generation / "manifest.json").read_text() == "{}"


PARTS = ("vectors.npy", "annoy.ann", "items.parquet")  # stand-ins: what a race test needs is that every file is there


def _write_generation(folder, label):
    """A small complete fake index: its parts, then a manifest naming them (written last, as a build does)."""
    folder.mkdir()
    for name in PARTS:
        (folder / name).write_text(label)
    (folder / "manifest.json").write_text(json.dumps({"label": label, "files": PARTS}))


def _complete(generation) -> bool:
    try:
        parts = json.loads((generation / "manifest.json").read_text())["files"]
    except (OSError, ValueError):
        return False
    return all((generation / name).is_file() for name in parts)


def _swap_repeatedly(target, worker, rounds):
    for number in range(rounds):
        built = target.with_name(f"built-{worker}")
        _write_generation(built, f"{worker}-{number}")
        swap_into_place(built, target)  # which also removes the generations nobody holds


def _clean_repeatedly(target, stop):
    while not stop.is_set():
        remove_unheld(target)


def test_the_served_generation_is_never_removed_by_cleanups_racing_swaps(tmp_path):
    """Swaps and cleanups in several processes at once (a build, the app's refresh, a download): whenever a reader
    resolves the index link, as the app does, it finds a complete generation it can hold, never a removed one."""
    import multiprocessing

    target = tmp_path / "index"
    _write_generation(tmp_path / "first", "first")
    swap_into_place(tmp_path / "first", target)
    context = multiprocessing.get_context("spawn")  # no fork of a test process that may have threads
    stop = context.Event()
    swappers = [context.Process(target=_swap_repeatedly, args=(target, worker, 200)) for worker in range(3)]
    cleaners = [context.Process(target=_clean_repeatedly, args=(target, stop)) for _ in range(2)]
    for process in swappers + cleaners:
        process.start()
    problems, looks = set(), 0
    try:
        while any(process.is_alive() for process in swappers) and len(problems) < 3:
            generation = target.resolve()
            lock = hold(generation)
            looks += 1
            if lock is None:  # removed: fine only if the link has moved on to a newer one meanwhile
                if target.resolve() == generation:
                    problems.add(f"the link points at {generation.name}, which was removed")
                continue
            with lock:
                if not _complete(generation):
                    problems.add(f"{generation.name}, held, is incomplete: {sorted(os.listdir(generation))}")
    finally:
        stop.set()
        for process in swappers + cleaners:
            process.join(timeout=30)
            if process.is_alive():  # hung: not left behind the test
                process.kill()
    assert not problems, f"after {looks} looks: {sorted(problems)}"
    assert [process.exitcode for process in swappers + cleaners] == [0] * 5
    assert _complete(target.resolve()), "the link left pointing at a removed or incomplete generation"


def _adopt_when_told(target, ready, start, resolved):
    ready.release()
    start.wait()
    resolved.put(str(adopt(target)))


def test_processes_adopting_an_old_index_folder_at_once_all_serve_the_same_complete_generation(tmp_path):
    """Two apps (or an app and a build) starting on an index folder from before generations: each turns it into a
    generation if no one has yet. Both at once must not link the index to a second, empty, generation."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for round_number in range(8):
        target = tmp_path / f"index-{round_number}"
        _write_generation(target, "old")
        ready, start, resolved = context.Semaphore(0), context.Event(), context.Queue()
        adopters = [context.Process(target=_adopt_when_told, args=(target, ready, start, resolved)) for _ in range(4)]
        for process in adopters:
            process.start()
        for _ in adopters:  # all four started (spawn imports the project), waiting for the word
            assert ready.acquire(timeout=60), "an adopter did not start"
        start.set()
        for process in adopters:
            process.join(timeout=60)
        assert [process.exitcode for process in adopters] == [0] * 4
        served = {resolved.get(timeout=5) for _ in adopters}
        assert served == {str(target.resolve())} and _complete(target.resolve()), \
            f"round {round_number}: the adopters serve {sorted(served)}, the link {target.resolve()}"


@pytest.mark.fast
def test_checksums_are_skipped_only_while_the_files_are_the_ones_verified(stand_in_index, tmp_path, monkeypatch):
    """A generation's files are hashed once (at build or download); a load then compares inode, size and times, and a
    file written since is hashed again, and refused when damaged."""
    import recommender.index.files as index_module

    target = tmp_path / "index"
    swap_into_place(shutil.copytree(stand_in_index, tmp_path / "built"), target)  # as a build leaves it
    hashed = []
    monkeypatch.setattr(index_module, "sha256", lambda path, real=index_module.sha256: hashed.append(path.name)
                        or real(path))
    read_manifest(target)
    assert hashed == []
    annoy = target / "annoy.ann"
    data = bytearray(annoy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    annoy.write_bytes(bytes(data))
    with pytest.raises(IndexUnusable, match="annoy.ann does not match its checksum"):
        read_manifest(target)
    assert hashed


@pytest.mark.fast
@pytest.mark.parametrize("share", [0.5, 0.05])
def test_a_filtered_search_is_exact_even_when_the_lower_bounds_are_loose(share):
    """Two principal coordinates bound the distances of 64-dimensional vectors only loosely, so the first rows ranked
    exactly rarely hold the answer: the search must widen until no row left out can beat its k-th result."""
    vectors = resnet_like_features(3000, dims=64, seed=5)
    index = VectorIndex.build(vectors, trees=2, coarse_dims=2)
    rows = np.sort(np.random.default_rng(1).choice(3000, int(3000 * share), replace=False))
    for query in resnet_like_features(20, dims=64, seed=6):
        for k in (1, 10, 50):
            found, distances = index.search(query, k, 100, 1000, rows=rows)
            expected = rows[brute_force(vectors[rows], query, k)]
            assert found.tolist() == expected.tolist()
            np.testing.assert_allclose(distances, np.linalg.norm(vectors[found] - query, axis=1), rtol=1e-5)


@pytest.mark.fast
@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("step", [2, 11])
def test_loose_bounds_go_straight_to_one_bounded_pass_and_stay_exact(mapped, step, tmp_path, monkeypatch):
    """A query unlike the catalog has loose bounds: once the first pool shows that more than SCAN_ROWS rows are
    within reach, the search ranks those rows (only they can enter the answer) by their dot products in one go,
    instead of ranking ever larger pools first (which cost three times the pass). Many are read by one pass over all
    vectors, PASS_ROWS at a time (with pread from a mapped vectors.npy); a few (under 1/ROW_READ_COST of the rows)
    alone, never the rest of the subset."""
    import recommender.index.vectors as index_module

    monkeypatch.setattr(index_module, "SCAN_ROWS", 100 if step == 11 else 1100)  # 1,100: above the old second pool
    monkeypatch.setattr(index_module, "PASS_ROWS", 128)  # 3,000 rows: 24 blocks, the last one short
    vectors = resnet_like_features(3000, dims=64, seed=5)
    built = VectorIndex.build(vectors, trees=2, coarse_dims=2)
    if mapped:
        np.save(tmp_path / "vectors.npy", vectors)
        vectors = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    index = VectorIndex(vectors, built.annoy, built.projection, built.coarse)
    rows = np.arange(0, 3000, step)  # 1,500 rows (a pass), or 273 (under 3,000 / 10: read alone)
    read, blocks = [], []
    monkeypatch.setattr(index, "rows", lambda wanted, original=index.rows: read.append(len(wanted)) or original(wanted))
    monkeypatch.setattr(index, "_blocks", lambda original=index._blocks: ((start, block) for start, block in original()
                                                                          if blocks.append(len(block)) is None))
    for query in resnet_like_features(10, dims=64, seed=6):
        for k in (1, 10, 50):
            read.clear()
            blocks.clear()
            found, _ = index.search(query, k, 100, 1000, rows=rows)
            assert found.tolist() == rows[brute_force(np.asarray(vectors)[rows], query, k)].tolist()
            first, best = index_module.FIRST_POOL, min(len(rows), 4 * k + 10)
            if step == 2:  # the first pool, the pass over all 3,000 rows, then the pass's best
                assert read == [first, best] and sum(blocks) == 3000 and max(blocks) == 128
            else:  # the first pool, the rows within reach alone (128 at a time: more than 100, at most the
                # subset's 273), then their best
                within = read[1:-1]
                assert read[0] == first and read[-1] == best and blocks == []
                assert all(size == 128 for size in within[:-1]) and 100 < sum(within) <= len(rows), read


@pytest.mark.fast
def test_loose_bounds_rank_only_the_rows_within_reach_of_a_large_subset(monkeypatch):
    """Half the catalog as the subset, queries near products outside it, bounds from 4 coordinates: a few hundred
    rows are within reach, more than SCAN_ROWS. Those are ranked by their dot products, never the whole subset (at
    1M products, sending the whole subset to the pass cost a pass over 8 GB for 25k rows within reach)."""
    import recommender.index.vectors as index_module

    monkeypatch.setattr(index_module, "SCAN_ROWS", 20)
    vectors = resnet_like_features(3000, dims=64, seed=5)
    built = VectorIndex.build(vectors, trees=2, coarse_dims=4)
    index = VectorIndex(vectors, built.annoy, built.projection, built.coarse)
    rows, scanned = np.arange(0, 3000, 2), []
    monkeypatch.setattr(index, "_scan_rows", lambda query, k, wanted, skip, original=index._scan_rows:
                        scanned.append(len(wanted)) or original(query, k, wanted, skip))
    noise = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)
    for number, row in enumerate(range(1, 40, 4)):
        query = vectors[row] + 0.02 * noise[number]
        query /= np.linalg.norm(query)
        found, _ = index.search(query, 10, 100, 1000, rows=rows)
        assert found.tolist() == rows[brute_force(vectors[rows], query, 10)].tolist()
    assert len(scanned) >= 5 and all(20 < count < len(rows) for count in scanned), scanned


@pytest.mark.fast
def test_tight_bounds_rank_only_the_rows_within_reach(monkeypatch):
    """With bounds equal to the distances (all 64 coordinates of 64-dimensional vectors), the first pool holds the
    answer and every row within its reach: nothing more is read, and no pass is made."""
    import recommender.index.vectors as index_module

    vectors = resnet_like_features(3000, dims=64, seed=5)
    index = VectorIndex.build(vectors, trees=2, coarse_dims=64)
    rows = np.arange(0, 3000, 2)
    read = []
    monkeypatch.setattr(index, "rows", lambda wanted, original=index.rows: read.append(len(wanted)) or original(wanted))
    monkeypatch.setattr(index, "_scan_rows", lambda *arguments: pytest.fail("a pass over all vectors"))
    for query in resnet_like_features(10, dims=64, seed=6):
        read.clear()
        found, _ = index.search(query, 10, 100, 1000, rows=rows)
        assert found.tolist() == rows[brute_force(vectors[rows], query, 10)].tolist()
        assert read == [index_module.FIRST_POOL]
