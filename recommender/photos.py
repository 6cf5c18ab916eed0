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

import hashlib
import json
import os
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recommender.clients import client_address, slow_refusal

__all__ = ["InMemoryUploads", "Photo", "QueryPhotos", "RefuseDeepLinks", "TooManyUploads", "UploadStore",
           "VectorCache", "never_record_values", "photo_key", "query_image", "refuse_server_paths_clearly"]

UNREAD_SECONDS = 60  # an upload no event reads (the editor's repeats, a refused or abandoned request) is dropped then
KEY_SECONDS = 600  # an upload's content key outlives its bytes: the editor's later events for one photo find its vector
MAX_HELD_BYTES = 256 * 2**20  # uploads held at once; the oldest go first (a photo is a few MB at most)
# Unread uploads one address may hold: a page sends one photo and reads it at once; past these, an upload is refused
# (429), so one visitor can neither fill the store nor push the others' photos out of it.
CLIENT_UPLOADS = 32
CLIENT_UPLOAD_BYTES = 64 * 2**20


def photo_key(data: bytes) -> str:
    """What the vector cache is keyed on: the photo's content, never a name Gradio or a URL chose."""
    return hashlib.sha256(data).hexdigest()


class TooManyUploads(Exception):
    """One address holds as many unread uploads as it may; the message says when to try again."""


class UploadStore:
    """Uploaded files by the path Gradio's events refer to them by: bytes until read once, then only their key.

    Every call costs the same whatever the store holds: entries are kept in the order they were stored, so expiry
    only ever looks at the oldest, and the byte total and each address's share are counted as they change."""

    def __init__(self, unread_seconds: float = UNREAD_SECONDS, key_seconds: float = KEY_SECONDS,
                 max_bytes: int = MAX_HELD_BYTES, client_uploads: int = CLIENT_UPLOADS,
                 client_bytes: int = CLIENT_UPLOAD_BYTES):
        self._entries: OrderedDict[str, list] = OrderedDict()  # path -> [key, bytes or None, time stored, client]
        self._held: OrderedDict[str, None] = OrderedDict()  # paths whose bytes are held, oldest first
        self._held_bytes = 0
        self._client_paths: dict[str, OrderedDict] = {}  # client -> its paths whose bytes are held, oldest first
        self._client_bytes = Counter()
        self._unread, self._key_life, self._max_bytes = unread_seconds, key_seconds, max_bytes
        self._most_uploads, self._most_bytes = client_uploads, client_bytes
        self._lock = threading.Lock()

    def put(self, path: str, data: bytes, client: str = "") -> None:
        """Hold `data` under `path` for `client` (an address); TooManyUploads when that address holds its share."""
        with self._lock:
            self._expire()
            self._check_room(client, len(data))
            if path in self._entries:
                self._drop_bytes(path)
                del self._entries[path]
            self._entries[path] = [photo_key(data), data, time.monotonic(), client]
            self._held[path] = None
            self._held_bytes += len(data)
            self._client_paths.setdefault(client, OrderedDict())[path] = None
            self._client_bytes[client] += len(data)
            self._expire()

    def check_room(self, client: str) -> None:
        """TooManyUploads if `client` holds its share already: checked before a request's body is read, so that a
        refused flood costs no parsing."""
        with self._lock:
            self._expire()
            self._check_room(client, 0)

    def _check_room(self, client: str, size: int) -> None:
        mine = self._client_paths.get(client, {})
        if client and (len(mine) >= self._most_uploads or self._client_bytes[client] + size > self._most_bytes):
            oldest = self._entries[next(iter(mine))][2] if mine else time.monotonic()
            wait = max(1, int(self._unread - (time.monotonic() - oldest)) + 1)  # when its oldest expires
            raise TooManyUploads(f"Too many photos from your address are waiting to be searched "
                                 f"({len(mine)}): try again in {wait} s.")

    def take(self, path: str) -> tuple[str, bytes | None] | None:
        """(key, bytes) of the upload at `path`, bytes None once released; None for a path never uploaded here (or
        long expired)."""
        with self._lock:
            self._expire()
            entry = self._entries.get(str(path))
            return None if entry is None else (entry[0], entry[1])

    def release(self, path: str) -> None:
        """The photo has been used (its vector is cached) or refused: drop its bytes, keep its key."""
        with self._lock:
            if str(path) in self._entries:
                self._drop_bytes(str(path))

    def held_bytes(self) -> int:
        with self._lock:
            self._expire()
            return self._held_bytes

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _drop_bytes(self, path: str) -> None:
        entry = self._entries[path]
        if entry[1] is not None:
            self._held.pop(path)
            self._held_bytes -= len(entry[1])
            mine = self._client_paths[entry[3]]
            mine.pop(path)
            self._client_bytes[entry[3]] -= len(entry[1])
            if not mine:  # an address that holds nothing takes no room
                del self._client_paths[entry[3]], self._client_bytes[entry[3]]
            entry[1] = None

    def _expire(self) -> None:
        """Over the byte budget or unread for too long, the oldest bytes go; after key_seconds, the oldest keys."""
        now = time.monotonic()
        while self._held:
            oldest = next(iter(self._held))
            if now - self._entries[oldest][2] <= self._unread and self._held_bytes <= self._max_bytes:
                break
            self._drop_bytes(oldest)
        while self._entries:
            oldest, entry = next(iter(self._entries.items()))
            if now - entry[2] <= self._key_life:
                break
            self._drop_bytes(oldest)
            del self._entries[oldest]


