"""A rebuild over a catalog where a few rows changed, were added or removed embeds only those rows, and gives the
index a clean build of the new catalog gives; a killed rebuild resumes; another model reuses nothing."""

import hashlib
import shutil

import numpy as np
import pytest

import synthetic_catalog
from conftest import IMAGE_SIZE, MANY_BATCH
from recommender.pipeline.build import build_index
from recommender.pipeline.catalog import load_catalog
from recommender.config import Settings
from recommender.index import IndexFiles, VectorIndex, read_manifest

pytestmark = pytest.mark.fast  # python -m pytest -m fast

SETTINGS = Settings(weights="random", image_size=IMAGE_SIZE)
CHANGED, REMOVED, ADDED = (7, 30), (12, 40), 2  # rows of the old catalog whose image changes, rows dropped, new rows


class Killed(Exception):
    """Stands for a SIGKILL in the middle of embedding."""


class KilledAtCall:
    """The embedder, but its `calls`-th batch through the model never returns."""

    def __init__(self, embedder, calls: int):
        self._embedder, self._left = embedder, calls

    def __getattr__(self, name):
        return getattr(self._embedder, name)

    def embed_with_cells(self, pixels):
        self._left -= 1
        if self._left == 0:
            raise Killed
        return self._embedder.embed_with_cells(pixels)


class OtherModel(KilledAtCall):
    """The embedder under another identity (as another seed or weights file gives)."""

    identity = property(lambda self: {**self._embedder.identity, "seed": 1})


@pytest.fixture(scope="module")
def embedder():
    """A numpy stand-in for ResNet50 (tests/stand_in_embedder.py): what is reused or embedded again is the subject,
    not the model; test_interrupted_build.py resumes builds of the real model."""
    from stand_in_embedder import StandInEmbedder

    return StandInEmbedder(SETTINGS)


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    """(old, new) parquet catalogs: 60 products then a corrupt row and a copy of product 5 under another id; the new
    one has two images changed, two products removed and two added (before the corrupt row and the copy)."""
    folder = tmp_path_factory.mktemp("incremental")
    old_rows = synthetic_catalog.many_products(60)
    replacements = synthetic_catalog.many_products(len(CHANGED) + ADDED, seed=7)
    new_rows = [dict(row) for number, row in enumerate(old_rows) if number not in REMOVED]
    for number, replacement in zip(CHANGED, replacements):
        next(row for row in new_rows if row["id"] == number)["image"] = replacement["image"]
    new_rows += [dict(row, id=1000 + number) for number, row in enumerate(replacements[len(CHANGED):])]
    return (synthetic_catalog.write_parquet(folder / "old.parquet", old_rows),
            synthetic_catalog.write_parquet(folder / "new.parquet", new_rows))


def copy_of(index, to):
    """A copy of the index folder's parent at `to` (links kept: the index may be a link to a generation folder)."""
    shutil.copytree(index.parent, to, symlinks=True)
    return to / index.name


def build(catalog, out, embedder, reuse=True):
    return build_index(load_catalog(str(catalog)), SETTINGS, out, batch_size=MANY_BATCH, embedder=embedder,
                       progress=False, reuse=reuse)


@pytest.fixture(scope="module")
def old_index(catalogs, embedder, tmp_path_factory):
    out = tmp_path_factory.mktemp("old") / "index"
    build(catalogs[0], out, embedder)
    return out


@pytest.fixture(scope="module")
def clean_index(catalogs, embedder, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "index"
    build(catalogs[1], out, embedder)
    return out


@pytest.fixture(scope="module")
def rebuilt(catalogs, embedder, old_index, tmp_path_factory):
    """The new catalog built over a copy of the old index: (its folder, the build's summary). The copy is a plain
    folder, as an index written before generations (recommender.index.swap_into_place) is."""
    out = tmp_path_factory.mktemp("rebuilt") / "index"
    shutil.copytree(old_index, out)
    return out, build(catalogs[1], out, embedder)


def files_of(index, skip=("manifest.json",)) -> dict[str, str]:
    return {path.relative_to(index).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(index.rglob("*")) if path.is_file() and path.name not in skip}


def neighbours(index) -> list[list[int]]:
    """Each product's 10 search results (copies shown once) with its own vector as the query."""
    files, manifest = IndexFiles(index), read_manifest(index)
    vectors = VectorIndex.load(files, manifest["embedder"]["dims"], manifest["count"],
                               manifest["index"]["coarse_dims"])
    return [vectors.search(np.array(vector), 10, SETTINGS.candidates, SETTINGS.search_k)[0].tolist()
            for vector in vectors.vectors]


def test_a_rebuild_embeds_only_the_changed_and_added_rows(rebuilt):
    summary = rebuilt[1]
    assert (summary.embedded, summary.reused) == (len(CHANGED) + ADDED, 60 - len(REMOVED) - len(CHANGED) + 1)
    assert f"Embedded {summary.embedded} images; reused {summary.reused} unchanged" in str(summary)
    assert summary.indexed == 61 and dict(summary.skipped) == {"not an image": 1}


def test_a_rebuild_gives_the_index_of_a_clean_build(rebuilt, clean_index):
    out = rebuilt[0]
    # ids, metadata, thumbnails and content hashes byte for byte; vectors to float round-off (batch position)
    equal = ("items.parquet", "hashes.npy", "probe.npy")
    assert {name: digest for name, digest in files_of(out).items() if name.startswith("images/") or name in equal} \
        == {name: digest for name, digest in files_of(clean_index).items()
            if name.startswith("images/") or name in equal}
    assert np.allclose(np.load(out / "vectors.npy"), np.load(clean_index / "vectors.npy"), rtol=0, atol=1e-5)
    assert (np.load(out / "cells.npy") == np.load(clean_index / "cells.npy")).mean() > 0.999
    assert neighbours(out) == neighbours(clean_index)
    assert read_manifest(out)["files"]["hashes.npy"] == read_manifest(clean_index)["files"]["hashes.npy"]


def test_a_killed_rebuild_resumes_to_the_same_index(catalogs, embedder, old_index, rebuilt, tmp_path, capsys):
    out = copy_of(old_index, tmp_path / "copy")
    with pytest.raises(Killed):  # the second batch with a changed image (row 30) dies in the model
        build(catalogs[1], out, KilledAtCall(embedder, calls=2))
    assert files_of(out) == files_of(old_index)  # the served index is untouched
    summary = build(catalogs[1], out, embedder)
    assert "Resuming" in capsys.readouterr().out
    assert summary.embedded == 1 + ADDED  # row 7's batch was saved before the kill: not embedded again
    assert files_of(out) == files_of(rebuilt[0])


def test_another_model_reuses_nothing(embedder, old_index):
    from recommender.pipeline.build import _previous_index

    assert len(_previous_index(old_index, embedder).rows) == 60  # 61 products, one image twice
    assert _previous_index(old_index, OtherModel(embedder, calls=0)) is None


def test_an_image_folder_row_is_known_by_its_file_bytes(tmp_path):
    from recommender.pipeline.engines import _content_digest
    from recommender.pipeline.catalog import Product

    photo = tmp_path / "shirt.jpg"
    photo.write_bytes(b"\xff\xd8 the same bytes")
    in_parquet = Product("1", {}, image_bytes=photo.read_bytes(), image_path=None)
    in_folder = Product("1", {}, image_bytes=None, image_path=str(photo))
    assert _content_digest(in_folder) == _content_digest(in_parquet) == hashlib.sha256(photo.read_bytes()).digest()
    assert _content_digest(Product("2", {}, None, str(tmp_path / "gone.jpg"))) is None  # to_rgb says why
