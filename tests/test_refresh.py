"""A rebuild into the folder a running app serves: the app moves to the new index between requests, and no answer
fails or shows an image that cannot be fetched (recommender/serve/refresh.py, the generations of recommender/index/)."""

import io
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
from conftest import IMAGE_SIZE, run_build
from PIL import Image

import synthetic_catalog
from app_process import RunningApp
from fake_camera import frame_showing, jpeg
from live_viewer import ScriptedViewer

GRACE = 10  # seconds an old index stays after the app moved on (INDEX_GRACE_SECONDS): a client fetches at once
CLIENTS = 3
CATALOG_COLOURS = ["Red", "Green", "Blue"]  # catalog c: 12 products, all of this colour, ids 1000 c + i


def write_catalog(path, number):
    rows = [dict(row, id=1000 * number + i, productDisplayName=f"catalog {number} product {i}")
            for i, row in enumerate(row for row in synthetic_catalog.products()
                                    if row["baseColour"] == CATALOG_COLOURS[number])]
    return synthetic_catalog.write_parquet(path, rows, extra_bad_rows=False)


def build(catalog, out):
    result = run_build("--dataset", str(catalog), "--weights", "random", "--image-size", str(IMAGE_SIZE),
                       "--batch-size", "12", "--out", str(out))
    assert result.returncode == 0, result.stderr


