"""Steering a search by example on the page: the visitor marks results "more like this" or "not like this", and the
results become those of the query moved toward the liked products and away from the others (feedback.py), with
no model call. This module holds the marks (product ids only, never a photo: they live in the session's state and may
travel in a share link) and the steering bar under the results (steer.js decorates each result with its two toggles
and names it for assistive technology; the bar lists the marks and has "Start over").

What each page event does with the marks (page.py): a new photo, an example or a cleared photo starts afresh; k, a
filter, the search button and "more like this" keep them (a clicked product becomes the query; its own mark goes);
a shared link may carry them (?item=ID&like=ID,ID&unlike=ID); a live frame's results clear them and offer no toggles
(the next frame, a third of a second later, would replace what was marked): click a result to steer from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from recommender.serve.search import UnknownProduct

__all__ = ["MAX_MARKS", "Marks", "marks_in_link", "marks_sent", "product_ids", "share_query", "steer_bar",
           "steer_view", "STEER_CSS"]

MAX_MARKS = 200  # ids a request, a link or the page may name: a few rounds of marking 50 results; each is a row read
_HERE = Path(__file__).parent
STEER_CSS = (_HERE / "steer.css").read_text()  # the toggles on the gallery's results: page-wide CSS (app.py)


@dataclass(frozen=True)
class Marks:
    """The products a visitor marked, by id, in the order marked."""
    like: tuple[str, ...] = ()
    unlike: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.like or self.unlike)

    def without(self, product_id: str) -> Marks:
        return Marks(*(tuple(i for i in ids if i != product_id) for ids in (self.like, self.unlike)))

    def said(self) -> str:
        """For the status line: "2 liked, 1 not liked"."""
        parts = [f"{len(self.like)} liked" if self.like else "", f"{len(self.unlike)} not liked" if self.unlike else ""]
        return " and ".join(part for part in parts if part)


def product_ids(value, name: str) -> list[str]:
    """Product ids as the API, a link or the page sends them: a list, or one comma-separated string; each once, in
    order. Raises UnknownProduct for another type or more than MAX_MARKS ids (before any is looked up: a million ids
    would read a million stored rows)."""
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise UnknownProduct(f"'{name}' takes a list of product ids or a comma-separated string of them.")
    if len(value) > MAX_MARKS:
        raise UnknownProduct(f"'{name}' names {len(value):,} products; at most {MAX_MARKS} are taken.")
    return list(dict.fromkeys(str(item).strip() for item in value if str(item).strip()))


def _known(ids, index, taken=()) -> tuple[str, ...]:
    return tuple(i for i in ids if i in index.row_of_id and i not in taken)


def marks_sent(data: dict, index) -> Marks:
    """The marks steer.js sent ({"like": [ids], "unlike": [ids]}), those the index holds; an id marked both ways
    counts as unliked. What the page sends is not trusted: another type or too many ids is no mark at all."""
    try:
        unlike = _known(product_ids(data.get("unlike"), "unlike"), index)
        like = _known(product_ids(data.get("like"), "like"), index, taken=unlike)
    except UnknownProduct:
        return Marks()
    return Marks(like, unlike)


def marks_in_link(params, index) -> tuple[Marks, int]:
    """The marks of a shared link's ?like=ID,ID&unlike=ID, and how many of its ids this catalog does not hold (or
    are past MAX_MARKS) and were left out."""
    named, marks = 0, {}
    for name in ("unlike", "like"):
        ids = str(params.get(name) or "").split(",")
        ids = [i.strip() for i in ids if i.strip()][:MAX_MARKS]
        named += len(ids)
        marks[name] = _known(ids, index, taken=marks.get("unlike", ()))
    found = Marks(marks["like"], marks["unlike"])
    return found, named - len(found.like) - len(found.unlike)


def share_query(product_id: str | None, marks: Marks) -> str | None:
    """The link's query that opens this steered search: ?item=ID&like=...&unlike=...; a photo is never in a link, so
    a photo's search is shared as its marks alone, which needs a liked product. None when there is nothing to open."""
    if not marks or (product_id is None and not marks.like):
        return None
    parts = [("item", product_id)] if product_id else []
    parts += [(name, ",".join(ids)) for name, ids in (("like", marks.like), ("unlike", marks.unlike)) if ids]
    return "?" + "&".join(f"{name}={quote(value, safe=',')}" for name, value in parts)


def steer_view(index, results, marks: Marks, mode: str, seq=None, query_name: str | None = None) -> dict:
    """What steer.js shows: the results' ids and names in gallery order (each gets its toggles and its accessible
    name), the marks with their names, and `mode`: "photo", "product" or "marks" (toggles on), "live" (off) or
    "none" (no results to steer). `seq`: the number of the page's last marking this answers (older answers, which
    arrive after a newer marking was sent, do not undo it in the browser); `query_name`: the catalog product that is
    the query, which names its picture."""
    def named(ids):
        return [{"id": i, "name": index.product(i).name} for i in ids]

    return {"mode": mode, "ids": [r.id for r in results], "names": [r.name for r in results],
            "like": named(marks.like), "unlike": named(marks.unlike), "seq": seq, "query_name": query_name}


def steer_bar(**options):
    """gr.HTML under the results: the marks, "Start over", and (steer.js) the toggles on each result. Its "input"
    event carries the marks the visitor wants ({"like": [ids], "unlike": [ids], "seq": n}); "Start over" sends
    none."""
    import gradio as gr

    return gr.HTML(value=steer_view(None, [], Marks(), "none"), html_template='<div class="steer"></div>',
                   css_template="", js_on_load=(_HERE / "steer.js").read_text(), **options)
