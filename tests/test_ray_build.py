"""`--engine ray` builds the in-process build's index (same rows, vectors to float round-off, same neighbours, skips
and thumbnails), also when a worker or the driver is killed mid-build; the app and the default build never import
ray. All on one local Ray of 2 CPUs, which the builds join through RAY_ADDRESS, as they would join a cluster."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGE_SIZE, QUIET_ENV, ROOT, run_build
from conftest import many_build_args as build_args
from synthetic_catalog import many_products, write_parquet
from test_interrupted_build import batches_saved, files_of

ray = pytest.importorskip("ray", reason="--engine ray needs `pip install -r requirements-ray.txt`")

WORKER_TITLE = "ray::MapWorker(MapBatches(_EmbedRows))"  # the process title Ray gives a build's worker


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray of 2 CPUs started here and stopped with every process it started after the module's tests."""
    # "local": a new Ray, even where `ray start` left the address of another in /tmp/ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    deadline = time.monotonic() + 30
    while ray_processes_of(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_processes_of(os.getpid()), "Ray left processes running"


def workers_of(ancestor: int) -> list[int]:
    """Pids of the build workers (Ray actors) that descend from `ancestor`: this session's Ray only."""
    return ray_processes_of(ancestor, WORKER_TITLE)


def ray_processes_of(ancestor: int, title: str | None = None) -> list[int]:
    """Pids of Ray's processes (GCS, raylet, workers...) that descend from `ancestor`; with `title`, only those whose
    process title starts with it."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            parents[int(pid)] = int(rest.rsplit(") ", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue

    def descends(pid):
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == ancestor:
                return True
        return False

    found = []
    for pid in parents:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if title:
            is_ray = command[0].startswith(title)
        else:  # an actor or idle worker, or a process run from Ray's package (gcs_server, raylet, log_monitor...)
            is_ray = command[0].startswith("ray::") or "/ray/" in " ".join(command)
        if is_ray and descends(pid):
            found.append(pid)
    return found


def ray_args(catalog: Path, out: Path) -> list[str]:
    return [*build_args(catalog, out), "--engine", "ray"]


def start_ray_build(catalog: Path, out: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "build_index.py"), *ray_args(catalog, out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **QUIET_ENV, "RAY_ADDRESS": address})


def wait_for_batches(process: subprocess.Popen, staging: Path, count: int) -> None:
    deadline = time.monotonic() + 240
    while batches_saved(staging) < count and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, f"the build ended before it could be interrupted:\n{process.stdout.read()}"


def neighbours(vectors: np.ndarray, k: int = 10) -> np.ndarray:
    """Each row's k nearest other rows by exact distance, nearest first, a copy of a picture (vectors closer than
    1e-3, as the app counts them) named by its first row: which of two copies comes first is float round-off."""
    similarity = vectors @ vectors.T
    first_copy = np.argmax(2 - 2 * similarity < 1e-6, axis=1)  # squared distance < (1e-3)^2
    np.fill_diagonal(similarity, -np.inf)
    return first_copy[np.argsort(-similarity, axis=1, kind="stable")[:, :k]]


def assert_same_index(built: Path, reference: Path) -> dict:
    """The same rows, items, skips, thumbnails and manifest (but for its date and file checksums), vectors equal to
    float round-off and the same top-10 neighbours for every row; returns the figures."""
    built_files, reference_files = files_of(built), files_of(reference)
    assert built_files.keys() == reference_files.keys()
    # byte for byte: what does not come from the model; the rest (vectors and what is computed from them: PCA,
    # Annoy) is equal to float round-off, compared below through the vectors and their neighbours
    exact = [name for name in reference_files
             if name.startswith("images/") or name in {"items.parquet", "hashes.npy", "probe.npy"}]
    assert len(exact) > 3 and [built_files[name] for name in exact] == [reference_files[name] for name in exact]
    manifests = [json.loads((index / "manifest.json").read_text()) for index in (built, reference)]
    for manifest in manifests:
        del manifest["built_at"], manifest["files"]
    assert manifests[0] == manifests[1]  # skipped reasons and counts, dataset, embedder, settings
    vectors = [np.load(index / "vectors.npy") for index in (built, reference)]
    difference = float(np.abs(vectors[0] - vectors[1]).max())
    assert difference <= 1e-5
    ranked = [neighbours(v) for v in vectors]
    agreement = float(np.mean(ranked[0] == ranked[1]))  # share of (row, rank) places naming the same product
    assert (ranked[0] == ranked[1]).all()
    cells = [np.load(index / "cells.npy") for index in (built, reference)]
    cells_equal = float(np.mean(cells[0] == cells[1]))
    assert cells_equal >= 0.999  # argmax of near-equal activations may flip with round-off
    return {"max_difference": difference, "top10_agreement": agreement, "cells_equal": cells_equal}


@pytest.fixture(scope="module")
def split_catalog(tmp_path_factory) -> Path:
    """A catalog in two parquet files of 7-row row groups, so that batches of 4 straddle row groups and files, with
    rows to skip: no id, an id seen in the other file, truncated, empty and missing images, and a corrupt one."""
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("split") / "catalog"
    folder.mkdir()
    first, second = many_products(26), many_products(20, seed=1)
    jpeg = io.BytesIO()
    first[1]["image"].save(jpeg, format="JPEG")
    truncated = jpeg.getvalue()[:len(jpeg.getvalue()) // 2]
    first += [dict(first[0], id=None), dict(first[1], id=500, image=truncated), dict(first[2], id=501, image=b"")]
    second = [dict(row, id=100 + number) for number, row in enumerate(second)]
    second += [dict(second[0], id=3), dict(second[1], id=502, image=None)]  # 3: first file's fourth product
    for name, rows, bad in (("a.parquet", first, False), ("b.parquet", second, True)):
        written = write_parquet(tmp_path_factory.mktemp("rows") / name, rows, extra_bad_rows=bad)
        pq.write_table(pq.read_table(written), folder / name, row_group_size=7)
    return folder


def outcome(stdout: str) -> list[str]:
    """The build summary's count of products and its skip lines, without its times."""
    lines = stdout[stdout.index("Indexed "):].splitlines()
    return [lines[0].split(" in ")[0], *[line for line in lines if line.startswith("Skipped")]]


