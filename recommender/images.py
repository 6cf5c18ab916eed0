"""Turn whatever a user or a dataset gives into a clean RGB PIL image, and fit it into the model's square."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from pillow_heif import register_heif_opener

register_heif_opener()  # HEIC/HEIF photos open like any other, under the same size checks
__all__ = ["ImageError", "MAX_PIXELS", "to_rgb", "fit_square"]

MAX_PIXELS = 60_000_000  # a 60 MP photo is the largest camera output we expect; more is a decompression bomb
MAX_PADDED_PIXELS = 4096 * 4096  # fit_square's white square at full resolution: 50 MB at most
# The decoders a photo may reach: what cameras, phones and screenshots make. Pillow would try every format it has
# (EPS hands the file to Ghostscript where it is installed); HEIF is the iPhone's own format (pillow-heif).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
MAX_SIDE = 20_000  # no camera's side is longer (a 60 MP 3:2 photo is 9,487 px across)
MAX_ASPECT = 20  # a phone's panorama is about 4:1; a 30,000,000x1 PNG has few pixels but would be upscaled to GBs
# Decoded images are shrunk to about this longest side: the model sees 224 px and an explanation 320, so nothing
# past it changes a result, while each full-size copy of a 60 MP photo would cost up to 240 MB.
WORKING_SIDE = 2048
STRIP_ROWS = 16  # rows of the shrunk image made at a time
_REDUCIBLE = {"P": "RGBA", "PA": "RGBA", "1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I"}  # what reduce takes
ORIENTATION = 0x0112  # the EXIF tag
# EXIF orientation -> the turn that shows the picture upright (ImageOps.exif_transpose's table)
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
MIN_SIDE = 8  # below this there is nothing to recognise; smaller images are upscaled, not refused
WHITE = (255, 255, 255)  # catalog photos are products on white, so missing pixels are white too


class ImageError(ValueError):
    """The input is not a usable image; the message says why and what to do, `reason` names the kind of
    problem in a few words (a build's summary counts skipped products by it)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def to_rgb(source, draft_side: int | None = None) -> Image.Image:
    """Decode `source` (PIL image, numpy array, bytes, file-like or path) into an upright RGB image.

    EXIF orientation is applied, transparency is composited on white, grayscale, palette, CMYK and 16-bit
    modes are converted, and images over MAX_PIXELS are refused before they are decoded. A large image is shrunk by
    a whole factor right after decoding, so that its longest side stays at least WORKING_SIDE (or `draft_side`, when
    that is smaller; a JPEG is decoded at that reduced scale directly): the full decode is the only full-size copy
    ever made, and a request's memory stays bounded.
    """
    if source is None:
        raise ImageError("No image was given: upload a photo, take one with the webcam, or paste one.", "no image")
    image = _open(source)
    _check_size(image.size)
    side = min(draft_side or WORKING_SIDE, WORKING_SIDE)
    try:
        turn = UPRIGHT.get(image.getexif().get(ORIENTATION))  # read first: a shrunk copy keeps no TIFF tags
        image.draft(None, (side, side))  # no-op for formats other than JPEG
        image.load()  # decode now, so a truncated file fails here with our message, not later
        image = _shrunk(image, side)
        if turn is not None:
            image = image.transpose(turn)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"The image could not be decoded ({error}); the file may be truncated or corrupt.",
                         "truncated or corrupt image") from None
    return _flatten_to_rgb(image)


def _shrunk(image: Image.Image, side: int) -> Image.Image:
    """`image` reduced (box averaging) by the largest whole factor that keeps its longest side at least `side`.

    In strips of rows: Pillow reduces an RGBA image through a premultiplied full-size copy (240 MB more at 60 MP)
    and cannot reduce palette, 1-bit or 16-bit images at all; a strip's copy, converted where needed, is small."""
    factor = max(image.size) // side
    if factor < 2:
        return image
    mode = _REDUCIBLE.get(image.mode, image.mode)
    if image.mode == "P" and "transparency" not in image.info:
        mode = "RGB"
    shrunk = Image.new(mode, (-(-image.width // factor), -(-image.height // factor)))  # partial boxes count
    rows = STRIP_ROWS * factor
    for top in range(0, image.height, rows):
        strip = image.crop((0, top, image.width, min(top + rows, image.height)))
        shrunk.paste((strip if strip.mode == mode else strip.convert(mode)).reduce(factor), (0, top // factor))
    return shrunk


def fit_square(image: Image.Image, size: int) -> np.ndarray:
    """Pad `image` to a white square (keeping its aspect ratio), resize to `size`, return (size, size, 3) uint8.

    Padding instead of cropping keeps the whole garment of a portrait product photo or a landscape webcam frame.
    """
    width, height = image.size
    side = max(width, height)
    if side * side > MAX_PADDED_PIXELS:  # a long thin photo (12000x100) would become a square of gigabytes: resized
        # first (only then: resizing first gives slightly other pixels at the edges, so other vectors than the index's)
        scale = size / side
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR,
                             reducing_gap=3.0)
        width, height = image.size
        side = max(width, height)
    if side != min(width, height):
        square = Image.new("RGB", (side, side), WHITE)
        square.paste(image, ((side - width) // 2, (side - height) // 2))
        image = square
    image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def _open(source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("The image file is empty (0 bytes).", "empty image file")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No image file at {path}.", "missing image file")
        if path.stat().st_size == 0:
            raise ImageError(f"The image file {path.name} is empty (0 bytes).", "empty image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source, formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"The image is too large: more than {MAX_PIXELS:,} pixels. Use a smaller photo.",
                         "image too large") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL.UnidentifiedImageError is an OSError
        raise ImageError("This file is not an image we can read (JPEG, PNG, WebP, HEIC, GIF, BMP and TIFF work).",
                         "not an image") from error


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"An image array must be (height, width), (height, width, 3) or 4; got {array.shape}.",
                         "not an image")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0  # floats in [0, 1], as many libraries produce them
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.", "empty image")
    if max(width, height) > MAX_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(
            f"The image is {width}x{height} pixels: too long and thin for a product photo (at most "
            f"{MAX_SIDE:,} pixels a side, and {MAX_ASPECT}:1). Send a photo of the product.", "image too thin")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"The image is too large ({width}x{height} pixels, more than {MAX_PIXELS:,}). Use a smaller photo.",
            "image too large")


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float grayscale: scale to 8 bits by the image's own range instead of clipping
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        image = Image.fromarray(array.astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")  # CMYK, YCbCr, L, 1, P, ... all have a conversion to RGB
    if min(rgb.size) < MIN_SIDE:
        scale = MIN_SIDE / min(rgb.size)
        rgb = rgb.resize((max(MIN_SIDE, round(rgb.width * scale)), max(MIN_SIDE, round(rgb.height * scale))))
    return rgb
