"""The life of a query photo (recommender/serve/photos.py): whichever way it comes in and however its request ends, it is
left nowhere (not on disk, not in Gradio's lists of paths, not in the log), and its results are those of its bytes,
never of a name Gradio or a URL gave it.

The running app downloads "http://photos.hf.co/..." through a proxy in this test (Gradio's SSRF check is skipped for
*.hf.co hosts, and that download honours HTTP_PROXY), so a URL's picture is whatever the test serves: nothing leaves
the machine. Leftovers are looked for once every event has been answered: the queue empty, then QUIET_SECONDS more.
"""

import asyncio
import base64
import hashlib
import io
import json
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import recommender.serve.photos as photos_module
import recommender.serve.uploads as uploads_module
from app_process import BEHIND_A_PROXY, RunningApp, free_port, visitor
from photo_proxy import PhotoProxy
from test_app import call_mcp
from recommender.images import ImageError
from recommender.serve.uploads import InMemoryUploads, TooManyUploads, UploadStore
from recommender.serve.photos import Photo, QueryPhotos, VectorCache

QUIET_SECONDS = 3
GRADIO_OWN_FOLDERS = {"vibe_edit_history"}  # Gradio makes it, empty, at start (its code-editor history): no photo
NOT_AN_IMAGE = "not an image we can read"


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)  # as the catalog stores it: a catalog photo finds its product
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def heic(seed: int) -> bytes:
    """A HEIC file's 'ftyp heic' box, then data no HEIF decoder can read (a real HEIC decodes: test_images.py)."""
    return (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
            + np.random.default_rng(seed).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def fake_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(data).digest(), np.uint8).astype(np.float32)


class CountingEmbedder:
    def __init__(self):
        self.calls = []

    def __call__(self, data: bytes) -> np.ndarray:
        self.calls.append(data)
        return fake_vector(data)


def leftovers(temp_dir: Path) -> list[str]:
    """Everything under Gradio's temp dir that a query could have left: any file, and any folder but Gradio's own
    (a per-photo folder is named by a hash of the photo or its URL)."""
    return sorted(str(path.relative_to(temp_dir)) for path in temp_dir.rglob("*")
                  if path.is_file() or path.relative_to(temp_dir).parts[0] not in GRADIO_OWN_FOLDERS)


# UploadStore: bytes until read once, then only their key, for a while.

class Clock:
    now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(uploads_module, "time", clock)  # the upload store's clock
    return clock


@pytest.mark.fast
def test_unread_bytes_expire_and_their_key_outlives_them(clock):
    store = UploadStore(unread_seconds=60, key_seconds=600)
    store.put("uploads/a/photo.jpg", b"photo A")
    clock.now += 59
    assert store.take("uploads/a/photo.jpg") == (sha256(b"photo A"), b"photo A")
    clock.now += 2  # never read by an event (an abandoned or refused request): the bytes go
    assert store.take("uploads/a/photo.jpg") == (sha256(b"photo A"), None)
    assert store.held_bytes() == 0 and len(store) == 1
    clock.now += 540  # the key too, in the end
    assert store.take("uploads/a/photo.jpg") is None and len(store) == 0


@pytest.mark.fast
def test_release_drops_the_bytes_and_keeps_the_key():
    store = UploadStore()
    store.put("uploads/a/photo.jpg", b"photo A")
    store.release("uploads/a/photo.jpg")
    store.release("uploads/never/uploaded.jpg")  # no error
    assert store.take("uploads/a/photo.jpg") == (sha256(b"photo A"), None) and store.held_bytes() == 0


@pytest.mark.fast
def test_over_the_byte_budget_the_oldest_bytes_go_first():
    store = UploadStore(max_bytes=10)
    store.put("old", b"123456")
    store.put("new", b"abcdef")
    assert store.take("old") == (sha256(b"123456"), None)
    assert store.take("new") == (sha256(b"abcdef"), b"abcdef") and store.held_bytes() == 6


