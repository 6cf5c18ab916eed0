"""The life of a query photo: uploaded into memory (never onto disk), read once, forgotten; only its vector is kept
(with, in the app, a copy at most 224 px across for "Why this match?"), by a hash of its bytes.

Every file this app receives is a query photo (a page upload, a webcam snapshot, a paste, a crop, an API file), so
`InMemoryUploads` answers Gradio's upload route itself and holds the bytes in `UploadStore` until the event that
uses them reads them. Gradio's image editor uploads its layers again and again while a photo is on show (dozens of
uploads for one photo, some after the last event): on disk they would stay until the app stops. An API image given
as a URL is fetched into the same store (`fetch_photo`: Gradio's host checks, a byte cap and a deadline); any other
path a request names (a catalog image Gradio would serve, an index file, a file of Gradio's folder) is refused and
left untouched.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recommender.serve.environment import ENV
from recommender.serve.gradio_patches import SERVER_PATH_REFUSED, drop_from_gradio_lists
from recommender.serve.uploads import UploadStore, photo_key

__all__ = ["Photo", "QueryPhotos", "VectorCache", "fetch_photo", "query_image"]

class Photo(NamedTuple):
    """A query photo as an event hands it over: its content key, its bytes (None once used by an earlier event of
    the same photo), and the path it was uploaded under."""
    key: str
    data: bytes | None
    path: str


class QueryPhotos:
    """Where a handler gets a photo's vector: from the vector cache by content, or by embedding the bytes once.

    `embed(bytes)` returns the vector, or an object holding it as `.vector` with what the request needs of the
    photo (the app's: recommender.serve.explain.View, with the grid cells and a small copy for "Why this match?"); the
    shared cache keeps only `cacheable(what embed returned)` (the app's: the View without the copy)."""

    def __init__(self, embed, store: UploadStore | None = None, cache: "VectorCache | None" = None,
                 cacheable=lambda embedding: embedding):
        self.embed, self.store, self.cache = embed, store or UploadStore(), cache or VectorCache()
        self.cacheable = cacheable
        self._disk_copies: dict[str, set[Path]] = {}  # content key -> files Gradio wrote that will be uploaded
        self._disk_copies_lock = threading.Lock()

    def expect_upload_of(self, path: str | Path) -> None:
        """`path` is a photo Gradio wrote to disk only to upload it to this app again (its MCP server does that
        with a base64 image): delete it when that upload arrives."""
        try:
            key = photo_key(Path(path).read_bytes())
        except OSError:
            return
        with self._disk_copies_lock:
            self._disk_copies.setdefault(key, set()).add(Path(path))

    def forget_disk_copies(self, key: str) -> None:
        with self._disk_copies_lock:
            copies = self._disk_copies.pop(key, ())
        for file in copies:
            _delete(file)

    def open(self, path: str | Path) -> Photo:
        """The photo the upload store holds under `path` (an upload, or a URL's photo fetch_photo brought in). Any
        other path is refused with images.ImageError and its file left as it is: a request may name a file the app
        serves (Gradio lets an input name a static path), and nothing a client names is ever read or deleted."""
        from recommender.images import ImageError

        path = str(path)
        held = self.store.take(path)
        if held is None:
            raise ImageError(SERVER_PATH_REFUSED, "a server path")
        drop_from_gradio_lists(path)
        return Photo(*held, path)

    def uploaded(self, path: str) -> Photo | None:
        """The photo the upload route holds under `path`, or None: never a file on disk (a page event names only
        what this app handed out)."""
        held = self.store.take(path)
        return None if held is None else Photo(*held, path)

    def vector(self, photo: Photo) -> np.ndarray:
        """(dims,) vector of `photo`; raises images.ImageError for bytes that are not a usable image."""
        embedding = self.embedding(photo)
        return getattr(embedding, "vector", embedding)

    def embedding(self, photo: Photo):
        """What `embed` returned for `photo`'s bytes, or, from the cache, its cacheable part; raises
        images.ImageError for bytes that are not a usable image."""
        from recommender.images import ImageError

        try:
            embedding = self.cache.get(photo.key)
            if embedding is None:
                if photo.data is None:
                    raise ImageError("This photo was already searched and is no longer held; send it again.",
                                     "no image")
                embedding = self.embed(photo.data)
                self.cache.put(photo.key, self.cacheable(embedding))
            return embedding
        finally:
            self.store.release(photo.path)  # used or refused: its bytes go, its key stays


def _delete(file: Path) -> None:
    file.unlink(missing_ok=True)
    try:
        file.parent.rmdir()  # Gradio's per-file folder, named by a hash of the bytes or the URL
    except OSError:
        pass  # not empty, or gone


def query_image(photos: QueryPhotos, max_bytes: int = 20 * 2**20, **options):
    """gr.Image for the API whose value, for the handler, is a `Photo`: the file is never opened by Gradio, so EXIF,
    alpha and CMYK are handled in one place (recommender.images) and a file Gradio cannot open gets our message.
    (Wrapped, not subclassed: Gradio writes a .pyi stub next to every component subclass.)"""
    import gradio as gr

    from gradio_client.utils import is_http_url_like

    from recommender.images import ImageError

    from gradio.utils import get_upload_folder

    image = gr.Image(type="filepath", image_mode=None, **options)
    move = image.async_move_resource_to_block_cache

    async def move_or_fetch(url_or_file_path):  # where Gradio would download a URL image whole, to disk
        if not is_http_url_like(str(url_or_file_path)):
            return await move(url_or_file_path)
        try:
            data = await fetch_photo(str(url_or_file_path), max_bytes)
        except ImageError as error:
            raise gr.Error(str(error)) from None
        path = str(Path(get_upload_folder()) / photo_key(data) / "url-photo")
        photos.store.put(path, data)  # held in memory like an upload, read once by preprocess
        return path

    def preprocess(payload):
        if payload is None or not payload.path:
            return None
        try:
            return photos.open(payload.path)
        except ImageError as error:
            raise gr.Error(str(error)) from None

    image.async_move_resource_to_block_cache = move_or_fetch
    image.preprocess = preprocess
    return image


# a photo's URL must deliver it within this (URL_PHOTO_SECONDS): a server that sends slowly holds a worker no longer,
# and the visitor is told within 2 s (issue 21), connection and answer included
URL_SECONDS = ENV.url_photo_seconds
MAX_REDIRECTS = 20  # as Gradio


async def fetch_photo(url: str, max_bytes: int) -> bytes:
    """The photo at an http(s) URL, into memory, checked as Gradio checks a URL (safehttpx: the host resolved and
    refused unless public, at every redirect; Gradio's allow-list of Hugging Face hosts), but streamed: refused
    (images.ImageError) past `max_bytes` or URL_SECONDS, where Gradio would download the whole file to disk first."""
    import asyncio
    from urllib.parse import urljoin

    import httpx
    import safehttpx
    from gradio.processing_utils import PUBLIC_HOSTNAME_WHITELIST

    from recommender.images import ImageError

    too_large = ImageError(f"The photo at that URL is larger than {max_bytes // 2**20} MB; send a smaller one.",
                           "too large")
    try:
        async with asyncio.timeout(URL_SECONDS):
            for _ in range(MAX_REDIRECTS + 1):
                host = httpx.URL(url).host
                transport = None if safehttpx.matches_domain_whitelist(host, PUBLIC_HOSTNAME_WHITELIST) else \
                    safehttpx.AsyncSecureTransport(await safehttpx.async_validate_url(host))
                async with httpx.AsyncClient(transport=transport, timeout=URL_SECONDS) as client, \
                        client.stream("GET", url, follow_redirects=False) as response:
                    if response.has_redirect_location:
                        url = urljoin(str(response.url), response.headers["Location"])
                        continue
                    if response.status_code != 200:
                        raise ImageError(f"The photo's URL answered {response.status_code}: check the address.",
                                         "url failed")
                    if int(response.headers.get("content-length") or 0) > max_bytes:
                        raise too_large
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > max_bytes:
                            raise too_large
                    return bytes(data)
            raise ImageError(f"The photo's URL redirected more than {MAX_REDIRECTS} times.", "url failed")
    except TimeoutError:
        raise ImageError(f"The photo at that URL did not arrive within {URL_SECONDS} s; try again, or upload it.",
                         "url failed") from None
    except (httpx.HTTPError, ValueError) as error:  # safehttpx refuses a private address with ValueError
        raise ImageError(f"The photo's URL could not be fetched: {error or type(error).__name__}", "url failed") \
            from None


class VectorCache:
    """The vectors of recent photos by content key, never the photos (in the app, with each vector its cells, for
    "Why this match?"): the editor's repeated events for one photo, and a photo sent again, cost no model call.
    Shared by all sessions: the same bytes give the same vector."""

    def __init__(self, size: int = 256):
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size, self._lock = size, threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._vectors.get(key)

    def put(self, key: str, vector: np.ndarray) -> None:
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            if len(self._vectors) > self._size:
                self._vectors.popitem(last=False)
