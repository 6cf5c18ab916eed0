"""Photos as people take them: a phone camera's 12 or 48 MP JPEG (a few MB: sensor noise keeps JPEG from shrinking
it), a portrait stored sideways with its EXIF orientation, a 4000x3000 PNG screenshot, WebP, HEIC."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PHONE = (4032, 3024)  # a 12 MP phone camera, landscape
PHONE_48MP = (8000, 6000)
NOISE = 24  # grey levels of sensor noise, either way: a 12 MP JPEG of 3-5 MB, as phones write them
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that stores an upright picture so that a viewer applying the tag shows it upright
STORED_AS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def scene(product: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The product filling the picture's height, centred on white, as a person photographs a product on a table."""
    width, height = size
    scale = height / product.height
    photo = product.convert("RGB").resize((round(product.width * scale), height), Image.Resampling.BICUBIC)
    picture = Image.new("RGB", size, "white")
    picture.paste(photo, ((width - photo.width) // 2, 0))
    return picture


def noisy(picture: Image.Image, seed: int = 0) -> Image.Image:
    pixels = np.asarray(picture, dtype=np.int16)
    pixels = pixels + np.random.default_rng(seed).integers(-NOISE, NOISE + 1, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def phone_jpeg(product: Image.Image, size: tuple[int, int] = PHONE, orientation: int | None = None) -> bytes:
    """A phone camera's JPEG of `product`, upright at `size` (width, height) as a viewer shows it. With an EXIF
    `orientation` (6 or 8), the pixels are stored sideways and the tag says how to turn them, as phones do."""
    picture = noisy(scene(product, size))
    exif = Image.Exif()
    if orientation:
        picture = picture.transpose(STORED_AS[orientation])
        exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def encoded(picture: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **options)
    return buffer.getvalue()


def screenshot_png(product: Image.Image, size: tuple[int, int] = (4000, 3000)) -> bytes:
    """A screenshot of a shop's page: flat colours, so PNG keeps it small."""
    return encoded(scene(product, size), "PNG")


def heic(product: Image.Image, size: tuple[int, int] = PHONE) -> bytes:
    """An iPhone's HEIC photo at 12 MP (pillow-heif encodes it; without noise, which takes its encoder 20 s)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    return encoded(scene(product, size), "HEIF", quality=80)


def as_sent_by_the_page(data: bytes, side: int = 1024) -> bytes:
    """What the page's picker sends for a photo: upright, at most `side` across, JPEG at quality 90."""
    from PIL import ImageOps

    picture = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return encoded(picture, "JPEG", quality=90)