@pytest.mark.fast
def test_one_address_holds_only_its_share_of_unread_uploads(clock):
    store = UploadStore(unread_seconds=60, client_uploads=3, client_bytes=100)
    for number in range(3):
        store.put(f"a/{number}", b"x" * 10, client="127.0.0.2")
        clock.now += 10
    with pytest.raises(TooManyUploads, match=r"Too many photos from your address .* try again in 31 s"):
        store.put("a/3", b"x", client="127.0.0.2")  # its oldest expires in 60 - 30 s
    store.put("b/0", b"y" * 10, client="127.0.0.3")  # another address is not held back
    with pytest.raises(TooManyUploads):
        store.put("b/1", b"y" * 91, client="127.0.0.3")  # nor over its bytes
    store.release("a/0")  # read by its event: room again
    store.put("a/3", b"x", client="127.0.0.2")
    assert store.take("b/0") == (sha256(b"y" * 10), b"y" * 10) and store.held_bytes() == 31


# VectorCache and QueryPhotos: vectors by content; a file Gradio wrote is read once and deleted.

@pytest.mark.fast
def test_vectors_are_cached_by_content_never_by_path(tmp_path):
    embed = CountingEmbedder()
    photos = QueryPhotos(embed)
    photos.store.put("uploads/1/a.jpg", b"picture A")
    photos.store.put("uploads/2/b.jpg", b"picture A")  # the same bytes under another name: no second model call
    assert np.array_equal(photos.vector(photos.open("uploads/1/a.jpg")), fake_vector(b"picture A"))
    assert np.array_equal(photos.vector(photos.open("uploads/2/b.jpg")), fake_vector(b"picture A"))
    assert embed.calls == [b"picture A"]

    for picture in (b"picture B", b"picture A"):  # other bytes under a name used before: their own vector
        photos.store.put("uploads/1/a.jpg", picture)
        assert np.array_equal(photos.vector(photos.open("uploads/1/a.jpg")), fake_vector(picture))
    assert embed.calls == [b"picture A", b"picture B"]

    cache = VectorCache(size=2)
    for key in "abc":
        cache.put(key, fake_vector(key.encode()))
    assert cache.get("a") is None and cache.get("c") is not None


@pytest.mark.fast
def test_a_photo_is_used_once_then_only_its_vector_is_kept():
    photos = QueryPhotos(CountingEmbedder())
    photos.store.put("uploads/a/photo.jpg", b"photo A")
    photos.vector(photos.open("uploads/a/photo.jpg"))
    again = photos.open("uploads/a/photo.jpg")  # the editor's next event for the same photo
    assert again == Photo(sha256(b"photo A"), None, "uploads/a/photo.jpg") and photos.store.held_bytes() == 0
    assert np.array_equal(photos.vector(again), fake_vector(b"photo A"))
    photos.cache = VectorCache()  # its vector evicted: a clear error, not a crash
    with pytest.raises(ImageError, match="already searched"):
        photos.vector(again)


@pytest.mark.fast
def test_a_path_the_app_did_not_hand_out_is_refused_and_left_untouched(tmp_path):
    """A request may name any file Gradio lets an input name (a catalog image it serves, a file of its folder):
    it is never read or deleted, and the request is refused with a clear message."""
    thumbnail = tmp_path / "index" / "images" / "10030.jpg"
    thumbnail.parent.mkdir(parents=True)
    thumbnail.write_bytes(b"a catalog image")
    photos = QueryPhotos(CountingEmbedder())
    with pytest.raises(ImageError, match="names a file on the server"):
        photos.open(str(thumbnail))
    assert thumbnail.read_bytes() == b"a catalog image"


