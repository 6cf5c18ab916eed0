"""The running app, through Gradio's own client, as a program would use it."""

import base64
import io
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import ROOT, RunningApp, files_not_from_the_index


def save(image: Image.Image, path, fmt=None, **options):
    image.save(path, format=fmt, **options)
    return str(path)


@pytest.fixture(scope="module")
def query_file(tmp_path_factory, catalog_rows):
    return save(catalog_rows[7]["image"], tmp_path_factory.mktemp("q") / "query.jpg", quality=92)


def test_api_is_named_with_image_and_k_first(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/recommend"]
    assert [p["parameter_name"] for p in endpoint["parameters"]][:2] == ["image", "k"]


def test_recommend_returns_k_results_best_first(client, query_file, catalog_rows):
    gallery, results = client.predict(image=handle_file(query_file), k=5, api_name="/recommend")
    assert len(gallery) == 5 and len(results) == 5
    assert results[0]["id"] == str(catalog_rows[7]["id"]) and results[0]["distance"] < 1e-3
    for field in ("id", "name", "distance", "similarity", "gender", "articleType", "baseColour", "subCategory"):
        assert all(field in result for result in results)
    assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)
    assert catalog_rows[7]["productDisplayName"] in gallery[0]["caption"]
    assert Image.open(gallery[0]["image"]).size == (120, 160)  # the product's own photo, downloaded


def test_default_k_is_8(client, query_file):
    gallery, results = client.predict(image=handle_file(query_file), api_name="/recommend")
    assert len(results) == 8


def exif_rotated(image: Image.Image, path):
    """The same photo stored sideways with an EXIF tag saying how to turn it upright, as phones do."""
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed after a 90 degree clockwise turn
    return save(image.transpose(Image.Transpose.ROTATE_90), path, "JPEG", exif=exif.tobytes(), quality=92)


