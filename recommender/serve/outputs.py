"""What the page's events write, by name, and the results as the page shows them (gallery captions, links, status
line). app.py wires each event's components from the same records (PageOutputs(gallery=gallery, ...)), so a
handler's values and the components they go to cannot drift apart."""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import quote

import gradio as gr

from recommender.serve.search import ANY, Recommender
from recommender.serve.steering import Marks, steer_view

__all__ = ["LiveOutputs", "PageOutputs", "PhotoOutputs", "WhyOutputs", "gallery", "links", "records", "status_line"]


class PageOutputs(NamedTuple):
    """What a search of the page writes: app.py makes one of the components, a handler one of their values."""
    gallery: Any  # [(image path, caption)] best first; or gr.Gallery(...) to also clear its selection
    details: Any  # the results as JSON (Result.to_dict each)
    status: Any  # the status line, Markdown
    links: Any  # a link per result to share it, and to the shop's page (Markdown)
    shown_ids: Any  # State: the ids in the gallery, in its order (a click's index -> its product)
    product_id: Any  # State: the catalog product that is the query, or None
    query: Any  # State: a photo's View (without its picture) or a live frame's vector; None for a product
    product_image: Any  # the catalog product shown as the query (gr.Image), hidden for a photo
    marks: Any  # State: the products marked "more like this" or "not like this" (steering.Marks: ids only)
    steer: Any  # the steering bar's value (steering.steer_view): the results' ids and names, the marks, the mode

    @classmethod
    def skip(cls) -> PageOutputs:
        """Nothing on the page changes."""
        return cls(*[gr.skip()] * len(cls._fields))

    @classmethod
    def refused(cls, status: str) -> PageOutputs:
        """No results: an empty gallery, `status` said, no query kept."""
        return cls(gallery=[], details=[], status=status, links="", shown_ids=[], product_id=None, query=None,
                   product_image=gr.Image(visible=False), marks=Marks(), steer=steer_view(None, [], Marks(), "none"))

    def with_copy(self, query_copy: str) -> PhotoOutputs:
        return PhotoOutputs(*self, query_copy=query_copy)


# A photo's events write the page and the photo's small copy (a data URL), which the browser holds for "Why this
# match?": the server keeps no copy of a photo. Its fields are PageOutputs' and one more, made from them.
PhotoOutputs = NamedTuple("PhotoOutputs", [*((name, Any) for name in PageOutputs._fields), ("query_copy", Any)])


class WhyOutputs(NamedTuple):
    """What a result's click writes in the "Why this match?" panel. The overlays are plain values, never gr.skip()
    or gr.Image(...): Gradio answers an update by replacing the component, for the session, with a new one, which
    lacks in_memory_image's postprocess (gradio_patches.py)."""
    panel: Any  # gr.Column(visible=...)
    text: Any  # Markdown
    query_overlay: Any  # PIL image: the query, tinted where the similarity comes from; or None
    product_overlay: Any  # PIL image: the product, likewise; or None
    details: Any  # the explanation as JSON, or None

    @classmethod
    def hidden(cls) -> WhyOutputs:
        return cls(gr.Column(visible=False), "", None, None, None)

    @classmethod
    def said(cls, text: str) -> WhyOutputs:
        """The panel with `text` only, no explanation."""
        return cls(gr.Column(visible=True), text, None, None, None)


class LiveOutputs(NamedTuple):
    """What a live frame writes: States only (LiveSearch.live_frame says why)."""
    state: Any  # the viewer's LiveState
    match: Any  # a new LiveMatch when the frame was embedded (its change shows the results), else gr.skip()


def gallery(results, index: Recommender) -> list[tuple[str, str]]:
    columns = [f["column"] for f in index.filters.values()]
    return [(result.image_path, _caption(result, columns)) for result in results]


def _caption(result, filter_columns) -> str:
    """The product's name; its price, its values of the catalog's filters and the similarity."""
    facts = [result.price, *(result.metadata.get(column) for column in filter_columns), f"{result.similarity:.0%} similar"]
    return f"{result.name}\n{' · '.join(str(fact) for fact in facts if fact)}"


def records(results) -> list[dict]:
    return [result.to_dict() for result in results]


SAFE_IN_URL = ":/?&=#%+@,;~!$*"  # kept as they are in a shop's link; spaces, quotes, brackets and the like quoted


def links(results, steered: str | None = None) -> str:
    """A link per result to share it, and to the product's page in the shop when the catalog has one (http and
    https only: a catalog's text is not trusted to make a link that runs code); `steered`: the query of a link to
    this steered search (steering.share_query), shared first."""
    if not results:
        return ""
    search = f"[Share this steered search]({steered}) (a photo stays with you: the link carries the marks)  \n"
    shared = (search if steered else "") + "Share a result: " + " · ".join(
        f"[{number}](?item={quote(result.id)} \"{_title(result.name)}\")" for number, result in enumerate(results, 1))
    shop = [f"[{number}]({quote(result.link, safe=SAFE_IN_URL)} \"{_title(result.name)}\")"
            for number, result in enumerate(results, 1) if re.match(r"https?://", result.link or "", re.I)]
    return shared + ("  \nIn the shop: " + " · ".join(shop) if shop else "")


def _title(text: str) -> str:
    return str(text).replace("\\", "").replace('"', "'")


def status_line(index: Recommender, results, filters: dict, milliseconds: float, product: str | None = None,
                steered: str | None = None) -> str:
    """How many results, from how many products (those the filters let through), how fast; `product`: the name of
    the catalog product that is the query; `steered`: the marks that steer the results (Marks.said)."""
    chosen = [f"{index.filters[name]['label'].lower()} = {value}" for name, value in filters.items()
              if value not in (None, "", ANY)]
    rows = index.matching_rows(filters)
    pool = len(index.items) if rows is None else len(rows)
    subject = f"More like **{product}**: " if product is not None else ""
    subject += f"Steered by your marks ({steered}): " if steered else ""
    if not results:
        return (f"{subject}**No product matches** {' and '.join(chosen)}. Set a filter back to {ANY}."
                if chosen else f"{subject}No results.")
    where = f" ({', '.join(chosen)})" if chosen else ""
    return f"{subject}{len(results)} results from {pool:,} products{where} in {milliseconds:.0f} ms"