@pytest.mark.fast
def test_opened_paths_are_dropped_from_gradios_lists(tmp_path):
    """Gradio records each path an event used (blocks.upload_file_set, each block's temp_files) and never forgets
    one deleted by someone else: the lists would grow with every photo."""
    from gradio.context import LocalContext

    uploaded, fetched = str(tmp_path / "uploads" / "a" / "photo.jpg"), str(tmp_path / "url-hash" / "url-photo")
    listed = {uploaded, fetched, "someone else's file"}
    blocks = SimpleNamespace(upload_file_set=set(listed), blocks={
        1: SimpleNamespace(temp_files=set(listed)), 2: SimpleNamespace(), 3: SimpleNamespace(temp_files=set())})
    photos = QueryPhotos(CountingEmbedder())
    photos.store.put(uploaded, b"photo")
    photos.store.put(fetched, b"a URL's picture")
    token = LocalContext.blocks.set(blocks)
    try:
        photos.open(uploaded)
        photos.open(fetched)
    finally:
        LocalContext.blocks.reset(token)
    assert blocks.upload_file_set == blocks.blocks[1].temp_files == {"someone else's file"}


# InMemoryUploads: Gradio's upload route, answered from memory.

@pytest.fixture
def uploads(tmp_path):
    """(call, photos, upload_dir, passed): call(method, path, **httpx options) -> response of the middleware in front
    of an app that records what reaches it."""
    passed = []

    async def inner_app(scope, receive, send):
        passed.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"the app"})

    photos, upload_dir = QueryPhotos(CountingEmbedder()), tmp_path / "gradio"
    middleware = InMemoryUploads(inner_app, photos, upload_dir=str(upload_dir), max_bytes=2**20)

    def call(method, path, **options):
        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware),
                                         base_url="http://app") as client:
                return await client.request(method, path, **options)
        return asyncio.run(go())

    return SimpleNamespace(call=call, photos=photos, upload_dir=upload_dir, passed=passed)


@pytest.mark.fast
def test_an_upload_is_answered_with_a_path_and_held_in_memory(uploads):
    data = jpeg(Image.new("RGB", (40, 30), "navy"))
    response = uploads.call("POST", "/gradio_api/upload", files=[("files", ("../../etc/shirt photo.jpg", data))])
    assert response.status_code == 200, response.text
    [path] = response.json()
    assert Path(path).parent == uploads.upload_dir / sha256(data) and Path(path).name.endswith(".jpg")
    assert uploads.photos.store.take(path) == (sha256(data), data)
    assert not uploads.upload_dir.exists() and uploads.passed == []  # nothing written; Gradio's route never ran

    uploads.photos.cache.put(sha256(data), fake_vector(data))  # a photo searched already: held too, /explain draws
    [again] = uploads.call("POST", "/gradio_api/upload", files=[("files", ("shirt.jpg", data))]).json()  # on it
    assert uploads.photos.store.take(again) == (sha256(data), data)

    assert uploads.call("GET", "/gradio_api/upload").text == "the app"  # anything else goes to the app
    assert uploads.call("POST", "/gradio_api/queue/join", json={}).text == "the app"


@pytest.mark.parametrize("size, declared, read_at_most", [
    (8 * 2**20, True, 0),  # refused by its Content-Length, unread
    (8 * 2**20, False, 2**20 + 3 * 65536),  # no length given (or a false one): read up to the limit only
    (2**20 + 1000, True, 2**20 + 65536),  # within the multipart allowance, over the limit once parsed
], ids=["declared", "streamed-without-length", "just-over"])
@pytest.mark.fast
def test_too_large_uploads_are_refused_with_the_limit(uploads, size, declared, read_at_most):
    request = httpx.Request("POST", "http://app", files=[("files", ("big.jpg", b"\xff\xd8\xff" + bytes(size)))])
    body, sent = request.read(), []

    async def chunks():  # the body as a client sends it, counted
        for start in range(0, len(body), 65536):
            sent.append(len(body[start:start + 65536]))
            yield body[start:start + 65536]

    headers = {"content-type": request.headers["content-type"]}
    if declared:
        headers["content-length"] = str(len(body))
    response = uploads.call("POST", "/gradio_api/upload", content=chunks(), headers=headers)
    assert response.status_code == 413 and "1 MB" in response.text
    assert sum(sent) <= read_at_most
    assert len(uploads.photos.store) == 0 and not uploads.upload_dir.exists()


