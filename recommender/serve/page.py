"""What the page and the API do with each event: plain values in (the components an event reads), named plain values
out (outputs.py: the components it writes), answered from one index passed in. app.py lays the components out and
wires the events to these handlers; the Live tab's are in live.py."""

from __future__ import annotations

import functools
import html
import inspect
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from recommender.images import ImageError
from recommender.serve.data_urls import data_url, from_data_url
from recommender.serve.explain import Explainer, View, query_picture
from recommender.serve.feedback import NothingToRefine
from recommender.serve.live_turns import LiveTurns
from recommender.serve.outputs import PageOutputs, PhotoOutputs, WhyOutputs, gallery, links, records, status_line
from recommender.serve.photos import Photo, QueryPhotos
from recommender.serve.search import Recommender, UnknownProduct
from recommender.serve.steering import Marks, marks_in_link, marks_sent, product_ids, share_query, steer_view

if TYPE_CHECKING:
    from recommender.serve.refresh import IndexHolder

__all__ = ["Page", "Product", "with_current_index"]


@dataclass(frozen=True)
class Product:
    """A query that is a catalog product ("more like this"), not a photo."""
    id: str


def with_current_index(handler):
    """`handler(self, index, *inputs)` as Gradio calls it, `(self, *inputs)`: `index` is the Recommender current
    when the event starts (self.indexes.current, read once), so a new index swapped in meanwhile
    (recommender.serve.refresh) serves the next event, never the second half of this one. Gradio reads the handler's
    signature without `index` (for gr.Request and gr.SelectData, and the API's parameters)."""
    @functools.wraps(handler)
    def event(self, *inputs, **named):
        return handler(self, self.indexes.current, *inputs, **named)

    signature = inspect.signature(handler)
    this, _, *inputs = signature.parameters.values()
    event.__signature__ = signature.replace(parameters=[this, *inputs])
    return event


