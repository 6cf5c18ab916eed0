"""A small, deterministic product catalog the tests draw themselves: shapes per article type, in colours and
patterns, on white, written in the Hub dataset's exact schema (parquet) and as an image folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 120, 160  # portrait, like the catalog's product shots
COLOURS = {"Red": (200, 30, 40), "Blue": (30, 60, 190), "Green": (30, 150, 60)}
PATTERNS = ("solid", "striped")
DUPLICATE_OF, DUPLICATE_ID = 5, 99999  # write_parquet adds row 5's image again under this id


def _tshirt(d, c):
    d.polygon([(20, 30), (45, 20), (75, 20), (100, 30), (110, 60), (90, 65), (88, 140), (32, 140), (30, 65),
               (10, 60)], fill=c)


def _trousers(d, c):
    d.polygon([(35, 15), (85, 15), (95, 150), (68, 150), (60, 60), (52, 150), (25, 150)], fill=c)


def _shoe(d, c):
    d.polygon([(10, 110), (15, 80), (45, 80), (70, 100), (110, 110), (110, 130), (10, 130)], fill=c)


def _watch(d, c):
    d.rectangle([50, 10, 70, 150], fill=(60, 60, 60))
    d.ellipse([30, 55, 90, 115], fill=c)


def _bag(d, c):
    d.arc([35, 20, 85, 80], 180, 360, fill=c, width=6)
    d.rectangle([15, 50, 105, 140], fill=c)


def _cap(d, c):
    d.pieslice([20, 50, 100, 130], 180, 360, fill=c)
    d.rectangle([60, 86, 115, 94], fill=c)


ARTICLE_TYPES = {"Tshirts": ("Apparel", "Topwear", _tshirt), "Trousers": ("Apparel", "Bottomwear", _trousers),
                 "Casual Shoes": ("Footwear", "Shoes", _shoe), "Watches": ("Accessories", "Watches", _watch),
                 "Handbags": ("Accessories", "Bags", _bag), "Caps": ("Accessories", "Headwear", _cap)}


def product_image(article_type: str, colour: str, pattern: str) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    ARTICLE_TYPES[article_type][2](draw, COLOURS[colour])
    if pattern == "striped":  # light stripes across the product only
        pixels = np.array(image)
        product = (pixels == COLOURS[colour]).all(axis=-1)
        stripes = (np.arange(HEIGHT) % 12 < 3)[:, None]
        pixels[product & stripes] = 245
        image = Image.fromarray(pixels)
    return image


def products() -> list[dict]:
    """36 rows in the schema of ashraq/fashion-product-images-small, image as a PIL image."""
    rows = []
    for number, (article_type, (master, sub, _)) in enumerate(ARTICLE_TYPES.items()):
        for colour in COLOURS:
            for pattern in PATTERNS:
                rows.append({
                    "id": 10000 + len(rows), "masterCategory": master,
                    # no handbags for men: a filter combination that matches nothing
                    "gender": "Women" if article_type == "Handbags" else ("Men", "Women")[len(rows) % 2],
                    "subCategory": sub, "articleType": article_type, "baseColour": colour,
                    "season": "Summer", "year": 2012.0 + number, "usage": "Casual",
                    "productDisplayName": f"{colour} {pattern} {article_type} Ünïcode",
                    "image": product_image(article_type, colour, pattern)})
    return rows


def write_parquet(path: Path, rows: list[dict] | None = None, extra_bad_rows: bool = True) -> Path:
    """The catalog as one parquet file with the Hub dataset's features; with `extra_bad_rows`, two more
    rows: a corrupt image, which a build must skip and count, and a copy of the sixth product's image under
    another id (DUPLICATE_ID), which results must never show beside the original."""
    import datasets

    rows = products() if rows is None else rows
    features = datasets.Features({
        "id": datasets.Value("int64"), **{name: datasets.Value("string") for name in (
            "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season")},
        "year": datasets.Value("float64"), "usage": datasets.Value("string"),
        "productDisplayName": datasets.Value("string"), "image": datasets.Image()})
    records = [dict(row, image=_encoded(row["image"])) for row in rows]
    if extra_bad_rows:
        bad = dict(rows[0], id=99998, productDisplayName="corrupt image")
        records.append(dict(bad, image={"bytes": b"\xff\xd8\xff this is not a jpeg", "path": None}))
        copy = dict(rows[DUPLICATE_OF], id=DUPLICATE_ID, productDisplayName="the same photo, another id")
        records.append(dict(copy, image={"bytes": _jpeg(rows[DUPLICATE_OF]["image"]), "path": None}))
    columns = {name: [record[name] for record in records] for name in features}
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


def write_folder(root: Path, rows: list[dict] | None = None) -> Path:
    """The catalog as images/<articleType>/<id>.jpg, plus one file that is not an image."""
    rows = products() if rows is None else rows
    for row in rows:
        folder = root / row["articleType"]
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{row['id']}.jpg", quality=92)
    (root / "Caps" / "broken.jpg").write_bytes(b"not an image at all")
    return root


def _encoded(image) -> dict | None:
    """A row's image as the parquet holds it: a PIL image as JPEG, raw bytes as they are, None as null."""
    if image is None:
        return None
    return {"bytes": _jpeg(image) if isinstance(image, Image.Image) else image, "path": None}


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def resnet_like_features(n: int, dims: int = 2048, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """(n, dims) float32 vectors shaped like max-pooled ResNet50 features: clustered, with a power-law
    decaying spectrum, non-negative after ReLU, L2-normalised."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, dims + 1) ** 0.7).astype(np.float32)  # a few strong directions, a long tail
    centres = rng.standard_normal((clusters, dims), dtype=np.float32) * scale
    points = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dims), dtype=np.float32) * scale
    points = np.maximum(points[:, rng.permutation(dims)], 0)  # spread the strong directions, then ReLU
    return np.ascontiguousarray(points / np.linalg.norm(points, axis=1, keepdims=True))  # rows, as np.load gives


def many_products(n: int, seed: int = 0) -> list[dict]:
    """`n` rows like products(), with random colours and sizes: a catalog big enough to time a build."""
    rng = np.random.default_rng(seed)
    types = list(ARTICLE_TYPES)
    rows = []
    for number in range(n):
        article_type = types[number % len(types)]
        colour = tuple(int(c) for c in rng.integers(0, 230, 3))
        image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
        ARTICLE_TYPES[article_type][2](ImageDraw.Draw(image), colour)
        side = int(rng.integers(60, 400))  # catalogs mix thumbnail and full-size photos
        master, sub, _ = ARTICLE_TYPES[article_type]
        rows.append({"id": number, "gender": "Unisex", "masterCategory": master, "subCategory": sub,
                     "articleType": article_type, "baseColour": f"#{colour[0]:02x}{colour[1]:02x}{colour[2]:02x}",
                     "season": None, "year": None, "usage": None, "productDisplayName": f"Product {number}",
                     "image": image.resize((side * 3 // 4, side))})
    return rows


PALETTE = {"Red": (200, 30, 40), "Blue": (30, 60, 190), "Green": (30, 150, 60), "Yellow": (230, 200, 30),
           "Black": (30, 30, 30), "Pink": (230, 120, 170), "Brown": (120, 70, 30), "Grey": (140, 140, 140)}


def labelled_products(n: int, seed: int = 0) -> list[dict]:
    """`n` rows whose article type and colour are what the picture shows (a shape per type, a colour of PALETTE
    varied a little, plain or striped, at random sizes and places on the white): a catalog on which retrieval by
    article type and by colour can be measured, as the real catalog's labels can."""
    rng = np.random.default_rng(seed)
    types, colours = list(ARTICLE_TYPES), list(PALETTE)
    rows = []
    for number in range(n):
        article_type, colour = types[int(rng.integers(len(types)))], colours[int(rng.integers(len(colours)))]
        shade = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in PALETTE[colour])
        image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
        ARTICLE_TYPES[article_type][2](ImageDraw.Draw(image), shade)
        if rng.random() < 0.5:  # light stripes across the product only
            pixels = np.array(image)
            product = (pixels == shade).all(axis=-1) & (np.arange(HEIGHT) % 12 < 3)[:, None]
            pixels[product] = 245
            image = Image.fromarray(pixels)
        scale = rng.uniform(0.7, 1.0)  # the product smaller and off-centre on a canvas of the same size
        small = image.resize((int(WIDTH * scale), int(HEIGHT * scale)))
        canvas = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
        canvas.paste(small, (int(rng.integers(0, WIDTH - small.width + 1)), int(rng.integers(0, HEIGHT - small.height + 1))))
        master, sub, _ = ARTICLE_TYPES[article_type]
        rows.append({"id": 20000 + number, "gender": ("Men", "Women")[number % 2], "masterCategory": master,
                     "subCategory": sub, "articleType": article_type, "baseColour": colour, "season": None,
                     "year": None, "usage": None, "productDisplayName": f"{colour} {article_type} {number}",
                     "image": canvas})
    return rows


