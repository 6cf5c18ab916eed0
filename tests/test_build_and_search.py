"""Indexes built by the real build script answer image queries correctly, and refuse to be misused."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import IMAGE_SIZE, run_build
from recommender.index import IndexUnusable
from recommender.serve.search import Recommender


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def test_build_summary_counts_what_it_indexed_and_skipped(built_index, catalog_rows):
    out, result = built_index
    indexed = len(catalog_rows) + 1  # and the duplicate image under another id
    assert f"Indexed {indexed} products" in result.stdout
    assert "Skipped 1: not an image (e.g. 99998)" in result.stdout
    assert "img/s" in result.stderr  # the tqdm progress bar
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == indexed
    assert manifest["embedder"]["weights"] == "random" and manifest["embedder"]["image_size"] == IMAGE_SIZE
    assert manifest["dataset"]["kind"] == "parquet" and manifest["skipped"] == {"not an image": 1}
    assert len(list((out / "images").glob("*.jpg"))) == indexed
    # the staging folder (.index.building) is gone; index links to the one generation (docs/index.md)
    assert sorted(path.name for path in out.parent.iterdir()) == [".index.generations", "index"]
    assert out.is_symlink() and out.resolve().parent == out.parent / ".index.generations"


def test_catalog_image_comes_back_first_at_distance_zero(recommender, catalog_rows):
    for row in catalog_rows:
        results = recommender.recommend(jpeg(row["image"]), k=5)  # the bytes the catalog holds
        assert results[0].id == str(row["id"])
        assert results[0].distance == pytest.approx(0, abs=1e-3)
        assert results[0].similarity == pytest.approx(1, abs=1e-4)
        assert [r.distance for r in results] == sorted(r.distance for r in results)
        assert len({r.id for r in results}) == 5


@pytest.mark.parametrize("change", [ImageOps.mirror, lambda image: image.resize((90, 120)),
                                    lambda image: image.resize((360, 480))],
                         ids=["mirrored", "smaller", "larger"])
def test_altered_copy_finds_its_original_in_top_3(recommender, catalog_rows, change):
    misses = [row["id"] for row in catalog_rows
              if str(row["id"]) not in [r.id for r in recommender.recommend(change(row["image"]), k=3)]]
    assert misses == []


def test_results_carry_metadata_and_gallery_images(recommender, catalog_rows):
    result = recommender.recommend(jpeg(catalog_rows[3]["image"]), k=1)[0]
    record = result.to_dict()
    for field in ("id", "name", "distance", "similarity", "articleType", "baseColour", "gender", "year"):
        assert field in record
    assert record["name"] == catalog_rows[3]["productDisplayName"] and record["year"] == "2012"
    assert Image.open(result.image_path).size[1] == 160  # the stored thumbnail of that product


def test_k_is_clamped_to_50(many_recommender):
    """many_recommender holds 120 distinct images: any limit above 50 would show."""
    image = many_recommender.product("0").image_path
    assert [len(many_recommender.recommend(image, k=k)) for k in (49, 50, 51, 1000)] == [49, 50, 50, 50]


def test_image_folder_catalog_builds_and_searches(catalog_folder, catalog_rows, tmp_path):
    result = run_build("--dataset", str(catalog_folder), "--weights", "random", "--image-size", str(IMAGE_SIZE),
                       "--out", str(tmp_path / "index"))
    assert result.returncode == 0, result.stderr
    assert f"Indexed {len(catalog_rows)} products" in result.stdout
    assert "Skipped 1: not an image (e.g. Caps/broken)" in result.stdout
    found = Recommender.load(tmp_path / "index").recommend(catalog_folder / "Tshirts" / "10000.jpg", 1)[0]
    assert found.id == "Tshirts/10000" and found.metadata["articleType"] == "Tshirts"


def test_bf16_index_records_its_precision_and_queries_use_it(built_index, catalog_parquet, catalog_rows, tmp_path):
    result = run_build("--dataset", str(catalog_parquet), "--weights", "random", "--image-size", str(IMAGE_SIZE),
                       "--out", str(tmp_path / "index"), "--precision", "bf16", "--limit", "12")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "index" / "manifest.json").read_text())["embedder"]["precision"] == "bf16"
    recommender = Recommender.load(tmp_path / "index")
    assert recommender.embedder.identity["precision"] == "bf16"
    for row in catalog_rows[:12]:
        assert recommender.recommend(jpeg(row["image"]), k=1)[0].id == str(row["id"])
    # bfloat16 keeps 8 bits of mantissa: the vectors stay close to float32's (the same rows of built_index)
    cosines = np.sum(np.load(tmp_path / "index" / "vectors.npy") * np.load(built_index[0] / "vectors.npy")[:12], axis=1)
    assert cosines.min() > 0.99


def test_index_with_other_weights_is_refused(built_index):
    with pytest.raises(IndexUnusable, match="weights=random.*weights=imagenet"):
        Recommender.load(built_index[0], weights="imagenet")


def test_model_that_does_not_reproduce_the_index_is_refused(built_index, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built_index[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["embedder"]["seed"] = 1  # claims another random initialisation than the vectors came from
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexUnusable, match="does not reproduce"):
        Recommender.load(copy)


def test_offline_failures_exit_non_zero_with_the_way_out(tmp_path, catalog_parquet, offline):
    offline.requests.clear()
    result = run_build("--out", str(tmp_path / "index"), timeout=120)  # the default Hub dataset
    assert result.returncode == 1
    assert "error: Could not reach the Hugging Face dataset" in result.stderr
    assert "Traceback" not in result.stderr
    assert "CONNECT huggingface.co:443" in offline.requests  # tried, and refused by the tests' proxy
    result = run_build("--dataset", str(catalog_parquet), "--weights", "imagenet", "--out", str(tmp_path / "i"),
                       timeout=120)
    assert result.returncode == 1
    assert "Could not download the ImageNet ResNet50 weights" in result.stderr and "--weights" in result.stderr
    assert "Traceback" not in result.stderr
    assert "CONNECT storage.googleapis.com:443" in offline.requests  # Keras' download
    assert not (tmp_path / "i").exists()


def damage_truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def damage_flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, message", [
    ("vectors.npy", damage_truncate, "vectors.npy has .* bytes, the manifest says"),
    ("annoy.ann", damage_flip_a_byte, "annoy.ann does not match its checksum"),
    ("items.parquet", lambda path: path.unlink(), "incomplete: items.parquet missing"),
    ("images/0000003.jpg", lambda path: path.unlink(), "holds 36 images, not the 37"),
    ("manifest.json", lambda path: path.write_text("{not json"), "manifest.json is not readable JSON"),
])
def test_a_damaged_index_is_refused_before_loading_with_the_file_named(built_index, tmp_path, name, damage,
                                                                      message):
    copy = tmp_path / "index"
    shutil.copytree(built_index[0], copy)
    damage(copy / name)
    with pytest.raises(IndexUnusable, match=message) as error:
        Recommender.load(copy)
    assert "rebuild or re-download" in str(error.value).lower()


def test_the_index_holds_no_pickle(built_index):
    """An index may come from the Hub: loading it must never run code."""
    out = built_index[0]
    files = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert {name for name in files if not name.startswith("images/")} == {
        "manifest.json", "vectors.npy", "annoy.ann", "pca_mean.npy", "pca_axes.npy", "items.parquet", "probe.npy",
        "cells.npy", "hashes.npy", "coarse.npy"}
    for name in ("vectors.npy", "pca_mean.npy", "pca_axes.npy", "probe.npy", "coarse.npy"):
        assert np.load(out / name, allow_pickle=False).dtype == np.float32  # plain arrays, no object dtype
    assert np.load(out / "cells.npy", allow_pickle=False).dtype == np.uint8
    assert np.load(out / "hashes.npy", allow_pickle=False).dtype == np.uint8
    assert all(name.endswith(".jpg") for name in files if name.startswith("images/"))