class Page:
    """The page's and the API's handlers. A photo's small copy, for "Why this match?", stays in the browser (a
    hidden text of search_photo's), never on the server."""

    def __init__(self, indexes: Recommender | IndexHolder, photos: QueryPhotos, turns: LiveTurns | None = None):
        # an IndexHolder's `current` Recommender may change between events; a Recommender alone never does
        self.indexes = indexes if hasattr(indexes, "current") else _Fixed(indexes)
        self.photos = photos
        self.turns = turns or LiveTurns()  # the live model's, which photos' embeddings hold back (live.py)

    # The API: plain values in, (gallery, results) out, as documented in the README and used by MCP agents.
    @with_current_index
    def recommend(self, index: Recommender, image: Photo | None, k: int = 8, *filters: str):
        """Find the catalog products that look most like a photo.

        Args:
            image: a photo of a garment, shoe or accessory (JPEG, PNG, WebP, ...).
            k: how many products to return, 1 to 50.
            {filters}

        Returns:
            A gallery of (product image, caption) and the results, best first, each with id, name,
            distance (euclidean, 0 = identical), similarity (cosine) and the catalog's metadata.
        """
        filters = _by_parameter(index, filters)
        if image is None:
            raise gr.Error(str(ImageError("No image was given: upload a photo, take one with the webcam, or paste "
                                          "one.", "no image")))
        try:
            with self.turns.photo():  # the search too: a live forward started now would share the CPU with it
                rows = index.matching_rows(filters)  # a bad filter is refused before the model runs
                vector = self.photos.vector(image)
                results = index.nearest(vector, k, rows)
        except (ImageError, UnknownProduct) as error:
            raise gr.Error(str(error)) from None
        finally:
            self.photos.store.release(image.path)
        return gallery(results, index), records(results)

    @with_current_index
    def similar(self, index: Recommender, id: str, k: int = 8, *filters: str):
        """More like this: the catalog products most similar to catalog product `id` (never itself).

        Args:
            id: a product id from an earlier result.
            k: how many products to return, 1 to 50.
            {filters}

        Returns:
            A gallery of (product image, caption) and the results, best first, as for recommend.
        """
        results, _ = self._search(index, Product(str(id)), k, _by_parameter(index, filters))
        return gallery(results, index), records(results)

    @with_current_index
    def refine(self, index: Recommender, image: Photo | None = None, id: str | None = None, like=None, unlike=None,
               k: int = 8, *filters: str):
        """Steer a search by example: products like the query and the liked products, unlike the unliked ones.

        Args:
            image: a photo to start from (optional: give this, `id`, or liked products).
            id: a catalog product to start from instead of a photo (optional; never returned itself).
            like: ids of products to look more like: a list, or one comma-separated string.
            unlike: ids of products to look less like (never returned): a list, or one comma-separated string.
            k: how many products to return, 1 to 50.
            {filters}

        Returns:
            A gallery of (product image, caption) and the results, best first, as for recommend.
        """
        filters = _by_parameter(index, filters)
        try:
            liked, unliked = product_ids(like, "like"), product_ids(unlike, "unlike")
            if image is not None and id:
                raise UnknownProduct("Give a photo or a product id to start from, not both.")
            for product_id in (*liked, *unliked, *([id] if id else [])):  # refused before the model runs
                index.row_of(product_id)
            query = None
            if image is not None:
                with self.turns.photo():
                    index.matching_rows(filters)
                    query = self.photos.vector(image)
            results = index.refine(query, liked, unliked, k, filters, query_product=str(id) if id else None)
        except (ImageError, UnknownProduct, NothingToRefine) as error:
            raise gr.Error(str(error)) from None
        finally:
            if image is not None:
                self.photos.store.release(image.path)
        return gallery(results, index), records(results)

    @with_current_index
    def explain(self, index: Recommender, image: Photo | None = None, id: str | None = None, product_id: str = ""):
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
        explainer = Explainer(index)
        try:
            if image is not None and id:
                raise UnknownProduct("Give a query photo or a catalog id, not both.")
            if image is not None:
                with self.turns.photo():
                    query = self.photos.embedding(image)
                if query.picture is None and image.data is not None:  # from the cache, which keeps no copy
                    query = query.with_picture(query_picture(image.data))
            elif id:
                query = explainer.product(str(id))
            else:
                raise ImageError("No query was given: a photo (image) or a catalog product (id).", "no image")
            explanation, query_overlay, product_overlay = explainer.explain(query, str(product_id))
        except (ImageError, UnknownProduct) as error:
            raise gr.Error(str(error)) from None
        finally:
            if image is not None:
                self.photos.store.release(image.path)
        return query_overlay, product_overlay, {"product_id": str(product_id), **explanation.to_dict()}

    @with_current_index
    def why_clicked(self, index: Recommender, why: bool, shown_ids, product_id, query, query_copy: str,
                    marks: Marks | None, event: gr.SelectData) -> WhyOutputs:
        """"Why this match?" on, a result clicked: its explanation in the panel. Off, the click shows more like the
        result (clicked), and the panel, about results no longer shown, is hidden. A photo's side is drawn on its
        small copy, which the browser sends back (`query_copy`, a data URL). Steered results are explained against
        the query itself: the marks move a vector, which has no picture to draw on."""
        if not why:
            return WhyOutputs.hidden()
        explainer, clicked = Explainer(index), shown_ids[event.index]
        if product_id:
            query = explainer.product(product_id)
        elif isinstance(query, View):
            try:
                query = query.with_picture(query_picture(from_data_url(query_copy)))
            except ImageError:  # not sent back, or not an image: the query's side without its picture
                pass
        elif query is None:  # a shared link's marks alone
            return WhyOutputs.said("Why this match? explains a result of a photo or of a catalog product; these "
                                   "results come from the marked products alone.")
        else:  # a live frame's vector
            return WhyOutputs.said("Why this match? explains a result of a photo or of a catalog product, not of "
                                   "the live camera.")
        explanation, query_overlay, product_overlay = explainer.explain(query, clicked)
        steered = (f" The results are steered by your marks ({marks.said()}); this is the likeness to your query "
                   "itself." if marks else "")
        text = (f"**Why {index.product(clicked).name} matched: {explanation.similarity:.0%} similar.** Tinted where "
                "the likeness comes from, the three strongest places outlined (1 strongest), on your query (left) "
                f"and the product.{steered}")
        return WhyOutputs(gr.Column(visible=True), text, query_overlay, product_overlay,
                          {"product_id": clicked, **explanation.to_dict()})

    # The page.
    @with_current_index
    def search_photo(self, index: Recommender, event: gr.EventData, k, *filters) -> PhotoOutputs:
        """The picker sent a photo, a snapshot, a paste or a crop (recommender/serve/picker.py; the upload's path is
        in the event's data): search it, with no marks (a new start). The session keeps its vector and cells (for
        re-runs and "Why this match?"); its small copy goes to the browser (query_copy), not into the session. A
        photo that cannot be searched is said in the status line and a warning, with the gallery emptied: never old
        results under a new photo."""
        path = (getattr(event, "_data", None) or {}).get("path")
        photo = self.photos.uploaded(path) if isinstance(path, str) else None
        started = time.perf_counter()
        try:
            if photo is None:
                raise ImageError("The photo did not reach the server, or arrived more than a minute ago: choose it "
                                 "again.", "no image")
            with self.turns.photo():
                query = self.photos.embedding(photo)
            picture = query.picture or (query_picture(photo.data) if photo.data is not None else None)
        except ImageError as error:
            gr.Warning(str(error))
            return PageOutputs.refused(f"**Your photo was not searched.** {error}").with_copy("")
        return self.show(index, query.without_picture(), k, filters, started=started).with_copy(data_url(picture))

    def cleared(self) -> PhotoOutputs:
        """The photo was removed: an empty page."""
        return PageOutputs.refused("").with_copy("")

    @with_current_index
    def rerun(self, index: Recommender, product_id, query, marks: Marks | None, k, *filters) -> PageOutputs:
        """k, a filter or the button: search again for what is on show (a product, the photo's vector or the marks
        alone), steered by the marks."""
        marks = marks or Marks()
        if product_id:
            return self.show(index, Product(product_id), k, filters, marks=marks)
        if query is None and not marks:
            return PageOutputs.skip()
        return self.show(index, query, k, filters, marks=marks)._replace(product_image=gr.skip())

    @with_current_index
    def more_like(self, index: Recommender, product_id, k, *filters) -> PageOutputs:
        """A catalog product becomes the query: shown on the left, its neighbours on the right."""
        return self.show(index, Product(str(product_id)), k, filters)

    @with_current_index
    def steer(self, index: Recommender, event: gr.EventData, product_id, query, k, *filters) -> PageOutputs:
        """The steering bar sent the marks the visitor wants (steer.js: a toggle, a mark removed, or "Start over",
        which sends none): the query's results moved by them, from stored vectors, with no model call."""
        data = getattr(event, "_data", None) or {}
        seq = data.get("seq") if isinstance(data.get("seq"), int) else None
        query = Product(product_id) if product_id else query
        return self.show(index, query, k, filters, marks=marks_sent(data, index), seq=seq)

    @with_current_index
    def clicked(self, index: Recommender, shown_ids, why: bool, marks: Marks | None, event: gr.SelectData, k,
                *filters) -> PageOutputs:
        """More like a clicked result: it becomes the query (its own mark goes), steered by the other marks."""
        if why:
            return PageOutputs.skip()  # "Why this match?" is on: why_clicked answers the click
        product_id = shown_ids[event.index]
        return self.show(index, Product(product_id), k, filters, marks=(marks or Marks()).without(product_id))

    @with_current_index
    def example_clicked(self, index: Recommender, event: gr.SelectData, k, *filters) -> PageOutputs:
        return self.show(index, Product(index.examples()[event.index].id), k, filters)

    @with_current_index
    def opened(self, index: Recommender, request: gr.Request, k, *filters) -> PageOutputs:
        """A shared link, ?item=<id>: that product and the products like it; with &like=<ids>&unlike=<ids>, steered
        by those marks (a link may also carry liked products alone)."""
        params = request.query_params if request else {}
        product_id = params.get("item")
        marks, left_out = marks_in_link(params, index)
        if left_out:
            gr.Warning(f"Marked products of this link that this catalog does not hold, left out: {left_out}.")
        if product_id and str(product_id) not in index.row_of_id:
            # the id comes from the address bar: escaped and cut, never markup of a link's making
            gr.Warning(f"No product with id '{html.escape(str(product_id)[:64])}' in this catalog.")
            return PageOutputs.skip()
        if product_id:
            return self.show(index, Product(str(product_id)), k, filters, marks=marks.without(str(product_id)))
        return self.show(index, None, k, filters, marks=marks) if marks.like else PageOutputs.skip()

    def show(self, index: Recommender, query, k, filters: tuple, started: float | None = None,
             marks: Marks = Marks(), seq: int | None = None) -> PageOutputs:
        """The page for `query` (a catalog Product, a photo's View, a live frame's vector, or None: the marks alone)
        searched in `index` with the filter controls' values `filters`, steered by `marks` (a live frame's results
        are never steered: steering.py); `started`: time.perf_counter() when its event began; `seq`: the number of
        the browser's marking this answers."""
        live = isinstance(query, np.ndarray)
        marks = Marks() if live else marks
        mode = "live" if live else "product" if isinstance(query, Product) else "marks" if query is None else "photo"
        try:
            results, status = self._search(index, query, k, _by_parameter(index, filters), started, marks)
        except NothingToRefine:  # the marks alone, every liked one removed: nothing says what to look for
            return PageOutputs.refused("Nothing to look for: mark a product \"More like this\", or choose a "
                                       "photo.")._replace(steer=steer_view(index, [], Marks(), "none", seq))
        shown = gr.Gallery(gallery(results, index), selected_index=None)  # new results: no old selection shown
        product_id = query.id if isinstance(query, Product) else None
        outputs = PageOutputs(gallery=shown, details=records(results), status=status,
                              links=links(results, share_query(product_id, marks)), shown_ids=[r.id for r in results],
                              product_id=None, query=query, product_image=gr.Image(visible=False), marks=marks,
                              steer=steer_view(index, results, marks, mode if results else "none", seq))
        if isinstance(query, Product):
            product = index.product(query.id)
            outputs.steer["query_name"] = product.name
            return outputs._replace(product_id=query.id, query=None, product_image=gr.Image(
                product.image_path, label=f"More like this: {product.name}", visible=True))
        return outputs

    def _search(self, index: Recommender, query, k, filters: dict, started: float | None = None,
                marks: Marks = Marks()):
        """(results, status line) for a catalog Product, a View, a vector or None, steered by `marks`."""
        started = started or time.perf_counter()
        product_id = query.id if isinstance(query, Product) else None
        vector = None if query is None or product_id else getattr(query, "vector", query)
        try:
            if marks:
                results = index.refine(vector, marks.like, marks.unlike, k, filters, query_product=product_id)
            else:
                results = (index.similar(product_id, k, filters) if product_id else
                           index.nearest(vector, k, index.matching_rows(filters)))
        except UnknownProduct as error:
            raise gr.Error(str(error)) from None
        milliseconds = (time.perf_counter() - started) * 1000
        product = index.product(product_id).name if product_id else None
        return results, status_line(index, results, filters, milliseconds, product, marks.said() or None)


class _Fixed:
    """One Recommender, for a Page without refresh."""
    def __init__(self, recommender: Recommender):
        self.current = recommender


def _by_parameter(index: Recommender, values) -> dict:
    """The filter controls' values (in the index's order of filters) by API parameter."""
    return dict(zip(index.filters, values))