@pytest.mark.fast
def test_an_upload_that_is_not_multipart_is_refused(uploads):
    response = uploads.call("POST", "/gradio_api/upload", content=b"\xff\xd8\xff photo",
                            headers={"content-type": "image/jpeg"})
    assert response.status_code == 400 and len(uploads.photos.store) == 0


# Real Gradio in this process: the paths it records of each event are forgotten.

def test_gradio_keeps_no_path_of_any_photo_after_its_event(tmp_path, monkeypatch):
    import gradio as gr
    from starlette.middleware import Middleware

    from recommender.serve.photos import query_image

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # read by each component as it is made
    photos = QueryPhotos(CountingEmbedder())

    def search(photo):
        photos.vector(photo)
        return photo.key

    with gr.Blocks(analytics_enabled=False) as demo:
        image, key = query_image(photos), gr.Textbox()
        image.change(search, image, key, api_name="photo")
    demo.queue()
    uploads = Middleware(InMemoryUploads, photos=photos, upload_dir=str(tmp_path / "gradio"), max_bytes=2**20)
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port(),
                app_kwargs={"middleware": [uploads]})
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        for number in range(20):  # unique photos through the API
            path = tmp_path / f"photo-{number}.png"
            Image.new("RGB", (8, 8), (number, 0, 0)).save(path)
            assert client.predict(handle_file(str(path)), api_name="/photo") == sha256(path.read_bytes())
        recorded = {name: len(block.temp_files) for name, block in demo.blocks.items()
                    if getattr(block, "temp_files", None)}
        assert demo.upload_file_set == set() and recorded == {}
        assert photos.store.held_bytes() == 0 and leftovers(tmp_path / "gradio") == []
    finally:
        demo.close()


# The running app: every way in, every way a request fails.

@pytest.fixture(scope="module")
def proxy():
    proxy = PhotoProxy()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def photo_app(built_index, tmp_path_factory, proxy):
    """The app with its own temp dir, URLs fetched through `proxy`, and a queue of one waiting request."""
    folder = tmp_path_factory.mktemp("photo-app")
    env = {"INDEX_DIR": str(built_index[0]), "GRADIO_TEMP_DIR": str(folder / "gradio"), "MAX_QUEUE": "1",
           "URL_PHOTO_SECONDS": "90", **BEHIND_A_PROXY,  # test_a_full_queue_refuses_with_a_clear_error holds downloads for a while
           **proxy.app_env()}
    running = RunningApp(env, folder / "app.log")
    running.temp_dir = folder / "gradio"
    try:
        yield running.wait_until_ready()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def photo_client(photo_app):
    return Client(photo_app.url, verbose=False, download_files=False)


def visitor_client(app, number: int):
    return Client(app.url, verbose=False, download_files=False, headers=visitor(number))


def top_id(client, image) -> str:
    _, results = client.predict(image=image, k=3, api_name="/recommend")
    return results[0]["id"]


