"""Shared fixtures: a synthetic catalog, indexes built by the real build script, and the real app on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import synthetic_catalog

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 64  # small and fast; the architecture and code paths are the ones of 224
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def run_build(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """scripts/build_index.py as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_index.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **QUIET_ENV,
                                                                                **(env or {})})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningApp:
    """`python app.py` in a subprocess, as on a fresh machine; `url` once it answers."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, **QUIET_ENV, "GRADIO_SERVER_NAME": "127.0.0.1",
                 "GRADIO_SERVER_PORT": str(self.port), **env})

    def wait_until_ready(self, timeout: float = 240) -> "RunningApp":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"app did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


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
    running = RunningApp({"INDEX_DIR": str(built_index[0])}, tmp_path_factory.mktemp("app") / "app.log")
    try:
        yield running.wait_until_ready()
    finally:
        running.stop()


@pytest.fixture(scope="session")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)
