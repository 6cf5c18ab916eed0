"""Visual fashion search: a photo in (upload, webcam, clipboard), the most similar catalog products out.

    python app.py        # serves http://127.0.0.1:7860, the API endpoints /recommend, /similar and /explain, and MCP
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from starlette.middleware import Middleware

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
from gradio.utils import get_upload_folder  # noqa: E402

from recommender.pipeline.build import BuildFailed  # noqa: E402
from recommender.columns import CatalogUnavailable  # noqa: E402
from recommender.serve.clients import limit_events_per_client, proxy_hops, serve_clients_in_turn  # noqa: E402
from recommender.config import DEFAULT_DATASET, Settings  # noqa: E402
from recommender.embedder import WeightsUnavailable  # noqa: E402
from recommender.serve.environment import ENV  # noqa: E402
from recommender.serve.explain import View, query_embedder  # noqa: E402
from recommender.serve.gradio_patches import (RefuseDeepLinks, delete_mcp_copies, id_list,  # noqa: E402
                                               in_memory_image, live_camera, never_record_values,
                                               refuse_server_paths_clearly)
from recommender.serve.live import LiveSearch, LiveState  # noqa: E402
from recommender.serve.outputs import PageOutputs, WhyOutputs  # noqa: E402
from recommender.serve.api import api_endpoint  # noqa: E402
from recommender.serve.page import Page  # noqa: E402
from recommender.serve.photos import QueryPhotos, query_image  # noqa: E402
from recommender.serve.uploads import InMemoryUploads  # noqa: E402
from recommender.serve.picker import photo_picker  # noqa: E402
from recommender.serve.provision import IndexUnusable, build_limit, ensure_index  # noqa: E402
from recommender.serve.refresh import IndexHolder, follow_repo  # noqa: E402
from recommender.serve.search import ANY, MAX_K, Recommender  # noqa: E402
from recommender.serve.steering import STEER_CSS, Marks, steer_bar  # noqa: E402

CONCURRENCY = 2  # model calls at once: two keep both cores of a small Space busy without thrashing
LIVE_VIEWERS = 8  # live streams at once (a stream holds its slot until stopped); more wait in the queue
LIVE_EVERY = 0.3  # seconds between a live viewer's frames: ~3 searches a second when the picture changes
LIVE_MINUTES = 5  # a live session stops after this; one click starts it again
MAX_QUEUE = ENV.max_queue  # more waiting requests are refused at once ("queue is full")
MAX_UPLOAD_MB = 20  # a phone photo is under 10 MB; a larger upload is refused before it is read
# The camera the search sees: not mirrored (Gradio mirrors the picture it captures, not only the preview, when
# mirror is on), and on a phone the rear one first: it is pointed at a product, not at its holder.
CAMERA = gr.WebcamOptions(mirror=False, constraints={"video": {"facingMode": {"ideal": "environment"}}})


# The results gallery grows with its rows instead of scrolling inside itself (Gradio 6.31 gives it a fixed height
# even with height="auto", and a fourth column cut off on a phone's screen); two columns on a phone.
PAGE_CSS = """
#results .grid-wrap { height: auto !important; max-height: none !important; overflow: visible !important; }
@media (max-width: 640px) {
  #results .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #results .thumbnail-item { width: 100% !important; height: auto !important; aspect-ratio: 1; }
}
"""
# Gradio's default orange (#f97316) carries white text at 2.8:1, and its subdued grey text (#bbbbc2) stands at 1.9:1
# on white, under WCAG's 4.5:1 (axe-core checks the page: tests/test_steering_page.py): darker shades of the same.
PAGE_THEME = gr.themes.Default().set(
    button_primary_background_fill="*primary_700", button_primary_background_fill_dark="*primary_700",
    button_primary_background_fill_hover="*primary_800", button_primary_background_fill_hover_dark="*primary_800",
    button_primary_border_color="*primary_700", button_primary_border_color_dark="*primary_700",
    color_accent="*primary_700", body_text_color_subdued="*neutral_600")
# On a phone the results column sits below the controls: after a search, it scrolls into view.
RESULTS_INTO_VIEW = """() => { if (window.matchMedia('(max-width: 768px)').matches)
    setTimeout(() => document.querySelector('#status')?.scrollIntoView({behavior: 'smooth', block: 'start'}), 50); }"""


def query_photos(recommender: Recommender) -> QueryPhotos:
    """Query photos' vectors and cells, embedded once, cached by content; the cache never keeps a photo's copy."""
    return QueryPhotos(query_embedder(recommender.embedder), cacheable=View.without_picture)


APP_TITLE, APP_DESCRIPTION = ENV.app_title, ENV.app_description  # a shop's own catalog, its own words


def examples(index: Recommender) -> list[tuple[str, str]]:
    return [(e.image_path, index.example_label(e)) for e in index.examples()]


def header(recommender: Recommender) -> str:
    return (f"# {APP_TITLE}\n{APP_DESCRIPTION} The most similar of {recommender.manifest['count']:,} catalog products "
            "appear on the right: click one for more like it.")


def build_demo(recommender: Recommender | IndexHolder, photos: QueryPhotos | None = None) -> gr.Blocks:
    """The page and the API: layout, and which handler of recommender.serve.page (and .live) each event runs. Given
    an IndexHolder, each event answers from its current index, which a rebuild may replace while the app runs."""
    indexes, recommender = recommender, getattr(recommender, "current", recommender)
    photos = photos or query_photos(recommender)
    page = Page(indexes, photos)
    live_search = LiveSearch(page)
    gr.set_static_paths([recommender.files.images.resolve()])  # galleries link to the index's images, no copies
    if isinstance(indexes, IndexHolder):  # and to a new index's, once it serves
        indexes.on_switch.append(lambda new: gr.set_static_paths([new.files.images.resolve()]))
    with gr.Blocks(title=APP_TITLE, delete_cache=(60, 60)) as demo:
        title = gr.Markdown(header(recommender))
        if recommender.uses_random_weights:
            gr.Markdown("**Warning: this index was built with random model weights (a test setting), so the "
                        "results are not meaningful.** Build it with `--weights imagenet`.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                with gr.Tabs():
                    with gr.Tab("Photo", id="photo-tab"):
                        # scaled in the browser and sent once (recommender/serve/picker.py); drag on it to crop
                        photo = photo_picker("Your photo", MAX_UPLOAD_MB, elem_id="photo")
                    with gr.Tab("Live", id="live-tab") as live_tab:
                        live = live_camera(sources=["webcam"], streaming=True, type="numpy", webcam_options=CAMERA,
                                           label="Live camera: the results follow what it sees", elem_id="live",
                                           height=380)
                product_image = gr.Image(interactive=False, visible=False, height=220, elem_id="query-product",
                                         buttons=[])
                k = gr.Slider(1, MAX_K, value=8, step=1, label="Number of results", elem_id="k")
                with gr.Row():
                    # one per filter column of the index's catalog (gender, article type, colour by default); an
                    # index with other filters is refused while the app runs (recommender/serve/refresh.py)
                    filters = [gr.Dropdown([ANY, *recommender.filter_choices(name)], value=ANY, label=f["label"],
                                           filterable=True, elem_id=name, min_width=100)
                               for name, f in recommender.filters.items()]
                find = gr.Button("Find similar products", variant="primary")
            with gr.Column(scale=2, min_width=300):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="Most similar products: click one for more like it", columns=4,
                                     object_fit="contain", height="auto", allow_preview=False, elem_id="results")
                steer = steer_bar(elem_id="steer")  # "more like this" / "not like this" on each result, the marks
                why = gr.Checkbox(label="Why this match? Click a result to see where the likeness comes from",
                                  elem_id="why")
                with gr.Column(visible=False, elem_id="why-panel") as why_panel:
                    why_text = gr.Markdown(elem_id="why-text")
                    with gr.Row():
                        query_overlay, product_overlay = (
                            in_memory_image(label=label, interactive=False, elem_id=elem_id, buttons=[])
                            for label, elem_id in (("Your query", "why-query"), ("The product", "why-product")))
                    with gr.Accordion("Explanation as data", open=False):
                        why_details = gr.JSON(label="Explanation")
                links = gr.Markdown(elem_id="links")
                with gr.Accordion("Results as data", open=False):
                    details = gr.JSON(label="Results")
        gr.Markdown("### No photo at hand? Try one of these")
        example_gallery = gr.Gallery(examples(recommender),
                                     columns=8, height=200, fit_columns=False, allow_preview=False,
                                     object_fit="contain", show_label=False, elem_id="examples")
        api_image = query_image(photos, MAX_UPLOAD_MB * 2**20, visible=False)  # the API's input: a plain image file, no editor state
        api_id = gr.Textbox(visible=False)
        api_product = gr.Textbox(visible=False)
        api_refine, api_like, api_unlike = gr.Button(visible=False), id_list(visible=False), id_list(visible=False)
        # ids in the gallery; the catalog product on show; the photo's vector and cells (the photo itself is not kept)
        shown_ids, product_id, query, live_state = gr.State([]), gr.State(None), gr.State(None), gr.State(LiveState())
        marks = gr.State(Marks())  # the products marked more or less like what is wanted: ids, never photos
        live_match = gr.State(None)  # the last embedded live frame's LiveMatch: its change shows the results
        query_copy = gr.Textbox(visible=False)  # the photo's small copy, a data URL held by the browser: the server
        # keeps no copy of a photo, and "Why this match?" draws the query's side on this one when it is sent back

        # no copy of a photo in the session's state
        never_record_values([photo, live, query_copy, query_overlay, product_overlay, api_image])
        controls = [k, *filters]
        # the components each event writes, by the names its handler's values have (recommender/serve/outputs.py)
        page_outputs = PageOutputs(gallery=gallery, details=details, status=status, links=links, shown_ids=shown_ids,
                                   product_id=product_id, query=query, product_image=product_image, marks=marks,
                                   steer=steer)
        photo_outputs = page_outputs.with_copy(query_copy)
        why_outputs = WhyOutputs(panel=why_panel, text=why_text, query_overlay=query_overlay,
                                 product_overlay=product_overlay, details=why_details)
        # One concurrency group for every event that may run the model (and the cheap ones beside them), so that the
        # app never runs more than CONCURRENCY forwards at once, whichever routes the requests take.
        private = {"api_visibility": "private", "concurrency_id": "model", "concurrency_limit": CONCURRENCY}
        model = {"concurrency_id": "model", "concurrency_limit": CONCURRENCY}
        live_only = {"api_visibility": "private"}  # the live child's frames and their results: slots of their own
        # The picker fires input for a photo or a crop it has uploaded, its path in the event's data; a newer photo
        # sent while one is searched is searched next ("always_last"), the ones between are never read.
        photo.input(page.search_photo, controls, photo_outputs, trigger_mode="always_last",
                    **private).then(None, js=RESULTS_INTO_VIEW)
        photo.clear(page.cleared, None, photo_outputs, **private)
        live.stream(live_search.live_frame, [live, live_state], [live_state, live_match],
                    stream_every=LIVE_EVERY, time_limit=LIVE_MINUTES * 60, concurrency_limit=LIVE_VIEWERS,
                    concurrency_id="live", show_progress="hidden", **live_only)
        live_tab.select(live_search.live_opened, None, None, show_progress="hidden", **private)  # loads the model
        live_match.change(live_search.live_results, [live_match, live_state, *controls], page_outputs,
                          concurrency_limit=LIVE_VIEWERS, show_progress="hidden", **live_only)
        gr.on([find.click, k.release, *(f.input for f in filters)], page.rerun, [product_id, query, marks, *controls],
              page_outputs, trigger_mode="always_last", **private)  # a change made while a search runs is kept
        # each marking sends every mark wanted: the last one sent is the one that counts
        steer.input(page.steer, [product_id, query, *controls], page_outputs, trigger_mode="always_last",
                    show_progress="hidden", **private)
        gallery.select(page.clicked, [shown_ids, why, marks, *controls], page_outputs, trigger_mode="always_last",
                       **private)
        gallery.select(page.why_clicked, [why, shown_ids, product_id, query, query_copy, marks], why_outputs,
                       trigger_mode="always_last", **private)
        example_gallery.select(page.example_clicked, controls, page_outputs, trigger_mode="always_last",
                               **private).then(None, js=RESULTS_INTO_VIEW)
        demo.load(page.opened, controls, page_outputs, **private)

        def index_at_page_load():  # a page opened after a new index came in: that index's size, filters, examples
            index = page.indexes.current
            return header(index), examples(index), *(gr.Dropdown([ANY, *index.filter_choices(name)])
                                                     for name in index.filters)

        demo.load(index_at_page_load, None, [title, example_gallery, *filters], **private)
        # the API's filter parameters are named after the index's filter columns (recommender/serve/page.py)
        api_image.change(api_endpoint(page.recommend, recommender), [api_image, *controls], [gallery, details],
                         api_name="recommend", **model)
        api_id.change(api_endpoint(page.similar, recommender), [api_id, *controls], [gallery, details],
                      api_name="similar", **model)
        api_product.change(page.explain, [api_image, api_id, api_product],
                           [why_outputs.query_overlay, why_outputs.product_overlay, why_outputs.details],
                           api_name="explain", **model)
        api_refine.click(api_endpoint(page.refine, recommender), [api_image, api_id, api_like, api_unlike, *controls],
                         [gallery, details], api_name="refine", **model)
    return demo


def main() -> None:
    index_dir = Path(ENV.index_dir)
    weights = ENV.weights  # unset: whatever the index was built with
    settings = Settings(weights=weights or Settings.weights)
    try:
        how = ensure_index(index_dir, ENV.index_repo, ENV.dataset or DEFAULT_DATASET, build_limit(ENV.build_limit),
                           settings)
        indexes = IndexHolder(index_dir, weights=weights)  # holds the index's generation; follows rebuilds
        recommender = indexes.current
    except (IndexUnusable, CatalogUnavailable, WeightsUnavailable, BuildFailed) as error:
        sys.exit(f"error: {error}")
    if recommender.uses_random_weights:
        print("WARNING: the index was built with random weights: results are not meaningful.", flush=True)
    photos = query_photos(recommender)
    demo = build_demo(indexes, photos)
    indexes.watch()
    if ENV.index_repo:  # a new revision is downloaded as a new generation, which `indexes` serves
        follow_repo(ENV.index_repo, index_dir, downloaded_now=how == "downloaded")
    # api_open=False: /gradio_api/run/... would skip the queue, and with it every limit below
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE, api_open=False)
    # TensorFlow, Gradio and the index leave ~500k long-lived objects: a full collection, which Python runs every
    # so often while requests allocate, walks them all and stalls every request for ~0.5 s. Objects made up to
    # here live as long as the app: out of the collector's sight (a new index is, at its switch: refresh.py).
    gc.collect()
    gc.freeze()
    limit_events_per_client(demo._queue, proxy_hops())
    serve_clients_in_turn(demo._queue, proxy_hops(), "model")
    # Uploads go to memory, never to disk (recommender/serve/photos.py); run_history=False: Gradio would otherwise save
    # every run, query photo included, in the browser.
    delete_mcp_copies(photos)
    refuse_server_paths_clearly()
    uploads = Middleware(InMemoryUploads, photos=photos, upload_dir=get_upload_folder(),
                         max_bytes=MAX_UPLOAD_MB * 2**20, hops=proxy_hops())
    demo.launch(css=PAGE_CSS + STEER_CSS, theme=PAGE_THEME, max_file_size=f"{MAX_UPLOAD_MB}mb", mcp_server=True,
                run_history=False, app_kwargs={"middleware": [uploads, Middleware(RefuseDeepLinks)]})


if __name__ == "__main__":
    main()
