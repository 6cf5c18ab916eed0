"""Why a product matched: the cosine of two max-pooled unit vectors, a sum over channels, split exactly over the grid
cells the channels' maxima came from, each cell mapped back onto its photo, and drawn there as heat."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from recommender.images import fit_square, to_rgb

__all__ = ["Explainer", "Explanation", "View", "cell_boxes", "contributions", "overlay", "query_embedder",
           "query_picture"]

SHOWN_SIDE = 320  # overlays are drawn at this longest side (catalog thumbnails are often smaller: scaled up)
TOP_REGIONS = 3  # cells outlined on each photo: the strongest few; more would clutter a 7x7 grid
HEAT = (255, 60, 0)  # a cell's tint; its opacity is proportional to the cell's contribution
MAX_OPACITY = 160  # of 255, for the strongest cell: the photo stays visible under it
OUTLINE = (0, 110, 255)  # blue against the orange heat


@dataclass(frozen=True)
class View:
    """One side of an explanation: what the model made of a picture, and the picture."""
    vector: np.ndarray  # (dims,) float32, unit length
    cells: np.ndarray  # (dims,) uint8: the grid cell (row * grid + column) of each channel's maximum
    picture: bytes | None  # JPEG the overlay is drawn on (a query photo's small copy, a product's thumbnail); None
    # in what outlives a request: a query photo is never kept, its copy comes from the request (query_picture)
    size: tuple[int, int]  # (width, height) of the photo the cells were computed on, upright: boxes are in its pixels

    def without_picture(self) -> "View":
        """What the shared vector cache and a page session may keep of a query photo: no copy of the photo."""
        return replace(self, picture=None)

    def with_picture(self, picture: bytes | None) -> "View":
        return replace(self, picture=picture)


def query_embedder(embedder):
    """What QueryPhotos embeds a photo with: one decode and one forward give its vector, its cells and, for this
    request only, the small copy an explanation draws on (the photo's part of the model's input, 224 px at most)."""
    def embed(data: bytes) -> View:
        image = to_rgb(data)
        square = fit_square(image, embedder.size)
        vectors, cells = embedder.embed_with_cells(square[None])
        return View(vectors[0], cells[0], _jpeg(_unpadded(square, image.size)), image.size)

    return embed


def query_picture(data: bytes) -> bytes:
    """The small copy an overlay is drawn on, from a photo's bytes in the request (its vector came from the cache,
    which keeps no copy): upright, SHOWN_SIDE at most, decoded at a reduced scale where the format allows (JPEG)."""
    image = to_rgb(data, draft_side=SHOWN_SIDE)
    image.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
    return _jpeg(image)


def contributions(query: np.ndarray, product: np.ndarray, cells: np.ndarray, grid: int) -> np.ndarray:
    """(grid, grid) float64: each cell's share of the cosine query . product, the channels whose maximum lies in
    that cell of `cells`' image; they sum to the cosine (float64: to round-off, far below 1e-5)."""
    shares = query.astype(np.float64) * product  # (dims,) each channel's share
    return np.bincount(cells, weights=shares, minlength=grid * grid).reshape(grid, grid)