class InMemoryUploads:
    """ASGI middleware: answers Gradio's upload route (POST .../gradio_api/upload, multipart "files") like Gradio
    does, with a path in Gradio's upload folder, but holds the bytes in `photos.store` instead of writing them (even
    for a photo whose vector is known: /explain draws on them). Everything else goes to the app."""

    def __init__(self, app, photos: "QueryPhotos", upload_dir: str, max_bytes: int, hops: int = 0):
        self.app, self.photos, self.upload_dir, self.max_bytes = app, photos, Path(upload_dir), max_bytes
        self.hops = hops  # trusted proxies in front (recommender.clients): whose address an upload counts against

    async def __call__(self, scope, receive, send):
        from starlette.requests import ClientDisconnect

        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/gradio_api/upload"):
            return await self.app(scope, receive, send)
        try:
            status, body = await self._upload(scope, receive)
        except ClientDisconnect:
            return  # the tab closed mid-upload: nothing was stored, and nobody is there to answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json" if status == 200 else b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    async def _upload(self, scope, receive) -> tuple[int, bytes]:
        from starlette.formparsers import MultiPartException, MultiPartParser
        from starlette.requests import Request

        class InMemoryParser(MultiPartParser):
            spool_max_size = self.max_bytes + 1  # a file part stays in memory up to the size we accept at all

        request = Request(scope, receive)
        if "multipart/form-data" not in request.headers.get("content-type", ""):
            return 400, b"Invalid content type."
        client = client_address(request.headers, request.client and request.client.host, self.hops)
        try:
            self.photos.store.check_room(client)
        except TooManyUploads as refused:
            await slow_refusal()  # a flood's loop would otherwise send its next request at once
            return 429, str(refused).encode()
        too_large = f"File size exceeds the maximum allowed size of {self.max_bytes // 2**20} MB.".encode()
        if int(request.headers.get("content-length") or 0) > self.max_bytes + 65536:  # + the multipart framing
            return 413, too_large
        try:
            form = await InMemoryParser(request.headers, _limited(request.stream(), self.max_bytes + 65536),
                                        max_files=100, max_fields=100).parse()
        except _TooLarge:
            return 413, too_large
        except MultiPartException as error:
            return 400, error.message.encode()
        paths = []
        for upload in form.getlist("files"):
            if isinstance(upload, str):
                continue
            data = await upload.read()
            await upload.close()
            if len(data) > self.max_bytes:
                return 413, too_large
            from gradio_client.utils import strip_invalid_filename_characters

            name = strip_invalid_filename_characters(Path(upload.filename or "").name) or "photo"
            key = photo_key(data)
            self.photos.forget_disk_copies(key)
            path = str(self.upload_dir / key / name)
            try:
                self.photos.store.put(path, data, client)
            except TooManyUploads as refused:
                await slow_refusal()
                return 429, str(refused).encode()
            paths.append(path)
        return 200, json.dumps(paths).encode()


class _TooLarge(Exception):
    pass