def catalog_of_picture(data: bytes) -> int:
    """Which catalog a gallery image shows, from the colour of its non-white pixels."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float).reshape(-1, 3)
    colour = pixels[pixels.min(axis=1) < 200].mean(axis=0)
    references = [synthetic_catalog.COLOURS[name] for name in CATALOG_COLOURS]
    return int(np.argmin([np.linalg.norm(colour - reference) for reference in references]))


class Querying:
    """Clients asking /recommend without pause; each answer's catalog (from its ids and from its fetched images)."""

    def __init__(self, url, photos):
        self.url, self.photos, self.stop = url, photos, threading.Event()
        self.answers = []  # (time the answer arrived, catalog of its ids, catalogs of its images)
        self.failures, self.unreadable, self.copied = [], [], []
        self.threads = [threading.Thread(target=self.ask, args=(number,)) for number in range(CLIENTS)]

    def ask(self, number):
        from gradio_client import Client, handle_file

        client = Client(self.url, verbose=False, download_files=False)
        while not self.stop.is_set():
            photo = self.photos[number % len(self.photos)]
            try:
                gallery, results = client.predict(image=handle_file(photo), k=4, api_name="/recommend")
            except Exception as error:
                self.failures.append(repr(error))
                continue
            pictures = []
            for entry in gallery:
                url = entry["image"]["url"]
                if ".generations/" not in url:
                    self.copied.append(url)  # not served in place from its index
                try:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        pictures.append(catalog_of_picture(response.read()))
                except Exception as error:
                    self.unreadable.append(f"{url}: {error!r}")
            self.answers.append((time.monotonic(), {int(r["id"]) // 1000 for r in results}, set(pictures)))

    def first_answer_from(self, catalog, after):
        return min(moment for moment, ids, _ in self.answers if moment > after and ids == {catalog})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One app for this file's rebuilds (an app start is seconds of CPU): the index folder it serves, built from
    catalog 0, and `.catalog`, the catalog of the index it serves now, which each test moves on."""
    folder = tmp_path_factory.mktemp("refresh")
    catalogs = [write_catalog(folder / f"catalog-{number}.parquet", number) for number in range(3)]
    out = folder / "index"
    build(catalogs[0], out)
    with RunningApp({"INDEX_DIR": str(out), "INDEX_GRACE_SECONDS": str(GRACE),
                     "GRADIO_TEMP_DIR": str(folder / "gradio")}, folder / "app.log") as app:
        app.wait_until_ready()
        app.out, app.catalogs, app.catalog = out, catalogs, 0
        yield app


def test_rebuilds_swap_in_while_clients_query_without_a_failure(served, tmp_path):
    app, out = served, served.out
    photos = []
    for number, row in enumerate(synthetic_catalog.products()[:CLIENTS]):
        photos.append(str(tmp_path / f"query-{number}.jpg"))
        row["image"].save(photos[-1])
    querying = Querying(app.url, photos)
    for thread in querying.threads:
        thread.start()
    try:
        delays = []
        for _ in range(2):  # to the two catalogs it does not serve: all three are seen
            number = (served.catalog + 1) % 3
            build(served.catalogs[number], out)
            served.catalog = number
            built = time.monotonic()
            deadline = built + 30
            while time.monotonic() < deadline and not any(moment > built and ids == {number}
                                                          for moment, ids, _ in querying.answers):
                time.sleep(0.1)
            delays.append(querying.first_answer_from(number, built) - built)
        time.sleep(2)
    finally:
        querying.stop.set()
        for thread in querying.threads:
            thread.join(timeout=60)
    print(f"\n{len(querying.answers)} answers, {len(querying.failures)} failed, {len(querying.unreadable)} "
          f"unreadable images, new catalog served {', '.join(f'{d:.1f}' for d in delays)} s after each build")
    assert querying.failures == [] and querying.unreadable == [] and querying.copied == []
    assert all(len(ids) == 1 and pictures == ids for _, ids, pictures in querying.answers)  # one index each
    assert {next(iter(ids)) for _, ids, _ in querying.answers} == {0, 1, 2}
    assert max(delays) < 5
    # the old generations go once the grace period is over and nobody holds them
    generations = out.with_name(".index.generations")
    deadline = time.monotonic() + GRACE + 15
    while time.monotonic() < deadline and len([p for p in generations.iterdir() if p.is_dir()]) > 1:
        time.sleep(0.5)
    assert [p for p in generations.iterdir() if p.is_dir()] == [out.resolve()]
    assert "Serving the index" in app.output()


def test_a_live_viewer_moves_to_the_new_index_without_a_break(served):
    """A rebuild while someone is live: the stream goes on, its results come from the new catalog within seconds,
    each answer wholly from one index, its images served. The live model, started with the first index, serves the
    second: a refresh keeps the embedder (an index built by another is refused)."""
    app, out = served, served.out
    old, new = served.catalog, (served.catalog + 1) % 3  # the catalog served now (this file's first test moves it)
    frames = [jpeg(frame_showing(row["image"])) for row in synthetic_catalog.products()[:12]]  # each unlike the last
    viewer = ScriptedViewer(app.url, frames)
    viewer.start()
    try:
        deadline = time.monotonic() + 120  # the live model loads
        while viewer.updates < 3 and viewer.failure is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert viewer.updates >= 3, viewer.failure or app.output()
        build(served.catalogs[new], out)
        served.catalog = new
        built, deadline = time.monotonic(), time.monotonic() + 30
        while viewer.failure is None and time.monotonic() < deadline and sum(
                catalogs_of(outputs) == {new} for _, outputs in viewer.answers) < 3:  # a few from the new index
            time.sleep(0.1)
    finally:
        viewer.stop()
    assert viewer.failure is None
    shown = [catalogs_of(outputs) for _, outputs in viewer.answers]
    assert shown.count({new}) >= 3, app.output()
    assert all(len(catalogs) == 1 for catalogs in shown)  # one index each
    switched = shown.index({new})
    assert set().union(*shown[:switched]) == {old} and set().union(*shown[switched:]) == {new}
    moved = next(moment for moment, outputs in viewer.answers if catalogs_of(outputs) == {new}) - built
    assert moved < 5
    _, last = viewer.answers[-1]
    for entry in last[0]["value"]:
        with urllib.request.urlopen(entry["image"]["url"], timeout=10) as response:
            assert catalog_of_picture(response.read()) == new


def catalogs_of(outputs) -> set[int]:
    """The catalogs of a live answer's products, from their ids (the details' JSON, the page's second output)."""
    return {int(product["id"]) // 1000 for product in outputs[1]}


class Flipping:
    """A holder whose current index changes at every look: a handler must look once."""

    def __init__(self, *recommenders):
        self.recommenders, self.looks = recommenders, 0

    @property
    def current(self):
        self.looks += 1
        return self.recommenders[self.looks % 2]


def test_a_handler_answers_wholly_from_the_index_current_when_it_started(recommender, built_index, tmp_path,
                                                                          monkeypatch):
    from recommender.serve.page import Page
    from recommender.serve.search import Recommender

    other = Recommender.load(shutil.copytree(built_index[0], tmp_path / "index"), embedder=recommender.embedder)
    page = Page(Flipping(recommender, other), photos=None)
    used = []
    for name in ("similar", "product", "matching_rows", "nearest"):
        original = getattr(Recommender, name)
        monkeypatch.setattr(Recommender, name, lambda self, *args, original=original, **kwargs:
                            used.append(self) or original(self, *args, **kwargs))
    for _ in range(3):
        used.clear()
        page.more_like(recommender.items[3]["id"], 5, "All", "All", "All")  # product, its neighbours, the status
        assert len(used) > 1 and len({id(index) for index in used}) == 1


@pytest.mark.fast
def test_a_new_revision_of_the_index_repo_is_downloaded_once(tmp_path):
    from recommender.serve.refresh import update_from_repo

    revisions, downloads = iter(["a1", "a1", "b2", "b2"]), []
    look = lambda: update_from_repo("someone/index", tmp_path / "index", latest=lambda: next(revisions),  # noqa: E731
                                    download=lambda repo, index, revision: downloads.append(revision))
    assert [look() for _ in range(4)] == [True, False, True, False]
    assert downloads == ["a1", "b2"]