def written(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return str(folder / name)


def until(condition, timeout: float = 30, why=lambda: ""):
    """Wait for `condition`; past `timeout`, fail with what `why()` tells."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out. {why()}"
        time.sleep(0.05)


def wait_for_quiet(app, timeout: float = 60):
    """Every request answered: nothing waits in the queue (the caller's own requests have returned), QUIET_SECONDS
    in a row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{app.url}/gradio_api/queue/status", timeout=10).json()["queue_size"] == 0:
            time.sleep(QUIET_SECONDS)
            if httpx.get(f"{app.url}/gradio_api/queue/status", timeout=10).json()["queue_size"] == 0:
                return
        time.sleep(0.2)
    raise TimeoutError("the app's queue never emptied")


@pytest.fixture
def left_nowhere(photo_app):
    """check(*photos): once the app is quiet, this test left nothing in its temp dir (earlier tests are judged by
    their own check) and none of `photos` is in its log."""
    before = set(leftovers(photo_app.temp_dir))

    def check(*photos: bytes):
        wait_for_quiet(photo_app)
        assert sorted(set(leftovers(photo_app.temp_dir)) - before) == [], "left in Gradio's temp dir"
        log = photo_app.log.read_bytes()
        for data in photos:
            middle, encoded = len(data) // 2, base64.b64encode(data)
            for trace in (data[middle:middle + 48], encoded[len(encoded) // 2:][:48],
                          data.hex()[middle:][:96].encode()):
                assert trace not in log, "a photo's bytes are in the app's log"

    return check


def rest_call(app, api: str, data: list) -> str:
    """Gradio's two-step REST call, as any client may send it: POST the inputs, then read the event's stream."""
    event = httpx.post(f"{app.url}/gradio_api/call/{api}", json={"data": data}, timeout=30).json()["event_id"]
    return httpx.get(f"{app.url}/gradio_api/call/{api}/{event}", timeout=60).text


def page_event(app, api: str, event_data: dict) -> list:
    """One of the page's events through the queue's protocol, as the page's script sends it (its inputs as the
    page has them at start): its answer, the outputs or the error."""
    config = httpx.get(f"{app.url}/config", timeout=30).json()
    values = {component["id"]: component.get("props", {}).get("value") for component in config["components"]}
    dependency = next(item for item in config["dependencies"] if item.get("api_name") == api)
    session = f"page{time.time_ns()}"
    with httpx.Client(base_url=f"{app.url}/gradio_api", timeout=60) as http:
        http.post("/queue/join", json={"data": [values.get(component) for component in dependency["inputs"]],
                                       "fn_index": dependency["id"], "session_hash": session,
                                       "event_data": event_data, "trigger_id": None}).raise_for_status()
        with http.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    return message["output"]
    raise AssertionError("the queue's stream ended without an answer")


def test_no_request_naming_a_server_file_reads_or_deletes_it(photo_app, photo_client, built_index, catalog_rows):
    """Every gallery answer tells the thumbnails' paths, and Gradio lets an input name a file it serves: a request
    naming one (or an index file, or a file in Gradio's folder) is refused, and every file stays byte-identical."""
    index = built_index[0].resolve()
    thumbnail = next((index / "images").glob("*.jpg"))
    planted = photo_app.temp_dir / "planted" / "note.jpg"  # a file of Gradio's folder that no request wrote (removed
    # at the end: the last test checks that the folder is empty)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(jpeg(catalog_rows[3]["image"]))
    targets = [thumbnail, index / "manifest.json", planted]
    before = {path: path.read_bytes() for path in targets}
    for path in targets:
        image = {"path": str(path), "meta": {"_type": "gradio.FileData"}}
        for api, data in (("recommend", [image, 8, "All", "All", "All"]), ("explain", [image, "", "10030"])):
            answer = rest_call(photo_app, api, data)
            assert "event: error" in answer and "names a file on the server" in answer, answer
        told = json.dumps(page_event(photo_app, "search_photo", {"path": str(path)}))  # as the page's picker sends it
        # refused by the page's handler (a photo it was not sent), or before it by Gradio (a path outside its files)
        assert "did not reach the server" in told or "is not in the cache folder and cannot be accessed" in told, told
    assert {path: path.read_bytes() for path in targets} == before
    _, results = photo_client.predict(image=handle_file(str(thumbnail)), k=3, api_name="/recommend")  # as a photo
    assert results and thumbnail.read_bytes() == before[thumbnail]
    shutil.rmtree(planted.parent)


def test_api_file_photo(left_nowhere, photo_client, catalog_rows, tmp_path):
    data = jpeg(catalog_rows[7]["image"])
    assert top_id(photo_client, handle_file(written(tmp_path, "selfie.jpg", data))) == str(catalog_rows[7]["id"])
    left_nowhere(data)


def test_a_changed_picture_at_the_same_url_gets_its_own_results(left_nowhere, photo_client, proxy, catalog_rows):
    url = "http://photos.hf.co/shirt.jpg"
    pictures = [(jpeg(catalog_rows[number]["image"]), str(catalog_rows[number]["id"])) for number in (20, 25, 20)]
    for data, product in pictures:  # A, then B at the same URL, then A again
        proxy.pictures[url] = data
        assert top_id(photo_client, handle_file(url)) == product
    assert proxy.requests.count(url) == 3  # fetched afresh each time: Gradio's copy, named by the URL, is gone
    left_nowhere(*(data for data, _ in pictures))


def data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def test_mcp_recommend_with_a_base64_photo(photo_app, left_nowhere, catalog_rows):
    data = jpeg(catalog_rows[11]["image"])
    _, [answer] = call_mcp(photo_app, ("recommend", {"image": data_url(data), "k": 2}))
    assert not answer.isError, answer.content
    assert re.findall(r"'id': '([^']+)'", answer.content[0].text)[0] == str(catalog_rows[11]["id"])
    left_nowhere(data)


def test_an_mcp_photo_over_the_limit_is_refused_before_it_is_written(photo_app, left_nowhere):
    """Gradio's MCP server would decode a base64 image into a file of its temp folder before the tool runs; the MCP
    SDK answers a request body over 4 MiB with 413 before it is parsed (DEFAULT_MAX_REQUEST_BODY_SIZE), so a 21 MB
    photo is refused and no byte of it lands on disk, and the app answers the next call."""
    big = b"\xff\xd8\xff" + np.random.default_rng(3).integers(0, 256, 21 * 2**20, dtype=np.uint8).tobytes()
    with pytest.raises(BaseException) as refused:  # an ExceptionGroup of the client's task group
        call_mcp(photo_app, ("recommend", {"image": data_url(big), "k": 2}))
    assert "413 Request Entity Too Large" in str(refused.getrepr()), refused.getrepr()
    left_nowhere(big)
    assert httpx.get(f"{photo_app.url}/gradio_api/info", timeout=30).status_code == 200


def test_refused_photos_get_a_clear_error(photo_app, left_nowhere, photo_client, proxy, tmp_path):
    refused = {"notes.jpg": b"Dear diary, this is no photo. " * 40, "IMG_0001.HEIC": heic(1)}
    for name, data in refused.items():  # by file upload (memory) and by URL (Gradio writes it to disk)
        proxy.pictures[f"http://photos.hf.co/{name}"] = data
        for image in (handle_file(written(tmp_path, name, data)), handle_file(f"http://photos.hf.co/{name}")):
            with pytest.raises(AppError, match=NOT_AN_IMAGE):
                photo_client.predict(image=image, k=3, api_name="/recommend")
    big = b"\xff\xd8\xff" + np.random.default_rng(2).integers(0, 256, 21 * 2**20, dtype=np.uint8).tobytes()
    response = httpx.post(f"{photo_app.url}/gradio_api/upload", files=[("files", ("big.jpg", big))], timeout=60)
    assert response.status_code == 413 and "20 MB" in response.text  # (gradio_client would not even send it)
    left_nowhere(*refused.values(), big)


def test_a_full_queue_refuses_with_a_clear_error(photo_app, left_nowhere, photo_client, proxy, catalog_rows, tmp_path):
    from app import CONCURRENCY

    busy = {f"http://photos.hf.co/slow-{number}.jpg": number for number in range(CONCURRENCY)}
    for url, number in busy.items():  # every worker waits for its download until the test lets it go
        proxy.pictures[url], proxy.held[url] = jpeg(catalog_rows[number]["image"]), threading.Event()
    # each request a visitor of its own: the app runs one request per address at a time (recommender/serve/clients.py)
    busy_jobs = {number: visitor_client(photo_app, number).submit(image=handle_file(url), k=3, api_name="/recommend")
                 for url, number in busy.items()}
    photos = {number: jpeg(catalog_rows[number]["image"]) for number in range(10, 14)}
    try:
        until(lambda: set(busy) <= set(proxy.requests), why=lambda: (  # failed once, sessions ago; passed since
            f"The proxy was asked for {proxy.requests}; queue status "
            f"{httpx.get(f'{photo_app.url}/gradio_api/queue/status', timeout=10).json()}; app log:\n"
            f"{photo_app.output()[-3000:]}"))
        jobs = {number: visitor_client(photo_app, number).submit(
            image=handle_file(written(tmp_path, f"q{number}.jpg", data)), k=3, api_name="/recommend")
            for number, data in photos.items()}
        until(lambda: sum(job.done() for job in jobs.values()) >= len(jobs) - 1)  # MAX_QUEUE=1: one may wait
    finally:
        for url in busy:
            proxy.held[url].set()
        for job in busy_jobs.values():  # let the held downloads finish and be deleted, whatever happened above
            try:
                job.result(timeout=60)
            except Exception:  # noqa: BLE001 - judged below
                pass
    refused = []
    for number, job in {**busy_jobs, **jobs}.items():
        try:
            _, results = job.result(timeout=60)
        except Exception as error:  # gradio_client's QueueError
            assert "Queue is full" in str(error), error
            refused.append(number)
        else:
            assert results[0]["id"] == str(catalog_rows[number]["id"])
    assert len(refused) == len(jobs) - 1 and set(refused) <= set(photos)
    left_nowhere(*photos.values(), *(proxy.pictures[url] for url in busy))


def test_an_upload_cut_off_mid_body(photo_app, left_nowhere, photo_client, catalog_rows, tmp_path):
    data = jpeg(catalog_rows[9]["image"])
    head = (b"--cut\r\nContent-Disposition: form-data; name=\"files\"; filename=\"half.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n")
    with socket.create_connection(("127.0.0.1", photo_app.port)) as connection:  # the tab closed mid-upload
        connection.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: multipart/form-data; boundary=cut\r\n"
                           + f"Content-Length: {len(head) + len(data) + 10}\r\n\r\n".encode()
                           + head + data[:len(data) // 2])
        time.sleep(0.3)
    other = jpeg(catalog_rows[14]["image"])  # the app serves on
    assert top_id(photo_client, handle_file(written(tmp_path, "next.jpg", other))) == str(catalog_rows[14]["id"])
    left_nowhere(data[:len(data) // 2], other)


def test_a_url_that_never_ends_is_refused_at_the_byte_cap(photo_app, photo_client, proxy, catalog_rows, tmp_path):
    """A URL that streams without end, fast (2 GB would come next): refused once 20 MB have arrived, in memory,
    with the app's memory back within bounds, and the next request answered."""
    url = "http://photos.hf.co/endless.jpg"
    proxy.endless[url] = 0.0
    before = photo_app.resident_bytes()
    with pytest.raises(Exception, match="larger than 20 MB"):
        photo_client.predict(image=handle_file(url), k=3, api_name="/recommend")
    assert proxy.sent[url] < 100 * 2**20, f"{proxy.sent[url] / 2**20:.0f} MB sent before the app hung up"
    assert photo_app.resident_bytes() - before < 300e6
    assert top_id(photo_client, handle_file(written(tmp_path, "next.jpg", jpeg(catalog_rows[3]["image"])))) == \
        str(catalog_rows[3]["id"])


@pytest.mark.fast
def test_a_url_that_sends_slowly_is_refused_at_its_deadline(proxy, monkeypatch):
    """64 kB a second: the download is abandoned after URL_SECONDS with a message saying so (through the same
    proxy, so the host checks are Gradio's allow-list as in the app)."""
    url = "http://photos.hf.co/slow-endless.jpg"
    proxy.endless[url] = 1.0
    monkeypatch.setattr(photos_module, "URL_SECONDS", 0.5)
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    with pytest.raises(ImageError, match="did not arrive within 0.5 s"):
        asyncio.run(photos_module.fetch_photo(url, 20 * 2**20))


def test_nothing_is_left_once_the_app_stops(photo_app):
    """Last in this file: every photo above, after the app has stopped (Gradio deletes what it recorded)."""
    photo_app.stop()
    assert photo_app.process.returncode is not None
    assert leftovers(photo_app.temp_dir) == [], "left in Gradio's temp dir"