async def _limited(stream, limit: int):
    """The request body, refused once it grows past `limit` bytes (a client may lie about Content-Length)."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge()
        yield chunk


class Photo(NamedTuple):
    """A query photo as an event hands it over: its content key, its bytes (None once used by an earlier event of
    the same photo), and the path it was uploaded under."""
    key: str
    data: bytes | None
    path: str


class QueryPhotos:
    """Where a handler gets a photo's vector: from the vector cache by content, or by embedding the bytes once.

    `embed(bytes)` returns the vector, or an object holding it as `.vector` with what the request needs of the
    photo (the app's: recommender.explain.View, with the grid cells and a small copy for "Why this match?"); the
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
        from .images import ImageError

        path = str(path)
        held = self.store.take(path)
        if held is None:
            raise ImageError(SERVER_PATH_REFUSED, "a server path")
        _drop_from_gradio_lists(path)
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
        from .images import ImageError

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


def _drop_from_gradio_lists(path: str) -> None:
    """Gradio remembers every path a request used, to delete it at shutdown, and never forgets one: ours are gone
    already, and the lists would grow with every photo."""
    from gradio.context import LocalContext

    blocks = LocalContext.blocks.get(None)
    if blocks is None:
        return
    blocks.upload_file_set.discard(path)
    for block in blocks.blocks.values():
        temp_files = getattr(block, "temp_files", None)
        if temp_files:
            temp_files.discard(path)


def delete_mcp_copies(photos: QueryPhotos) -> None:
    """Gradio's MCP server saves a tool's base64 image to its temp folder, then uploads that file to the app
    through its own client (so the event gets our in-memory upload) and never deletes it: have each such file
    deleted as soon as its upload arrives."""
    from gradio.mcp import GradioMCPServer

    convert = GradioMCPServer.convert_strings_to_filedata
    if getattr(convert, "deletes_copies", False):
        return

    def convert_and_expect_uploads(self, value, filedata_positions):
        converted = convert(self, value, filedata_positions)
        for path in _file_paths(converted):
            if not path.startswith(("http://", "https://")):
                photos.expect_upload_of(path)
        return converted

    convert_and_expect_uploads.deletes_copies = True
    GradioMCPServer.convert_strings_to_filedata = convert_and_expect_uploads


SERVER_PATH_REFUSED = ("This image names a file on the server, which is not accepted: send the photo itself (upload "
                       "it) or a public http(s) URL.")


def refuse_server_paths_clearly() -> None:
    """Gradio refuses an input naming a file outside its upload folder (an index file, say) with InvalidPathError,
    whose message its clients never see ({"error": null}): say why, as for the files it lets through (QueryPhotos.open
    refuses those)."""
    import gradio as gr
    from gradio import processing_utils
    from gradio.exceptions import InvalidPathError

    check = processing_utils._check_allowed
    if getattr(check, "says_why", False):
        return

    def check_and_say_why(path, check_in_upload_folder: bool):
        try:
            return check(path, check_in_upload_folder)
        except InvalidPathError:
            if check_in_upload_folder:  # an input's file, before preprocess
                raise gr.Error(SERVER_PATH_REFUSED) from None
            raise

    check_and_say_why.says_why = True
    processing_utils._check_allowed = check_and_say_why


def never_record_values(components) -> None:
    """Gradio writes every input's and output's value into the session's state (for deep links, which this app does
    not offer), and keeps it for as long as the session: for these components (the photo's small copy, live frames,
    explanation overlays) it records nothing, so no copy of a photo outlives its event."""
    from gradio.state_holder import SessionState

    private = getattr(SessionState._update_value_in_config, "private_ids", None)
    if private is None:
        record = SessionState._update_value_in_config

        def record_unless_private(self, key: int, value):
            return record(self, key, None if key in record_unless_private.private_ids else value)

        record_unless_private.private_ids = private = set()
        SessionState._update_value_in_config = record_unless_private
    private.update(component._id for component in components)


class RefuseDeepLinks:
    """ASGI middleware: Gradio's deep-link route writes the session's component values, a photo's copy among them,
    into a file of the upload folder that nothing deletes. The app offers no deep links: the route answers 404."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].rstrip("/").endswith("/gradio_api/deep_link"):
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"This app keeps no deep links."})
            return
        await self.app(scope, receive, send)


def _file_paths(value) -> list[str]:
    """The paths of the FileData dicts in a nested value."""
    if isinstance(value, dict):
        return [value["path"]] if isinstance(value.get("path"), str) else [
            path for item in value.values() for path in _file_paths(item)]
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in _file_paths(item)]
    return []


def query_image(photos: QueryPhotos, max_bytes: int = 20 * 2**20, **options):
    """gr.Image for the API whose value, for the handler, is a `Photo`: the file is never opened by Gradio, so EXIF,
    alpha and CMYK are handled in one place (recommender.images) and a file Gradio cannot open gets our message.
    (Wrapped, not subclassed: Gradio writes a .pyi stub next to every component subclass.)"""
    import gradio as gr

    from gradio_client.utils import is_http_url_like

    from .images import ImageError

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
URL_SECONDS = float(os.environ.get("URL_PHOTO_SECONDS", "1.5"))
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

    from .images import ImageError

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