@pytest.mark.parametrize("make", [
    lambda img, path: save(img.convert("RGBA"), path / "q.png"),
    lambda img, path: save(img.convert("CMYK"), path / "q.jpg", quality=95),
    lambda img, path: save(img, path / "q.webp", quality=95),
    lambda img, path: exif_rotated(img, path / "q.jpg"),
], ids=["rgba", "cmyk", "webp", "exif-rotated"])
def test_image_variants_find_the_product(client, catalog_rows, tmp_path, make):
    row = catalog_rows[12]
    gallery, results = client.predict(image=handle_file(make(row["image"], tmp_path)), k=3, api_name="/recommend")
    assert str(row["id"]) in [r["id"] for r in results]


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "No image was given"),
    (lambda path: (path / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg") and str(path / "bad.jpg"),
     "not an image we can read"),
    (lambda path: (path / "notes.png").write_text("hello") and str(path / "notes.png"), "not an image we can read"),
    (lambda path: save(Image.new("1", (8000, 8000)), path / "huge.png"), "too large"),
])
def test_bad_inputs_get_a_clear_error_and_the_app_keeps_serving(client, query_file, tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(AppError, match=message):
        client.predict(image=handle_file(path) if path else None, k=3, api_name="/recommend")
    gallery, results = client.predict(image=handle_file(query_file), k=3, api_name="/recommend")
    assert len(results) == 3


@pytest.mark.parametrize("image", [Image.new("RGB", (1, 1), "red"), Image.new("L", (64, 64), 128)],
                         ids=["one-pixel", "grayscale"])
def test_images_without_a_match_still_get_k_results(client, tmp_path, image):
    path = save(image, tmp_path / "q.png")
    gallery, results = client.predict(image=handle_file(path), k=4, api_name="/recommend")
    assert len(gallery) == 4 and len(results) == 4


def test_mismatched_index_is_refused_at_start(built_index, tmp_path):
    with RunningApp({"INDEX_DIR": str(built_index[0]), "WEIGHTS": "imagenet"}, tmp_path / "log") as running:
        assert running.process.wait(timeout=120) != 0
    assert "built with weights=random, but this app is set to use weights=imagenet" in running.output()
    assert "Traceback" not in running.output()


def test_unreachable_index_repo_is_reported(tmp_path, offline):
    offline.requests.clear()
    with RunningApp({"INDEX_DIR": str(tmp_path / "index"), "INDEX_REPO": "someone/fashion-index"},
                    tmp_path / "log") as running:
        assert running.process.wait(timeout=120) != 0
    assert "Could not download the index from the Hub dataset repo 'someone/fashion-index'" in running.output()
    assert "CONNECT huggingface.co:443" in offline.requests  # tried, and refused by the tests' proxy
    assert not (tmp_path / "index").exists()


def test_first_start_without_network_says_what_failed(tmp_path, offline):
    offline.requests.clear()
    with RunningApp({"INDEX_DIR": str(tmp_path / "index")}, tmp_path / "log") as running:  # the default Hub dataset
        assert running.process.wait(timeout=120) != 0
    assert "error: Could not reach the Hugging Face dataset 'ashraq/fashion-product-images-small'" in running.output()
    assert "CONNECT huggingface.co:443" in offline.requests
    assert "Traceback" not in running.output() and not (tmp_path / "index").exists()


def git_checkout(folder: Path) -> Path:
    """A git repository of the project's files as they are now (tracked or not, but not ignored), committed: as a
    fresh clone of it would be."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                              cwd=folder, capture_output=True, text=True, check=True).stdout
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():  # not a file deleted in the working tree
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "as cloned")
    return folder


def test_first_start_builds_a_small_index_serves_it_and_leaves_git_status_clean(catalog_parquet, tmp_path,
                                                                               catalog_rows):
    from gradio_client import Client

    checkout = git_checkout(tmp_path / "checkout")  # the app's default INDEX_DIR, index/, inside a git checkout
    with RunningApp({"DATASET": str(catalog_parquet), "BUILD_LIMIT": "10", "WEIGHTS": "random"}, tmp_path / "log",
                    cwd=checkout) as running:
        running.wait_until_ready()
        assert "Embedding" in running.output() and "Indexed 10 products" in running.output()
        assert json.loads((checkout / "index" / "manifest.json").read_text())["count"] == 10
        query = save(catalog_rows[2]["image"], tmp_path / "q.jpg", quality=92)
        _, results = Client(running.url, verbose=False).predict(image=handle_file(query), k=10,
                                                                 api_name="/recommend")
        assert results[0]["id"] == str(catalog_rows[2]["id"]) and len(results) == 10
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=checkout,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"the first start changed the checkout:\n{status}"


@pytest.mark.fast
def test_prebuilt_index_download_is_checked_and_swapped_in(stand_in_index, tmp_path, monkeypatch):
    """INDEX_REPO's code path with the Hub replaced by a local copy (this machine cannot reach the Hub)."""
    import huggingface_hub

    from recommender.serve.provision import IndexUnusable, download_index

    def fake_snapshot_download(repo_id, repo_type, revision, local_dir):
        shutil.copytree(stand_in_index, local_dir)
        (local_dir / ".cache").mkdir()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    download_index("someone/fashion-index", tmp_path / "index")
    assert (tmp_path / "index" / "manifest.json").exists() and not (tmp_path / "index" / ".cache").exists()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, repo_type, revision, local_dir:
                        local_dir.mkdir())  # a repo that holds no index
    with pytest.raises(IndexUnusable, match="No index"):
        download_index("someone/empty", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_filters_are_optional_named_parameters(client, query_file, catalog_rows):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/recommend"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in endpoint["parameters"]}
    assert defaults == {"image": None, "k": 8, "gender": "All", "article_type": "All", "colour": "All"}
    _, results = client.predict(image=handle_file(query_file), k=6, colour="Blue", gender="Women",
                                api_name="/recommend")
    matching = sum(row["baseColour"] == "Blue" and row["gender"] == "Women" for row in catalog_rows)
    assert len(results) == min(6, matching) and {(r["baseColour"], r["gender"]) for r in results} == {
        ("Blue", "Women")}
    _, results = client.predict(image=handle_file(query_file), k=6, gender="Men", article_type="Handbags",
                                api_name="/recommend")
    assert results == []  # an empty combination is an empty answer, not an error
    with pytest.raises(AppError, match="Mauve"):
        client.predict(image=handle_file(query_file), colour="Mauve", api_name="/recommend")


def test_similar_endpoint(client, catalog_rows):
    product_id = str(catalog_rows[9]["id"])
    gallery, results = client.predict(id=product_id, k=5, api_name="/similar")
    assert len(results) == 5 == len(gallery) and product_id not in [r["id"] for r in results]
    _, results = client.predict(id=product_id, k=5, article_type="Watches", api_name="/similar")
    assert {r["articleType"] for r in results} == {"Watches"} and product_id not in [r["id"] for r in results]
    with pytest.raises(AppError, match="No product with id 'no-such-id'"):
        client.predict(id="no-such-id", api_name="/similar")


def call_mcp(app, *calls: tuple[str, dict]):
    """The app's MCP tools, and the answers to `calls` ((tool, arguments), ...), from one MCP client session."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def ask():
        async with streamablehttp_client(f"{app.url}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = (await session.list_tools()).tools
                return tools, [await session.call_tool(name, arguments) for name, arguments in calls]

    return asyncio.run(ask())


def test_mcp_tools_are_the_search_endpoints_with_described_parameters(app, catalog_rows):
    tools, [answer] = call_mcp(app, ("similar", {"id": str(catalog_rows[3]["id"]), "k": 2}))
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == {"recommend", "similar", "explain", "refine"}  # the page's own events are not tools
    for tool in tools:
        properties = tool.inputSchema["properties"]
        if tool.name != "explain":
            assert {"k", "gender", "article_type", "colour"} <= set(properties)
        assert all(properties[name].get("description") for name in properties)
    assert "Watches" in by_name["recommend"].inputSchema["properties"]["article_type"]["enum"]
    assert not answer.isError
    returned_ids = re.findall(r"'id': '([^']+)'", answer.content[0].text)
    assert len(returned_ids) == 2 and str(catalog_rows[3]["id"]) not in returned_ids


def test_mcp_recommend_finds_the_product_in_a_photo_given_as_base64(app, catalog_rows):
    """Gradio's MCP server takes a file as an http(s) URL or as base64 data; an agent holding a photo sends data.
    (That the photo is not kept is tested in test_photos.py.)"""
    buffer = io.BytesIO()
    catalog_rows[7]["image"].save(buffer, format="JPEG", quality=92)
    photo = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    _, [answer] = call_mcp(app, ("recommend", {"image": photo, "k": 3}))
    assert not answer.isError, answer.content
    returned_ids = re.findall(r"'id': '([^']+)'", answer.content[0].text)
    assert len(returned_ids) == 3 and returned_ids[0] == str(catalog_rows[7]["id"])


def test_run_history_is_off(app):
    """Gradio's run history would keep every run, query photo included, in the browser: the page's script records
    runs only when the config it loads says run_history, and Gradio serves the history page only then."""
    with urllib.request.urlopen(f"{app.url}/config", timeout=10) as response:
        assert json.load(response)["run_history"] is False
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"{app.url}/gradio_api/runs", timeout=10)


def test_no_query_photo_is_kept_after_the_request(client, app, built_index, tmp_path):
    photo = tmp_path / "selfie.png"
    Image.effect_noise((200, 150), 60).convert("RGB").save(photo)  # like no catalog image
    started = time.time()
    client.predict(image=handle_file(str(photo)), k=3, api_name="/recommend")
    assert files_not_from_the_index(app.temp_dir, built_index[0], since=started) == []
    assert "selfie" not in app.output()  # nor logged


def test_only_search_results_and_product_images_are_served(app, built_index):
    from urllib.parse import quote

    index = built_index[0].resolve()

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(f"{app.url}/gradio_api/file={quote(path)}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert status(str(index / "images" / "0000000.jpg")) == 200  # what the gallery shows
    for forbidden in ("/etc/passwd", str(Path(__file__).resolve().parents[1] / "app.py"),
                      str(index / "manifest.json"), str(index / "vectors.npy"),
                      f"{index}/images/../manifest.json", f"{index}/images/%2e%2e/vectors.npy",
                      str(app.log)):
        assert status(forbidden) in (403, 404), forbidden


def test_uploads_over_the_limit_are_refused(client, query_file, tmp_path):
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + bytes(21 * 1024 * 1024))  # 21 MB, over the 20 MB limit
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(image=handle_file(str(big)), k=3, api_name="/recommend")
    _, results = client.predict(image=handle_file(query_file), k=3, api_name="/recommend")
    assert len(results) == 3


@pytest.mark.fast
def test_gradio_queue_keeps_a_short_event_log_and_summarises_it_rarely(stand_in_recommender):
    """By default Gradio's queue summarises its last 10,000 events with pandas after every event, for a monitoring
    page this app does not enable: CPU taken from each query and memory that grows with the event count. app.py's
    settings must reach the queue (a Gradio upgrade that renames them fails here)."""
    import app

    demo = app.build_demo(stand_in_recommender)
    demo.queue()
    assert demo._queue.ANALYTICS_MAX_EVENTS == 1000
    assert demo._queue.ANAYLTICS_CACHE_FREQUENCY == 1000  # sic: Gradio's spelling