def cell_boxes(size: tuple[int, int], grid: int) -> np.ndarray:
    """(grid, grid, 4) int: each cell's (left, top, right, bottom) on a photo of `size` (width, height). The grid
    covers the white square images.fit_square pads the photo to (side max(w, h), photo centred), so cells are
    clipped to the photo, and a cell all in the padding has no area."""
    width, height = size
    side = max(width, height)
    edges = np.rint(np.arange(grid + 1) * side / grid).astype(int)
    xs = np.clip(edges - (side - width) // 2, 0, width)  # fit_square pastes the photo at ((side - w) // 2, ...)
    ys = np.clip(edges - (side - height) // 2, 0, height)
    boxes = np.empty((grid, grid, 4), int)
    boxes[..., 0], boxes[..., 2] = xs[None, :-1], xs[None, 1:]
    boxes[..., 1], boxes[..., 3] = ys[:-1, None], ys[1:, None]
    return boxes


@dataclass
class Explanation:
    similarity: float  # cosine of the two vectors: the sum of either side's cells
    query_cells: np.ndarray  # (grid, grid) contributions, over the query photo
    product_cells: np.ndarray  # (grid, grid) contributions, over the product photo
    query_boxes: np.ndarray  # (grid, grid, 4) the cells on the query photo, in its pixels
    product_boxes: np.ndarray  # (grid, grid, 4) the same on the product's thumbnail

    def to_dict(self) -> dict:
        return {"similarity": self.similarity, "grid": len(self.query_cells),
                "query_cells": self.query_cells.tolist(), "product_cells": self.product_cells.tolist(),
                "query_regions": _regions(self.query_cells, self.query_boxes),
                "product_regions": _regions(self.product_cells, self.product_boxes),
                # what the model saw in the white padding, on no part of the photo
                "query_off_photo": float(self.query_cells[_area(self.query_boxes) == 0].sum()),
                "product_off_photo": float(self.product_cells[_area(self.product_boxes) == 0].sum())}


def explain(query: View, product: View, grid: int) -> Explanation:
    return Explanation(similarity=float(np.dot(query.vector.astype(np.float64), product.vector)),
                       query_cells=contributions(query.vector, product.vector, query.cells, grid),
                       product_cells=contributions(query.vector, product.vector, product.cells, grid),
                       query_boxes=cell_boxes(query.size, grid), product_boxes=cell_boxes(product.size, grid))


def overlay(view: View, cells: np.ndarray, boxes: np.ndarray) -> Image.Image:
    """The view's picture with each cell tinted by its contribution and the strongest TOP_REGIONS outlined and
    numbered, at SHOWN_SIDE."""
    picture = Image.open(io.BytesIO(view.picture)).convert("RGB")
    scale = SHOWN_SIDE / max(picture.size)
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BILINEAR)
    to_shown = np.array([picture.width / view.size[0], picture.height / view.size[1]] * 2)
    shown = (boxes * to_shown).round().astype(int).reshape(-1, 4)
    heat = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(heat)
    peak = max(float(cells.max()), 1e-12)
    for box, value in zip(shown, cells.ravel()):
        if value > 0 and box[2] > box[0] and box[3] > box[1]:
            draw.rectangle([*box[:2], *(box[2:] - 1)], fill=(*HEAT, round(MAX_OPACITY * value / peak)))
    image = Image.alpha_composite(picture.convert("RGBA"), heat).convert("RGB")
    draw = ImageDraw.Draw(image)
    for rank, region in enumerate(_regions(cells, boxes), start=1):
        row, column = region["cell"]
        left, top, right, bottom = shown[row * len(cells) + column]
        draw.rectangle([left, top, right - 1, bottom - 1], outline=OUTLINE, width=3)
        draw.rectangle([left, top, left + 14, top + 18], fill=OUTLINE)  # the rank, white on blue: legible on heat
        draw.text((left + 3, top), str(rank), fill="white", font=_font())
    return image


class Explainer:
    """Explanations against the catalog of a Recommender: product sides from the index's stored cells, or, for an
    index built without them, from a forward of the product's thumbnail."""

    def __init__(self, recommender):
        self.recommender = recommender
        self.grid = recommender.embedder.grid

    def product(self, product_id: str) -> View:
        """A catalog product as one side of an explanation. Raises search.UnknownProduct."""
        recommender = self.recommender
        row = recommender.row_of(product_id)
        path = recommender.files.image(row)
        thumbnail = to_rgb(path)
        if recommender.cells is not None:
            cells = np.asarray(recommender.cells[row])
        else:  # on demand; any cells split the stored vectors' cosine exactly, these locate it as the thumbnail does
            cells = recommender.embedder.embed_with_cells(fit_square(thumbnail, recommender.embedder.size)[None])[1][0]
        return View(np.asarray(recommender.index.vectors[row]), cells, path.read_bytes(), thumbnail.size)

    def explain(self, query: View, product_id: str) -> tuple[Explanation, Image.Image | None, Image.Image]:
        """The explanation of `product_id` as a match for `query`, and the two overlays (query, product); no query
        overlay for a query View without its picture."""
        product = self.product(product_id)
        explanation = explain(query, product, self.grid)
        query_overlay = (None if query.picture is None  # the photo's bytes were no longer in the request
                         else overlay(query, explanation.query_cells, explanation.query_boxes))
        return explanation, query_overlay, overlay(product, explanation.product_cells, explanation.product_boxes)


def _regions(cells: np.ndarray, boxes: np.ndarray) -> list[dict]:
    """The TOP_REGIONS cells of largest contribution that lie on the photo, strongest first."""
    grid = len(cells)
    on_photo = [cell for cell in np.argsort(-cells, axis=None, kind="stable")
                if _area(boxes).ravel()[cell] > 0 and cells.ravel()[cell] > 0]
    return [{"cell": [int(cell) // grid, int(cell) % grid], "contribution": float(cells.ravel()[cell]),
             "box": boxes.reshape(-1, 4)[cell].tolist()} for cell in on_photo[:TOP_REGIONS]]


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


@cache
def _font():
    return ImageFont.load_default(size=16)  # loaded once: loading it took longer than drawing an overlay


def _unpadded(square: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The photo's part of images.fit_square's padded square: a copy of a 12 MP photo made from the photo itself
    would cost more than the model's forward."""
    width, height = size
    side, scale = max(size), len(square) / max(size)
    left, top = (side - width) // 2 * scale, (side - height) // 2 * scale
    return Image.fromarray(square[round(top):round(top + height * scale), round(left):round(left + width * scale)])


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
