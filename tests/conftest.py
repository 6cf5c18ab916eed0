"""Shared fixtures: a synthetic catalog, indexes built by the real build script, and the real app on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import synthetic_catalog
from app_process import QUIET_ENV, ROOT, RunningApp

IMAGE_SIZE = 64  # small and fast; the architecture and code paths are the ones of 224


def run_build(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """scripts/build_index.py as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **QUIET_ENV,
                                                                                **(env or {})})


@pytest.fixture(scope="session")
def catalog_rows():
    return synthetic_catalog.products()


@pytest.fixture(scope="session")
def catalog_parquet(tmp_path_factory, catalog_rows) -> Path:
    return synthetic_catalog.write_parquet(tmp_path_factory.mktemp("catalog") / "products.parquet", catalog_rows)


@pytest.fixture(scope="session")
def catalog_folder(tmp_path_factory, catalog_rows) -> Path:
    return synthetic_catalog.write_folder(tmp_path_factory.mktemp("catalog") / "images", catalog_rows)


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, catalog_parquet):
    """An index of the parquet catalog built by the real CLI with random weights; (path, build output)."""
    out = tmp_path_factory.mktemp("indexes") / "index"
    result = run_build("--dataset", str(catalog_parquet), "--weights", "random", "--image-size", str(IMAGE_SIZE),
                       "--out", str(out), "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture(scope="session")
def recommender(built_index):
    from recommender.search import Recommender

    return Recommender.load(built_index[0])


@pytest.fixture(scope="session")
def app(built_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    running = RunningApp({"INDEX_DIR": str(built_index[0]), "GRADIO_TEMP_DIR": str(folder / "gradio")},
                         folder / "app.log")
    running.temp_dir = folder / "gradio"  # Gradio's upload and output cache, for the privacy tests
    try:
        yield running.wait_until_ready()
    finally:
        running.stop()


def files_not_from_the_index(temp_dir: Path, index_dir: Path, since: float = 0.0) -> list[Path]:
    """Files written to Gradio's cache after `since` that are not copies of the index's product images:
    what a query left behind."""
    catalog_images = {path.read_bytes() for path in (index_dir / "images").glob("*.jpg")}
    return [path for path in temp_dir.rglob("*") if path.is_file() and path.stat().st_mtime >= since
            and path.read_bytes() not in catalog_images]


@pytest.fixture(scope="session")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)
