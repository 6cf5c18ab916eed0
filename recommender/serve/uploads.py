"""Gradio's upload route, answered in memory: every file this app receives is a query photo, held in `UploadStore` as
bytes until the event that uses them reads them, never written to disk; each address holds only its share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import hashlib
import json
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path

from recommender.serve.clients import client_address, slow_refusal

if TYPE_CHECKING:
    from recommender.serve.photos import QueryPhotos

__all__ = ["InMemoryUploads", "TooManyUploads", "UploadStore", "photo_key"]

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