def test_ray_build_equals_the_in_process_build(split_catalog, ray_address, tmp_path):
    args = ["--dataset", str(split_catalog), "--weights", "random", "--image-size", str(IMAGE_SIZE),
            "--batch-size", "4"]
    in_process = run_build(*args, "--out", str(tmp_path / "in-process"))
    on_ray = run_build(*args, "--out", str(tmp_path / "ray"), "--engine", "ray", env={"RAY_ADDRESS": ray_address})
    assert in_process.returncode == 0 and on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert outcome(on_ray.stdout) == outcome(in_process.stdout)
    assert {"Skipped 1: duplicate id (e.g. 3)", "Skipped 1: no id (e.g. None)"} <= set(outcome(on_ray.stdout))
    figures = assert_same_index(tmp_path / "ray", tmp_path / "in-process")
    print(f"Ray vs in-process: {figures}")


def test_killed_worker_is_replaced_and_the_index_is_the_same(many_catalog, many_index, ray_address, tmp_path):
    out = tmp_path / "index"
    process = start_ray_build(many_catalog, out, ray_address)
    wait_for_batches(process, out.with_name(f".{out.name}.building"), 3)
    victims = workers_of(os.getpid())
    assert victims, "no build worker found to kill"
    os.kill(victims[0], signal.SIGKILL)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert victims[0] not in workers_of(os.getpid())
    assert "Indexed 121 products" in output and "Resuming" not in output
    assert_same_index(out, many_index)


def test_killed_driver_resumes_from_what_was_embedded(many_catalog, many_index, ray_address, tmp_path):
    out = tmp_path / "index"
    process = start_ray_build(many_catalog, out, ray_address)
    wait_for_batches(process, out.with_name(f".{out.name}.building"), 6)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()

    result = run_build(*ray_args(many_catalog, out), env={"RAY_ADDRESS": ray_address})
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = int(result.stdout.split("Resuming: ")[1].split()[0])
    assert 24 <= resumed < 122
    assert "Indexed 121 products" in result.stdout and "Skipped 1: not an image" in result.stdout
    assert_same_index(out, many_index)
    assert not out.with_name(f".{out.name}.building").exists()


def test_the_app_and_the_default_build_never_import_ray(many_catalog, tmp_path):
    code = ("import sys; sys.path.insert(0, 'scripts'); import app, recommender.serve.search, recommender.pipeline.build, "
            "recommender.serve.provision, build_index; assert 'ray' not in sys.modules, 'ray was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **QUIET_ENV})
    assert result.returncode == 0, result.stderr[-2000:]


def test_ray_refuses_a_catalog_it_cannot_split(catalog_folder, ray_address, tmp_path):
    result = run_build("--dataset", str(catalog_folder), "--weights", "random", "--image-size", "64", "--out",
                       str(tmp_path / "index"), "--engine", "ray", env={"RAY_ADDRESS": ray_address})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--engine ray reads parquet catalogs" in result.stderr
