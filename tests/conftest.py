"""Shared fixtures: a synthetic catalog, indexes built by the real build script (or in-process with a numpy stand-in
for the model), and the real app on a free port. Tests marked `fast` (python -m pytest -m fast) may use no fixture that
loads the model, builds in a subprocess or starts an app: SLOW_FIXTURES, checked at collection."""

from __future__ import annotations

import os
import socketserver
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

import synthetic_catalog
from app_process import BEHIND_A_PROXY, QUIET_ENV, ROOT, RunningApp
from stand_in_embedder import StandInEmbedder, stand_in_settings

IMAGE_SIZE = 64  # small and fast; the architecture and code paths are the ones of 224
MANY_BATCH = 4  # batch size of many_index, and of test_interrupted_build's builds that must end up identical to it


# Fixtures that load the model, run the build script or start an app (conftest's and the test modules' own): a test
# marked `fast` that asks for one of them is refused at collection, so the fast tier stays fast.
SLOW_FIXTURES = {"built_index", "recommender", "many_index", "many_recommender", "app", "client", "browser",
                 "open_page", "served", "index_224", "searcher", "app_224", "client_224", "fair_app", "hostile_app",
                 "photo_app", "photo_client", "left_nowhere", "small_queue_app", "state_app", "shop", "live_model",
                 "bad_build", "ray_address", "split_catalog", "ten_products",
                 "four_products"}


def pytest_xdist_auto_num_workers(config) -> int:
    """pytest.ini's `-n auto`: two workers (most of a test's time is an app, a build or a browser working, or a wait:
    two files at once use both cores); none, so one process, when the output is to be seen (-s: the load test prints
    its figures) or for the load and install tests, which run alone."""
    if config.option.capture == "no" or config.option.markexpr in ("load", "install"):
        return 0
    return 2


# The files that take longest, started first: pytest-xdist hands whole files to its two workers in the order of
# `items` (pytest.ini: --no-loadscope-reorder), so the short ones fill in and neither worker is left with a long one
# at the end. Each is a minute or more of one worker's time (--durations), the rest tens of seconds at most.
LONGEST_FIRST = ("test_ray_build.py", "test_refresh.py", "test_interrupted_build.py", "test_shop_catalog.py",
                 "test_camera.py", "test_photos.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST
               else len(LONGEST_FIRST))  # stable: the rest, and each file's tests, keep their order
    for item in items:
        if item.get_closest_marker("fast") and (slow := _slow_fixtures(item)):
            raise pytest.UsageError(f"{item.nodeid} is marked fast but uses {', '.join(slow)}: drop the marker, or "
                                    "use a stand_in_* fixture where the model is not the subject")


def _slow_fixtures(item) -> list[str]:
    """The SLOW_FIXTURES `item` uses, but for those its module overrides (test_search_features.py's recommender is
    the stand-in's)."""
    definitions = item._fixtureinfo.name2fixturedefs  # name -> its definitions, the one used last
    return sorted(name for name in SLOW_FIXTURES & set(item.fixturenames) if len(definitions.get(name, ())) < 2)


class RefusingProxy(socketserver.ThreadingTCPServer):
    """A local HTTP(S) proxy that answers every request "403 Forbidden" at once and notes what was asked for
    ("CONNECT huggingface.co:443")."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Refuse)
        self.requests: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Refuse(socketserver.StreamRequestHandler):
    def handle(self):
        self.server.requests.append(self.rfile.readline().decode("latin-1").rsplit(" ", 1)[0])
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture(scope="session", autouse=True)
def offline():
    """No test reaches the internet, whatever the machine: the tests and every process they start send HTTP(S)
    through a RefusingProxy (Hugging Face's clients and Keras' weight download honour these settings); only local
    addresses go direct. A test that expects a download to fail can check that it was tried, and refused, here."""
    proxy = RefusingProxy()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            patch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            patch.setenv(name, "127.0.0.1,localhost")
        yield proxy
    proxy.shutdown()
    proxy.server_close()


@pytest.fixture(scope="session", autouse=True)
def one_model_per_settings():
    """In this process, Recommender.load and build_index make one Embedder per Settings and reuse it: a ResNet50 is
    built, folded and traced once (seconds each) instead of in every test that loads an index. An Embedder holds no
    state between calls; what each test checks of a load (the manifest's identity, the probe vector) still runs.
    Apps and build scripts are processes of their own and load their model as a user's do."""
    import recommender.pipeline.build as build
    import recommender.serve.search as search
    from recommender.embedder import Embedder

    made = {}

    def embedder(settings):
        if settings not in made:
            made[settings] = Embedder(settings)
        return made[settings]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "Embedder", embedder)
        patch.setattr(build, "Embedder", embedder, raising=False)  # wherever the build makes its embedder
        yield made


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
    from recommender.serve.search import Recommender

    return Recommender.load(built_index[0])


