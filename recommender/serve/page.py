"""What the page and the API do with each event: plain values in (the components an event reads), plain values out
(the components it writes). app.py lays the components out and wires the events to these handlers."""

from __future__ import annotations

import base64
import contextvars
import functools
import html
import inspect
import io
import re
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import gradio as gr
import numpy as np

from recommender.serve.explain import Explainer, View, query_picture
from recommender.images import ImageError, to_rgb
from recommender.serve.live_model import LiveModel, LiveModelFailed
from recommender.serve.photos import Photo, QueryPhotos
from recommender.serve.search import ANY, Recommender, UnknownProduct

__all__ = ["LiveMatch", "LiveState", "Page", "Product", "in_memory_image", "live_camera"]

MAX_DATA_URL_BYTES = 20 * 2**20  # what a data URL may carry (the upload limit): a larger one is not decoded
LIVE_THUMBNAIL = 16  # a live frame is compared with the last searched one at 16x16 grey levels
LIVE_FORGET_SECONDS = 10.0  # a live viewer's last searched frame (its 16x16 thumbnail) is forgotten this long after
# the viewer's last frame
LIVE_MIN_CHANGE = 6.0  # mean grey-level difference (0-255) below which a frame is "the same picture": not searched
LIVE_MODEL_SHARE = 0.5  # of the live model's time, at most, for the live frames of all viewers together: after a
# live frame's forward, none starts for as long again. The live model runs at the lowest CPU priority (live_model.py),
# so photos get the cores first without this; it bounds what live viewers take of the CPU, however many they are,
# for whatever else runs on the machine. No live forward starts while a photo is embedded either: at the lowest
# priority it would still share the caches and memory bandwidth with the photo's.
LIVE_MAX_WAIT = 1.0  # seconds a live frame waits for the live model and its viewer's turn, then is dropped (stale).
# The page's camera sends its next frame only once this one is answered: a frame that waits, rather than one dropped
# at once, spares the viewer's browser and this server the frames that would meet a busy model, and tells who is
# waiting for a turn (Page._live_model_reserved)


@dataclass(frozen=True)
class Product:
    """A query that is a catalog product ("more like this"), not a photo."""
    id: str


@dataclass
class LiveState:
    """One live viewer's memory in Gradio's session state: counts and times, no picture (see LastFrames)."""
    last_turn: float = 0.0  # time.monotonic() when it last had the live model, for the turns; 0: never, it goes first
    key: str = ""  # the viewer's key in Page.last_frames
    searched: int = 0
    skipped: int = 0  # unchanged since the last searched frame
    deferred: int = 0  # not searched: waited LIVE_MAX_WAIT in vain (other viewers' turns, photos), or model loading


class LastFrames:
    """Each live viewer's last searched frame, as the 16x16 grey levels a new frame is compared with, by its key:
    forgotten LIVE_FORGET_SECONDS after the viewer's last frame. In Gradio's session state (a LiveState field) it
    would stay for as long as the session does, hours after the camera was turned off: a picture of whoever was in
    front of it."""

    def __init__(self, forget_after: float = LIVE_FORGET_SECONDS):
        self._frames: OrderedDict[str, tuple[np.ndarray | None, float]] = OrderedDict()  # oldest frame first
        self._forget_after = forget_after
        self._lock = threading.Lock()
        threading.Thread(target=self._forget_forever, daemon=True, name="forget-live-frames").start()

    def seen(self, viewer: str) -> np.ndarray | None:
        """A frame of `viewer` arrived: the thumbnail of its last searched frame, if it is still remembered."""
        with self._lock:
            self._forget_old()
            thumbnail, _ = self._frames.pop(viewer, (None, 0.0))
            self._frames[viewer] = (thumbnail, time.monotonic())
            return thumbnail

    def searched(self, viewer: str, thumbnail: np.ndarray) -> None:
        with self._lock:
            self._frames.pop(viewer, None)
            self._frames[viewer] = (thumbnail, time.monotonic())

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def _forget_old(self) -> None:
        deadline = time.monotonic() - self._forget_after
        while self._frames and next(iter(self._frames.values()))[1] < deadline:
            self._frames.popitem(last=False)

    def _forget_forever(self) -> None:  # also when no frame comes: the last viewer's picture goes too
        while True:
            time.sleep(self._forget_after / 4)
            with self._lock:
                self._forget_old()