SHOP_COLUMNS = ["SKU", "Photo file", "Title", "url", "Price", "Category", "Main colour", "notes"]


def write_shop_table(folder: Path, kind: str = "csv", rows: list[dict] | None = None) -> Path:
    """The catalog as a shop keeps it: a table (csv with ';' as a European spreadsheet writes it, or jsonl) with
    its own column names (SHOP_COLUMNS), ids with leading zeros, prices as text, a link per product, a note with
    the delimiter and quotes in it, and photos as files beside it (photos/<n>.jpg, relative to the table)."""
    import csv
    import json

    rows = products() if rows is None else rows
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    records = []
    for number, row in enumerate(rows):
        photo = f"photos/{number:03d}.jpg"
        row["image"].save(folder / photo, quality=92)
        records.append(dict(zip(SHOP_COLUMNS, [
            f"00{number:03d}", photo, row["productDisplayName"], f"https://shop.example/p/{number}?size=m&ref=(x)",
            f"€{10 + number}.99", row["articleType"], row["baseColour"], 'fits "true"; 100% cotton, washable'])))
    path = folder / f"products.{kind}"
    with path.open("w", newline="", encoding="utf-8") as file:
        if kind == "csv":
            writer = csv.DictWriter(file, SHOP_COLUMNS, delimiter=";")
            writer.writeheader()
            writer.writerows(records)
        else:
            file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return path
