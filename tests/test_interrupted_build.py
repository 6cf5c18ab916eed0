"""A build killed at any point leaves the served index alone and resumes to the same index; a full or
read-only disk gives a clear error and leaves the old index intact."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGE_SIZE, QUIET_ENV, ROOT, run_build
from conftest import many_build_args as build_args

# The catalog is conftest's many_catalog (122 rows), built in small batches (MANY_BATCH, 4): many checkpoints to be
# killed between. Its uninterrupted build, many_index, is what a resumed build must equal.


def files_of(index: Path) -> dict[str, str]:
    """Every file of an index folder, images/ included: relative path -> sha256 of its bytes."""
    return {path.relative_to(index).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(index.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def ten_products(many_catalog, tmp_path_factory) -> Path:
    """A folder holding an index of many_catalog's first 10 products (`index`, a link into `.index.generations/`),
    built once for this file's tests, each of which serves a copy."""
    out = tmp_path_factory.mktemp("ten-products") / "index"
    assert run_build(*build_args(many_catalog, out), "--limit", "10").returncode == 0
    return out.parent


def served_index(built: Path, root: Path) -> tuple[Path, dict]:
    """A copy in `root` of the index `built` holds (ten_products or four_products): an index already in place, and
    its files, to check it is left untouched."""
    shutil.copytree(built, root, symlinks=True, dirs_exist_ok=True)  # the link is relative: it stays inside
    out = root / "index"
    return out, files_of(out)


def kill_when(catalog, out, ready, *extra: str) -> None:
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "build_index.py"), *build_args(catalog, out),
                                *extra],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **QUIET_ENV})
    staging = out.with_name(f".{out.name}.building")
    deadline = time.monotonic() + 300
    while not ready(staging) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert process.poll() is None, "the build ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def batches_saved(staging: Path) -> int:
    try:
        return int(json.loads((staging / "progress.json").read_text())["batches"])
    except (OSError, ValueError, KeyError):
        return 0


def assert_same_index(built: Path, reference: Path) -> None:
    """Byte for byte, every file and image of the same row, but for the manifest's build date."""
    built_files, reference_files = files_of(built), files_of(reference)
    del built_files["manifest.json"], reference_files["manifest.json"]
    assert built_files == reference_files
    manifests = [json.loads((index / "manifest.json").read_text()) for index in (built, reference)]
    for manifest in manifests:
        manifest.pop("built_at")
    assert manifests[0] == manifests[1]


@pytest.mark.parametrize("moment, ready", [
    ("mid-embedding", lambda staging: batches_saved(staging) >= 6),
    ("mid-index-write", lambda staging: (staging / "annoy.ann").exists()),
])
def test_killed_build_leaves_the_served_index_and_resumes_to_the_same_index(many_catalog, many_index, ten_products,
                                                                            tmp_path, moment, ready):
    out, before = served_index(ten_products, tmp_path)
    # --no-reuse: many_index embedded every image, and vectors reused from the served index equal its own only to
    # float round-off (batch position); test_incremental_build.py resumes a build that reuses them
    kill_when(many_catalog, out, ready, "--no-reuse")
    assert files_of(out) == before

    result = run_build(*build_args(many_catalog, out), "--no-reuse")
    assert result.returncode == 0, result.stderr
    resumed = int(result.stdout.split("Resuming: ")[1].split()[0])
    assert resumed >= 24 if moment == "mid-embedding" else resumed == 122
    assert "Indexed 121 products" in result.stdout and "Skipped 1: not an image" in result.stdout
    assert_same_index(out, many_index)
    assert not out.with_name(f".{out.name}.building").exists()


def test_other_settings_start_over_instead_of_mixing(many_catalog, tmp_path):
    out = tmp_path / "index"
    kill_when(many_catalog, out, lambda staging: batches_saved(staging) >= 3)
    result = run_build(*build_args(many_catalog, out)[:-4], "--batch-size", "8", "--out", str(out))
    assert result.returncode == 0 and "Resuming" not in result.stdout and "Indexed 121 products" in result.stdout


@contextlib.contextmanager
def mounted_small_disk(mount: Path):
    """A 600 kB file system at `mount` (tmpfs), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for this test needs root")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    with mounted_small_disk(tmp_path / "disk") as mount:
        yield mount


@pytest.fixture(scope="module")
def four_products(many_catalog, tmp_path_factory) -> Path:
    """A folder holding an index of many_catalog's first 4 products, built once for the two tests of a small disk,
    each of which serves a copy. Built on a 600 kB disk of its own: the build, its staging folder included, fits."""
    root = tmp_path_factory.mktemp("four-products")
    with mounted_small_disk(root / "disk") as disk:
        assert run_build(*build_args(many_catalog, disk / "index"), "--limit", "4").returncode == 0  # fits in 600 kB
        shutil.copytree(disk, root / "built", symlinks=True)
    return root / "built"


def test_full_disk_gives_a_clear_error_and_keeps_the_old_index(many_catalog, four_products, small_disk):
    out, before = served_index(four_products, small_disk)  # fits in 600 kB
    result = run_build(*build_args(many_catalog, out))  # 120 products do not fit
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Could not write the index" in result.stderr and "No space left on device" in result.stderr
    assert "The index at" in result.stderr and "is unchanged" in result.stderr
    assert files_of(out) == before


def test_read_only_output_gives_a_clear_error_and_keeps_the_old_index(many_catalog, four_products, small_disk):
    out, before = served_index(four_products, small_disk)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = run_build(*build_args(many_catalog, out), "--limit", "8")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Could not write the index" in result.stderr and "Read-only file system" in result.stderr
    assert files_of(out) == before


def test_a_short_write_of_numpy_is_reported_as_a_full_disk(many_catalog, tmp_path, monkeypatch):
    """numpy's array.tofile raises a bare OSError without errno ("N requested and M written") on a full disk."""
    from recommender.pipeline.build import BuildFailed, build_index
    from recommender.pipeline.catalog import load_catalog
    from recommender.config import Settings
    from recommender.index import VectorIndex

    def disk_fills_up(self, files):
        raise OSError("524288 requested and 125920 written")

    monkeypatch.setattr(VectorIndex, "save", disk_fills_up)
    settings = Settings(weights="random", image_size=IMAGE_SIZE)
    with pytest.raises(BuildFailed, match="the disk is full: 524288 requested and 125920 written") as failure:
        build_index(load_catalog(str(many_catalog), limit=8), settings, tmp_path / "index", batch_size=4,
                    progress=False)
    assert "is unchanged" in str(failure.value) and not (tmp_path / "index").exists()
    monkeypatch.undo()  # with the disk back, the same build resumes from its saved batches and completes
    build_index(load_catalog(str(many_catalog), limit=8), settings, tmp_path / "index", batch_size=4,
                progress=False)
    assert len(np.load(tmp_path / "index" / "vectors.npy")) == 8