@dataclass(eq=False)  # compared by identity: Gradio sees a new LiveMatch as a changed State, and fires its change
class LiveMatch:
    """A live frame's vector, from live_frame to live_results (through a State's change event)."""
    vector: np.ndarray
    started: float  # time.perf_counter() when its frame arrived


_answering = contextvars.ContextVar("answering", default=None)  # the Recommender the running handler answers from


def _one_index(handler):
    """Run `handler` wholly on the index that is current when it starts: a new index swapped in meanwhile
    (recommender.serve.refresh) serves the next request, never the second half of this one."""
    @functools.wraps(handler)
    def pinned(self, *args, **kwargs):
        if _answering.get() is not None:  # called by another handler: already pinned
            return handler(self, *args, **kwargs)
        token = _answering.set(self._indexes.current)
        try:
            return handler(self, *args, **kwargs)
        finally:
            _answering.reset(token)
    return pinned


class Page:
    """The handlers. Page events write PAGE_OUTPUTS, in this order:
    gallery, details (JSON), status, links, shown ids, current product, query (a photo's View without its picture,
    or a live frame's vector), shown query product. A photo's small copy, for "Why this match?", stays in the
    browser (a hidden text of search_photo's), never on the server."""

    def __init__(self, recommender, photos: QueryPhotos):
        # a Recommender, or a refresh.IndexHolder whose `current` one may change between requests
        self._indexes = recommender if hasattr(recommender, "current") else _Fixed(recommender)
        self.photos = photos
        self._live_model: LiveModel | None = None  # started when someone opens the Live tab
        self._live_model_lock = threading.Lock()
        self._live_running = threading.Lock()  # a live frame's forward
        self._live_resumes = 0.0  # time.monotonic() from which a live frame's forward may start
        self._live_waiting: dict[object, float] = {}  # a ticket per frame waiting now -> its viewer's last turn
        self._live_changed = threading.Condition()  # notified when the live model or the turn may have come free
        self._photos_embedding = 0  # photos being embedded now (changed with _live_changed held)
        self.last_frames = LastFrames()

    @property
    def recommender(self) -> Recommender:
        return _answering.get() or self._indexes.current

    @property
    def examples(self):
        return self.recommender.examples()

    @property
    def explainer(self) -> Explainer:
        return Explainer(self.recommender)

    # The API: plain values in, (gallery, results) out, as documented in the README and used by MCP agents.
    @_one_index
    def recommend(self, image: Photo | None, k: int = 8, *filters: str):
        """Find the catalog products that look most like a photo.

        Args:
            image: a photo of a garment, shoe or accessory (JPEG, PNG, WebP, ...).
            k: how many products to return, 1 to 50.
            {filters}

        Returns:
            A gallery of (product image, caption) and the results, best first, each with id, name,
            distance (euclidean, 0 = identical), similarity (cosine) and the catalog's metadata.
        """
        filters = self._filters(filters)
        if image is None:
            raise gr.Error(str(ImageError("No image was given: upload a photo, take one with the webcam, or paste "
                                          "one.", "no image")))
        try:
            with self._photo_turn():  # the search too: a live forward started now would share the CPU with it
                rows = self.recommender.matching_rows(filters)  # a bad filter is refused before the model runs
                vector = self.photos.vector(image)
                results = self.recommender.nearest(vector, k, rows)
        except (ImageError, UnknownProduct) as error:
            raise gr.Error(str(error)) from None
        finally:
            self.photos.store.release(image.path)
        return _gallery(results, self.recommender), _records(results)

    @_one_index
    def similar(self, id: str, k: int = 8, *filters: str):
        """More like this: the catalog products most similar to catalog product `id` (never itself).

        Args:
            id: a product id from an earlier result.
            k: how many products to return, 1 to 50.
            {filters}

        Returns:
            A gallery of (product image, caption) and the results, best first, as for recommend.
        """
        results, _ = self._search(Product(str(id)), k, self._filters(filters))
        return _gallery(results, self.recommender), _records(results)

    @_one_index
    def explain(self, image: Photo | None = None, id: str | None = None, product_id: str = ""):
        """Why a product matched a query: where, on each photo, the similarity comes from.

        Args:
            image: the query photo (give this or `id`).
            id: a catalog product id as the query instead of a photo.
            product_id: the id of the product to explain, from the query's results.

        Returns:
            The query photo and the product photo, each tinted where it carries the similarity, its 3 strongest
            cells outlined; and JSON: similarity (cosine), grid, query_cells and product_cells (grid x grid lists of
            each cell's share of the similarity, rows top to bottom, in the photo's own orientation; each sums to
            the similarity), query_regions and product_regions (the strongest cells with their pixel box
            [left, top, right, bottom] on the photo), and the share that lies in the white padding
            (query_off_photo, product_off_photo).
        """
        try:
            if image is not None and id:
                raise UnknownProduct("Give a query photo or a catalog id, not both.")
            if image is not None:
                with self._photo_turn():
                    query = self.photos.embedding(image)
                if query.picture is None and image.data is not None:  # from the cache, which keeps no copy
                    query = query.with_picture(query_picture(image.data))
            elif id:
                query = self.explainer.product(str(id))
            else:
                raise ImageError("No query was given: a photo (image) or a catalog product (id).", "no image")
            explanation, query_overlay, product_overlay = self.explainer.explain(query, str(product_id))
        except (ImageError, UnknownProduct) as error:
            raise gr.Error(str(error)) from None
        finally:
            if image is not None:
                self.photos.store.release(image.path)
        return query_overlay, product_overlay, {"product_id": str(product_id), **explanation.to_dict()}

    @_one_index
    def why_clicked(self, why: bool, shown, current, query, query_copy: str, event: gr.SelectData):
        """"Why this match?" on, a result clicked: its explanation in the panel (panel, text, two overlays, JSON).
        Off, the click shows more like the result, and the panel, about results no longer shown, is hidden.
        A photo's side is drawn on its small copy, which the browser sends back (`query_copy`, a data URL).
        (Plain values for the overlays, never gr.skip() or gr.Image(...): Gradio answers an update by replacing the
        component, for the session, with a new one, which lacks in_memory_image's postprocess.)"""
        if not why:
            return gr.Column(visible=False), "", None, None, None
        product_id = shown[event.index]
        if current:
            query = self.explainer.product(current)
        elif isinstance(query, View):
            try:
                query = query.with_picture(query_picture(_from_data_url(query_copy)))
            except ImageError:  # not sent back, or not an image: the query's side without its picture
                pass
        else:  # a live frame's vector
            return (gr.Column(visible=True), "Why this match? explains a result of a photo or of a catalog "
                    "product, not of the live camera.", None, None, None)
        explanation, query_overlay, product_overlay = self.explainer.explain(query, product_id)
        name = self.recommender.product(product_id).name
        text = (f"**Why {name} matched: {explanation.similarity:.0%} similar.** Tinted where the likeness comes "
                "from, the three strongest places outlined (1 strongest), on your query (left) and the product.")
        return (gr.Column(visible=True), text, query_overlay, product_overlay,
                {"product_id": product_id, **explanation.to_dict()})

    # The page.
    @_one_index
    def search_photo(self, event: gr.EventData, k, *filters):
        """The picker sent a photo, a snapshot, a paste or a crop (recommender/serve/picker.py; the upload's path is in the
        event's data): search it. The session keeps its vector and cells (for re-runs and "Why this match?"); its
        small copy goes to the browser (the last output), not into the session. A photo that cannot be searched is
        said in the status line and a warning, with the gallery emptied: never old results under a new photo."""
        path = (getattr(event, "_data", None) or {}).get("path")
        photo = self.photos.uploaded(path) if isinstance(path, str) else None
        started = time.perf_counter()
        try:
            if photo is None:
                raise ImageError("The photo did not reach the server, or arrived more than a minute ago: choose it "
                                 "again.", "no image")
            with self._photo_turn():
                query = self.photos.embedding(photo)
            picture = query.picture or (query_picture(photo.data) if photo.data is not None else None)
        except ImageError as error:
            gr.Warning(str(error))
            return *_refused(f"**Your photo was not searched.** {error}"), ""
        return *self._page(query.without_picture(), k, filters, started=started), \
            _data_url(picture)

    def cleared(self):
        """The photo was removed: an empty page."""
        return *_refused(""), ""

    @_one_index
    def live_frame(self, frame: bytes | np.ndarray | None, live: LiveState | None):
        """A frame of the live camera (JPEG bytes from live_camera, decoded in memory only as far as needed, never
        written): embedded once the live model is free for it (it waits at most LIVE_MAX_WAIT) if the picture
        changed since the last searched frame.
        Writes only States: the viewer's LiveState, and a LiveMatch when a frame was embedded, whose change event
        (live_results) shows its results. A page output written with gr.skip() costs Gradio more time than an
        unsearched frame itself (it rebuilds the component's config), and with several viewers most frames are not
        searched."""
        live = live or LiveState()
        live.key = live.key or uuid.uuid4().hex  # here, not as a default: Gradio copies a State's value per session
        if frame is None:
            return live, gr.skip()
        if not self._live_model_reserved(live):  # waits before any decoding: a frame dropped is never decoded
            live.deferred += 1
            return live, gr.skip()
        try:
            # an undecodable or unchanged frame takes its turn too (it holds the model for a small decode only)
            live.last_turn = time.monotonic()
            thumbnail, last = _thumbnail(frame), self.last_frames.seen(live.key)
            if last is not None and np.abs(thumbnail - last).mean() < LIVE_MIN_CHANGE:
                live.skipped += 1  # its results are up to date
                return live, gr.skip()
            started = time.perf_counter()
            vector = self._live_vector(frame)
            live.last_turn = time.monotonic()
        except ImageError:
            return live, gr.skip()
        finally:
            self._live_running.release()
            self._live_changed_now()
        if vector is None:  # the live model is loading
            live.deferred += 1
            return live, gr.skip()
        self.last_frames.searched(live.key, thumbnail)
        live.searched += 1
        return live, LiveMatch(vector, started)

    @_one_index
    def live_results(self, match: LiveMatch | None, live: LiveState | None, k, *filters):
        """The results of a live frame that live_frame embedded: PAGE_OUTPUTS."""
        if match is None:
            return [gr.skip()] * 8
        live = live or LiveState()
        outputs = self._page(match.vector, k, filters, started=match.started)
        outputs[2] = (f"Live: {outputs[2]} (frame {live.searched}; not searched: {live.skipped} unchanged, "
                      f"{live.deferred} while the model was busy)")
        return outputs

    def _live_model_reserved(self, live: LiveState) -> bool:
        """Wait, at most LIVE_MAX_WAIT, until the live model is free and, of the viewers whose frame waits, `live` had
        its last turn longest ago; then reserve the model for its frame (the caller releases _live_running). Whether
        it came. Otherwise the forwards that fit between photos go to whichever frame happens to come first, and one
        viewer of four can get none for many seconds."""
        # a ticket per frame, not per viewer: one viewer may have two frames waiting (Record clicked again at once)
        deadline, ticket = time.monotonic() + LIVE_MAX_WAIT, object()
        with self._live_changed:
            self._live_waiting[ticket] = live.last_turn
            try:
                while True:
                    first = min(self._live_waiting, key=self._live_waiting.__getitem__)
                    if first is ticket and self._live_model_free() and self._live_running.acquire(False):
                        return True
                    now = time.monotonic()
                    if now >= deadline:
                        return False
                    # woken when a forward, a turn or a photo ends; the pause's end is waited for
                    pause = self._live_resumes - now
                    self._live_changed.wait(min(deadline - now, pause if pause > 0 else LIVE_MAX_WAIT))
            finally:  # whoever is first next is woken when the model frees (or waits for the pause's end)
                del self._live_waiting[ticket]

    def _live_changed_now(self) -> None:
        with self._live_changed:
            self._live_changed.notify_all()

    def _live_model_free(self) -> bool:
        """Whether a live frame's forward may start now: no photo being embedded, the last live forward's pause over,
        no other live forward running."""
        return not (self._photos_embedding or time.monotonic() < self._live_resumes or self._live_running.locked())

    def live_opened(self) -> None:
        """The Live tab was opened: start loading the live model (seconds), before the camera is on."""
        self._live_embedder().start()

    def _live_embedder(self) -> LiveModel:
        """The live model, made at the first call. The same for every index: a refresh keeps the embedder (an index
        built by another one is refused, recommender/serve/refresh.py)."""
        with self._live_model_lock:
            if self._live_model is None:
                embedder = self.recommender.embedder
                self._live_model = LiveModel(embedder.settings, embedder.identity)
            return self._live_model

    def _live_vector(self, frame) -> np.ndarray | None:
        """The frame's vector by the live model (reserved by the caller), or None while it is loading. After a
        forward, none starts for as long again (LIVE_MODEL_SHARE)."""
        began = time.monotonic()
        try:
            vector = self._live_embedder().embed_image(frame)
        except LiveModelFailed:  # why is in the server's log (live_model.py), not for visitors
            raise gr.Error("Live search is not available on this server; photo search still works.") from None
        ended = time.monotonic()
        if vector is not None:
            self._live_resumes = ended + (ended - began) * (1 - LIVE_MODEL_SHARE) / LIVE_MODEL_SHARE
        return vector

    @_one_index
    def rerun(self, current, vector, k, *filters):
        """k, a filter or the button: search again for what is on show (a product, or the photo's vector)."""
        if current:
            return self.more_like(current, k, *filters)
        if vector is None:
            return [gr.skip()] * 8
        outputs = self._page(vector, k, filters)
        outputs[7] = gr.skip()
        return outputs

    @_one_index
    def more_like(self, product_id, k, *filters):
        """A catalog product becomes the query: shown on the left, its neighbours on the right."""
        product = self.recommender.product(product_id)
        return self._page(Product(product.id), k, filters)

    @_one_index
    def clicked(self, shown, why: bool, event: gr.SelectData, k, *filters):
        if why:
            return [gr.skip()] * 8  # "Why this match?" is on: why_clicked answers the click
        return self.more_like(shown[event.index], k, *filters)

    @_one_index
    def example_clicked(self, event: gr.SelectData, k, *filters):
        return self.more_like(self.examples[event.index].id, k, *filters)

    @_one_index
    def opened(self, request: gr.Request, k, *filters):
        """A shared link, ?item=<id>: show that product and the products like it."""
        product_id = request.query_params.get("item") if request else None
        if not product_id:
            return [gr.skip()] * 8
        if str(product_id) not in self.recommender.row_of_id:
            # the id comes from the address bar: escaped and cut, never markup of a link's making
            gr.Warning(f"No product with id '{html.escape(str(product_id)[:64])}' in this catalog.")
            return [gr.skip()] * 8
        return self.more_like(product_id, k, *filters)

    def _filters(self, values) -> dict:
        """The filter controls' values (in the index's order of filters) by API parameter."""
        return dict(zip(self.recommender.filters, values))

    def _page(self, query, k, filters: tuple, started=None) -> list:
        """PAGE_OUTPUTS for `query`: a catalog Product, a photo's View or a live frame's vector."""
        results, status = self._search(query, k, self._filters(filters), started)
        gallery = gr.Gallery(_gallery(results, self.recommender), selected_index=None)  # new results: no old selection shown
        if isinstance(query, Product):
            product = self.recommender.product(query.id)
            shown_query = gr.Image(product.image_path, label=f"More like this: {product.name}", visible=True)
            return [gallery, _records(results), status, _links(results), [r.id for r in results], query.id, None,
                    shown_query]
        return [gallery, _records(results), status, _links(results), [r.id for r in results], None, query,
                gr.Image(visible=False)]

    def _search(self, query, k, filters, started=None):
        """(results, status text) for a catalog Product, a View or a vector."""
        started = started or time.perf_counter()
        try:
            if isinstance(query, Product):
                results = self.recommender.similar(query.id, k, filters)
            else:
                vector = getattr(query, "vector", query)
                results = self.recommender.nearest(vector, k, self.recommender.matching_rows(filters))
        except UnknownProduct as error:
            raise gr.Error(str(error)) from None
        milliseconds = (time.perf_counter() - started) * 1000
        return results, _status(self.recommender, results, filters, milliseconds, query)

    @contextmanager
    def _photo_turn(self):
        """Around a photo's embedding: no live forward starts meanwhile; waiting live frames are woken after it."""
        with self._live_changed:
            self._photos_embedding += 1
        try:
            yield
        finally:
            with self._live_changed:
                self._photos_embedding -= 1
                self._live_changed.notify_all()


