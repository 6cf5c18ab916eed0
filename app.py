"""Visual fashion search: a photo in (upload, webcam, clipboard), the most similar catalog products out.

    python app.py        # serves http://127.0.0.1:7860, and the API endpoint /recommend
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gradio as gr

from recommender.build import BuildFailed
from recommender.catalog import CatalogUnavailable
from recommender.config import DEFAULT_DATASET, Settings
from recommender.embedder import WeightsUnavailable
from recommender.images import ImageError
from recommender.provision import IndexUnusable, ensure_index
from recommender.search import MAX_K, Recommender

CONCURRENCY = 2  # model calls at once: two keep both cores of a small Space busy without thrashing
MAX_QUEUE = 64  # waiting requests beyond this are refused at once with "busy" instead of timing out
MAX_UPLOAD = "20mb"  # a phone photo is under 10 MB; a larger upload is refused before it is read


def query_image(**options) -> gr.Image:
    """gr.Image that hands the uploaded file to our decoder untouched, so that EXIF, alpha and CMYK are handled
    in one place (recommender.images) and a file Gradio cannot even open gets our message, not a stack trace.
    (Wrapped, not subclassed: Gradio writes a .pyi stub next to every component subclass.)"""
    image = gr.Image(type="filepath", image_mode=None, **options)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except Exception:
            raise gr.Error("This file is not an image we can read (JPEG, PNG, WebP, GIF, BMP and TIFF work).") \
                from None

    image.preprocess = preprocess
    return image


def build_demo(recommender: Recommender) -> gr.Blocks:
    manifest = recommender.manifest

    def recommend(image: str | None, k: int = 8):
        """Find the catalog products that look most like a photo.

        Args:
            image: a photo of a garment, shoe or accessory (JPEG, PNG, WebP, ...).
            k: how many products to return, 1 to 50.

        Returns:
            A gallery of (product image, caption) and a list of results, best first, each with id, name,
            distance (euclidean, 0 = identical), similarity (cosine) and the catalog's metadata.
        """
        try:
            results = recommender.recommend(image, int(k))
        except ImageError as error:
            raise gr.Error(str(error)) from None
        gallery = [(result.image_path, _caption(result)) for result in results]
        return gallery, [result.to_dict() for result in results]

    def recommend_if_image(image, k):
        if image is None:  # the photo was cleared: clear the results too
            return [], []
        return recommend(image, k)

    with gr.Blocks(title="Fashion visual search", delete_cache=(60, 300)) as demo:
        gr.Markdown("# Find similar fashion products\nUpload a photo, take one with your webcam, or paste one: "
                    f"the most similar of {manifest['count']:,} catalog products appear on the right.")
        if recommender.uses_random_weights:
            gr.Markdown("**Warning: this index was built with random model weights (a test setting), so the "
                        "results are not meaningful.** Build it with `--weights imagenet`.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                image = query_image(label="Your photo", sources=["upload", "webcam", "clipboard"])
                k = gr.Slider(1, MAX_K, value=8, step=1, label="Number of results", elem_id="k")
                search = gr.Button("Find similar products", variant="primary")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Most similar products", columns=4, object_fit="contain",
                                     height="auto", elem_id="results")
                with gr.Accordion("Results as data", open=False):
                    details = gr.JSON(label="Results")
        search.click(recommend, [image, k], [gallery, details], api_name="recommend")
        gr.on([image.input, k.release], recommend_if_image, [image, k], [gallery, details],
              api_visibility="private")
    return demo


def _caption(result) -> str:
    facts = [result.metadata.get("articleType"), result.metadata.get("baseColour"), f"{result.similarity:.0%} similar"]
    return f"{result.name}\n{' · '.join(str(fact) for fact in facts if fact)}"


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
    demo.launch(allowed_paths=[str(recommender.files.images.resolve())], max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    main()