@pytest.fixture(scope="session")
def many_catalog(tmp_path_factory) -> Path:
    """120 products of random colours and sizes (more distinct images than k's upper limit, 50), then a corrupt
    image (skipped) and a copy of one under another id (indexed): 122 rows."""
    return synthetic_catalog.write_parquet(tmp_path_factory.mktemp("many") / "catalog.parquet",
                                           synthetic_catalog.many_products(120))


def many_build_args(catalog: Path, out: Path) -> list[str]:
    return ["--dataset", str(catalog), "--weights", "random", "--image-size", str(IMAGE_SIZE),
            "--batch-size", str(MANY_BATCH), "--out", str(out)]


@pytest.fixture(scope="session")
def many_index(many_catalog, tmp_path_factory) -> Path:
    """many_catalog's index, built by the real CLI in one go."""
    out = tmp_path_factory.mktemp("many-index") / "index"
    result = run_build(*many_build_args(many_catalog, out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def many_recommender(many_index):
    from recommender.serve.search import Recommender

    return Recommender.load(many_index)


@pytest.fixture(scope="session")
def stand_in_index(tmp_path_factory, catalog_parquet) -> Path:
    """The parquet catalog (36 products, a corrupt row, a copy) indexed in-process by the real build pipeline with
    StandInEmbedder for the model: the same files, manifest and checks as built_index's, in about a second."""
    from recommender.pipeline.build import build_index
    from recommender.pipeline.catalog import load_catalog

    out = tmp_path_factory.mktemp("stand-in") / "index"
    build_index(load_catalog(str(catalog_parquet)), stand_in_settings(), out, batch_size=8,
                embedder=StandInEmbedder(), progress=False)
    return out


@pytest.fixture(scope="session")
def stand_in_recommender(stand_in_index):
    """Recommender.load of stand_in_index with the stand-in embedder: real search, filters and items, no model."""
    from recommender.serve.search import Recommender

    return Recommender.load(stand_in_index, embedder=StandInEmbedder())


# the app's wait before a refusal (its default, 1 s, would make test_fair_clients.py's upload flood of 1,200 refused
# requests on 16 connections take 75 s); no other test of the shared app is refused
REFUSAL_SECONDS = 0.25


@pytest.fixture(scope="session")
def app(built_index, tmp_path_factory):
    """The app of the default configuration, shared by the session: behind a proxy (the load test's visitors name
    their addresses; a client that names none is its socket's address, as test_fair_clients.py's are) and with
    REFUSAL_SECONDS."""
    folder = tmp_path_factory.mktemp("app")
    with RunningApp({"INDEX_DIR": str(built_index[0]), "GRADIO_TEMP_DIR": str(folder / "gradio"), **BEHIND_A_PROXY,
                     "REFUSAL_SECONDS": str(REFUSAL_SECONDS)}, folder / "app.log") as running:
        running.temp_dir = folder / "gradio"  # Gradio's upload and output cache, for the privacy tests
        yield running.wait_until_ready()


def files_not_from_the_index(temp_dir: Path, index_dir: Path, since: float = 0.0) -> list[Path]:
    """Files written to Gradio's cache after `since` that are not copies of the index's product images:
    what a query left behind."""
    catalog_images = {path.read_bytes() for path in (index_dir / "images").glob("*.jpg")}
    return [path for path in temp_dir.rglob("*") if path.is_file() and path.stat().st_mtime >= since
            and path.read_bytes() not in catalog_images]


@contextmanager
def resident_peak():
    """How far this process's resident memory rose, at its peak, above its level on entry (`.bytes`, set on exit):
    Pillow's and TensorFlow's C allocations count as much as Python's (tracemalloc sees only Python's)."""
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak (VmHWM) starts again from the current level
    measured = SimpleNamespace(bytes=0)
    before = _status_bytes("VmRSS")
    try:
        yield measured
    finally:
        measured.bytes = _status_bytes("VmHWM") - before


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


@pytest.fixture(scope="session")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)