class _Fixed:
    """One Recommender, for a Page without refresh."""
    def __init__(self, recommender: Recommender):
        self.current = recommender


def in_memory_image(**options):
    """gr.Image whose value (a PIL image) is sent as a data URL, never written to Gradio's folder: an explanation's
    overlay is a picture of the query photo. (Wrapped, not subclassed: Gradio writes a .pyi stub next to every
    component subclass.)"""
    from gradio.data_classes import Base64ImageData

    image = gr.Image(**options)

    def postprocess(value):
        if value is None:
            return None
        buffer = io.BytesIO()
        value.save(buffer, format="JPEG", quality=90)
        return Base64ImageData(url="data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())

    image.postprocess = postprocess
    return image


def live_camera(**options):
    """gr.Image streaming the camera whose frames (the browser sends JPEG data URLs) reach the handler as bytes, not
    decoded: a frame dropped after its wait is never decoded, and an unchanged one only at 1/8 scale; decoding
    every one cost the CPU that photo searches wait for. Anything but a data URL is decoded as gr.Image does.
    (Wrapped, not subclassed: see in_memory_image.)"""
    image = gr.Image(**options)
    decode = image.preprocess

    def preprocess(payload):
        if payload is not None and (payload.url or "").startswith("data:"):
            return _from_data_url(payload.url)
        return decode(payload)

    image.preprocess = preprocess
    return image


def _thumbnail(frame) -> np.ndarray:
    """(LIVE_THUMBNAIL, LIVE_THUMBNAIL) float32 grey levels of a frame; a JPEG is decoded at 1/8 scale for it."""
    image = to_rgb(frame, draft_side=LIVE_THUMBNAIL).convert("L").resize((LIVE_THUMBNAIL, LIVE_THUMBNAIL))
    return np.asarray(image, dtype=np.float32)


def _data_url(jpeg: bytes | None) -> str:
    return "" if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def _from_data_url(url: str | None) -> bytes | None:
    """The bytes of a base64 data URL; None for anything else, and for one over MAX_DATA_URL_BYTES, which is never
    decoded (to_rgb then says no image was given). The page sends frames and a 224 px copy: a few tens of kB."""
    header, _, payload = (url or "").partition(",")
    if not (header.startswith("data:") and header.endswith(";base64")) or len(payload) > MAX_DATA_URL_BYTES * 4 / 3:
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        return None


def _refused(status: str) -> list:
    """PAGE_OUTPUTS for no results: an empty gallery, `status` said, no query kept."""
    return [[], [], status, "", [], None, None, gr.Image(visible=False)]


def api_endpoint(method, recommender: Recommender):
    """Page.recommend or Page.similar (leading parameters, k, then the values of the filters) as a function whose
    signature names each filter of the index's catalog, default "All", and whose docstring describes it: Gradio names
    the API's parameters from the signature, and describes the MCP tools from the docstring."""
    filters = list(recommender.filters.values())
    leading = [p for p in inspect.signature(method).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    named = [inspect.Parameter(f["parameter"], inspect.Parameter.POSITIONAL_OR_KEYWORD, default=ANY, annotation=str)
             for f in filters]

    def endpoint(*values):
        return method(*values)

    lines = []
    for f in filters:
        known = ", ".join(f'"{value}"' for value in recommender.filter_choices(f["parameter"])[:2])
        lines.append(f'{f["parameter"]}: only products whose {f["label"].lower()} is this (e.g. {known}), '
                     f'or "{ANY}".')
    endpoint.__signature__ = inspect.Signature([*leading, *named])
    endpoint.__name__ = endpoint.__qualname__ = method.__name__
    endpoint.__doc__ = method.__doc__.replace("{filters}", "\n            ".join(lines)).replace(
        "            \n", "")
    return endpoint


def _gallery(results, recommender: Recommender) -> list[tuple[str, str]]:
    columns = [f["column"] for f in recommender.filters.values()]
    return [(result.image_path, _caption(result, columns)) for result in results]


def _caption(result, filter_columns) -> str:
    """The product's name; its price, its values of the catalog's filters and the similarity."""
    facts = [result.price, *(result.metadata.get(column) for column in filter_columns), f"{result.similarity:.0%} similar"]
    return f"{result.name}\n{' · '.join(str(fact) for fact in facts if fact)}"


def _records(results) -> list[dict]:
    return [result.to_dict() for result in results]


def _links(results) -> str:
    """A link per result to share it, and to the product's page in the shop when the catalog has one (http and
    https only: a catalog's text is not trusted to make a link that runs code)."""
    if not results:
        return ""
    shared = "Share a result: " + " · ".join(f"[{number}](?item={quote(result.id)} \"{_title(result.name)}\")"
                                             for number, result in enumerate(results, 1))
    shop = [f"[{number}]({quote(result.link, safe=SAFE_IN_URL)} \"{_title(result.name)}\")"
            for number, result in enumerate(results, 1) if re.match(r"https?://", result.link or "", re.I)]
    return shared + ("  \nIn the shop: " + " · ".join(shop) if shop else "")


SAFE_IN_URL = ":/?&=#%+@,;~!$*"  # kept as they are in a shop's link; spaces, quotes, brackets and the like quoted


def _title(text: str) -> str:
    return str(text).replace("\\", "").replace('"', "'")


def _status(recommender, results, filters, milliseconds, query) -> str:
    chosen = [f"{recommender.filters[name]['label'].lower()} = {value}" for name, value in filters.items()
              if value not in (None, "", ANY)]
    rows = recommender.matching_rows(filters)
    pool = len(recommender.items) if rows is None else len(rows)
    subject = f"More like **{recommender.product(query.id).name}**: " if isinstance(query, Product) else ""
    if not results:
        return (f"{subject}**No product matches** {' and '.join(chosen)}. Set a filter back to {ANY}."
                if chosen else f"{subject}No results.")
    where = f" ({', '.join(chosen)})" if chosen else ""
    return f"{subject}{len(results)} results from {pool:,} products{where} in {milliseconds:.0f} ms"
