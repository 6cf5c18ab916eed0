"""Visual fashion search: a photo in (upload, webcam, clipboard), the most similar catalog products out.

    python app.py        # serves http://127.0.0.1:7860, the API endpoints /recommend and /similar, and MCP
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# numpy's BLAS threads spin for a while after each search's matrix products and slow the next query's model call
# by half (61 -> 97 ms measured); one BLAS thread leaves the cores to TensorFlow. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Gradio's queue keeps its last 10,000 events and, after every event, summarises them all with pandas for a
# monitoring page this app does not enable: up to 13 ms of CPU per query, taken from the model, and resident memory
# that grows with the event count (docs/reliability.md). Keep 1,000 events and summarise them every 1,000th.
GRADIO_QUEUE_ANALYTICS = {"GRADIO_ANALYTICS_MAX_EVENTS": "1000", "GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000"}
for _name, _value in GRADIO_QUEUE_ANALYTICS.items():
    os.environ.setdefault(_name, _value)

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from recommender.build import BuildFailed
from recommender.catalog import CatalogUnavailable
from recommender.config import DEFAULT_DATASET, Settings
from recommender.embedder import WeightsUnavailable
from recommender.images import ImageError
from recommender.provision import IndexUnusable, ensure_index
from recommender.search import ANY, MAX_K, Recommender, UnknownProduct

CONCURRENCY = 2  # model calls at once: two keep both cores of a small Space busy without thrashing
MAX_QUEUE = int(os.environ.get("MAX_QUEUE", "64"))  # more waiting requests are refused at once ("queue is full")
MAX_SESSIONS = 10_000  # sessions whose last photo key is remembered, to skip the editor's repeated events
MAX_UPLOAD = "20mb"  # a phone photo is under 10 MB; a larger upload is refused before it is read


def query_image(**options) -> gr.Image:
    """gr.Image that hands the uploaded file to our decoder untouched, so that EXIF, alpha and CMYK are handled
    in one place (recommender.images) and a file Gradio cannot even open gets our message, not a stack trace.
    (Wrapped, not subclassed: Gradio writes a .pyi stub next to every component subclass.)"""
    image = gr.Image(type="filepath", image_mode=None, **options)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not Path(payload.path).exists():
            return payload.path  # searched and deleted by a request with the same photo: see RecentVectors
        try:
            return gradio_preprocess(payload)
        except Exception:
            raise gr.Error("This file is not an image we can read (JPEG, PNG, WebP, GIF, BMP and TIFF work).") \
                from None

    image.preprocess = preprocess
    return image


def photo_editor(**options) -> gr.ImageEditor:
    """gr.ImageEditor whose value, for our handlers, is {"key": the cropped photo's upload key, "bytes": its
    bytes or None}. Every file of the upload is deleted as soon as it is read: the photo lives in memory for
    this one request only."""
    editor = gr.ImageEditor(type="filepath", **options)

    def preprocess(payload):
        if payload is None or payload.composite is None:
            return None
        parts = [payload.background, payload.composite, *(payload.layers or [])]
        composite = Path(payload.composite.path)
        try:  # a photo fires several events, each with its own upload; one may find the files gone
            return {"key": upload_key(composite), "bytes": composite.read_bytes()}
        except OSError:
            return {"key": upload_key(composite), "bytes": None}
        finally:
            forget(part.path for part in parts if part is not None)

    editor.preprocess = preprocess
    return editor


def upload_key(path) -> str:
    """Gradio stores an upload in a folder named by a hash of its bytes: the same photo, the same key."""
    return Path(path).parent.name


class RecentVectors:
    """The vectors of recent uploads by upload key (never the photos). Two requests with the same photo share
    one upload file, and the first to finish deletes it: the second finds the vector here."""

    def __init__(self, size: int = 256):
        self._vectors, self._size, self._lock = OrderedDict(), size, threading.Lock()

    def get(self, key: str):
        with self._lock:
            return self._vectors.get(key)

    def put(self, key: str, vector: np.ndarray) -> None:
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            if len(self._vectors) > self._size:
                self._vectors.popitem(last=False)


def forget(paths) -> None:
    """Delete uploaded query photos (and their now empty upload folders): nothing of a query is kept."""
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)
            try:
                Path(path).parent.rmdir()
            except OSError:
                pass  # not empty, or gone


def build_demo(recommender: Recommender) -> gr.Blocks:
    manifest = recommender.manifest

    def search(query, k, gender, article_type, colour, started=None):
        """Run `query` (an image, a query's vector, or a catalog product for "more like this");
        (results, status text)."""
        filters = {"gender": gender, "article_type": article_type, "colour": colour}
        started = started or time.perf_counter()
        try:
            if isinstance(query, Product):
                results = recommender.similar(query.id, k, filters)
            elif isinstance(query, np.ndarray):
                results = recommender.nearest(query, k, recommender.matching_rows(filters))
            else:
                results = recommender.recommend(query, k, filters)
        except (ImageError, UnknownProduct) as error:
            raise gr.Error(str(error)) from None
        milliseconds = (time.perf_counter() - started) * 1000
        return results, _status(recommender, results, filters, milliseconds, query)

    recent_vectors = RecentVectors()

    def embed_upload(image, key):
        """The vector of an uploaded photo (a path or bytes), from RecentVectors when its file is gone."""
        vector = recent_vectors.get(key) if key else None
        if vector is None:
            try:
                vector = recommender.embedder.embed_image(image)
            except ImageError as error:
                vector = recent_vectors.get(key) if key else None  # deleted meanwhile by a same-photo request
                if vector is None:
                    raise gr.Error(str(error)) from None
            if key:
                recent_vectors.put(key, vector)
        return vector

    # The API: plain values in, (gallery, results) out, as documented in the README and used by MCP agents.
    def recommend(image: str | None, k: int = 8, gender: str = ANY, article_type: str = ANY, colour: str = ANY):
        """Find the catalog products that look most like a photo.

        Args:
            image: a photo of a garment, shoe or accessory (JPEG, PNG, WebP, ...).
            k: how many products to return, 1 to 50.
            gender: only products for this gender (e.g. "Men", "Women"), or "All".
            article_type: only this article type (e.g. "Tshirts", "Watches"), or "All".
            colour: only this base colour (e.g. "Blue", "Black"), or "All".

        Returns:
            A gallery of (product image, caption) and the results, best first, each with id, name,
            distance (euclidean, 0 = identical), similarity (cosine) and the catalog's metadata.
        """
        started = time.perf_counter()
        try:
            vector = embed_upload(image, upload_key(image) if image else None)
        finally:
            forget([image])
        results, _ = search(vector, k, gender, article_type, colour, started)
        return _gallery(results), _records(results)

    def similar(id: str, k: int = 8, gender: str = ANY, article_type: str = ANY, colour: str = ANY):
        """More like this: the catalog products most similar to catalog product `id` (never itself).

        Args:
            id: a product id from an earlier result.
            k: how many products to return, 1 to 50.
            gender: only products for this gender (e.g. "Men", "Women"), or "All".
            article_type: only this article type (e.g. "Tshirts", "Watches"), or "All".
            colour: only this base colour (e.g. "Blue", "Black"), or "All".

        Returns:
            A gallery of (product image, caption) and the results, best first, as for recommend.
        """
        results, _ = search(Product(str(id)), k, gender, article_type, colour)
        return _gallery(results), _records(results)

    # The page: the same search, plus the query shown, the status line and clickable results.
    def page_search(query, k, gender, article_type, colour, started=None):
        if query is None:
            return [], [], "", "", []
        results, status = search(query, k, gender, article_type, colour, started)
        gallery = gr.Gallery(_gallery(results), selected_index=None)  # new results: no old selection shown
        return gallery, _records(results), status, _links(results), [r.id for r in results]

    searched_photos = OrderedDict()  # session -> upload key of its last photo (not the photo): repeats skipped
    searched_lock = threading.Lock()

    def search_photo(photo, k, gender, article_type, colour, request: gr.Request):
        """A new photo or crop: embed it and keep only its vector for later re-runs."""
        if photo is None:
            return [gr.skip()] * 8
        with searched_lock:  # the editor's repeated events for one photo may run at the same time
            if searched_photos.get(request.session_hash) == photo["key"]:
                return [gr.skip()] * 8
            searched_photos[request.session_hash] = photo["key"]
            searched_photos.move_to_end(request.session_hash)
            if len(searched_photos) > MAX_SESSIONS:
                searched_photos.popitem(last=False)
        started = time.perf_counter()
        vector = embed_upload(photo["bytes"], photo["key"])
        return (*page_search(vector, k, gender, article_type, colour, started), None, vector,
                gr.Image(visible=False))

    def cleared(request: gr.Request):
        with searched_lock:  # the same photo uploaded again is a new search
            searched_photos.pop(request.session_hash, None)
        return (*page_search(None, 8, ANY, ANY, ANY), None, None, gr.Image(visible=False))

    def more_like(product_id, k, gender, article_type, colour):
        product = recommender.product(product_id)
        shown_product = gr.Image(product.image_path, label=f"More like this: {product.name}", visible=True)
        return (*page_search(Product(product.id), k, gender, article_type, colour), product.id, None,
                shown_product)

    def rerun(current, vector, k, gender, article_type, colour):
        """k, a filter or the button: search again for what is on show."""
        if current:
            return more_like(current, k, gender, article_type, colour)
        if vector is None:
            return [gr.skip()] * 8
        return (*page_search(vector, k, gender, article_type, colour), None, vector, gr.skip())

    def clicked(shown, k, gender, article_type, colour, event: gr.SelectData):
        return more_like(shown[event.index], k, gender, article_type, colour)

    def example_clicked(k, gender, article_type, colour, event: gr.SelectData):
        return more_like(example_ids[event.index], k, gender, article_type, colour)

    def opened(k, gender, article_type, colour, request: gr.Request):
        """A shared link, ?item=<id>: show that product and the products like it."""
        product_id = request.query_params.get("item") if request else None
        if not product_id:
            return [gr.skip()] * 8
        if str(product_id) not in recommender.row_of_id:
            gr.Warning(f"No product with id '{product_id}' in this catalog.")
            return [gr.skip()] * 8
        return more_like(product_id, k, gender, article_type, colour)

    examples = recommender.examples()
    example_ids = [example.id for example in examples]

    with gr.Blocks(title="Fashion visual search", delete_cache=(60, 60)) as demo:
        gr.Markdown("# Find similar fashion products\nUpload a photo, take one with your webcam, or paste one; "
                    "crop it to the garment if there is more in the picture. The most similar of "
                    f"{manifest['count']:,} catalog products appear on the right: click one for more like it.")
        if recommender.uses_random_weights:
            gr.Markdown("**Warning: this index was built with random model weights (a test setting), so the "
                        "results are not meaningful.** Build it with `--weights imagenet`.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                # An editor, not a plain gr.Image, for its crop tool. Gradio 6.31 hides the whole toolbar, crop
                # included, when brush and eraser are both off, so they stay (drawing on a query is harmless).
                photo = photo_editor(label="Your photo: crop it to the garment with the crop tool",
                                     sources=["upload", "webcam", "clipboard"], transforms=["crop"],
                                     layers=False, elem_id="photo", height=380)
                query_product = gr.Image(interactive=False, visible=False, height=220, elem_id="query-product",
                                         buttons=[])
                k = gr.Slider(1, MAX_K, value=8, step=1, label="Number of results", elem_id="k")
                with gr.Row():
                    filters = [gr.Dropdown([ANY, *recommender.filter_choices(name)], value=ANY, label=label,
                                           filterable=True, elem_id=name, min_width=100)
                               for name, label in (("gender", "Gender"), ("article_type", "Article type"),
                                                   ("colour", "Colour"))]
                find = gr.Button("Find similar products", variant="primary")
            with gr.Column(scale=2, min_width=300):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="Most similar products: click one for more like it", columns=4,
                                     object_fit="contain", height="auto", allow_preview=False, elem_id="results")
                links = gr.Markdown(elem_id="links")
                with gr.Accordion("Results as data", open=False):
                    details = gr.JSON(label="Results")
        gr.Markdown("### No photo at hand? Try one of these")
        example_gallery = gr.Gallery([(e.image_path, e.metadata["articleType"] or e.name) for e in examples],
                                     columns=8, height=200, fit_columns=False, allow_preview=False,
                                     object_fit="contain", show_label=False, elem_id="examples")
        api_image = query_image(visible=False)  # the API's input: a plain image file, no editor state
        api_id = gr.Textbox(visible=False)
        # ids in the gallery; the catalog product on show; the photo's vector (the photo itself is not kept)
        shown, current, vector = gr.State([]), gr.State(None), gr.State(None)

        controls = [k, *filters]
        page_outputs = [gallery, details, status, links, shown, current, vector, query_product]
        private = {"api_visibility": "private"}
        # The editor fires upload (several times, each uploading the files again) for a new photo and input for
        # a confirmed crop. Every event runs ("multiple"), so that each deletes its own upload.
        gr.on([photo.upload, photo.input], search_photo, [photo, *controls], page_outputs,
              trigger_mode="multiple", **private)
        photo.clear(cleared, None, page_outputs, **private)
        gr.on([find.click, k.release, *(f.input for f in filters)], rerun, [current, vector, *controls],
              page_outputs, trigger_mode="always_last", **private)  # a change made while a search runs is kept
        gallery.select(clicked, [shown, *controls], page_outputs, trigger_mode="always_last", **private)
        example_gallery.select(example_clicked, controls, page_outputs, trigger_mode="always_last", **private)
        demo.load(opened, controls, page_outputs, **private)
        api_image.change(recommend, [api_image, *controls], [gallery, details], api_name="recommend")
        api_id.change(similar, [api_id, *controls], [gallery, details], api_name="similar")
    return demo


@dataclass(frozen=True)
class Product:
    """A query that is a catalog product ("more like this"), not a photo."""
    id: str


def _gallery(results) -> list[tuple[str, str]]:
    return [(result.image_path, _caption(result)) for result in results]


def _caption(result) -> str:
    facts = [result.metadata.get("articleType"), result.metadata.get("baseColour"), f"{result.similarity:.0%} similar"]
    return f"{result.name}\n{' · '.join(str(fact) for fact in facts if fact)}"


def _records(results) -> list[dict]:
    return [result.to_dict() for result in results]


def _links(results) -> str:
    if not results:
        return ""
    return "Share a result: " + " · ".join(f"[{number}](?item={quote(result.id)} \"{result.name}\")"
                                           for number, result in enumerate(results, 1))


def _status(recommender, results, filters, milliseconds, query) -> str:
    chosen = [f"{name.replace('_', ' ')} = {value}" for name, value in filters.items() if value not in (None, "", ANY)]
    rows = recommender.matching_rows(filters)
    pool = len(recommender.items) if rows is None else len(rows)
    subject = f"More like **{recommender.product(query.id).name}**: " if isinstance(query, Product) else ""
    if not results:
        return (f"{subject}**No product matches** {' and '.join(chosen)}. Set a filter back to {ANY}."
                if chosen else f"{subject}No results.")
    where = f" ({', '.join(chosen)})" if chosen else ""
    return (f"{subject}{len(results)} results from {pool:,} products{where} in {milliseconds:.0f} ms")


def main() -> None:
    index_dir = Path(os.environ.get("INDEX_DIR", "index"))
    weights = os.environ.get("WEIGHTS")  # unset: whatever the index was built with
    settings = Settings(weights=weights or Settings.weights)
    try:
        ensure_index(index_dir, os.environ.get("INDEX_REPO"), os.environ.get("DATASET", DEFAULT_DATASET),
                     int(os.environ.get("BUILD_LIMIT", "2000")), settings)
        recommender = Recommender.load(index_dir, weights=weights)
    except (IndexUnusable, CatalogUnavailable, WeightsUnavailable, BuildFailed) as error:
        sys.exit(f"error: {error}")
    if recommender.uses_random_weights:
        print("WARNING: the index was built with random weights: results are not meaningful.", flush=True)
    demo = build_demo(recommender)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    # run_history=False: Gradio would otherwise save every run, query photo included, in the browser
    demo.launch(allowed_paths=[str(recommender.files.images.resolve())], max_file_size=MAX_UPLOAD,
                mcp_server=True, run_history=False)


if __name__ == "__main__":
    main()
